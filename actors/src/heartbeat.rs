//! The `heartbeat` actor: proves every sibling still answers, tells systemd so, and samples the
//! process's memory, CPU and error rate.
//!
//! Every round it pings the other five children by name, concurrently and each with
//! `ping_timeout`, and samples system stats, all in a task that reports back by message, so the
//! heartbeat itself never blocks and answers `Status` while a sibling is wedged. A round runs every
//! `interval`, and at least every half of the systemd watchdog interval when one is set
//! ([`round_interval`]).
//!
//! After a round in which every child answered it sends `WATCHDOG=1` (and a `STATUS=` line)
//! through the [`SdNotifier`] it was given; after any other round only the status line, so a wedged
//! daemon stops feeding the watchdog and systemd restarts it. There is no independent watchdog
//! timer: the ping is the proof of liveness.
//!
//! A child the supervisor reports `escalated` (past its restart intensity, left stopped on
//! purpose; ADR 0002) is not expected to answer: each round asks the supervisor's status by
//! message, and such a child neither withholds `WATCHDOG=1` nor counts as unanswered. The watchdog
//! proves the process is not wedged; an escalation is reported by `/health` (503), the
//! `escalation:<child>` alert and SHUTDOWN, and a watchdog restart would only bring the same fault
//! back (or, past `StartLimitBurst`, leave the service down without health output). If the
//! supervisor does not answer, no child counts as escalated (fail closed: no `WATCHDOG=1`).
//!
//! A child that misses `unanswered_rounds` consecutive rounds restricts trading to OBSERVE_ONLY
//! through the fail-safe (`Restrict`, never `SetMode`: it cannot clear SHUTDOWN) and raises a
//! CRITICAL alert `heartbeat:unanswered:<child>`; the alert is resolved when the child answers
//! again (the mode stays restricted: loosening it is the operator's decision).
//!
//! Every `event_interval` it commits a `heartbeat` event (uptime, round trips, unanswered
//! children) through the persister, awaited in a task.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::protocol::alert::Alert;
use crate::protocol::dispatch;

use crate::client::{self, commit_change};
use crate::metrics::Metrics;
use crate::mode::TradingMode;
use crate::names::{ChildName, Names};
use crate::notify::SdNotifier;
use crate::protocol::Internal;
use crate::protocol::alert::Severity;
use crate::protocol::failsafe::FailSafeMsg;
pub use crate::protocol::heartbeat::{HeartbeatMsg, HeartbeatStatus};
use crate::store::Change;

mod config;
mod probe;
pub mod round;
mod rules;
pub mod sampler;
pub use config::{HeartbeatConfig, round_interval};
pub use probe::BeatReport;
use probe::round;
pub use round::{PingOutcome, RoundBook};
pub use rules::{ErrorWindow, Misses, Verdict};
pub use sampler::{LimitSource, Sampler, SystemSources, SystemStats};
// Used by the test module through `use super::*`.
#[cfg(test)]
use config::MIN_ROUND;

/// What the heartbeat is spawned with.
#[derive(Clone)]
pub struct HeartbeatArgs {
    pub names: Names,
    pub config: HeartbeatConfig,
    /// Where `tradebaas_errors_total` is read for the error rate.
    pub metrics: Metrics,
    /// systemd's notify socket and watchdog interval; `None` outside systemd.
    pub notifier: Option<SdNotifier>,
    /// When the daemon started (the uptime of the heartbeat event; survives restarts of the
    /// heartbeat because the arguments are cloned).
    pub started: std::time::Instant,
    /// Where system stats are read (`/proc`, `/sys`; fake trees in tests).
    pub sources: SystemSources,
}

impl HeartbeatArgs {
    /// Arguments without a notifier, started now.
    pub fn new(names: Names, config: HeartbeatConfig, metrics: Metrics) -> Self {
        Self {
            names,
            config,
            metrics,
            notifier: None,
            started: std::time::Instant::now(),
            sources: SystemSources::default(),
        }
    }
}

