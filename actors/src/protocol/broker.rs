//! The `broker-connection` actor's messages and status, and what a request or a session can
//! report back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::RpcReplyPort;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::Internal;
use crate::model::{RpcError, Ticker};

/// Messages of the broker actor.
pub enum BrokerMsg {
    /// Report connection facts.
    Status(RpcReplyPort<BrokerStatus>),
    /// Liveness.
    Ping(RpcReplyPort<()>),
    /// Send a JSON-RPC request on the current session, after the client-side rate limiter
    /// grants its credit (see [`crate::orders::rate`]).
    Request {
        method: String,
        params: Value,
        reply: RpcReplyPort<Result<Value, RequestError>>,
    },
    /// Like `Request`, but sent only if cancel-on-disconnect is confirmed armed on the session
    /// it goes out on; otherwise [`RequestError::NotArmed`] and nothing is sent. For entries.
    RequestArmed {
        method: String,
        params: Value,
        reply: RpcReplyPort<Result<Value, RequestError>>,
    },
    /// Arm (`armed`) or disarm cancel-on-disconnect (connection scope) on the current session.
    /// Answered at once when the session is known to be in that state already; otherwise the
    /// request is sent, and the session counts as armed only after the exchange's answer.
    CancelOnDisconnect {
        armed: bool,
        reply: RpcReplyPort<Result<(), RequestError>>,
    },
    /// Authenticate the current session again with the configured credentials (after a 13009
    /// `unauthorized`). `Err` without credentials, without a session, or when the exchange refuses.
    Reauthenticate(RpcReplyPort<Result<(), String>>),
    /// From the broker's own session task: something happened on session `conn`. Typed, not
    /// [`Internal`], as every market-data frame travels this way (no box per frame).
    Session { conn: u64, event: SessionEvent },
    /// The actor's messages to itself (timers, its tasks' results): only it makes and reads
    /// them ([`Internal`]).
    Internal(Internal),
    /// Test-only misbehaviour.
    #[cfg(any(test, feature = "test-hooks"))]
    Hook(crate::hooks::TestHook),
}

impl crate::names::Child for BrokerMsg {
    const NAME: crate::names::ChildName = crate::names::ChildName::BrokerConnection;
}

/// The connection as the broker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// The first connection is being made.
    Connecting,
    /// Connected and subscribed.
    Connected,
    /// Lost; waiting for or making a reconnect attempt.
    Reconnecting,
    /// Too many failures: waiting out the circuit breaker.
    CircuitOpen,
}

/// The broker's answer to `Status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BrokerStatus {
    pub state: LinkState,
    /// Without credentials or query.
    pub url: String,
    pub authenticated: bool,
    pub connected_since: Option<DateTime<Utc>>,
    /// How long the broker has been without a session (None while connected).
    pub disconnected_for_ms: Option<u64>,
    pub last_message_at: Option<DateTime<Utc>>,
    pub last_market_data_at: Option<DateTime<Utc>>,
    /// Age of the newest market data, or time since start when none has arrived.
    pub market_data_age_ms: u64,
    pub reconnect_attempts: u64,
    pub consecutive_failures: u32,
    pub circuit_breaker: &'static str,
    pub circuit_open_remaining_ms: Option<u64>,
    /// Time until the next connection attempt, while waiting for one.
    pub next_attempt_in_ms: Option<u64>,
    pub subscriptions: Vec<String>,
    pub missing_subscriptions: Vec<String>,
    pub market_data_messages: u64,
    pub malformed_frames: u64,
    pub test_requests_answered: u64,
    pub last_error: Option<String>,
    /// Cancel-on-disconnect on the live session: `armed` (confirmed by the exchange), `off`,
    /// `unknown` (a change unanswered or failed), or `no_session`.
    pub cancel_on_disconnect: &'static str,
}

/// Why a request got no result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("not connected to the exchange")]
    NotConnected,
    #[error("connection closed before {method} was answered")]
    Closed { method: String },
    #[error("{method} not answered within {after:?}")]
    Timeout { method: String, after: Duration },
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("unexpected answer to {method}: {reason}")]
    Unexpected { method: String, reason: String },
    /// Refused by the broker actor before anything was sent.
    #[error("{method} refused, not sent: {reason}")]
    Refused { method: String, reason: String },
    /// Refused by the broker actor before anything was sent: the request may go out only on a
    /// session with cancel-on-disconnect armed, and this one's is not (ADR 0005).
    #[error("{method} not sent: cancel-on-disconnect is not armed on this session")]
    NotArmed { method: String },
}

/// What a session tells its owner.
#[derive(Debug)]
pub enum SessionEvent {
    /// One or more ticker notifications, in the order they arrived: consecutive ticker frames
    /// already read are handed over together (never held back waiting for more).
    Tickers(Vec<Ticker>),
    /// Another subscription notification.
    Subscription {
        channel: String,
        data: Box<RawValue>,
    },
    /// A frame that could not be decoded (it is dropped; the session goes on).
    Malformed { reason: String },
    /// The session ended; sent exactly once unless the owner is gone.
    Closed { reason: String },
}
