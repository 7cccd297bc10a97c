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
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::protocol::alert::Alert;
use crate::protocol::dispatch;

use crate::checks::ChecksReport;
use crate::client;
use crate::health::{HealthConfig, Replies};
use crate::mode::TradingMode;
pub use crate::model::{MODE_KEY, StoredMode};
use crate::names::Names;
use crate::protocol::Internal;
use crate::protocol::alert::AlertMsg;
pub use crate::protocol::failsafe::{ChangeReply, FailSafeMsg, FailSafeStatus};
use crate::store::Change;

pub mod machine;
pub mod triggers;

use machine::{Effect, Event, ModeMachine, Note};
pub use triggers::TriggerConfig;
use triggers::Watch;

/// The alert raised while the store's filesystem is below `[store] disk_free_floor`.
pub const DISK_ALERT_KEY: &str = "store:disk_low";

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

/// What the FailSafe sends itself, wrapped in [`FailSafeMsg::Internal`].
pub(crate) enum InternalMsg {
    /// One of the actor's helper tasks panicked ([`crate::task::spawn_helper`]); the
    /// handler fails with the reason, so the supervisor restarts the fail-safe.
    TaskPanicked(String),
    /// This run's recovery report was found in the store at load time.
    RecoveredEarlier,
    /// The run marker's start time, found in the store at load time (the baseline for
    /// the watch's ages).
    RunStarted(DateTime<Utc>),
    /// Time to evaluate the trigger conditions.
    Evaluate,
    /// Every actor's status, gathered for an evaluation.
    Evaluated(Box<Replies>),
    /// Ask the persister for the stored mode (attempts count from 1).
    Load { attempt: u32 },
    /// The persister's answer (the stored `"mode"` value, if any).
    Loaded {
        attempt: u32,
        result: Result<Option<Value>, String>,
    },
    /// The commit of a change to AGGRESSIVE finished.
    Loosened {
        change: machine::Loosening,
        result: Result<(), String>,
        reply: Option<ChangeReply>,
    },
}

impl From<InternalMsg> for FailSafeMsg {
    fn from(m: InternalMsg) -> Self {
        FailSafeMsg::Internal(Internal::new(m))
    }
}

/// The fail-safe actor.
pub struct FailSafeActor;

/// The fail-safe's state: the mode machine (every decision) plus what only the actor needs.
pub struct FailSafeState {
    args: FailSafeArgs,
    /// The mode and every decision about it.
    machine: ModeMachine,
    /// The trigger conditions' memory.
    watch: Watch,
    /// An evaluation's gather is under way.
    evaluating: bool,
    started: tokio::time::Instant,
    /// The newest checks report.
    checks: Option<ChecksReport>,
}

impl FailSafeState {
    fn status(&self) -> FailSafeStatus {
        let m = &self.machine;
        FailSafeStatus {
            mode: m.mode(),
            loaded: m.loaded(),
            reason: m.reason().to_owned(),
            changed_at: m.changed_at(),
            initial_mode: m.initial_mode(),
            initial_mode_reason: m.initial_mode_reason().to_owned(),
            triggers: m.triggers(),
            last_trigger: m.last_trigger().map(str::to_owned),
            recovered: m.recovered(),
            conditions: self.watch.active(),
            checks: self.checks.clone(),
        }
    }

    /// Asks the machine about `event` and carries out its effects; `reply` goes to the effect
    /// that answers the caller.
    fn on(&mut self, myself: &ActorRef<FailSafeMsg>, event: Event, reply: Option<ChangeReply>) {
        let effects = self.machine.on(event, crate::clock::now());
        self.carry_out(myself, effects, reply);
    }

    fn carry_out(
        &mut self,
        myself: &ActorRef<FailSafeMsg>,
        effects: Vec<Effect>,
        mut reply: Option<ChangeReply>,
    ) {
        let mut answer = |yes: bool| if yes { reply.take() } else { None };
        for effect in effects {
            match effect {
                Effect::Persist { change, answer: a } => self.store(change, answer(a)),
                Effect::PersistThenApply {
                    change,
                    pending,
                    answer: a,
                } => {
                    let reply = answer(a);
                    match client::send_commit(&self.args.names, change) {
                        Ok(rx) => {
                            let timeout = self.args.config.commit_timeout;
                            let me = myself.clone();
                            tokio::spawn(async move {
                                let result = client::committed(rx, timeout).await.map(|_| ());
                                let loosened = InternalMsg::Loosened {
                                    change: pending,
                                    result,
                                    reply,
                                };
                                let _ = me.send_message(loosened.into());
                            });
                        }
                        // Not even handed to the persister: refused at once, like a failed commit.
                        Err(e) => {
                            let event = Event::Loosened {
                                change: pending,
                                result: Err(e),
                            };
                            self.on(myself, event, reply);
                        }
                    }
                }
                Effect::Reply(outcome) => {
                    if let Some(reply) = answer(true) {
                        let _ = reply.send(outcome);
                    }
                }
                Effect::Raise(alert) => self.send_alert(alert),
                Effect::Resolve(key) => client::resolve(&self.args.names, key),
                Effect::ResolveShutdownAlerts => self.resolve_shutdown_alerts(),
                Effect::ScheduleLoad { attempt, delay } => match delay {
                    None => {
                        let _ = myself.send_message(InternalMsg::Load { attempt }.into());
                    }
                    Some(delay) => {
                        myself.send_after(delay, move || InternalMsg::Load { attempt }.into());
                    }
                },
                Effect::ReadStore { attempt } => self.start_load(myself, attempt),
                Effect::Log(note) => log(note),
            }
        }
    }