/// What the Heartbeat sends itself, wrapped in [`HeartbeatMsg::Internal`].
pub(crate) enum InternalMsg {
    /// A helper task panicked ([`crate::task::spawn_helper`]): fail, to be restarted.
    TaskPanicked(String),
    /// Time for a round.
    Beat,
    /// A round finished (boxed: the sampler it hands back is large).
    BeatDone(Box<BeatReport>),
    /// Time to write a `heartbeat` event.
    Record,
}

impl From<InternalMsg> for HeartbeatMsg {
    fn from(m: InternalMsg) -> Self {
        HeartbeatMsg::Internal(Internal::new(m))
    }
}

/// How long the heartbeat waits for the fail-safe and the persister in its background tasks.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// The window of the error rate.
const ERROR_WINDOW: Duration = Duration::from_secs(60);

/// The heartbeat actor.
pub struct HeartbeatActor;

/// The heartbeat's state.
pub struct HeartbeatState {
    args: HeartbeatArgs,
    /// The round interval in effect ([`round_interval`]).
    round: Duration,
    /// The ping timeout in effect: `ping_timeout`, at most one round.
    ping_timeout: Duration,
    ticker: Option<JoinHandle<()>>,
    event_ticker: Option<JoinHandle<()>>,
    /// The running round and when it started.
    in_flight: Option<(Instant, tokio::task::AbortHandle)>,
    /// The running `heartbeat` event commit.
    recording: Option<JoinHandle<()>>,
    /// Lent to the running round, `None` meanwhile.
    sampler: Option<Sampler>,
    /// What the rounds showed, and every decision about it.
    rounds: RoundBook,
    system: SystemStats,
    errors: ErrorWindow,
    error_rate: f64,
}

impl HeartbeatState {
    fn new(args: HeartbeatArgs) -> Self {
        let watchdog = args.notifier.as_ref().and_then(SdNotifier::watchdog);
        let round = round_interval(&args.config, watchdog);
        let ping_timeout = args.config.ping_timeout.min(round);
        Self {
            args,
            round,
            ping_timeout,
            ticker: None,
            event_ticker: None,
            in_flight: None,
            recording: None,
            sampler: None,
            rounds: RoundBook::default(),
            system: SystemStats::default(),
            errors: ErrorWindow::new(ERROR_WINDOW),
            error_rate: 0.0,
        }
    }

    fn sample_errors(&mut self) {
        self.error_rate = self
            .errors
            .per_minute(Instant::now(), self.args.metrics.errors.get());
    }

    fn start_round(&mut self, myself: &ActorRef<HeartbeatMsg>) {
        self.sample_errors();
        // A round ends within ping_timeout plus a sample; one older than this lost its task.
        let stale = self.ping_timeout * 2 + Duration::from_secs(1);
        if let Some((started, _)) = &self.in_flight
            && started.elapsed() < stale
        {
            debug!(
                actor = "heartbeat",
                "previous round still running; skipping this beat"
            );
            return;
        }
        let sampler = self
            .sampler
            .take()
            .or_else(|| Some(Sampler::new(self.args.sources.clone())));
        let names = self.args.names.clone();
        let timeout = self.ping_timeout;
        let me = myself.clone();
        let task = crate::task::spawn_helper(
            myself,
            "round",
            |r| InternalMsg::TaskPanicked(r).into(),
            async move {
                let report = round(names, timeout, sampler).await;
                let _ = me.send_message(InternalMsg::BeatDone(Box::new(report)).into());
            },
        );
        if let Some((_, old)) = self.in_flight.replace((Instant::now(), task)) {
            old.abort();
        }
    }

