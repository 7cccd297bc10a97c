//! The root supervisor: starts the six children in order, restarts them under their policies,
//! escalates when a child restarts too often, and stops them in reverse order.
//!
//! Written on ractor's own supervision events rather than the `ractor-supervisor` crate (see
//! `docs/adr/0001-own-supervisor.md`): we need reverse-order graceful stops, an escalation hook,
//! status by RPC and `tracing` reports, none of which that crate offers.
//!
//! Every start, exit, restart and escalation is one `tracing` event with the fields `supervisor`,
//! `child`, `event`, `reason`, `restart_count` and `next_delay_ms`.
//!
//! Escalation (a child past its restart intensity) does **not** stop the process: the child is
//! left stopped, the escalation hook raises a CRITICAL alert, latches the fail-safe into SHUTDOWN
//! and asks the persister to flush, and `/health` reports the child `escalated` (unhealthy) until
//! an operator restarts the service. Everything that could open a position fails closed without
//! the escalated child, so staying up is safe and keeps exits, health and metrics available.

pub mod policy;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use tracing::{Level, error, info, warn};

use crate::metrics::Metrics;
use crate::names::{ChildName, Names};
use crate::protocol::Internal;
use crate::protocol::dispatch;
pub use crate::protocol::supervisor::{
    ChildReport, ChildState, FailureReport, StopReport, SupervisorMsg, SupervisorStatus,
};
use policy::{ChildPolicy, Decision, ExitKind, RestartHistory, RestartType, SupervisionStrategy};

/// A boxed future that spawns one child linked to the supervisor.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// Builds and spawns a child: `(registry name, supervisor cell)`. Called again for every restart,
/// so it must rebuild the child's arguments from configuration each time.
pub type StartFn = Arc<dyn Fn(String, ActorCell) -> StartFuture + Send + Sync>;

/// Called once when a child exceeds its restart intensity.
pub type EscalationHook = Arc<dyn Fn(Escalation) + Send + Sync>;

/// What the escalation hook is told.
#[derive(Debug, Clone)]
pub struct Escalation {
    /// The child that restarted too often.
    pub child: ChildName,
    /// Its last failure.
    pub reason: String,
    /// Restarts inside the intensity window, including the refused one.
    pub restarts_in_window: u32,
    /// The window.
    pub within: Duration,
}

/// One supervised child: its name, policy and how to start it.
pub struct ChildSpec {
    pub name: ChildName,
    pub policy: ChildPolicy,
    pub start: StartFn,
}

/// What the root supervisor is spawned with.
pub struct SupervisorArgs {
    pub names: Names,
    pub strategy: SupervisionStrategy,
    /// In start order.
    pub children: Vec<ChildSpec>,
    pub metrics: Metrics,
    pub on_escalation: EscalationHook,
}

/// What the supervisor sends itself, wrapped in [`SupervisorMsg::Internal`].
pub(crate) enum InternalMsg {
    /// A restart whose backoff has elapsed.
    Restart { child: ChildName, generation: u64 },
}

impl From<InternalMsg> for SupervisorMsg {
    fn from(m: InternalMsg) -> Self {
        SupervisorMsg::Internal(Internal::new(m))
    }
}

/// The root supervisor actor.
pub struct RootSupervisor;

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    /// Bumped on every start and deliberate stop; a scheduled restart carries it.
    generation: u64,
    history: RestartHistory,
    restarts: u64,
    state: ChildState,
    started_at: Option<DateTime<Utc>>,
    last_failure: Option<FailureReport>,
    restart_due: Option<Instant>,
}

/// The supervisor's state: the child table.
pub struct SupervisorState {
    names: Names,
    label: String,
    strategy: SupervisionStrategy,
    children: Vec<Child>,
    by_id: HashMap<ActorId, usize>,
    metrics: Metrics,
    on_escalation: EscalationHook,
    shutting_down: bool,
}

/// [`report`] of an event that schedules nothing (no next delay).
fn note(
    level: Level,
    supervisor: &str,
    child: ChildName,
    restarts: u64,
    event: &str,
    reason: &str,
) {
    report(
        level,
        supervisor,
        child,
        event,
        reason,
        restarts,
        Duration::ZERO,
    );
}

/// One supervisor report: the six fields every event carries.
fn report(
    level: Level,
    supervisor: &str,
    child: ChildName,
    event: &str,
    reason: &str,
    restart_count: u64,
    next_delay: Duration,
) {
    let next_delay_ms = u64::try_from(next_delay.as_millis()).unwrap_or(u64::MAX);
    let child = child.as_str();
    match level {
        Level::ERROR => error!(
            supervisor,
            child, event, reason, restart_count, next_delay_ms, "supervisor: {child} {event}"
        ),
        Level::WARN => warn!(
            supervisor,
            child, event, reason, restart_count, next_delay_ms, "supervisor: {child} {event}"
        ),
        _ => info!(
            supervisor,
            child, event, reason, restart_count, next_delay_ms, "supervisor: {child} {event}"
        ),
    }
}