    /// Commits `change` and reports the outcome to `reply` (and the log on failure).
    fn store(&self, change: Change, reply: Option<ChangeReply>) {
        let timeout = self.args.config.commit_timeout;
        match client::send_commit(&self.args.names, change) {
            Ok(rx) => {
                tokio::spawn(async move {
                    let result = client::committed(rx, timeout).await.map(|_| ());
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

    /// An operator cleared SHUTDOWN: the open `failsafe:*` alerts that announced it are over
    /// (resolved, so Alertmanager and the other sinks see them end). Asked in a task: the
    /// handler never waits on another actor. A condition that still holds triggers again.
    fn resolve_shutdown_alerts(&self) {
        let Some(alert) = self.args.names.get::<AlertMsg>() else {
            warn!(
                actor = "fail-safe",
                "alert actor not running; fail-safe alerts stay open"
            );
            return;
        };
        let timeout = self.args.health.actor_timeout;
        tokio::spawn(async move {
            let reply = client::ask_ref(Some(alert.clone()), AlertMsg::Status, timeout).await;
            let Some(status) = reply.answered() else {
                warn!(actor = "fail-safe", alert = %reply.describe(), "alert actor did not answer; fail-safe alerts stay open");
                return;
            };
            for record in status.open_alerts.iter().cloned() {
                if crate::protocol::alert::alert_kind(&record.alert.key) == Some("failsafe") {
                    info!(actor = "fail-safe", key = %record.alert.key, "SHUTDOWN cleared by the operator: resolving its alert");
                    let _ = alert.send_message(AlertMsg::Resolve {
                        key: record.alert.key,
                    });
                }
            }
        });
    }

    fn send_alert(&self, alert: Alert) {
        client::raise(&self.args.names, alert);
    }

    /// Gathers every actor's status in a task (never waiting in the handler) and schedules the
    /// next evaluation. Nothing is evaluated before the stored mode is loaded.
    fn start_evaluation(&mut self, myself: &ActorRef<FailSafeMsg>) {
        let config = &self.args.config.triggers;
        myself.send_after(config.evaluate_interval, || InternalMsg::Evaluate.into());
        if !self.machine.loaded() || self.evaluating {
            return;
        }
        self.evaluating = true;
        let names = self.args.names.clone();
        let timeout = self.args.health.actor_timeout;
        let me = myself.clone();
        crate::task::spawn_helper(
            myself,
            "evaluate",
            |r| InternalMsg::TaskPanicked(r).into(),
            async move {
                crate::test_points::point("failsafe_evaluate");
                let replies = crate::health::gather(&names, timeout).await;
                let _ = me.send_message(InternalMsg::Evaluated(Box::new(replies)).into());
            },
        );
    }

    fn start_load(&self, myself: &ActorRef<FailSafeMsg>, attempt: u32) {
        let names = self.args.names.clone();
        let timeout = self.args.config.load_timeout;
        let me = myself.clone();
        tokio::spawn(async move {
            let result = match client::load_state(&names, timeout).await {
                Ok(mut state) => {
                    if recovered_this_run(&state) {
                        let _ = me.send_message(InternalMsg::RecoveredEarlier.into());
                    }
                    if let Some(t) = run_started(&state) {
                        let _ = me.send_message(InternalMsg::RunStarted(t).into());
                    }
                    Ok(state.remove(MODE_KEY))
                }
                Err(e) => Err(e),
            };
            let _ = me.send_message(InternalMsg::Loaded { attempt, result }.into());
        });
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
        myself.send_message(InternalMsg::Load { attempt: 1 }.into())?;
        myself.send_after(args.config.triggers.evaluate_interval, || {
            InternalMsg::Evaluate.into()
        });
        let watch = Watch::new(
            args.config.triggers.clone(),
            args.health.clone(),
            crate::clock::now(),
        );
        let machine = ModeMachine::new(
            args.initial.clone(),
            args.config.load_attempts,
            args.config.load_retry_delay,
        );
        Ok(FailSafeState {
            args,
            machine,
            watch,
            evaluating: false,
            started: tokio::time::Instant::now(),
            checks: None,
        })
    }

    dispatch!(FailSafeMsg, "fail-safe", |myself, msg, state| match msg {
        FailSafeMsg::RecoveryFinished => state.on(&myself, Event::RecoveryFinished, None),
        FailSafeMsg::ChecksReported(report) => state.checks = Some(report),
        FailSafeMsg::AllowEntry(reply) => {
            let _ = reply.send(state.machine.allow_entry());
        }
        FailSafeMsg::GetMode(reply) => {
            let _ = reply.send(state.machine.mode());
        }
        FailSafeMsg::Trigger {
            trigger,
            reason,
            reply,
        } => state.on(&myself, Event::Trigger { trigger, reason }, reply),
        FailSafeMsg::SetMode {
            mode,
            reason,
            reply,
        } => state.on(&myself, Event::SetMode { mode, reason }, Some(reply)),
        FailSafeMsg::Restrict {
            mode,
            reason,
            reply,
        } => state.on(&myself, Event::Restrict { mode, reason }, Some(reply)),
    });
}

/// The actor's messages to itself ([`InternalMsg`]).
async fn handle_internal(
    myself: ActorRef<FailSafeMsg>,
    msg: InternalMsg,
    state: &mut FailSafeState,
) -> Result<(), ActorProcessingErr> {
    match msg {
        InternalMsg::TaskPanicked(reason) => return Err(reason.into()),
        InternalMsg::RecoveredEarlier => state.on(&myself, Event::RecoveryFinished, None),
        InternalMsg::RunStarted(t) => state.watch.set_since(t),
        InternalMsg::Evaluate => state.start_evaluation(&myself),
        InternalMsg::Evaluated(replies) => {
            state.evaluating = false;
            let uptime = state.started.elapsed();
            let findings = state.watch.evaluate(&replies, crate::clock::now(), uptime);
            for finding in findings {
                state.on(&myself, Event::Finding(finding), None);
            }
            for ended in state.watch.take_ended() {
                state.on(&myself, Event::Ended(ended), None);
            }
        }
        InternalMsg::Load { attempt } => state.on(&myself, Event::Load { attempt }, None),
        InternalMsg::Loaded { attempt, result } => {
            state.on(&myself, Event::Loaded { attempt, result }, None);
        }
        InternalMsg::Loosened {
            change,
            result,
            reply,
        } => state.on(&myself, Event::Loosened { change, result }, reply),
    }
    Ok(())
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

/// Writes the log line the machine asked for (stable fields, the level an operator wants).
fn log(note: Note) {
    match note {
        Note::Recovered => info!(
            actor = "fail-safe",
            "start-up recovery finished; entries follow the mode"
        ),
        Note::ModeChanged {
            from,
            to,
            reason,
            trigger,
        } => {
            let trigger = trigger.as_deref();
            if to == TradingMode::Shutdown {
                error!(actor = "fail-safe", %from, %to, reason = %reason, trigger, "trading mode changed");
            } else {
                warn!(actor = "fail-safe", %from, %to, reason = %reason, trigger, "trading mode changed");
            }
        }
        Note::ChangeRefused { to, error } => {
            warn!(actor = "fail-safe", %to, error = %error, "mode change refused: it could not be stored");
        }
        Note::TriggeredAgain { trigger, reason } => {
            error!(actor = "fail-safe", trigger = %trigger, reason = %reason, "fail-safe triggered again while in SHUTDOWN");
        }
        Note::RestrictingToObserveOnly { trigger, reason } => {
            error!(actor = "fail-safe", trigger = %trigger, reason = %reason, "restricting to OBSERVE_ONLY");
        }
        Note::DiskLow { trigger, reason } => {
            warn!(actor = "fail-safe", trigger = %trigger, reason = %reason, "disk space below the floor");
        }
        Note::ConditionEnded { trigger, key } => info!(
            actor = "fail-safe",
            trigger, key, "condition ended: resolving its alert"
        ),
        Note::LoadRetry {
            attempt,
            attempts,
            error,
        } => {
            warn!(actor = "fail-safe", attempt, attempts, error = %error, "could not load the stored trading mode; retrying");
        }
        Note::LoadGaveUp {
            attempts,
            error,
            mode,
        } => error!(
            actor = "fail-safe",
            attempts,
            error = %error,
            mode = %mode,
            "giving up loading the stored trading mode; entries stay refused until an operator sets a mode or the fail-safe restarts"
        ),
        Note::KeptShutdown {
            initial_mode,
            initial_mode_reason,
        } => info!(
            actor = "fail-safe",
            initial_mode = %initial_mode,
            initial_mode_reason = %initial_mode_reason,
            "stored trading mode loaded; keeping the SHUTDOWN triggered meanwhile"
        ),
        Note::StoredLoaded {
            mode,
            reason,
            initial_mode,
            initial_mode_reason,
        } => info!(
            actor = "fail-safe",
            mode = %mode,
            reason = %reason,
            initial_mode = %initial_mode,
            initial_mode_reason = %initial_mode_reason,
            "stored trading mode loaded; trading starts {}", mode
        ),
        Note::NothingStored { initial } => info!(
            actor = "fail-safe",
            mode = %initial.mode,
            initial_mode = %initial.mode,
            initial_mode_reason = %initial.reason,
            "no stored trading mode; trading starts {} (the initial mode)", initial.mode
        ),
    }
}

#[cfg(test)]
mod tests;
