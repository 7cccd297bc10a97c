//! The `heartbeat` actor's messages and status, with the process and machine numbers it samples.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ractor::RpcReplyPort;
use serde::Serialize;

use super::Internal;

/// Messages of the heartbeat.
pub enum HeartbeatMsg {
    /// Report the last round.
    Status(RpcReplyPort<HeartbeatStatus>),
    /// Liveness.
    Ping(RpcReplyPort<()>),
    /// The actor's messages to itself (timers, its tasks' results): only it makes and reads
    /// them ([`Internal`]).
    Internal(Internal),
    /// Test-only misbehaviour.
    #[cfg(any(test, feature = "test-hooks"))]
    Hook(crate::hooks::TestHook),
}

impl crate::names::Child for HeartbeatMsg {
    const NAME: crate::names::ChildName = crate::names::ChildName::Heartbeat;
}

/// The heartbeat's answer to `Status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeartbeatStatus {
    /// Rounds completed.
    pub beats: u64,
    pub last_beat_at: Option<DateTime<Utc>>,
    /// Round trip of each child that answered the last round.
    pub round_trip_ms: BTreeMap<String, f64>,
    /// Children that did not answer the last round (absent ones included).
    pub unanswered: Vec<String>,
    /// Of those, the ones not running at all.
    pub absent: Vec<String>,
    /// Children the supervisor reported escalated in the last round: stopped for good on
    /// purpose, not counted as unanswered and not withholding the systemd watchdog.
    pub escalated: Vec<String>,
    pub system: SystemStats,
    /// The round interval in effect (`interval`, or half the systemd watchdog when shorter).
    pub interval_ms: u64,
}

/// Where the memory limit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitSource {
    /// The process's cgroup (`memory.max`, or `memory.limit_in_bytes` on cgroup v1).
    Cgroup,
    /// `MemTotal` of `/proc/meminfo`.
    Meminfo,
}

/// Process and machine numbers (the `system` object of `/health`). A `None` figure could not be
/// read; [`SystemStats::unknown`] says why.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct SystemStats {
    /// Process RSS as % of `memory_limit_bytes`.
    pub memory_percent: Option<f64>,
    /// Process CPU over the last interval, % of one core.
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    /// What `memory_percent` is measured against: the cgroup's limit, or the machine's memory.
    pub memory_limit_bytes: Option<u64>,
    pub memory_limit_source: Option<LimitSource>,
    /// `MemTotal` of `/proc/meminfo` (hidden under `ProcSubset=pid`).
    pub total_memory_bytes: Option<u64>,
    /// ERROR-level log events (`tradebaas_errors_total`) counted over the last 60 s.
    pub error_rate_per_minute: f64,
    /// Why a figure is unknown, one line each (`memory: …`, `cpu: …`); empty when all were read.
    pub unknown: Vec<String>,
}

impl SystemStats {
    /// Nothing known, for `reason` (e.g. the heartbeat did not answer).
    pub fn unavailable(reason: &str) -> Self {
        Self {
            unknown: vec![format!("memory: {reason}"), format!("cpu: {reason}")],
            ..Self::default()
        }
    }
}