    fn finish_round(&mut self, report: BeatReport) {
        self.in_flight = None;
        if report.sampler.is_some() {
            self.sampler = report.sampler;
        }
        if let Some(system) = report.system {
            self.system = system;
        }
        let effects = self.rounds.on_round(
            report.pings,
            report.escalated,
            report.mode,
            self.args.config.unanswered_rounds,
            crate::clock::now(),
        );
        for effect in effects {
            match effect {
                round::Effect::Escalated(child) => warn!(actor = "heartbeat", child = %child,
                    "actor escalated: no longer expected to answer (see its escalation alert)"),
                round::Effect::AnswersAgain(child) => {
                    info!(actor = "heartbeat", child = %child, "actor answers again");
                }
                round::Effect::Silent(child, outcome) => warn!(
                    actor = "heartbeat",
                    child = %child,
                    outcome = outcome.describe(),
                    "actor does not answer its heartbeat"
                ),
                round::Effect::Wedged {
                    child,
                    outcome,
                    rounds,
                } => self.wedged(child, outcome, rounds),
                round::Effect::Resolve { child, why } => self.resolve(child, why),
                round::Effect::Systemd { feed, status } => {
                    if let Some(notifier) = &self.args.notifier {
                        if feed {
                            notifier.watchdog_ok(&status);
                        } else {
                            notifier.status(&status);
                        }
                    }
                }
            }
        }
    }

    fn alert_key(child: ChildName) -> String {
        format!("heartbeat:unanswered:{child}")
    }

    /// `child` missed `rounds` consecutive rounds: OBSERVE_ONLY and a CRITICAL alert.
    fn wedged(&self, child: ChildName, outcome: PingOutcome, rounds: u32) {
        let names = &self.args.names;
        let reason = format!(
            "heartbeat: {child} did not answer {rounds} consecutive rounds ({})",
            outcome.describe()
        );
        error!(actor = "heartbeat", child = %child, rounds, outcome = outcome.describe(),
            "actor wedged: restricting trading to OBSERVE_ONLY");
        client::raise(
            names,
            Alert {
                key: Self::alert_key(child),
                severity: Severity::Critical,
                title: format!("{child} does not answer its heartbeat"),
                message: format!("{reason}; trading is restricted to OBSERVE_ONLY"),
                root_cause: format!("{child}: {}", outcome.describe()),
                recommended_action: format!(
                    "Read the log of {child} around this time. If it answers again the alert \
                     resolves; the mode stays OBSERVE_ONLY until an operator sets it back. If \
                     it stays silent, systemd's watchdog restarts the service."
                ),
                metadata: json!({
                    "actor": child.as_str(),
                    "rounds": rounds,
                    "outcome": outcome.describe(),
                    "ping_timeout_ms": u64::try_from(self.ping_timeout.as_millis()).unwrap_or(u64::MAX),
                }),
            },
        );
        if names.get::<FailSafeMsg>().is_none() {
            error!(
                actor = "heartbeat",
                "fail-safe not running; entries stay refused (fail closed)"
            );
            return;
        }
        let names = names.clone();
        tokio::spawn(async move {
            let outcome =
                client::restrict_once(&names, TradingMode::ObserveOnly, reason, PEER_TIMEOUT).await;
            match outcome {
                Ok(Ok(())) => {
                    info!(actor = "heartbeat", child = %child, "trading restricted to OBSERVE_ONLY")
                }
                Ok(Err(e)) => {
                    error!(actor = "heartbeat", error = %e, "OBSERVE_ONLY not stored")
                }
                Err(_) => error!(
                    actor = "heartbeat",
                    "fail-safe did not answer the restriction"
                ),
            }
        });
    }

    /// Resolves `child`'s heartbeat alert.
    fn resolve(&self, child: ChildName, why: &str) {
        info!(actor = "heartbeat", child = %child, "{why}; heartbeat alert resolved");
        client::resolve(&self.args.names, Self::alert_key(child));
    }

