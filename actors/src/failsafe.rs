//! The `fail-safe` actor: the owner of the trading mode and the last word on whether a new
//! position may be opened.
//!
//! It fails closed. It starts in OBSERVE_ONLY with the stored mode not yet read, and refuses every
//! entry until the mode stored by the `state-persister` (key `"mode"`) has been loaded and says
//! AGGRESSIVE. A trigger latches SHUTDOWN, which survives restarts because it is stored; only an
//! operator clears it, to OBSERVE_ONLY first.
//!
//! Every change is one `mode_changed` event plus the `"mode"` state write, committed through the
//! persister. A change that restricts trading takes effect in memory at once and is stored after;
//! a change to AGGRESSIVE takes effect only once it is stored. The actor never waits for the
//! persister inside a handler: commits and loads are awaited in tasks that report back by message.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::concurrency::OneshotReceiver;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{error, info, warn};

use crate::alert::{Alert, AlertMsg, Severity};
use crate::checks::ChecksReport;
use crate::health::{HealthConfig, Replies};
use crate::mode::TradingMode;
use crate::names::{ChildName, Names};
use crate::persister::PersisterMsg;
use crate::store::{Change, Committed, StoreError};

pub mod triggers;

pub use triggers::TriggerConfig;
use triggers::{Action, Finding, Watch};

/// The alert raised while the store's filesystem is below `[store] disk_free_floor`.
pub const DISK_ALERT_KEY: &str = "store:disk_low";
/// The state key holding the mode.
pub const MODE_KEY: &str = "mode";

/// `[fail_safe]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailSafeConfig {
    /// The mode used when the store holds none (first start), as the configuration file states
    /// it. `None` (the key left out): the daemon decides by the exchange in use (AGGRESSIVE on
    /// the embedded paper exchange, OBSERVE_ONLY anywhere else) and hands the fail-safe the
    /// resolved [`InitialMode`]; the actor itself reads only that.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_mode: Option<TradingMode>,
    /// How long to wait for the persister's `Load` answer.
    #[serde(with = "humantime_serde")]
    pub load_timeout: Duration,
    /// Load attempts before giving up (and staying in OBSERVE_ONLY, entries refused).
    pub load_attempts: u32,
    /// Pause between load attempts.
    #[serde(with = "humantime_serde")]
    pub load_retry_delay: Duration,
    /// How long to wait for a mode change to be committed.
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
    /// `[fail_safe.triggers]`: the conditions the fail-safe watches and their thresholds.
    pub triggers: TriggerConfig,
}

impl Default for FailSafeConfig {
    fn default() -> Self {
        Self {
            initial_mode: None,
            load_timeout: Duration::from_secs(2),
            load_attempts: 5,
            load_retry_delay: Duration::from_millis(500),
            commit_timeout: Duration::from_secs(2),
            triggers: TriggerConfig::default(),
        }
    }
}

impl FailSafeConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.initial_mode == Some(TradingMode::Shutdown) {
            return Err(
                "initial_mode must be AGGRESSIVE or OBSERVE_ONLY (SHUTDOWN is only entered by a trigger)"
                    .into(),
            );
        }
        for (name, d) in [
            ("load_timeout", self.load_timeout),
            ("commit_timeout", self.commit_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        if self.load_attempts == 0 {
            return Err("load_attempts must be at least 1".into());
        }
        self.triggers.validate()
    }
}

/// The mode the fail-safe uses on a first start (nothing stored) and why it was chosen: the
/// configured `initial_mode`, or the daemon's default for the exchange in use. A mode in the
/// store (a previous run's, or this run's before an actor restart) always takes precedence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitialMode {
    pub mode: TradingMode,
    /// For the operator: where the mode came from (the file, or which default and why).
    pub reason: String,
}

impl InitialMode {
    /// The fail-closed choice when nothing decided otherwise.
    pub fn observe_only(reason: impl Into<String>) -> Self {
        Self {
            mode: TradingMode::ObserveOnly,
            reason: reason.into(),
        }
    }

