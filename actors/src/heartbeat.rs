//! The `heartbeat` actor: proves every sibling still answers, and samples the process's memory
//! and CPU.
//!
//! Every `interval` it pings the other five children by name, concurrently and each with
//! `ping_timeout`, and samples system stats, all in a task that reports back by message, so the
//! heartbeat itself never blocks and answers `Status` while a sibling is wedged. A child that
//! stops answering is logged once at `warn` (and at `info` when it answers again).
//!
//! It only observes: reacting to a silent child (tripping the fail-safe, asking the supervisor for
//! a restart) is the job of the health rules, a later change.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, Message, RpcReplyPort};
use serde::{Deserialize, Serialize};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::alert::AlertMsg;
use crate::broker::BrokerMsg;
use crate::failsafe::FailSafeMsg;
use crate::names::{ChildName, Names};
use crate::persister::PersisterMsg;
use crate::strategy::StrategyMsg;

/// `[heartbeat]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// How often every actor is pinged and system stats are sampled.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long a ping may take before the actor counts as unanswered.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(1),
        }
    }
}

impl HeartbeatConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_millis(10) {
            return Err("interval must be at least 10ms".into());
        }
        if self.ping_timeout.is_zero() {
            return Err("ping_timeout must be greater than 0".into());
        }
        if self.ping_timeout > self.interval {
            return Err("ping_timeout must not be longer than interval".into());
        }
        Ok(())
    }
}

/// What the heartbeat is spawned with.
#[derive(Clone)]
pub struct HeartbeatArgs {
    pub names: Names,
    pub config: HeartbeatConfig,
}

/// Messages of the heartbeat.
pub enum HeartbeatMsg {
    /// Report the last round.
    Status(RpcReplyPort<HeartbeatStatus>),
    /// Liveness.
    Ping(RpcReplyPort<()>),
    /// Internal: time for a round.
    Beat,
    /// Internal: a round finished (boxed: the sampler it hands back is large).
    BeatDone(Box<BeatReport>),
    /// Test-only misbehaviour.
    #[cfg(any(test, feature = "test-hooks"))]
    Hook(crate::hooks::TestHook),
}

/// How one ping went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PingOutcome {
    /// Answered after this long.
    Answered(Duration),
    /// No actor runs under that name.
    Absent,
    /// No answer within `ping_timeout`.
    TimedOut,
    /// The message could not be delivered or the actor dropped it.
    Failed,
}

impl PingOutcome {
    fn describe(self) -> &'static str {
        match self {
            PingOutcome::Answered(_) => "answered",
            PingOutcome::Absent => "not running",
            PingOutcome::TimedOut => "no answer within the ping timeout",
            PingOutcome::Failed => "ping not delivered",
        }
    }
}

/// The outcome of one round (internal; sent from the round's task).
pub struct BeatReport {
    pings: Vec<(ChildName, PingOutcome)>,
    system: Option<SystemStats>,
    sampler: Option<Sampler>,
}

/// Process and machine numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct SystemStats {
    /// Process RSS as % of total memory.
    pub memory_percent: f64,
    /// Process CPU over the last interval, % of one core.
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub total_memory_bytes: u64,
    /// Errors logged per minute (from `tradebaas_errors_total`; 0 until it is counted).
    pub error_rate_per_minute: f64,
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
    pub system: SystemStats,
    pub interval_ms: u64,
}

/// Reads the process's numbers. Keeps the `System` between samples because CPU use is measured
/// between two refreshes.
struct Sampler {
    system: System,
    pid: Pid,
}

impl Sampler {
    fn new() -> Option<Self> {
        let system = match System::new() {
            Ok(s) => s,
            Err(e) => {
                warn!(actor = "heartbeat", error = %e, "system stats unavailable");
                return None;
            }
        };
        match sysinfo::get_current_pid() {
            Ok(pid) => Some(Self { system, pid }),
            Err(e) => {
                warn!(actor = "heartbeat", error = %e, "system stats unavailable (no pid)");
                None
            }
        }
    }

    fn sample(&mut self) -> SystemStats {
        self.system.refresh_memory();
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            true,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        let total = self.system.total_memory();
        let (rss, cpu) = self
            .system
            .process(self.pid)
            .map_or((0, 0.0), |p| (p.memory(), f64::from(p.cpu_usage())));
        SystemStats {
            memory_percent: if total > 0 {
                rss as f64 / total as f64 * 100.0
            } else {
                0.0
            },
            cpu_percent: cpu,
            rss_bytes: rss,
            total_memory_bytes: total,
            error_rate_per_minute: 0.0,
        }
    }
}

async fn ping<M: Message>(
    names: &Names,
    child: ChildName,
    make: fn(RpcReplyPort<()>) -> M,
    timeout: Duration,
) -> (ChildName, PingOutcome) {
    let Some(actor) = names.lookup::<M>(child) else {
        return (child, PingOutcome::Absent);
    };
    let started = Instant::now();
    let outcome = match actor.call(make, Some(timeout)).await {
        Ok(CallResult::Success(())) => PingOutcome::Answered(started.elapsed()),
        Ok(CallResult::Timeout) => PingOutcome::TimedOut,
        Ok(CallResult::SenderError) | Err(_) => PingOutcome::Failed,
    };
    (child, outcome)
}

