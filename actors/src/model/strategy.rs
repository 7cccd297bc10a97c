//! The strategy's stored records and what a strategy decides: the durable state of one instance
//! (state key `strategy.<id>`), its lifecycle, and the positions and intents it carries.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The state key prefix of strategy records: `strategy.<id>`.
pub const RECORD_KEY_PREFIX: &str = "strategy.";

/// The state key of strategy `id`.
pub fn record_key(id: &str) -> String {
    format!("{RECORD_KEY_PREFIX}{id}")
}

/// Where a strategy instance is in its trade cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Lifecycle {
    Idle,
    Analyzing,
    SignalDetected,
    EnteringPosition,
    PositionOpen,
    Closing,
}

impl Lifecycle {
    /// Every state, for tables and property tests.
    pub const ALL: [Lifecycle; 6] = [
        Lifecycle::Idle,
        Lifecycle::Analyzing,
        Lifecycle::SignalDetected,
        Lifecycle::EnteringPosition,
        Lifecycle::PositionOpen,
        Lifecycle::Closing,
    ];

    /// Whether `self → next` is legal: the cycle IDLE → ANALYZING → SIGNAL_DETECTED →
    /// ENTERING_POSITION → POSITION_OPEN → CLOSING → IDLE, plus a return to IDLE from ANALYZING,
    /// SIGNAL_DETECTED (signal dropped) and ENTERING_POSITION (entry rejected). A position, once
    /// open, leaves only through CLOSING.
    pub fn can_transition_to(self, next: Lifecycle) -> bool {
        use Lifecycle::*;
        matches!(
            (self, next),
            (Idle, Analyzing)
                | (Analyzing, SignalDetected)
                | (SignalDetected, EnteringPosition)
                | (EnteringPosition, PositionOpen)
                | (PositionOpen, Closing)
                | (Closing, Idle)
                | (Analyzing, Idle)
                | (SignalDetected, Idle)
                | (EnteringPosition, Idle)
        )
    }

    /// The stored and displayed name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Idle => "IDLE",
            Lifecycle::Analyzing => "ANALYZING",
            Lifecycle::SignalDetected => "SIGNAL_DETECTED",
            Lifecycle::EnteringPosition => "ENTERING_POSITION",
            Lifecycle::PositionOpen => "POSITION_OPEN",
            Lifecycle::Closing => "CLOSING",
        }
    }
}

/// Side of a position or an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// +1 for buy (long), −1 for sell (short).
    pub fn sign(self) -> f64 {
        match self {
            Side::Buy => 1.0,
            Side::Sell => -1.0,
        }
    }
}

/// An open position a strategy believes it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionData {
    pub instrument: String,
    pub direction: Side,
    /// Always positive (USD for perpetuals); `direction` gives the side.
    pub size: f64,
    pub entry_price: f64,
    /// Labels or order ids of the stop-loss / take-profit orders protecting it.
    #[serde(default)]
    pub protective_orders: Vec<String>,
    /// The label of the entry that opened it.
    #[serde(default)]
    pub entry_label: Option<String>,
    /// The stop-loss trigger price (to place the leg again).
    #[serde(default)]
    pub stop_price: Option<f64>,
    /// The take-profit price (to place the leg again).
    #[serde(default)]
    pub take_profit_price: Option<f64>,
}

/// An order sent to the exchange whose outcome is not known yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    /// The order label (unique; starts with the daemon's label prefix).
    pub label: String,
    pub side: Side,
    pub size: f64,
    pub sent_at: DateTime<Utc>,
    /// The protective stop sent with it (on the tick grid).
    #[serde(default)]
    pub stop_price: Option<f64>,
    /// The take-profit sent with it (on the tick grid).
    #[serde(default)]
    pub take_profit_price: Option<f64>,
}

/// Position and intents carried by a transition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransitionData {
    pub position: Option<PositionData>,
    #[serde(default)]
    pub intents_in_flight: Vec<Intent>,
}

/// The durable state of one strategy instance (state key `strategy.<id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyRecord {
    pub id: String,
    pub lifecycle: Lifecycle,
    #[serde(default)]
    pub position: Option<PositionData>,
    #[serde(default)]
    pub intents_in_flight: Vec<Intent>,
    /// The sequence number the next entry's label gets; bumped by every move to
    /// ENTERING_POSITION, so a label is never used twice.
    #[serde(default)]
    pub next_intent_seq: u64,
    pub updated_at: DateTime<Utc>,
}

impl StrategyRecord {
    /// A fresh IDLE record.
    pub fn idle(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            lifecycle: Lifecycle::Idle,
            position: None,
            intents_in_flight: Vec::new(),
            next_intent_seq: 0,
            updated_at: crate::clock::now(),
        }
    }

    /// Every record in a persister `Load` answer (keys `strategy.*`). Unreadable records are
    /// returned as `(key, error)` in the second list.
    pub fn all_from_state(
        state: &BTreeMap<String, Value>,
    ) -> (Vec<StrategyRecord>, Vec<(String, String)>) {
        let mut records = Vec::new();
        let mut bad = Vec::new();
        for (key, value) in state.range(RECORD_KEY_PREFIX.to_string()..) {
            let Some(id) = key.strip_prefix(RECORD_KEY_PREFIX) else {
                break;
            };
            match serde_json::from_value::<StrategyRecord>(value.clone()) {
                Ok(r) if r.id == id => records.push(r),
                Ok(r) => bad.push((key.clone(), format!("record names id {:?}", r.id))),
                Err(e) => bad.push((key.clone(), e.to_string())),
            }
        }
        (records, bad)
    }
}

/// What a strategy wants after a tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Nothing to do.
    Hold,
    /// Open a position on `side`, protected by a stop at `stop_price` and a take-profit at
    /// `take_profit_price` (raw prices; the guards put them on the tick grid).
    Enter {
        side: Side,
        stop_price: f64,
        take_profit_price: f64,
        reason: String,
    },
    /// Close the open position.
    Exit { reason: String },
}
