//! The root supervisor's messages and status, and the restart vocabulary they report in.

use chrono::{DateTime, Utc};
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};

use super::Internal;
use crate::names::ChildName;

/// Messages of the root supervisor.
pub enum SupervisorMsg {
    /// Report every child's state.
    Status(RpcReplyPort<SupervisorStatus>),
    /// Liveness: answered at once.
    Ping(RpcReplyPort<()>),
    /// Stop these children gracefully, one after another in the given order; from then on no
    /// child is restarted (this is the shutdown path).
    StopChildren(Vec<ChildName>, RpcReplyPort<Vec<StopReport>>),
    /// The supervisor's messages to itself (restart timers): only it makes and reads them
    /// ([`Internal`]).
    Internal(Internal),
}

/// A child's lifecycle as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// Running.
    Running,
    /// Exited; a restart is scheduled.
    Restarting,
    /// Stopped because an earlier sibling failed (rest_for_one); restarts with it.
    WaitingForSibling,
    /// Exited and its restart type says not to restart.
    Stopped,
    /// Restarted too often; left stopped until an operator acts.
    Escalated,
    /// Stopped by the shutdown path.
    ShutDown,
}

/// A child's last failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureReport {
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// One child in [`SupervisorStatus`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChildReport {
    pub name: ChildName,
    pub state: ChildState,
    pub restart_type: RestartType,
    /// Restarts since the daemon started.
    pub restarts: u64,
    pub last_failure: Option<FailureReport>,
    pub started_at: Option<DateTime<Utc>>,
    /// Time left before a scheduled restart.
    pub next_restart_in_ms: Option<u64>,
}

/// The supervisor's answer to `Status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SupervisorStatus {
    pub strategy: SupervisionStrategy,
    pub shutting_down: bool,
    /// In start order.
    pub children: Vec<ChildReport>,
}

impl SupervisorStatus {
    /// One child's report.
    pub fn child(&self, name: ChildName) -> Option<&ChildReport> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// How one child stopped during shutdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StopReport {
    pub child: ChildName,
    /// `stopped`, `killed` (did not stop within its shutdown timeout) or `not_running`.
    pub outcome: &'static str,
    pub duration_ms: u64,
}

/// When a child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartType {
    /// Always restarted.
    Permanent,
    /// Restarted only after an abnormal exit (panic, error, kill).
    Transient,
    /// Never restarted.
    Temporary,
}

/// Which children are restarted when one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisionStrategy {
    /// Only the child that exited.
    #[default]
    OneForOne,
    /// The child that exited and every child started after it.
    RestForOne,
}
