//! The `strategy` actor's messages and status.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use ractor::RpcReplyPort;
use serde::Serialize;

use super::Internal;
use crate::model::{Decision, Intent, Lifecycle, PositionData, Ticker, TransitionData};

/// Messages of the strategy actor.
pub enum StrategyMsg {
    /// Market data from the broker: one or more tickers, in the order they arrived.
    Tickers(Vec<Ticker>),
    /// An entry's intent: ANALYZING → SIGNAL_DETECTED (`signal`) → ENTERING_POSITION (`reason`)
    /// with `intent` in flight, committed as one transaction (one `lifecycle.transition` event
    /// naming both steps, and the record), so the order waits for one fsync (ADR 0005). Same
    /// rules and reply as `Transition`.
    CommitEntry {
        id: String,
        signal: String,
        reason: String,
        intent: Intent,
        reply: RpcReplyPort<Result<(), String>>,
    },
    /// Liveness.
    Ping(RpcReplyPort<()>),
    /// Report every instance.
    Status(RpcReplyPort<StrategyStatus>),
    /// Move instance `id` to `to`. Committed (event + record) before the in-memory state changes;
    /// the reply is `Err(reason)` for an unknown id, an illegal transition or a failed commit, and
    /// then nothing changed. `data` replaces the position and the intents in flight; without it
    /// they are kept, except that a move to IDLE clears them.
    Transition {
        id: String,
        to: Lifecycle,
        reason: String,
        data: Option<TransitionData>,
        reply: RpcReplyPort<Result<(), String>>,
    },
    /// The broker established session `conn` (first connect or reconnect): fetch instrument
    /// specs, re-check every instance with the exchange, cancel orphan orders.
    Connected { conn: u64 },
    /// The `(strategy id, intent seq)` pairs the records refer to (orphan cleanup).
    Owned(RpcReplyPort<HashSet<(String, u64)>>),
    /// The actor's messages to itself (timers, its tasks' results): only it makes and reads
    /// them ([`Internal`]).
    Internal(Internal),
    /// Test-only misbehaviour.
    #[cfg(any(test, feature = "test-hooks"))]
    Hook(crate::hooks::TestHook),
}

impl crate::names::Child for StrategyMsg {
    const NAME: crate::names::ChildName = crate::names::ChildName::Strategy;
}

/// One instance in [`StrategyStatus`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyInstanceStatus {
    pub id: String,
    pub instrument: String,
    pub lifecycle: Lifecycle,
    pub position: Option<PositionData>,
    pub intents_in_flight: usize,
    /// Whether the lifecycle came from a stored record at the last start.
    pub restored: bool,
    pub updated_at: Option<DateTime<Utc>>,
    /// Ticks for its instrument.
    pub ticks: u64,
    pub last_mark_price: Option<f64>,
    /// Non-hold decisions of its logic since start.
    pub signals: u64,
    /// The newest non-hold decision.
    pub last_decision: Option<Decision>,
    pub last_decision_at: Option<DateTime<Utc>>,
    /// The job running for it (`enter`, `check`, `close`, …), if any.
    pub job: Option<&'static str>,
    /// When that job started (health calls the queue STALLED past `queue_stalled_after`).
    pub job_started_at: Option<DateTime<Utc>>,
    /// Why the newest entry was refused (guard, fail-safe, exchange).
    pub last_refusal: Option<String>,
    /// The newest job error (retried by the next check).
    pub last_error: Option<String>,
    pub next_intent_seq: u64,
}

/// The strategy actor's answer to `Status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyStatus {
    /// Instances hosted.
    pub active: usize,
    pub strategies: Vec<StrategyInstanceStatus>,
    /// Whether the stored records were read at start (false while loading or after giving up).
    pub records_loaded: bool,
    /// Why loading the records failed, if it did.
    pub load_error: Option<String>,
    /// Every ticker received, for any instrument.
    pub ticks_received: u64,
    pub last_tick_at: Option<DateTime<Utc>>,
    /// Whether orders are placed and managed (`[execution] enabled`).
    pub execution_enabled: bool,
    /// Instruments whose trading rules are known.
    pub instrument_specs: Vec<String>,
    /// Orphan orders cancelled since start.
    pub orphans_cancelled: u64,
    /// Age of the cached account equity per currency (sizing uses it while younger than
    /// `execution.equity_max_age`).
    pub equity_age_ms: BTreeMap<String, u64>,
}