    /// `mode`, set explicitly (by the configuration or a test).
    pub fn explicit(mode: TradingMode) -> Self {
        Self {
            mode,
            reason: "[fail_safe] initial_mode is set in the configuration".into(),
        }
    }
}

/// What the fail-safe is spawned with.
#[derive(Clone)]
pub struct FailSafeArgs {
    pub names: Names,
    pub config: FailSafeConfig,
    /// The resolved mode for a first start (`config.initial_mode` is not read by the actor).
    pub initial: InitialMode,
    /// `[health]`: the `unhealthy` trigger applies the same rules as `/health`.
    pub health: HealthConfig,
}

/// A reply that comes once a change is stored (or storing it failed).
pub type ChangeReply = RpcReplyPort<Result<(), String>>;

/// Messages of the fail-safe.
pub enum FailSafeMsg {
    /// Report the mode and how it got there.
    Status(RpcReplyPort<FailSafeStatus>),
    /// Internal: one of the actor's helper tasks panicked ([`crate::task::spawn_helper`]); the
    /// handler fails with the reason, so the supervisor restarts the fail-safe.
    TaskPanicked(String),
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
    /// Internal: this run's recovery report was found in the store at load time.
    RecoveredEarlier,
    /// Internal: the run marker's start time, found in the store at load time (the baseline for
    /// the watch's ages).
    RunStarted(DateTime<Utc>),
    /// Internal: time to evaluate the trigger conditions.
    Evaluate,
    /// Internal: every actor's status, gathered for an evaluation.
    Evaluated(Box<Replies>),
    /// Internal: ask the persister for the stored mode (attempts count from 1).
    Load { attempt: u32 },
    /// Internal: the persister's answer (the stored `"mode"` value, if any).
    Loaded {
        attempt: u32,
        result: Result<Option<Value>, String>,
    },
    /// Internal: the commit of a change to AGGRESSIVE finished.
    Loosened {
        generation: u64,
        to: TradingMode,
        reason: String,
        changed_at: DateTime<Utc>,
        result: Result<(), String>,
        reply: Option<ChangeReply>,
    },
    /// Test-only misbehaviour.
    #[cfg(any(test, feature = "test-hooks"))]
    Hook(crate::hooks::TestHook),
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

/// The `"mode"` state value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMode {
    pub mode: TradingMode,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub changed_at: Option<DateTime<Utc>>,
}

/// The fail-safe actor.
pub struct FailSafeActor;

/// The fail-safe's state.
pub struct FailSafeState {
    args: FailSafeArgs,
    mode: TradingMode,
    loaded: bool,
    /// This run's start-up recovery has finished.
    recovered: bool,
    /// A load is under way (false once loaded or given up).
    loading: bool,
    reason: String,
    changed_at: Option<DateTime<Utc>>,
    /// The mode this run started in, and why (see [`FailSafeStatus::initial_mode`]).
    initial_mode: TradingMode,
    initial_mode_reason: String,
    triggers: u64,
    last_trigger: Option<String>,
    /// Bumped on every in-memory change; a pending change to AGGRESSIVE applies only if unchanged.
    generation: u64,
    /// The trigger conditions' memory.
    watch: Watch,
    /// An evaluation's gather is under way.
    evaluating: bool,
    started: tokio::time::Instant,
    /// The newest checks report.
    checks: Option<ChecksReport>,
}

fn commit_outcome(
    result: Result<
        Result<Result<Committed, StoreError>, tokio::sync::oneshot::error::RecvError>,
        tokio::time::error::Elapsed,
    >,
    timeout: Duration,
) -> Result<(), String> {
    match result {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(_)) => Err("the state-persister dropped the commit".into()),
        Err(_) => Err(format!(
            "the state-persister did not confirm the commit within {} ms",
            timeout.as_millis()
        )),
    }
}