    /// Commits a `heartbeat` event in a task (one at a time).
    fn record(&mut self) {
        if self.recording.as_ref().is_some_and(|t| !t.is_finished()) {
            debug!(
                actor = "heartbeat",
                "previous heartbeat event still being stored"
            );
            return;
        }
        let unanswered: Vec<&str> = self
            .rounds
            .unanswered()
            .iter()
            .map(|c| c.as_str())
            .collect();
        let change = Change::event(
            "heartbeat",
            json!({
                "uptime_seconds": self.args.started.elapsed().as_secs(),
                "beats": self.rounds.beats(),
                "round_trip_ms": self.rounds.round_trip_ms(),
                "unanswered": unanswered,
                "mode": self.rounds.mode(),
                "error_rate_per_minute": self.error_rate,
            }),
        );
        let names = self.args.names.clone();
        self.recording = Some(tokio::spawn(async move {
            if let Err(e) = commit_change(&names, change, PEER_TIMEOUT).await {
                warn!(actor = "heartbeat", error = %e, "heartbeat event not stored");
            }
        }));
    }

    fn status(&self) -> HeartbeatStatus {
        HeartbeatStatus {
            beats: self.rounds.beats(),
            last_beat_at: self.rounds.last_beat_at(),
            round_trip_ms: self.rounds.round_trip_ms().clone(),
            unanswered: self
                .rounds
                .unanswered()
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
            absent: self.rounds.absent().to_vec(),
            escalated: self
                .rounds
                .escalated()
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
            system: SystemStats {
                error_rate_per_minute: self.error_rate,
                ..self.system.clone()
            },
            interval_ms: u64::try_from(self.round.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl Actor for HeartbeatActor {
    type Msg = HeartbeatMsg;
    type State = HeartbeatState;
    type Arguments = HeartbeatArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(HeartbeatState::new(args))
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // First sample now (cheap /proc reads), so status has memory before the first round
        // (CPU is known from the first round on: it is measured between two samples).
        let mut sampler = Sampler::new(state.args.sources.clone());
        state.system = sampler.sample(std::time::Instant::now());
        state.sampler = Some(sampler);
        for why in state
            .system
            .unknown
            .iter()
            .filter(|u| u.starts_with("memory:"))
        {
            warn!(actor = "heartbeat", unknown = %why, "memory use unknown: /health reports it as unknown, never 0 %");
        }
        state.sample_errors();
        state.ticker = Some(myself.send_interval(state.round, || InternalMsg::Beat.into()));
        state.event_ticker = Some(myself.send_interval(state.args.config.event_interval, || {
            InternalMsg::Record.into()
        }));
        info!(
            actor = "heartbeat",
            interval_ms = state.status().interval_ms,
            ping_timeout_ms = u64::try_from(state.ping_timeout.as_millis()).unwrap_or(u64::MAX),
            watchdog = state
                .args
                .notifier
                .as_ref()
                .and_then(SdNotifier::watchdog)
                .is_some(),
            rss_bytes = state.system.rss_bytes,
            memory_limit_bytes = state.system.memory_limit_bytes,
            "heartbeat started"
        );
        Ok(())
    }

    dispatch!(HeartbeatMsg, "heartbeat", |myself, msg, state| match msg {});

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for t in [state.ticker.take(), state.event_ticker.take()]
            .into_iter()
            .flatten()
        {
            t.abort();
        }
        if let Some((_, t)) = state.in_flight.take() {
            t.abort();
        }
        // A commit already sent finishes in the persister; only the wait is dropped.
        if let Some(t) = state.recording.take() {
            t.abort();
        }
        Ok(())
    }
}

/// The actor's messages to itself ([`InternalMsg`]).
async fn handle_internal(
    myself: ActorRef<HeartbeatMsg>,
    msg: InternalMsg,
    state: &mut HeartbeatState,
) -> Result<(), ActorProcessingErr> {
    match msg {
        InternalMsg::TaskPanicked(reason) => return Err(reason.into()),
        InternalMsg::Beat => state.start_round(&myself),
        InternalMsg::BeatDone(report) => state.finish_round(*report),
        InternalMsg::Record => state.record(),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