/// One round: every sibling pinged concurrently, then a system sample.
async fn round(names: Names, timeout: Duration, mut sampler: Option<Sampler>) -> BeatReport {
    let (a, p, f, b, s) = tokio::join!(
        ping(&names, ChildName::Alert, AlertMsg::Ping, timeout),
        ping(
            &names,
            ChildName::StatePersister,
            PersisterMsg::Ping,
            timeout
        ),
        ping(&names, ChildName::FailSafe, FailSafeMsg::Ping, timeout),
        ping(
            &names,
            ChildName::BrokerConnection,
            BrokerMsg::Ping,
            timeout
        ),
        ping(&names, ChildName::Strategy, StrategyMsg::Ping, timeout),
    );
    let system = sampler.as_mut().map(Sampler::sample);
    BeatReport {
        pings: vec![a, p, f, b, s],
        system,
        sampler,
    }
}

/// The heartbeat actor.
pub struct HeartbeatActor;

/// The heartbeat's state.
pub struct HeartbeatState {
    args: HeartbeatArgs,
    ticker: Option<JoinHandle<()>>,
    /// The running round and when it started.
    in_flight: Option<(Instant, JoinHandle<()>)>,
    /// Lent to the running round, `None` meanwhile.
    sampler: Option<Sampler>,
    beats: u64,
    last_beat_at: Option<DateTime<Utc>>,
    round_trip_ms: BTreeMap<String, f64>,
    unanswered: BTreeSet<ChildName>,
    absent: Vec<String>,
    system: SystemStats,
}

impl HeartbeatState {
    fn start_round(&mut self, myself: &ActorRef<HeartbeatMsg>) {
        // A round ends within ping_timeout plus a sample; one older than this lost its task.
        let stale = self.args.config.ping_timeout * 2 + Duration::from_secs(1);
        if let Some((started, _)) = &self.in_flight
            && started.elapsed() < stale
        {
            debug!(
                actor = "heartbeat",
                "previous round still running; skipping this beat"
            );
            return;
        }
        let sampler = self.sampler.take().or_else(Sampler::new);
        let names = self.args.names.clone();
        let timeout = self.args.config.ping_timeout;
        let me = myself.clone();
        let task = tokio::spawn(async move {
            let report = round(names, timeout, sampler).await;
            let _ = me.send_message(HeartbeatMsg::BeatDone(Box::new(report)));
        });
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
        self.beats += 1;
        self.last_beat_at = Some(Utc::now());
        self.round_trip_ms.clear();
        self.absent.clear();
        for (child, outcome) in report.pings {
            match outcome {
                PingOutcome::Answered(rtt) => {
                    self.round_trip_ms
                        .insert(child.as_str().to_string(), rtt.as_secs_f64() * 1000.0);
                    if self.unanswered.remove(&child) {
                        info!(actor = "heartbeat", child = %child, "actor answers again");
                    }
                }
                other => {
                    if other == PingOutcome::Absent {
                        self.absent.push(child.as_str().to_string());
                    }
                    if self.unanswered.insert(child) {
                        warn!(
                            actor = "heartbeat",
                            child = %child,
                            outcome = other.describe(),
                            "actor does not answer its heartbeat"
                        );
                    }
                }
            }
        }
    }