impl FailSafeState {
    fn status(&self) -> FailSafeStatus {
        FailSafeStatus {
            mode: self.mode,
            loaded: self.loaded,
            reason: self.reason.clone(),
            changed_at: self.changed_at,
            initial_mode: self.initial_mode,
            initial_mode_reason: self.initial_mode_reason.clone(),
            triggers: self.triggers,
            last_trigger: self.last_trigger.clone(),
            recovered: self.recovered,
            conditions: self.watch.active(),
            checks: self.checks.clone(),
        }
    }

    fn allow_entry(&self) -> Result<(), String> {
        if !self.loaded {
            return Err(
                "the stored trading mode has not been loaded yet; entries are refused".into(),
            );
        }
        if !self.recovered {
            return Err("start-up recovery has not finished; entries are refused".into());
        }
        if !self.mode.allows_entries() {
            return Err(format!(
                "trading mode is {} ({}); entries are refused",
                self.mode, self.reason
            ));
        }
        Ok(())
    }

    /// Hands `change` to the persister in mailbox order; the receiver yields the commit result.
    fn send_commit(
        &self,
        change: Change,
    ) -> Result<OneshotReceiver<Result<Committed, StoreError>>, String> {
        let persister = self
            .args
            .names
            .lookup::<PersisterMsg>(ChildName::StatePersister)
            .ok_or_else(|| "the state-persister is not running".to_string())?;
        let (tx, rx) = ractor::concurrency::oneshot();
        persister
            .send_message(PersisterMsg::Commit {
                change,
                reply: Some(tx.into()),
            })
            .map_err(|e| format!("could not reach the state-persister: {e}"))?;
        Ok(rx)
    }

    fn mode_change(
        from: TradingMode,
        to: TradingMode,
        reason: &str,
        trigger: Option<&str>,
        changed_at: DateTime<Utc>,
    ) -> Change {
        let mut event = json!({ "from": from, "to": to, "reason": reason });
        if let Some(t) = trigger {
            event["trigger"] = json!(t);
        }
        Change::event("mode_changed", event).set(
            MODE_KEY,
            json!({ "mode": to, "reason": reason, "changed_at": changed_at }),
        )
    }

    /// A change that does not loosen trading: in memory at once, then stored.
    fn restrict(
        &mut self,
        to: TradingMode,
        reason: String,
        trigger: Option<&str>,
        reply: Option<ChangeReply>,
    ) {
        let from = self.mode;
        let now = crate::clock::now();
        self.mode = to;
        self.changed_at = Some(now);
        self.generation += 1;
        if to == TradingMode::Shutdown {
            error!(actor = "fail-safe", %from, %to, reason = %reason, trigger, "trading mode changed");
        } else {
            warn!(actor = "fail-safe", %from, %to, reason = %reason, trigger, "trading mode changed");
        }
        let change = Self::mode_change(from, to, &reason, trigger, now);
        self.reason = reason;
        self.store(change, reply);
    }