impl SupervisorState {
    fn index(&self, name: ChildName) -> Option<usize> {
        self.children.iter().position(|c| c.spec.name == name)
    }

    /// Spawns child `idx`; a spawn error counts as an abnormal exit.
    async fn start(&mut self, idx: usize, myself: &ActorRef<SupervisorMsg>, restarted: bool) {
        let name = self.children[idx].spec.name;
        let start = Arc::clone(&self.children[idx].spec.start);
        match start(self.names.of(name), myself.get_cell()).await {
            Ok(cell) => {
                let child = &mut self.children[idx];
                child.generation += 1;
                child.state = ChildState::Running;
                child.started_at = Some(crate::clock::now());
                child.restart_due = None;
                self.by_id.insert(cell.get_id(), idx);
                child.cell = Some(cell);
                let event = if restarted { "restarted" } else { "started" };
                note(Level::INFO, &self.label, name, child.restarts, event, "");
            }
            Err(err) => {
                let reason = format!("start failed: {err}");
                note(
                    Level::ERROR,
                    &self.label,
                    name,
                    self.children[idx].restarts,
                    "start_failed",
                    &reason,
                );
                self.children[idx].cell = None;
                Box::pin(self.on_exit(idx, ExitKind::Abnormal, reason, myself)).await;
            }
        }
    }

    /// Applies the restart policy to an exit of child `idx`.
    async fn on_exit(
        &mut self,
        idx: usize,
        kind: ExitKind,
        reason: String,
        myself: &ActorRef<SupervisorMsg>,
    ) {
        if kind == ExitKind::Abnormal {
            self.children[idx].last_failure = Some(FailureReport {
                reason: reason.clone(),
                at: crate::clock::now(),
            });
        }
        let now = Instant::now();
        let child = &mut self.children[idx];
        let name = child.spec.name;
        let policy = child.spec.policy;
        match child.history.decide(&policy, kind, now, fastrand::f64()) {
            Decision::Leave => {
                child.state = ChildState::Stopped;
                note(
                    Level::INFO,
                    &self.label,
                    name,
                    child.restarts,
                    "not_restarted",
                    &format!("restart type {:?} after {kind:?} exit", policy.restart),
                );
            }
            Decision::Escalate { restarts_in_window } => {
                child.state = ChildState::Escalated;
                child.generation += 1;
                let msg = format!(
                    "{restarts_in_window} restarts within {} exceed max_restarts {}; last failure: {reason}",
                    humantime_serde::re::humantime::format_duration(policy.within),
                    policy.max_restarts
                );
                note(
                    Level::ERROR,
                    &self.label,
                    name,
                    child.restarts,
                    "escalated",
                    &msg,
                );
                (self.on_escalation)(Escalation {
                    child: name,
                    reason,
                    restarts_in_window,
                    within: policy.within,
                });
            }
            Decision::Restart { delay, .. } => {
                child.restarts += 1;
                child.generation += 1;
                child.state = ChildState::Restarting;
                child.restart_due = Some(now + delay);
                let generation = child.generation;
                let restarts = child.restarts;
                self.metrics
                    .actor_restarts
                    .with_label_values(&[name.as_str()])
                    .inc();
                report(
                    Level::WARN,
                    &self.label,
                    name,
                    "restart_scheduled",
                    &reason,
                    restarts,
                    delay,
                );
                if self.strategy == SupervisionStrategy::RestForOne {
                    self.stop_later_siblings(idx).await;
                }
                myself.send_after(delay, move || {
                    InternalMsg::Restart {
                        child: name,
                        generation,
                    }
                    .into()
                });
            }
        }
    }

    /// rest_for_one: stops every running child started after `idx`, last first.
    async fn stop_later_siblings(&mut self, idx: usize) {
        for j in (idx + 1..self.children.len()).rev() {
            let Some(cell) = self.children[j].cell.take() else {
                continue;
            };
            self.by_id.remove(&cell.get_id());
            let child = &mut self.children[j];
            child.generation += 1;
            child.state = if child.spec.policy.restart == RestartType::Temporary {
                ChildState::Stopped
            } else {
                ChildState::WaitingForSibling
            };
            let name = child.spec.name;
            let timeout = child.spec.policy.shutdown_timeout;
            stop_child(&cell, timeout).await;
            note(
                Level::WARN,
                &self.label,
                name,
                self.children[j].restarts,
                "stopped_for_sibling",
                &format!("rest_for_one: {} failed", self.children[idx].spec.name),
            );
        }
    }

    fn status(&self) -> SupervisorStatus {
        let now = Instant::now();
        SupervisorStatus {
            strategy: self.strategy,
            shutting_down: self.shutting_down,
            children: self
                .children
                .iter()
                .map(|c| ChildReport {
                    name: c.spec.name,
                    state: c.state,
                    restart_type: c.spec.policy.restart,
                    restarts: c.restarts,
                    last_failure: c.last_failure.clone(),
                    started_at: c.started_at,
                    next_restart_in_ms: c.restart_due.map(|due| {
                        u64::try_from(due.saturating_duration_since(now).as_millis())
                            .unwrap_or(u64::MAX)
                    }),
                })
                .collect(),
        }
    }
}

