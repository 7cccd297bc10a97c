//! The `fail-safe` actor's messages and status.

use chrono::{DateTime, Utc};
use ractor::RpcReplyPort;
use serde::Serialize;

use super::Internal;
use super::checks::ChecksReport;
use crate::mode::TradingMode;

/// A reply that comes once a change is stored (or storing it failed).
pub type ChangeReply = RpcReplyPort<Result<(), String>>;

/// Messages of the fail-safe.
pub enum FailSafeMsg {
    /// Report the mode and how it got there.
    Status(RpcReplyPort<FailSafeStatus>),
    /// Liveness.
    Ping(RpcReplyPort<()>),
    /// The current mode.
    GetMode(RpcReplyPort<TradingMode>),
    /// Fail-closed permission check before any entry: Ok only in AGGRESSIVE and once the stored
    /// mode was loaded.
    AllowEntry(RpcReplyPort<Result<(), String>>),
    /// Switch to SHUTDOWN (latched). The reply comes after the change is committed to the store,
    /// or with `Err(reason)` when the commit failed; the in-memory mode is SHUTDOWN regardless.
    Trigger {
        trigger: String,
        reason: String,
        reply: Option<ChangeReply>,
    },
    /// Operator or internal mode change. SHUTDOWN is cleared to OBSERVE_ONLY first; a change to
    /// AGGRESSIVE takes effect once stored. Refused with a reason otherwise.
    SetMode {
        mode: TradingMode,
        reason: String,
        reply: ChangeReply,
    },
    /// Restrict to at most `mode`: a change only when `mode` is stricter than the current one
    /// (never clears SHUTDOWN, unlike `SetMode`). Used by recovery, which must not race a trigger.
    Restrict {
        mode: TradingMode,
        reason: String,
        reply: ChangeReply,
    },
    /// This run's start-up recovery has finished (sent by the daemon). Until then, or until a
    /// load shows a stored recovery report newer than this run's start, entries are refused.
    RecoveryFinished,
    /// The newest run of the start-up / integrity checks (`crate::checks`), shown in `/health`
    /// and `/ready`. Reporting changes no mode: the runner restricts or triggers separately.
    ChecksReported(ChecksReport),
    /// The actor's messages to itself (timers, its tasks' results): only it makes and reads
    /// them ([`Internal`]).
    Internal(Internal),
    /// Test-only misbehaviour.
    #[cfg(any(test, feature = "test-hooks"))]
    Hook(crate::hooks::TestHook),
}

impl crate::names::Child for FailSafeMsg {
    const NAME: crate::names::ChildName = crate::names::ChildName::FailSafe;
}

/// The fail-safe's answer to `Status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailSafeStatus {
    pub mode: TradingMode,
    /// Whether the stored mode has been read (entries are refused until it has).
    pub loaded: bool,
    /// Why the mode is what it is.
    pub reason: String,
    pub changed_at: Option<DateTime<Utc>>,
    /// The mode this run started in: the stored mode if the store holds one, else the resolved
    /// initial mode (before the store is read: the resolved initial mode).
    pub initial_mode: TradingMode,
    /// Why this run started in `initial_mode` (the file, the exchange-dependent default, or the
    /// stored mode taking precedence).
    pub initial_mode_reason: String,
    /// Triggers since start.
    pub triggers: u64,
    pub last_trigger: Option<String>,
    /// This run's start-up recovery has finished (entries are refused until it has).
    pub recovered: bool,
    /// Trigger conditions holding at the last evaluation (`[fail_safe.triggers]`).
    pub conditions: Vec<String>,
    /// The newest checks report (start-up, periodic or on demand) since this actor started.
    pub checks: Option<ChecksReport>,
}
