//! The `alert` actor's messages and status, and what an alert is: `Severity`, the allowed
//! kinds, `Alert` (what a caller raises), `AlertRecord` (what is recorded, stored and sent).

use chrono::{DateTime, Utc};
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Internal;
use crate::store::OpenReport;

/// Messages of the alert actor.
pub enum AlertMsg {
    /// Report counts and the recent records.
    Status(RpcReplyPort<AlertStatus>),
    /// Liveness.
    Ping(RpcReplyPort<()>),
    /// Raise (or repeat) an alert.
    Raise(Alert),
    /// Close the open alert with this key, if any.
    Resolve { key: String },
    /// Mark one alert acknowledged by an operator (stored as an `alert_acknowledged` event);
    /// answers the updated record.
    Acknowledge {
        alert_id: String,
        reply: RpcReplyPort<Result<AlertRecord, AlertError>>,
    },
    /// Re-send open alerts to Alertmanager (sent to itself every `resend_interval`).
    Resend,
    /// The actor's messages to itself (timers, its tasks' results): only it makes and reads
    /// them ([`Internal`]).
    Internal(Internal),
    /// Test-only misbehaviour.
    #[cfg(any(test, feature = "test-hooks"))]
    Hook(crate::hooks::TestHook),
}

impl crate::names::Child for AlertMsg {
    const NAME: crate::names::ChildName = crate::names::ChildName::Alert;
}
/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    /// Needs a human now (trading stopped, data at risk).
    Critical,
    /// Degraded but handled automatically.
    Warning,
    /// Worth knowing.
    Info,
}

impl Severity {
    /// The stored and displayed name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        }
    }
}

/// The alert kinds the issue allows, by the key's first `:`-separated segment: fail-safe triggers
/// and shutdowns, restart-intensity escalations, start-up check and periodic integrity failures,
/// prolonged heartbeat loss, capital-integrity violations, store failures (a failed backup is
/// `store:backup`), and unprotected positions (`strategy:<id>:unprotected` only).
pub const ALLOWED_ALERT_KINDS: [&str; 8] = [
    "failsafe",
    "escalation",
    "startup_checks",
    "integrity",
    "heartbeat",
    "capital",
    "store",
    "strategy",
];

/// The allowed kind of an alert key, or `None` when the actor must refuse it. `strategy` keys
/// are allowed only in the shape `strategy:<id>:unprotected`; every other kind needs a
/// non-empty name after its prefix (`failsafe:heartbeat`).
pub fn alert_kind(key: &str) -> Option<&'static str> {
    let (prefix, rest) = key.split_once(':')?;
    let kind = ALLOWED_ALERT_KINDS.iter().find(|k| **k == prefix)?;
    if rest.trim().is_empty() {
        return None;
    }
    if *kind == "strategy" {
        let id = rest.strip_suffix(":unprotected")?;
        if id.is_empty() || id.contains(':') {
            return None;
        }
    }
    Some(kind)
}

/// What a caller raises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Dedup key, e.g. `failsafe:heartbeat`; its prefix must be an allowed kind
    /// ([`alert_kind`]).
    pub key: String,
    pub severity: Severity,
    pub title: String,
    pub message: String,
    pub root_cause: String,
    pub recommended_action: String,
    pub metadata: Value,
}

impl Alert {
    /// The alert an open of the store calls for: CRITICAL `store:recovered` when
    /// [`OpenReport::degraded`], WARNING `store:unclean_stop` when only the previous run crashed,
    /// else none.
    pub fn for_store_open(report: &OpenReport) -> Option<Alert> {
        let metadata = serde_json::to_value(report).unwrap_or_default();
        if report.degraded() {
            let what = match &report.restored_from {
                Some(b) => format!("restored from backup {b}"),
                None => "no backup verified; started with an EMPTY store".into(),
            };
            let aside = report.moved_aside.clone().unwrap_or_default();
            Some(Self {
                key: "store:recovered".into(),
                severity: Severity::Critical,
                title: "the store failed verification and was replaced".into(),
                message: format!("moved aside to {aside}; {what}; trading is OBSERVE_ONLY"),
                root_cause: report.reason.clone().unwrap_or_default(),
                recommended_action: format!(
                    "Keep {aside} for investigation. Events after the restored backup exist only \
                     there: reconcile positions with the exchange before enabling trading \
                     (docs/OPERATIONS.md)."
                ),
                metadata,
            })
        } else if report.crashed {
            Some(Self {
                key: "store:unclean_stop".into(),
                severity: Severity::Warning,
                title: "the previous run did not stop cleanly".into(),
                message: "no run.stopped was recorded before this start".into(),
                root_cause: "crash, kill -9, power loss or a shutdown past its time limit".into(),
                recommended_action: "Read the previous run's last log lines; check positions \
                                     against the exchange."
                    .into(),
                metadata,
            })
        } else {
            None
        }
    }
}

