//! Tests of the heartbeat: its pure rules and the actor among real siblings.

use super::*;
use crate::alert::{AlertMsg, AlertStatus};
use crate::broker::BrokerMsg;
use crate::failsafe::{FailSafeConfig, InitialMode};
use crate::hooks::TestHook;
use crate::store::Store;
use crate::strategy::{StrategyActor, StrategyArgs, StrategyMsg};
use crate::testkit::{MiniTree, eventually, spawn_alert, spawn_persister, wait_until};
use ractor::RpcReplyPort;
use ractor::{Message, call_t};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A `[heartbeat]` with every value given, in milliseconds: the round, the ping timeout, the
/// event interval; then the unanswered rounds that make a child wedged.
fn config_ms(
    interval: u64,
    ping_timeout: u64,
    event_interval: u64,
    rounds: u32,
) -> HeartbeatConfig {
    HeartbeatConfig {
        interval: Duration::from_millis(interval),
        ping_timeout: Duration::from_millis(ping_timeout),
        event_interval: Duration::from_millis(event_interval),
        unanswered_rounds: rounds,
    }
}

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

/// A stand-in that answers pings and ignores everything else (for the broker, which would
/// need an exchange).
struct Answering<M>(fn(M) -> Option<RpcReplyPort<()>>);

impl<M: Message> Actor for Answering<M> {
    type Msg = M;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let Some(reply) = (self.0)(msg) {
            let _ = reply.send(());
        }
        Ok(())
    }
}

async fn spawn_with(names: &Names, args: HeartbeatArgs) -> ActorRef<HeartbeatMsg> {
    let (a, _) = Actor::spawn(Some(names.of(ChildName::Heartbeat)), HeartbeatActor, args)
        .await
        .unwrap();
    a
}

async fn spawn(names: &Names) -> ActorRef<HeartbeatMsg> {
    let args = HeartbeatArgs::new(
        names.clone(),
        HeartbeatConfig::default(),
        Metrics::new().unwrap(),
    );
    spawn_with(names, args).await
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
    let what = format!("{beats} heartbeat rounds");
    eventually(&what, Duration::from_secs(100), async || {
        let s = call_t!(hb, HeartbeatMsg::Status, 1000).unwrap();
        (s.beats >= beats).then_some(s)
    })
    .await
}