/// Stops a child gracefully within `timeout`, then kills it. Returns whether it had to be killed.
async fn stop_child(cell: &ActorCell, timeout: Duration) -> bool {
    match cell
        .stop_and_wait(Some("shutdown".to_string()), Some(timeout))
        .await
    {
        Ok(()) => false,
        Err(_) => {
            // A wedged child: kill it; a second timeout bounds even that.
            let _ = cell.kill_and_wait(Some(timeout)).await;
            true
        }
    }
}

impl Actor for RootSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let label = myself.get_name().unwrap_or_else(|| args.names.supervisor());
        Ok(SupervisorState {
            label,
            names: args.names,
            strategy: args.strategy,
            children: args
                .children
                .into_iter()
                .map(|spec| Child {
                    spec,
                    cell: None,
                    generation: 0,
                    history: RestartHistory::default(),
                    restarts: 0,
                    state: ChildState::Restarting,
                    started_at: None,
                    last_failure: None,
                    restart_due: None,
                })
                .collect(),
            by_id: HashMap::new(),
            metrics: args.metrics,
            on_escalation: args.on_escalation,
            shutting_down: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for idx in 0..state.children.len() {
            state.start(idx, &myself, false).await;
        }
        Ok(())
    }

    dispatch!(
        SupervisorMsg,
        "supervisor",
        |myself, msg, state| match msg {
            SupervisorMsg::StopChildren(which, reply) => {
                state.shutting_down = true;
                let mut reports = Vec::with_capacity(which.len());
                for name in which {
                    let Some(idx) = state.index(name) else {
                        continue;
                    };
                    let started = Instant::now();
                    let child = &mut state.children[idx];
                    child.generation += 1;
                    child.restart_due = None;
                    let outcome = match child.cell.take() {
                        Some(cell) => {
                            state.by_id.remove(&cell.get_id());
                            child.state = ChildState::ShutDown;
                            let timeout = child.spec.policy.shutdown_timeout;
                            if stop_child(&cell, timeout).await {
                                "killed"
                            } else {
                                "stopped"
                            }
                        }
                        None => {
                            if child.state != ChildState::Escalated {
                                child.state = ChildState::ShutDown;
                            }
                            "not_running"
                        }
                    };
                    let elapsed = started.elapsed();
                    note(
                        Level::INFO,
                        &state.label,
                        name,
                        state.children[idx].restarts,
                        "shut_down",
                        outcome,
                    );
                    reports.push(StopReport {
                        child: name,
                        outcome,
                        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                    });
                }
                let _ = reply.send(reports);
            }
        }
    );

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, kind, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, ExitKind::Abnormal, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => match reason.as_deref() {
                // ractor reports kill() this way; only the supervisor kills, so it is abnormal.
                Some("killed") => (cell, ExitKind::Abnormal, "killed".to_string()),
                _ => (cell, ExitKind::Normal, reason.unwrap_or_default()),
            },
            _ => return Ok(()),
        };
        // Events from an instance we already replaced or stopped on purpose are stale.
        let Some(idx) = state.by_id.remove(&cell.get_id()) else {
            return Ok(());
        };
        let child = &mut state.children[idx];
        child.cell = None;
        let name = child.spec.name;
        let restarts = child.restarts;
        if state.shutting_down {
            child.state = ChildState::ShutDown;
            note(Level::INFO, &state.label, name, restarts, "exited", &reason);
            return Ok(());
        }
        let (level, event) = match kind {
            ExitKind::Normal => (Level::INFO, "exited"),
            ExitKind::Abnormal => (Level::ERROR, "failed"),
        };
        note(level, &state.label, name, restarts, event, &reason);
        state.on_exit(idx, kind, reason, &myself).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // If the shutdown path did not stop them already, stop the rest in reverse order so no
        // child is killed by ractor's parent-stop (which skips their post_stop).
        state.shutting_down = true;
        for child in state.children.iter_mut().rev() {
            if let Some(cell) = child.cell.take() {
                stop_child(&cell, child.spec.policy.shutdown_timeout).await;
                child.state = ChildState::ShutDown;
            }
        }
        Ok(())
    }
}

/// The actor's messages to itself ([`InternalMsg`]).
async fn handle_internal(
    myself: ActorRef<SupervisorMsg>,
    msg: InternalMsg,
    state: &mut SupervisorState,
) -> Result<(), ActorProcessingErr> {
    match msg {
        InternalMsg::Restart { child, generation } => {
            let Some(idx) = state.index(child) else {
                return Ok(());
            };
            let c = &state.children[idx];
            if state.shutting_down
                || c.generation != generation
                || c.state != ChildState::Restarting
            {
                return Ok(());
            }
            state.start(idx, &myself, true).await;
            if state.strategy == SupervisionStrategy::RestForOne {
                for j in idx + 1..state.children.len() {
                    if state.children[j].state == ChildState::WaitingForSibling {
                        state.start(j, &myself, true).await;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