    fn status(&self) -> HeartbeatStatus {
        HeartbeatStatus {
            beats: self.beats,
            last_beat_at: self.last_beat_at,
            round_trip_ms: self.round_trip_ms.clone(),
            unanswered: self
                .unanswered
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
            absent: self.absent.clone(),
            system: self.system,
            interval_ms: u64::try_from(self.args.config.interval.as_millis()).unwrap_or(u64::MAX),
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
        Ok(HeartbeatState {
            args,
            ticker: None,
            in_flight: None,
            sampler: None,
            beats: 0,
            last_beat_at: None,
            round_trip_ms: BTreeMap::new(),
            unanswered: BTreeSet::new(),
            absent: Vec::new(),
            system: SystemStats::default(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // First sample now (cheap /proc reads), so status has numbers before the first round.
        state.sampler = Sampler::new();
        if let Some(s) = state.sampler.as_mut() {
            state.system = s.sample();
        }
        state.ticker =
            Some(myself.send_interval(state.args.config.interval, || HeartbeatMsg::Beat));
        info!(
            actor = "heartbeat",
            interval_ms = state.status().interval_ms,
            rss_bytes = state.system.rss_bytes,
            "heartbeat started"
        );
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HeartbeatMsg::Beat => state.start_round(&myself),
            HeartbeatMsg::BeatDone(report) => state.finish_round(*report),
            HeartbeatMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            HeartbeatMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            #[cfg(any(test, feature = "test-hooks"))]
            HeartbeatMsg::Hook(hook) => hook.act(&myself.get_cell()).await?,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.ticker.take() {
            t.abort();
        }
        if let Some((_, t)) = state.in_flight.take() {
            t.abort();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertActor, AlertArgs, AlertConfig};
    use crate::metrics::Metrics;
    use crate::strategy::{StrategyActor, StrategyArgs};
    use ractor::call_t;

    /// Registered as the strategy, keeps every ping's reply port and never answers.
    struct Silent;

    impl Actor for Silent {
        type Msg = StrategyMsg;
        type State = Vec<RpcReplyPort<()>>;
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<Self::Msg>,
            _args: (),
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(Vec::new())
        }

        async fn handle(
            &self,
            _myself: ActorRef<Self::Msg>,
            msg: Self::Msg,
            state: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let StrategyMsg::Ping(reply) = msg {
                state.push(reply);
            }
            Ok(())
        }
    }

    async fn spawn(names: &Names) -> ActorRef<HeartbeatMsg> {
        let (a, _) = Actor::spawn(
            Some(names.of(ChildName::Heartbeat)),
            HeartbeatActor,
            HeartbeatArgs {
                names: names.clone(),
                config: HeartbeatConfig::default(),
            },
        )
        .await
        .unwrap();
        a
    }

    async fn spawn_strategy(names: &Names) -> ActorRef<StrategyMsg> {
        let (a, _) = Actor::spawn(
            Some(names.of(ChildName::Strategy)),
            StrategyActor,
            StrategyArgs::new(names.clone(), Vec::new(), Metrics::new().unwrap()),
        )
        .await
        .unwrap();
        a
    }

    /// Lets (paused) time run until `beats` rounds have completed.
    async fn after_beats(hb: &ActorRef<HeartbeatMsg>, beats: u64) -> HeartbeatStatus {
        for _ in 0..1000 {
            let s = call_t!(hb, HeartbeatMsg::Status, 1000).unwrap();
            if s.beats >= beats {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("fewer than {beats} heartbeat rounds");
    }

    #[test]
    fn config_defaults_and_validation() {
        let c = HeartbeatConfig::default();
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.ping_timeout, Duration::from_secs(1));
        assert_eq!(c.validate(), Ok(()));
        let bad = HeartbeatConfig {
            ping_timeout: Duration::from_secs(10),
            ..c
        };
        assert!(bad.validate().unwrap_err().contains("ping_timeout"));
        let parsed: HeartbeatConfig =
            serde_json::from_value(serde_json::json!({"interval": "2s"})).unwrap();
        assert_eq!(parsed.interval, Duration::from_secs(2));
    }

    #[tokio::test]
    async fn system_stats_are_sampled_at_start() {
        let names = Names::with_prefix("hb-stats-");
        let hb = spawn(&names).await;
        let s = call_t!(hb, HeartbeatMsg::Status, 1000).unwrap();
        assert_eq!(s.beats, 0);
        assert_eq!(s.interval_ms, 5000);
        assert!(s.system.rss_bytes > 0, "{:?}", s.system);
        assert!(s.system.total_memory_bytes > s.system.rss_bytes);
        assert!(s.system.memory_percent > 0.0 && s.system.memory_percent <= 100.0);
        hb.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn pings_running_siblings_and_lists_the_missing() {
        let names = Names::with_prefix("hb-round-");
        let (alert, _) = Actor::spawn(
            Some(names.of(ChildName::Alert)),
            AlertActor,
            AlertArgs {
                names: names.clone(),
                config: AlertConfig::default(),
            },
        )
        .await
        .unwrap();
        let strategy = spawn_strategy(&names).await;
        let hb = spawn(&names).await;

        let s = after_beats(&hb, 2).await;
        assert_eq!(
            s.round_trip_ms.keys().collect::<Vec<_>>(),
            ["alert", "strategy"]
        );
        assert_eq!(
            s.unanswered,
            ["state-persister", "fail-safe", "broker-connection"]
        );
        assert_eq!(s.absent, s.unanswered);
        assert!(s.last_beat_at.is_some());
        hb.stop_and_wait(None, None).await.unwrap();
        strategy.stop_and_wait(None, None).await.unwrap();
        alert.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_actor_is_unanswered_until_it_answers_again() {
        let names = Names::with_prefix("hb-silent-");
        let (silent, _) = Actor::spawn(Some(names.of(ChildName::Strategy)), Silent, ())
            .await
            .unwrap();
        let hb = spawn(&names).await;

        let s = after_beats(&hb, 1).await;
        assert!(s.unanswered.contains(&"strategy".to_string()));
        assert!(!s.absent.contains(&"strategy".to_string()));
        // The heartbeat answers while a round waits on the silent actor.
        call_t!(hb, HeartbeatMsg::Ping, 100).unwrap();

        silent.stop_and_wait(None, None).await.unwrap();
        let strategy = spawn_strategy(&names).await;
        let s = after_beats(&hb, s.beats + 2).await;
        assert!(!s.unanswered.contains(&"strategy".to_string()));
        assert!(s.round_trip_ms.contains_key("strategy"));
        hb.stop_and_wait(None, None).await.unwrap();
        strategy.stop_and_wait(None, None).await.unwrap();
    }
}