/// One alert as recorded and stored: the [`Alert`] as first raised (repeats inside the dedup
/// window only count) and what the alert actor adds.
///
/// The alert's fields are flattened, so the stored and served JSON is one flat object
/// (`alert_id`, `timestamp`, `key`, `severity`, `title`, …), the shape stored before the
/// record held an `Alert` (pinned by `a_stored_record_of_the_flat_shape_reads_back_unchanged`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// UUID v7.
    pub alert_id: String,
    /// When it was first raised.
    pub timestamp: DateTime<Utc>,
    #[serde(flatten)]
    pub alert: Alert,
    pub acknowledged: bool,
    /// Raises folded into this record (1 + repeats inside the dedup window).
    pub count: u64,
    /// The newest raise folded into it (the first one for a fresh record).
    #[serde(default)]
    pub last_raised_at: Option<DateTime<Utc>>,
    /// When an operator acknowledged it.
    #[serde(default)]
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// The alert actor's answer to `Status` (`Default`: nothing raised, history not yet loaded).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AlertStatus {
    /// Open alerts (one per key).
    pub open: usize,
    pub open_critical: usize,
    /// Records created since start.
    pub raised_total: u64,
    /// Repeats folded into an open record since start.
    pub deduplicated_total: u64,
    /// Newest last, at most `max_recent`.
    pub recent: Vec<AlertRecord>,
    /// The open alerts themselves (one per key), oldest first.
    pub open_alerts: Vec<AlertRecord>,
    /// Raises refused because their key is not an allowed kind ([`alert_kind`]).
    pub refused_total: u64,
    /// Whether the stored alerts were reloaded (or there were none); false while loading.
    pub history_loaded: bool,
    /// Why reloading the stored alerts failed, if it did.
    pub history_load_error: Option<String>,
    /// Commits of alert changes that failed or timed out since start.
    pub store_failures: u64,
    pub last_store_error: Option<String>,
    /// Enabled external sinks that are currently `failing`.
    pub sinks_failing: usize,
    /// One entry per enabled external sink.
    pub sinks: Vec<SinkStatus>,
}

/// Which sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    Alertmanager,
    Webhook,
    Telegram,
}

impl SinkKind {
    /// The name in status and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            SinkKind::Alertmanager => "alertmanager",
            SinkKind::Webhook => "webhook",
            SinkKind::Telegram => "telegram",
        }
    }
}

/// What a sink reports (in the alert actor's status, hence `/health`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinkStatus {
    pub sink: SinkKind,
    /// `host:port` of the receiver (never a path: Telegram's carries the token).
    pub target: String,
    /// Deliveries the receiver accepted (2xx).
    pub delivered: u64,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: u64,
    /// Failed attempts since the last success.
    pub consecutive_failures: u64,
    /// The last failure, for the operator.
    pub last_error: Option<String>,
    /// When `last_error` happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// When the receiver last accepted a delivery.
    pub last_delivered_at: Option<DateTime<Utc>>,
    /// `consecutive_failures` reached `failing_after`, or the sink could not be set up.
    pub failing: bool,
    /// Deliveries given up after `max_attempts`.
    pub abandoned: u64,
    /// Deliveries dropped because the queue was full (oldest first).
    pub dropped: u64,
    /// Deliveries waiting.
    pub queued: usize,
    /// Times the delivery task panicked and was started again (the delivery it held is
    /// queued again first; `last_error` says what the panic was).
    pub restarts: u64,
}

/// Errors of alert operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// No recent or open alert has this id (the store keeps older ones).
    #[error("no open or recent alert has id {alert_id}")]
    UnknownAlert { alert_id: String },
}