    /// Commits `change` and reports the outcome to `reply` (and the log on failure).
    fn store(&self, change: Change, reply: Option<ChangeReply>) {
        let timeout = self.args.config.commit_timeout;
        match self.send_commit(change) {
            Ok(rx) => {
                tokio::spawn(async move {
                    let result = commit_outcome(tokio::time::timeout(timeout, rx).await, timeout);
                    if let Err(e) = &result {
                        error!(actor = "fail-safe", error = %e, "mode change not stored; it holds in memory only until a restart");
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                });
            }
            Err(e) => {
                error!(actor = "fail-safe", error = %e, "mode change not stored; it holds in memory only until a restart");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }

    /// A change to AGGRESSIVE: stored first, applied when the commit is confirmed.
    fn loosen(
        &self,
        myself: &ActorRef<FailSafeMsg>,
        to: TradingMode,
        reason: String,
        reply: Option<ChangeReply>,
    ) {
        let changed_at = crate::clock::now();
        let change = Self::mode_change(self.mode, to, &reason, None, changed_at);
        match self.send_commit(change) {
            Ok(rx) => {
                let timeout = self.args.config.commit_timeout;
                let generation = self.generation;
                let me = myself.clone();
                tokio::spawn(async move {
                    let result = commit_outcome(tokio::time::timeout(timeout, rx).await, timeout);
                    let _ = me.send_message(FailSafeMsg::Loosened {
                        generation,
                        to,
                        reason,
                        changed_at,
                        result,
                        reply,
                    });
                });
            }
            Err(e) => {
                warn!(actor = "fail-safe", %to, error = %e, "mode change refused: it could not be stored");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(format!(
                        "{to} not stored, mode stays {}: {e}",
                        self.mode
                    )));
                }
            }
        }
    }

    fn set_mode(
        &mut self,
        myself: &ActorRef<FailSafeMsg>,
        mode: TradingMode,
        reason: String,
        reply: ChangeReply,
    ) {
        if !self.loaded {
            let mut why =
                "the stored trading mode has not been loaded yet; try again shortly".to_string();
            if !self.loading {
                why.push_str(" (loading it again now)");
                self.loading = true;
                let _ = myself.send_message(FailSafeMsg::Load { attempt: 1 });
            }
            let _ = reply.send(Err(why));
            return;
        }
        if mode == self.mode {
            let _ = reply.send(Ok(()));
            return;
        }
        if self.mode == TradingMode::Shutdown && mode == TradingMode::Aggressive {
            let _ = reply.send(Err(
                "SHUTDOWN is cleared to OBSERVE_ONLY first, then to AGGRESSIVE".into(),
            ));
            return;
        }
        if mode.allows_entries() {
            self.loosen(myself, mode, reason, Some(reply));
        } else {
            let clears_shutdown = self.mode == TradingMode::Shutdown;
            self.restrict(mode, reason, None, Some(reply));
            if clears_shutdown {
                self.resolve_shutdown_alerts();
            }
        }
    }

    /// An operator cleared SHUTDOWN: the open `failsafe:*` alerts that announced it are over
    /// (resolved, so Alertmanager and the other sinks see them end). Asked in a task: the
    /// handler never waits on another actor. A condition that still holds triggers again.
    fn resolve_shutdown_alerts(&self) {
        let Some(alert) = self.args.names.lookup::<AlertMsg>(ChildName::Alert) else {
            warn!(
                actor = "fail-safe",
                "alert actor not running; fail-safe alerts stay open"
            );
            return;
        };
        let timeout = self.args.health.actor_timeout;
        tokio::spawn(async move {
            let reply = crate::health::ask(Some(alert.clone()), AlertMsg::Status, timeout).await;
            let Some(status) = reply.answered() else {
                warn!(actor = "fail-safe", alert = %reply.describe(), "alert actor did not answer; fail-safe alerts stay open");
                return;
            };
            for record in status.open_alerts.iter().cloned() {
                if crate::alert::alert_kind(&record.key) == Some("failsafe") {
                    info!(actor = "fail-safe", key = %record.key, "SHUTDOWN cleared by the operator: resolving its alert");
                    let _ = alert.send_message(AlertMsg::Resolve { key: record.key });
                }
            }
        });
    }

    fn trigger(&mut self, trigger: String, reason: String, reply: Option<ChangeReply>) {
        self.triggers += 1;
        self.last_trigger = Some(trigger.clone());
        let previous = self.mode;
        self.raise_alert(&trigger, &reason, previous);
        if previous == TradingMode::Shutdown {
            // Already latched: keep the first cause as the reason, but put this one on record.
            error!(actor = "fail-safe", trigger = %trigger, reason = %reason, "fail-safe triggered again while in SHUTDOWN");
            let change = Change::event(
                "failsafe_triggered",
                json!({ "trigger": trigger, "reason": reason, "mode": TradingMode::Shutdown }),
            );
            self.store(change, reply);
        } else {
            let text = format!("{trigger}: {reason}");
            self.restrict(TradingMode::Shutdown, text, Some(&trigger), reply);
        }
    }

    fn raise_alert(&self, trigger: &str, reason: &str, previous: TradingMode) {
        let alert = Alert {
            key: format!("failsafe:{trigger}"),
            severity: Severity::Critical,
            title: "Fail-safe triggered: trading is SHUTDOWN".into(),
            message: format!("fail-safe trigger {trigger}: {reason}"),
            root_cause: reason.to_string(),
            recommended_action: "Find and fix the cause, then set the mode to OBSERVE_ONLY and, \
                                 once satisfied, to AGGRESSIVE"
                .into(),
            metadata: json!({ "trigger": trigger, "previous_mode": previous }),
        };
        self.send_alert(alert);
    }

    fn send_alert(&self, alert: Alert) {
        match self.args.names.lookup::<AlertMsg>(ChildName::Alert) {
            Some(a) => {
                if let Err(e) = a.send_message(AlertMsg::Raise(alert)) {
                    warn!(actor = "fail-safe", error = %e, "could not raise the fail-safe alert");
                }
            }
            None => warn!(
                actor = "fail-safe",
                key = %alert.key, "alert actor not running; fail-safe alert only logged"
            ),
        }
    }

    /// Gathers every actor's status in a task (never waiting in the handler) and schedules the
    /// next evaluation. Nothing is evaluated before the stored mode is loaded.
    fn start_evaluation(&mut self, myself: &ActorRef<FailSafeMsg>) {
        let config = &self.args.config.triggers;
        myself.send_after(config.evaluate_interval, || FailSafeMsg::Evaluate);
        if !self.loaded || self.evaluating {
            return;
        }
        self.evaluating = true;
        let names = self.args.names.clone();
        let timeout = self.args.health.actor_timeout;
        let me = myself.clone();
        crate::task::spawn_helper(myself, "evaluate", FailSafeMsg::TaskPanicked, async move {
            crate::test_points::point("failsafe_evaluate");
            let replies = crate::health::gather(&names, timeout).await;
            let _ = me.send_message(FailSafeMsg::Evaluated(Box::new(replies)));
        });
    }

    /// A condition of the watch stopped holding: its alert is resolved. Mode changes are never
    /// undone by the watch (a lost heartbeat's OBSERVE_ONLY stays until the operator sets the
    /// mode; `/health` and `tradebaas_trading_mode` keep showing it).
    fn on_ended(&mut self, trigger: &'static str) {
        let key = match trigger {
            triggers::DISK_LOW => DISK_ALERT_KEY,
            "heartbeat_missing" => "heartbeat:missing",
            _ => return,
        };
        info!(
            actor = "fail-safe",
            trigger, key, "condition ended: resolving its alert"
        );
        if let Some(a) = self.args.names.lookup::<AlertMsg>(ChildName::Alert) {
            let _ = a.send_message(AlertMsg::Resolve { key: key.into() });
        }
    }

    /// Applies one finding of the watch.
    fn act_on(&mut self, finding: Finding) {
        match finding.action {
            Action::Alert => {
                warn!(actor = "fail-safe", trigger = finding.trigger, reason = %finding.reason, "disk space below the floor");
                self.send_alert(Alert {
                    key: DISK_ALERT_KEY.into(),
                    severity: Severity::Warning,
                    title: "Disk space below the floor: free space before writes fail".into(),
                    message: finding.reason.clone(),
                    root_cause: finding.reason.clone(),
                    recommended_action: "Free space on the data directory's filesystem (old \
                                         backups, logs) or grow it; trading goes on, but once \
                                         writes fail the fail-safe latches SHUTDOWN \
                                         (event_log_failing)"
                        .into(),
                    metadata: json!({ "trigger": finding.trigger }),
                });
            }
            Action::Shutdown => self.trigger(finding.trigger.to_owned(), finding.reason, None),
            Action::ObserveOnly => {
                self.triggers += 1;
                self.last_trigger = Some(finding.trigger.to_owned());
                error!(actor = "fail-safe", trigger = finding.trigger, reason = %finding.reason, "restricting to OBSERVE_ONLY");
                self.send_alert(Alert {
                    key: format!(
                        "heartbeat:{}",
                        finding.trigger.trim_start_matches("heartbeat_")
                    ),
                    severity: Severity::Critical,
                    title: "Heartbeat lost: trading is OBSERVE_ONLY".into(),
                    message: finding.reason.clone(),
                    root_cause: finding.reason.clone(),
                    recommended_action: "Read the heartbeat and supervisor logs for a wedged or \
                                         crashed actor; once /health is healthy, set the mode \
                                         with `tradebaas mode aggressive --reason …`"
                        .into(),
                    metadata: json!({ "trigger": finding.trigger, "previous_mode": self.mode }),
                });
                if strictness(TradingMode::ObserveOnly) > strictness(self.mode) {
                    let reason = format!("{}: {}", finding.trigger, finding.reason);
                    self.restrict(
                        TradingMode::ObserveOnly,
                        reason,
                        Some(finding.trigger),
                        None,
                    );
                }
            }
        }
    }

    fn start_load(&mut self, myself: &ActorRef<FailSafeMsg>, attempt: u32) {
        self.loading = true;
        let names = self.args.names.clone();
        let timeout = self.args.config.load_timeout;
        let me = myself.clone();
        tokio::spawn(async move {
            let result = match crate::persister::load_state(&names, timeout).await {
                Ok(mut state) => {
                    if recovered_this_run(&state) {
                        let _ = me.send_message(FailSafeMsg::RecoveredEarlier);
                    }
                    if let Some(t) = run_started(&state) {
                        let _ = me.send_message(FailSafeMsg::RunStarted(t));
                    }
                    Ok(state.remove(MODE_KEY))
                }
                Err(e) => Err(e),
            };
            let _ = me.send_message(FailSafeMsg::Loaded { attempt, result });
        });
    }

    fn on_loaded(
        &mut self,
        myself: &ActorRef<FailSafeMsg>,
        attempt: u32,
        result: Result<Option<Value>, String>,
    ) {
        if self.loaded {
            return;
        }
        let stored = match result {
            Ok(stored) => stored,
            Err(e) => {
                let attempts = self.args.config.load_attempts;
                if attempt < attempts {
                    warn!(actor = "fail-safe", attempt, attempts, error = %e, "could not load the stored trading mode; retrying");
                    let next = attempt + 1;
                    myself.send_after(self.args.config.load_retry_delay, move || {
                        FailSafeMsg::Load { attempt: next }
                    });
                } else {
                    self.loading = false;
                    self.reason = format!("stored trading mode could not be loaded: {e}");
                    self.initial_mode = self.mode;
                    self.initial_mode_reason = format!(
                        "the store could not be read, so neither a stored mode nor the configured \
                         initial mode {} was applied: {e}",
                        self.args.initial.mode
                    );
                    error!(
                        actor = "fail-safe",
                        attempts,
                        error = %e,
                        mode = %self.mode,
                        "giving up loading the stored trading mode; entries stay refused until an operator sets a mode or the fail-safe restarts"
                    );
                }
                return;
            }
        };
        self.loaded = true;
        self.loading = false;
        let initial = self.args.initial.clone();
        if self.mode == TradingMode::Shutdown {
            // A trigger arrived before the load finished; it is newer and already stored.
            self.initial_mode = TradingMode::Shutdown;
            self.initial_mode_reason = format!(
                "a fail-safe trigger latched SHUTDOWN before the stored mode was read ({})",
                self.reason
            );
            info!(
                actor = "fail-safe",
                initial_mode = %self.initial_mode,
                initial_mode_reason = %self.initial_mode_reason,
                "stored trading mode loaded; keeping the SHUTDOWN triggered meanwhile"
            );
            return;
        }
        match stored.map(serde_json::from_value::<StoredMode>) {
            Some(Ok(s)) => {
                // Recovery: what the store says wins over the configuration.
                self.initial_mode = s.mode;
                self.initial_mode_reason = format!(
                    "the stored mode takes precedence over the configured initial mode {} ({}); \
                     stored: {} ({})",
                    initial.mode, initial.reason, s.mode, s.reason
                );
                info!(
                    actor = "fail-safe",
                    mode = %s.mode,
                    reason = %s.reason,
                    initial_mode = %self.initial_mode,
                    initial_mode_reason = %self.initial_mode_reason,
                    "stored trading mode loaded; trading starts {}", s.mode
                );
                if s.mode != self.mode {
                    self.generation += 1;
                }
                self.mode = s.mode;
                self.reason = s.reason;
                self.changed_at = s.changed_at;
            }
            Some(Err(e)) => {
                // Fail closed: an unreadable mode might have been SHUTDOWN.
                let reason = format!("stored trading mode is unreadable ({e}); latched for safety");
                self.initial_mode = TradingMode::Shutdown;
                self.initial_mode_reason = format!(
                    "{reason}; the configured initial mode {} is not applied",
                    initial.mode
                );
                self.raise_alert("unreadable_mode", &reason, self.mode);
                self.restrict(TradingMode::Shutdown, reason, Some("unreadable_mode"), None);
            }
            None => {
                self.initial_mode = initial.mode;
                self.initial_mode_reason = initial.reason.clone();
                let reason = format!("initial mode (nothing stored): {}", initial.reason);
                info!(
                    actor = "fail-safe",
                    mode = %initial.mode,
                    initial_mode = %initial.mode,
                    initial_mode_reason = %initial.reason,
                    "no stored trading mode; trading starts {} (the initial mode)", initial.mode
                );
                if initial.mode.allows_entries() {
                    self.loosen(myself, initial.mode, reason, None);
                } else {
                    self.restrict(initial.mode, reason, None, None);
                }
            }
        }
    }
}

impl Actor for FailSafeActor {
    type Msg = FailSafeMsg;
    type State = FailSafeState;
    type Arguments = FailSafeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // The load is a message to ourselves so that pre_start (which the supervisor awaits)
        // stays fast; until it is answered the mode is OBSERVE_ONLY and entries are refused.
        myself.send_message(FailSafeMsg::Load { attempt: 1 })?;
        myself.send_after(args.config.triggers.evaluate_interval, || {
            FailSafeMsg::Evaluate
        });
        let watch = Watch::new(
            args.config.triggers.clone(),
            args.health.clone(),
            crate::clock::now(),
        );
        let initial_mode = args.initial.mode;
        let initial_mode_reason = format!(
            "{}; not applied yet: the store is being read (a stored mode takes precedence)",
            args.initial.reason
        );
        Ok(FailSafeState {
            args,
            mode: TradingMode::ObserveOnly,
            loaded: false,
            recovered: false,
            loading: true,
            reason: "starting: the stored mode is not loaded yet".into(),
            changed_at: None,
            initial_mode,
            initial_mode_reason,
            triggers: 0,
            last_trigger: None,
            generation: 0,
            watch,
            evaluating: false,
            started: tokio::time::Instant::now(),
            checks: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FailSafeMsg::TaskPanicked(reason) => return Err(reason.into()),
            FailSafeMsg::RecoveryFinished | FailSafeMsg::RecoveredEarlier => {
                if !state.recovered {
                    info!(
                        actor = "fail-safe",
                        "start-up recovery finished; entries follow the mode"
                    );
                }
                state.recovered = true;
            }
            FailSafeMsg::RunStarted(t) => state.watch.set_since(t),
            FailSafeMsg::Evaluate => state.start_evaluation(&myself),
            FailSafeMsg::Evaluated(replies) => {
                state.evaluating = false;
                let uptime = state.started.elapsed();
                let findings = state.watch.evaluate(&replies, crate::clock::now(), uptime);
                for finding in findings {
                    state.act_on(finding);
                }
                for ended in state.watch.take_ended() {
                    state.on_ended(ended);
                }
            }
            FailSafeMsg::ChecksReported(report) => state.checks = Some(report),
            FailSafeMsg::AllowEntry(reply) => {
                let _ = reply.send(state.allow_entry());
            }
            FailSafeMsg::GetMode(reply) => {
                let _ = reply.send(state.mode);
            }
            FailSafeMsg::Trigger {
                trigger,
                reason,
                reply,
            } => state.trigger(trigger, reason, reply),
            FailSafeMsg::SetMode {
                mode,
                reason,
                reply,
            } => state.set_mode(&myself, mode, reason, reply),
            FailSafeMsg::Restrict {
                mode,
                reason,
                reply,
            } => {
                if !state.loaded || strictness(mode) > strictness(state.mode) {
                    state.set_mode(&myself, mode, reason, reply);
                } else if strictness(mode) < strictness(state.mode) {
                    // Already stricter (e.g. SHUTDOWN): nothing to do.
                    let _ = reply.send(Ok(()));
                } else {
                    // Same mode: restate it anyway. This bumps the generation, so a loosening
                    // still being stored (e.g. the initial AGGRESSIVE) is not applied after us.
                    state.restrict(mode, reason, None, Some(reply));
                }
            }
            FailSafeMsg::Load { attempt } => state.start_load(&myself, attempt),
            FailSafeMsg::Loaded { attempt, result } => state.on_loaded(&myself, attempt, result),
            FailSafeMsg::Loosened {
                generation,
                to,
                reason,
                changed_at,
                result,
                reply,
            } => {
                let outcome = match result {
                    Err(e) => {
                        warn!(actor = "fail-safe", %to, error = %e, "mode change refused: it could not be stored");
                        Err(format!("{to} not stored, mode stays {}: {e}", state.mode))
                    }
                    Ok(()) if generation != state.generation => Err(format!(
                        "the mode changed to {} while {to} was being stored; not applied",
                        state.mode
                    )),
                    Ok(()) => {
                        warn!(actor = "fail-safe", from = %state.mode, %to, reason = %reason, "trading mode changed");
                        state.mode = to;
                        state.reason = reason;
                        state.changed_at = Some(changed_at);
                        state.generation += 1;
                        Ok(())
                    }
                };
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
            FailSafeMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            FailSafeMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            #[cfg(any(test, feature = "test-hooks"))]
            FailSafeMsg::Hook(hook) => hook.act(&myself.get_cell()).await?,
        }
        Ok(())
    }
}

/// Whether the stored recovery report (`recovery.last`) was written during this run, i.e. after
/// the run marker (`run.started_at`, written before the tree starts). A fail-safe restarted
/// mid-run uses this to know recovery already happened.
fn recovered_this_run(state: &std::collections::BTreeMap<String, Value>) -> bool {
    let time = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    };
    let started = time(
        state
            .get(crate::store::RUN_KEY)
            .and_then(|r| r.get("started_at")),
    );
    let finished = time(
        state
            .get(crate::recovery::RECOVERY_KEY)
            .and_then(|r| r.get("finished_at")),
    );
    matches!((started, finished), (Some(s), Some(f)) if f >= s)
}

/// The stored run marker's start time (`run.started_at`).
fn run_started(state: &std::collections::BTreeMap<String, Value>) -> Option<DateTime<Utc>> {
    state
        .get(crate::store::RUN_KEY)
        .and_then(|r| r.get("started_at"))
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// How much a mode restricts trading: AGGRESSIVE < OBSERVE_ONLY < SHUTDOWN.
fn strictness(mode: TradingMode) -> u8 {
    match mode {
        TradingMode::Aggressive => 0,
        TradingMode::ObserveOnly => 1,
        TradingMode::Shutdown => 2,
    }
}

#[cfg(test)]
mod tests;
