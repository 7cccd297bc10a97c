//! What the exchange reports, as the runtime reads it: tickers, positions, orders. Only the
//! fields the runtime uses; everything else in a frame is ignored.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The fields of a ticker the runtime uses; everything else is ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticker {
    pub instrument_name: String,
    /// Exchange time, ms since the epoch.
    pub timestamp: i64,
    pub mark_price: f64,
    #[serde(default)]
    pub last_price: Option<f64>,
    #[serde(default)]
    pub index_price: Option<f64>,
    /// `null` when that side of the book is empty.
    #[serde(default)]
    pub best_bid_price: Option<f64>,
    #[serde(default)]
    pub best_ask_price: Option<f64>,
    #[serde(default)]
    pub best_bid_amount: Option<f64>,
    #[serde(default)]
    pub best_ask_amount: Option<f64>,
    /// open, settlement, delivered, inactive, locked, halted, … (an open set).
    #[serde(default)]
    pub state: Option<String>,
}

/// A position as `private/get_positions` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExPosition {
    pub instrument_name: String,
    /// Signed: negative for a short.
    pub size: f64,
    #[serde(default)]
    pub direction: String,
    #[serde(default)]
    pub average_price: f64,
}

/// An order as `private/get_open_orders_by_currency` and `get_order_state_by_label` report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExOrder {
    pub order_id: String,
    #[serde(default)]
    pub label: String,
    pub instrument_name: String,
    pub order_state: String,
    #[serde(default)]
    pub direction: String,
    #[serde(default)]
    pub amount: f64,
    /// Milliseconds since the epoch; picks the newest of several orders with one label.
    #[serde(default)]
    pub last_update_timestamp: i64,
    #[serde(default)]
    pub filled_amount: f64,
    #[serde(default)]
    pub average_price: f64,
    /// Why it was cancelled (`cancel_on_disconnect`, `oco_other_closed`, …).
    #[serde(default)]
    pub cancel_reason: Option<String>,
}

#[cfg(test)]
impl ExOrder {
    /// A test order on BTC-PERPETUAL: a 10-contract sell, nothing filled.
    pub(crate) fn sample(order_id: &str, label: &str, state: &str) -> Self {
        Self {
            order_id: order_id.into(),
            label: label.into(),
            instrument_name: "BTC-PERPETUAL".into(),
            order_state: state.into(),
            direction: "sell".into(),
            amount: 10.0,
            last_update_timestamp: 0,
            filled_amount: 0.0,
            average_price: 0.0,
            cancel_reason: None,
        }
    }
}

/// A JSON-RPC error object from the exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("exchange error {code}: {message}")]
pub struct RpcError {
    pub code: i64,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// How the runtime should react to an exchange error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Try again later with backoff (rate limits, maintenance, overload).
    Retryable,
    /// The request itself is wrong; retrying cannot help.
    Fatal,
    /// The session is not (or no longer) authorized: re-authenticate once.
    Auth,
}

impl RpcError {
    /// Classifies the error by code (Deribit's table in the protocol reference).
    pub fn class(&self) -> ErrorClass {
        match self.code {
            10028 | 10040 | 10047 | 10066 | 11051 | 13028 => ErrorClass::Retryable,
            10000 | 13009 => ErrorClass::Auth,
            _ => ErrorClass::Fatal,
        }
    }
}