/// A fake `NOTIFY_SOCKET`: a datagram socket in a temp dir, read by a thread.
struct FakeSystemd {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    received: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeSystemd {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, halt) = (Arc::clone(&received), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !halt.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    sink.lock().unwrap().push(text);
                }
            }
        });
        Self {
            _dir: dir,
            path,
            received,
            stop,
        }
    }

    fn watchdogs(&self) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.lines().any(|l| l == "WATCHDOG=1"))
            .count()
    }

    async fn wait_watchdogs(&self, n: usize, within: Duration) {
        let what = format!("{n} WATCHDOG=1");
        wait_until(&what, within, async || self.watchdogs() >= n).await;
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn open_alert(alert: &ActorRef<AlertMsg>, key: &str) -> Option<bool> {
    let s: AlertStatus = call_t!(alert, AlertMsg::Status, 1000).unwrap();
    s.recent
        .iter()
        .rev()
        .find(|r| r.alert.key == key)
        .map(|r| r.resolved_at.is_none())
}

#[test]
fn config_defaults_and_validation() {
    let c = HeartbeatConfig::default();
    assert_eq!(c.interval, Duration::from_secs(5));
    assert_eq!(c.ping_timeout, Duration::from_secs(1));
    assert_eq!(c.event_interval, Duration::from_secs(30));
    assert_eq!(c.unanswered_rounds, 2);
    assert_eq!(c.validate(), Ok(()));
    let bad = HeartbeatConfig {
        ping_timeout: Duration::from_secs(10),
        ..c.clone()
    };
    assert!(bad.validate().unwrap_err().contains("ping_timeout"));
    let bad = HeartbeatConfig {
        unanswered_rounds: 0,
        ..c.clone()
    };
    assert!(bad.validate().unwrap_err().contains("unanswered_rounds"));
    let bad = HeartbeatConfig {
        event_interval: Duration::ZERO,
        ..c
    };
    assert!(bad.validate().unwrap_err().contains("event_interval"));
    let parsed: HeartbeatConfig =
        serde_json::from_value(serde_json::json!({"interval": "2s", "event_interval": "1m"}))
            .unwrap();
    assert_eq!(parsed.interval, Duration::from_secs(2));
    assert_eq!(parsed.event_interval, Duration::from_secs(60));
}

#[test]
fn rounds_run_at_least_every_half_watchdog() {
    let c = HeartbeatConfig::default();
    assert_eq!(round_interval(&c, None), Duration::from_secs(5));
    // systemd's WatchdogSec=30s: the 5 s interval already fits twice.
    assert_eq!(
        round_interval(&c, Some(Duration::from_secs(30))),
        Duration::from_secs(5)
    );
    assert_eq!(
        round_interval(&c, Some(Duration::from_secs(4))),
        Duration::from_secs(2)
    );
    assert_eq!(
        round_interval(&c, Some(Duration::from_micros(1))),
        MIN_ROUND
    );
}

#[test]
fn one_missed_round_is_tolerated_two_declare_a_wedge() {
    let mut m = Misses::default();
    let s = ChildName::Strategy;
    // A supervisor restart within a round: one miss, then an answer.
    assert_eq!(m.observe(s, false, 2), Verdict::Steady);
    assert_eq!(m.observe(s, true, 2), Verdict::Steady);
    assert_eq!(m.observe(s, false, 2), Verdict::Steady);
    assert_eq!(m.observe(s, false, 2), Verdict::Wedged(2));
    // Declared once per episode.
    assert_eq!(m.observe(s, false, 2), Verdict::Steady);
    assert_eq!(m.observe(ChildName::Alert, true, 2), Verdict::Steady);
    assert_eq!(m.observe(s, true, 2), Verdict::Recovered);
    assert_eq!(m.observe(s, true, 2), Verdict::Steady);
    assert_eq!(m.observe(s, false, 1), Verdict::Wedged(1));
}

#[tokio::test(start_paused = true)]
async fn error_window_counts_the_last_minute() {
    let mut w = ErrorWindow::new(Duration::from_secs(60));
    let t0 = Instant::now();
    assert_eq!(w.record(t0, 0), 0);
    let mut total = 0;
    // 1 error every 5 s for two minutes.
    for i in 1..=24u64 {
        tokio::time::advance(Duration::from_secs(5)).await;
        total += 1;
        let n = w.record(Instant::now(), total);
        assert_eq!(n, i.min(12), "after {} s", i * 5);
    }
    // Quiet for a minute: back to 0.
    for _ in 0..12 {
        tokio::time::advance(Duration::from_secs(5)).await;
        w.record(Instant::now(), total);
    }
    assert_eq!(w.record(Instant::now(), total), 0);
    // A burst counts at once, per minute.
    assert_eq!(w.per_minute(Instant::now(), total + 30), 30.0);
    assert!(
        w.samples.len() <= 15,
        "window keeps ~60 s: {}",
        w.samples.len()
    );
}

#[tokio::test(start_paused = true)]
async fn status_reports_the_error_rate_of_the_last_minute() {
    let names = Names::with_prefix("hb-errors-");
    let metrics = Metrics::new().unwrap();
    let hb = spawn_with(
        &names,
        HeartbeatArgs::new(names.clone(), HeartbeatConfig::default(), metrics.clone()),
    )
    .await;
    // After the first sample (post_start), so the 7 fall inside the window.
    call_t!(hb, HeartbeatMsg::Status, 1000).unwrap();
    metrics.errors.inc_by(7);
    let s = after_beats(&hb, 1).await;
    assert_eq!(s.system.error_rate_per_minute, 7.0);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let s = after_beats(&hb, s.beats + 1).await;
    assert_eq!(s.system.error_rate_per_minute, 0.0);
    hb.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn system_stats_are_sampled_at_start() {
    let names = Names::with_prefix("hb-stats-");
    let hb = spawn(&names).await;
    let s = call_t!(hb, HeartbeatMsg::Status, 1000).unwrap();
    assert_eq!(s.beats, 0);
    assert_eq!(s.interval_ms, 5000);
    assert!(s.system.rss_bytes.is_some_and(|r| r > 0), "{:?}", s.system);
    hb.stop_and_wait(None, None).await.unwrap();
}

/// The shipped unit's view (`ProcSubset=pid`: no meminfo, no /proc/stat; the cgroup
/// visible), through the actor: memory against the cgroup's limit, CPU from the first round.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_proc_subset_pid_status_reports_memory_against_the_cgroup_limit() {
    let fake = sampler::tests::proc_subset_pid();
    let names = Names::with_prefix("hb-subset-");
    let config = HeartbeatConfig {
        interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(50),
        ..HeartbeatConfig::default()
    };
    let hb = spawn_with(
        &names,
        HeartbeatArgs {
            sources: fake.sources(),
            ..HeartbeatArgs::new(names.clone(), config, Metrics::new().unwrap())
        },
    )
    .await;
    let s = call_t!(hb, HeartbeatMsg::Status, 1000).unwrap();
    assert_eq!(s.system.memory_limit_source, Some(LimitSource::Cgroup));
    let pct = s
        .system
        .memory_percent
        .expect("memory known from the cgroup");
    assert!((pct - 25.0).abs() < 0.01, "{:?}", s.system);
    assert_eq!(
        s.system.cpu_percent, None,
        "no baseline yet: unknown, not 0"
    );
    // After a round the CPU is known (the fake's counter does not move: 0 %, measured).
    let s = eventually(
        "a round with a CPU figure",
        Duration::from_secs(10),
        async || {
            let s = call_t!(hb, HeartbeatMsg::Status, 1000).unwrap();
            (s.beats >= 1 && s.system.cpu_percent.is_some()).then_some(s)
        },
    )
    .await;
    assert_eq!(s.system.cpu_percent, Some(0.0));
    hb.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn pings_running_siblings_and_lists_the_missing() {
    let names = Names::with_prefix("hb-round-");
    let alert = spawn_alert(&names).await;
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

/// Real time (the wedge blocks a runtime thread), scaled down: a 100 ms watchdog makes 50 ms
/// rounds although the configured interval is 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wedged_actor_stops_the_watchdog_and_restricts_to_observe_only() {
    let dir = tempfile::tempdir().unwrap();
    let names = Names::with_prefix("hb-wedge-");
    let systemd = FakeSystemd::new();
    let tree = MiniTree::start(
        &names,
        &dir.path().join("state.db"),
        FailSafeConfig::default(),
        InitialMode::explicit(TradingMode::Aggressive),
    )
    .await;
    let (alert, fail_safe) = (tree.alert.clone(), tree.fail_safe.clone());
    let (broker, _) = Actor::spawn(
        Some(names.of(ChildName::BrokerConnection)),
        Answering::<BrokerMsg>(|m| match m {
            BrokerMsg::Ping(r) => Some(r),
            _ => None,
        }),
        (),
    )
    .await
    .unwrap();
    let strategy = spawn_strategy(&names).await;
    // The first-start AGGRESSIVE takes effect once stored.
    wait_until("a loaded AGGRESSIVE", Duration::from_secs(5), async || {
        let s = call_t!(fail_safe, FailSafeMsg::Status, 1000).unwrap();
        s.loaded && s.mode == TradingMode::Aggressive
    })
    .await;
    let mode = || async { call_t!(fail_safe, FailSafeMsg::GetMode, 1000).unwrap() };

    let config = config_ms(1000, 1000, 3_600_000, 2);
    let hb = spawn_with(
        &names,
        HeartbeatArgs {
            notifier: Some(SdNotifier::new(
                &systemd.path,
                Some(Duration::from_millis(100)),
            )),
            ..HeartbeatArgs::new(names.clone(), config, Metrics::new().unwrap())
        },
    )
    .await;
    assert_eq!(
        call_t!(hb, HeartbeatMsg::Status, 1000).unwrap().interval_ms,
        50
    );

    // Everyone answers: the watchdog is fed every round, the mode is untouched.
    systemd.wait_watchdogs(5, Duration::from_secs(5)).await;
    assert_eq!(mode().await, TradingMode::Aggressive);
    let key = "heartbeat:unanswered:strategy";
    assert_eq!(open_alert(&alert, key).await, None);

    // Wedge the strategy for 2.5 s.
    strategy
        .send_message(StrategyMsg::Hook(TestHook::Wedge(Duration::from_millis(
            2500,
        ))))
        .unwrap();
    let wedged_at = std::time::Instant::now();
    // A round answered just before the wedge may still be reported; then nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fed = systemd.watchdogs();
    let what = "OBSERVE_ONLY and an open alert while the strategy is wedged";
    wait_until(what, Duration::from_secs(1), async || {
        mode().await == TradingMode::ObserveOnly && open_alert(&alert, key).await == Some(true)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        wedged_at.elapsed() < Duration::from_millis(2400),
        "the machine is too slow for this test's timing"
    );
    assert_eq!(
        systemd.watchdogs(),
        fed,
        "WATCHDOG=1 sent while an actor was wedged"
    );
    let status = systemd.received.lock().unwrap().last().cloned().unwrap();
    assert!(status.contains("no answer from strategy"), "{status}");
    assert!(status.contains("mode OBSERVE_ONLY"), "{status}");
    let s = call_t!(hb, HeartbeatMsg::Status, 1000).unwrap();
    assert_eq!(s.unanswered, ["strategy"]);

    // It answers again: the watchdog is fed again, the alert resolves, the mode stays.
    systemd
        .wait_watchdogs(fed + 3, Duration::from_secs(5))
        .await;
    wait_until("the alert resolved", Duration::from_secs(2), async || {
        open_alert(&alert, key).await == Some(false)
    })
    .await;
    assert_eq!(mode().await, TradingMode::ObserveOnly);

    hb.stop_and_wait(None, None).await.unwrap();
    strategy.stop_and_wait(None, None).await.unwrap();
    broker.stop_and_wait(None, None).await.unwrap();
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_events_are_written_to_the_event_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let names = Names::with_prefix("hb-events-");
    let persister = spawn_persister(&names, &path).await;
    let strategy = spawn_strategy(&names).await;
    let config = config_ms(20, 10, 100, 1000);
    let hb = spawn_with(
        &names,
        HeartbeatArgs::new(names.clone(), config, Metrics::new().unwrap()),
    )
    .await;

    let events = eventually("3 heartbeat events", Duration::from_secs(5), async || {
        let store = Store::open_read_only(&path).unwrap();
        let events: Vec<_> = store
            .events(0, 1000)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "heartbeat")
            .collect();
        (events.len() >= 3).then_some(events)
    })
    .await;
    let last: serde_json::Value = serde_json::from_str(&events[2].payload).unwrap();
    assert!(last["uptime_seconds"].is_u64(), "{last}");
    assert!(last["round_trip_ms"]["strategy"].is_f64(), "{last}");
    assert!(last["round_trip_ms"]["state-persister"].is_f64(), "{last}");
    let unanswered = last["unanswered"].as_array().unwrap();
    assert!(
        unanswered.contains(&serde_json::json!("fail-safe")),
        "{last}"
    );
    assert!(
        !unanswered.contains(&serde_json::json!("strategy")),
        "{last}"
    );

    hb.stop_and_wait(None, None).await.unwrap();
    strategy.stop_and_wait(None, None).await.unwrap();
    persister.stop_and_wait(None, None).await.unwrap();
}
