//! The `broker-connection` actor against the paper exchange over a real loopback WebSocket.
//!
//! Every interval is scaled down (heartbeat 200 ms, backoff from 100 ms, breaker open for 1 s) so
//! the whole file runs in seconds on real time. The broker measures time with `std::time::Instant`
//! and the exchange records attempt times on the same clock, so gaps between attempts can be
//! compared with the configured schedule directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent, call_t};
use tokio::sync::{RwLock, mpsc};
use tradebaas::paper_exchange::{PaperConfig, PaperExchange, PaperStats};
use tradebaas_actors::backoff::Backoff;
use tradebaas_actors::broker::reconnect::ReconnectPolicy;
use tradebaas_actors::broker::{
    BrokerActor, BrokerArgs, BrokerConfig, BrokerMsg, BrokerStatus, Credentials, LinkState,
};
use tradebaas_actors::hooks::TestHook;
use tradebaas_actors::metrics::Metrics;
use tradebaas_actors::names::{ChildName, Names};
use tradebaas_actors::secret::Secret;
use tradebaas_actors::strategy::StrategyMsg;
use tradebaas_actors::testkit;

const CHANNEL: &str = "ticker.BTC-PERPETUAL.100ms";
const HEARTBEAT: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(5);

/// The backoff-timing test takes this exclusively, every other test shares it: on a 2-core
/// machine a neighbour's reconnect storm must not stretch the gaps being measured.
static TIMING: RwLock<()> = RwLock::const_new(());

static NEXT_PREFIX: AtomicU32 = AtomicU32::new(0);

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn paper_config() -> PaperConfig {
    PaperConfig {
        seed: Some(11),
        ticks_per_second: 20.0,
        min_heartbeat_interval: ms(100),
        ..PaperConfig::default()
    }
}

/// Backoff 100, 200, 400, 800, 1600 ms without jitter; five failures open the breaker for 1 s.
fn broker_config(url: &str) -> BrokerConfig {
    BrokerConfig {
        url: url.to_owned(),
        channels: vec![CHANNEL.to_owned()],
        heartbeat_interval: HEARTBEAT,
        connect_timeout: ms(1000),
        request_timeout: ms(500),
        reconnect: ReconnectPolicy {
            backoff: Backoff {
                initial: ms(100),
                max: ms(1600),
                multiplier: 2.0,
                jitter: 0.0,
            },
            failures_before_open: 5,
            open_for: ms(1000),
        },
        ..BrokerConfig::default()
    }
}

/// Stands in for the strategy actor: counts the tickers the broker forwards.
struct TickCounter;

impl Actor for TickCounter {
    type Msg = StrategyMsg;
    type State = Arc<AtomicU64>;
    type Arguments = Arc<AtomicU64>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        count: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(count)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        count: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // StrategyMsg is being replaced: only `Tickers` is relied on, anything else is ignored.
        if let StrategyMsg::Tickers(tickers) = msg {
            count.fetch_add(tickers.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A parent that reports its children's supervision events as text.
struct Recorder;

impl Actor for Recorder {
    type Msg = ();
    type State = mpsc::UnboundedSender<String>;
    type Arguments = mpsc::UnboundedSender<String>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        events: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(events)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        events: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let text = match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                format!("failed {}: {err}", cell.get_name().unwrap_or_default())
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => format!(
                "terminated {}: {}",
                cell.get_name().unwrap_or_default(),
                reason.unwrap_or_default()
            ),
            _ => return Ok(()),
        };
        let _ = events.send(text);
        Ok(())
    }
}

struct Harness {
    exchange: PaperExchange,
    broker: ActorRef<BrokerMsg>,
    strategy: ActorRef<StrategyMsg>,
    ticks: Arc<AtomicU64>,
}

fn unique_names() -> Names {
    Names::with_prefix(format!(
        "broker-test-{}-",
        NEXT_PREFIX.fetch_add(1, Ordering::Relaxed)
    ))
}

async fn start_exchange() -> PaperExchange {
    PaperExchange::start(paper_config(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn spawn_strategy(names: &Names) -> (ActorRef<StrategyMsg>, Arc<AtomicU64>) {
    let ticks = Arc::new(AtomicU64::new(0));
    let (strategy, _) = Actor::spawn(
        Some(names.of(ChildName::Strategy)),
        TickCounter,
        Arc::clone(&ticks),
    )
    .await
    .unwrap();
    (strategy, ticks)
}

fn broker_args(
    names: &Names,
    exchange: &PaperExchange,
    config: BrokerConfig,
    credentials: Option<Credentials>,
) -> BrokerArgs {
    BrokerArgs {
        names: names.clone(),
        config,
        url: exchange.url(),
        credentials,
        metrics: Metrics::new().unwrap(),
    }
}

/// An exchange, a tick counter under the strategy name and a broker connected to the exchange.
async fn harness(
    exchange: PaperExchange,
    config: BrokerConfig,
    credentials: Option<Credentials>,
) -> Harness {
    let names = unique_names();
    let (strategy, ticks) = spawn_strategy(&names).await;
    let args = broker_args(&names, &exchange, config, credentials);
    let (broker, _) = Actor::spawn(
        Some(names.of(ChildName::BrokerConnection)),
        BrokerActor,
        args,
    )
    .await
    .unwrap();
    Harness {
        exchange,
        broker,
        strategy,
        ticks,
    }
}

impl Harness {
    async fn status(&self) -> BrokerStatus {
        status(&self.broker).await
    }

    async fn wait_for(
        &self,
        what: &str,
        cond: impl Fn(&BrokerStatus) -> bool,
        timeout: Duration,
    ) -> BrokerStatus {
        wait_for(&self.broker, what, cond, timeout).await
    }

    fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Waits until the strategy has seen more than `than` tickers.
    async fn wait_for_ticks_above(&self, than: u64) {
        wait_until(&format!("more than {than} tickers"), WAIT, || {
            self.ticks() > than
        })
        .await;
    }

    async fn stop(self) {
        self.broker.stop_and_wait(None, Some(WAIT)).await.unwrap();
        self.strategy.stop_and_wait(None, Some(WAIT)).await.unwrap();
        self.exchange.shutdown().await;
    }
}

async fn status(broker: &ActorRef<BrokerMsg>) -> BrokerStatus {
    call_t!(broker, BrokerMsg::Status, 2000).unwrap()
}

/// Polls the broker's status until `cond` holds; panics with the last status after `timeout`.
async fn wait_for(
    broker: &ActorRef<BrokerMsg>,
    what: &str,
    cond: impl Fn(&BrokerStatus) -> bool,
    timeout: Duration,
) -> BrokerStatus {
    let mut last = None;
    let found = testkit::eventually_or(timeout, async || {
        let s = status(broker).await;
        if cond(&s) {
            return Some(s);
        }
        last = Some(s);
        None
    })
    .await;
    found.unwrap_or_else(|| {
        panic!("timed out after {timeout:?} waiting for {what}; last status: {last:#?}")
    })
}

/// Polls `cond` until it holds; panics after `timeout`.
async fn wait_until(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    testkit::wait_until(what, timeout, async || cond()).await
}

fn subscribes(stats: &PaperStats, method: &str) -> u64 {
    stats.requests_by_method.get(method).copied().unwrap_or(0)
}

fn connected(s: &BrokerStatus) -> bool {
    s.state == LinkState::Connected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_authenticates_subscribes_receives_ticks_and_answers_test_requests() {
    let _shared = TIMING.read().await;
    let exchange = start_exchange().await;
    exchange.add_credentials("bot", "s3cret-value");
    let credentials = Credentials {
        client_id: "bot".into(),
        client_secret: Secret::new("s3cret-value"),
    };
    let url = exchange.url();
    let h = harness(exchange, broker_config(&url), Some(credentials)).await;

    let s = h.wait_for("connected", connected, WAIT).await;
    assert!(s.authenticated, "{s:#?}");
    assert_eq!(s.subscriptions, [CHANNEL]);
    assert!(s.missing_subscriptions.is_empty(), "{s:#?}");
    assert_eq!(s.circuit_breaker, "closed");
    assert_eq!(s.reconnect_attempts, 0);
    assert_eq!(s.last_error, None);

    h.wait_for_ticks_above(0).await;
    // With the exchange's heartbeat at 200 ms, test requests arrive several times a second.
    let s = h
        .wait_for(
            "ticks and answered test requests",
            |s| s.market_data_messages > 0 && s.test_requests_answered > 0,
            WAIT,
        )
        .await;
    assert_eq!(s.state, LinkState::Connected);
    wait_until(
        "the exchange to count an answered test_request",
        WAIT,
        || h.exchange.stats().test_requests_answered > 0,
    )
    .await;

    let stats = h.exchange.stats();
    assert_eq!(subscribes(&stats, "public/auth"), 1, "{stats:?}");
    assert_eq!(subscribes(&stats, "public/set_heartbeat"), 1, "{stats:?}");
    // Authenticated sessions subscribe privately.
    assert_eq!(subscribes(&stats, "private/subscribe"), 1, "{stats:?}");
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.closed_for_missed_heartbeat, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_is_reconnected_and_resubscribed() {
    let _shared = TIMING.read().await;
    let exchange = start_exchange().await;
    let url = exchange.url();
    let mut config = broker_config(&url);
    // Long enough to see the reconnecting state by polling.
    config.reconnect.backoff.initial = ms(300);
    let h = harness(exchange, config, None).await;
    h.wait_for("connected", connected, WAIT).await;
    h.wait_for_ticks_above(0).await;

    h.exchange.faults().drop_all();
    let s = h
        .wait_for("reconnecting", |s| s.state == LinkState::Reconnecting, WAIT)
        .await;
    assert!(s.last_error.is_some(), "{s:#?}");
    assert!(s.disconnected_for_ms.is_some(), "{s:#?}");
    let ticks_while_down = h.ticks();

    let s = h.wait_for("reconnected", connected, WAIT).await;
    assert!(s.reconnect_attempts >= 1, "{s:#?}");
    assert_eq!(s.subscriptions, [CHANNEL]);
    assert_eq!(s.last_error, None);
    assert_eq!(s.consecutive_failures, 0);

    let stats = h.exchange.stats();
    assert!(subscribes(&stats, "public/subscribe") >= 2, "{stats:?}");
    assert!(stats.connections_accepted >= 2, "{stats:?}");
    h.wait_for_ticks_above(ticks_while_down).await;
    let before = s.market_data_messages;
    h.wait_for(
        "market data after the reconnect",
        |s| s.market_data_messages > before,
        WAIT,
    )
    .await;
    h.stop().await;
}

/// `actual` is at least `expected` (timers never fire early) and not much later.
fn assert_gap(name: &str, actual: Duration, expected: Duration) {
    let slack = ms(60).max(expected / 4);
    assert!(
        actual + ms(20) >= expected && actual <= expected + slack,
        "{name}: {actual:?}, expected {expected:?} (+{slack:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reconnects_back_off_then_open_the_circuit_breaker() {
    let _exclusive = TIMING.write().await;
    let exchange = start_exchange().await;
    let url = exchange.url();
    let h = harness(exchange, broker_config(&url), None).await;
    h.wait_for("connected", connected, WAIT).await;

    let faults = h.exchange.faults();
    faults.refuse_for(Duration::from_secs(60));
    let dropped_at = Instant::now();
    faults.drop_all();

    // Five refused attempts: 100 ms after the loss, then 200, 400, 800, 1600 ms apart.
    wait_until("five refused attempts", ms(6000), || {
        h.exchange.stats().refused_at.len() >= 5
    })
    .await;
    let s = h
        .wait_for(
            "circuit open",
            |s| s.state == LinkState::CircuitOpen,
            ms(500),
        )
        .await;
    assert_eq!(s.circuit_breaker, "open");
    assert_eq!(s.consecutive_failures, 5);
    assert_eq!(s.reconnect_attempts, 5);
    assert!(
        s.circuit_open_remaining_ms.is_some_and(|r| r <= 1000),
        "{s:#?}"
    );
    assert!(s.last_error.is_some(), "{s:#?}");

    let refused = h.exchange.stats().refused_at;
    assert_eq!(refused.len(), 5, "an attempt too many: {refused:?}");
    assert_gap(
        "loss -> attempt 1",
        refused[0].duration_since(dropped_at),
        ms(100),
    );
    for (i, expected) in [200, 400, 800, 1600].into_iter().enumerate() {
        assert_gap(
            &format!("attempt {} -> {}", i + 1, i + 2),
            refused[i + 1].duration_since(refused[i]),
            ms(expected),
        );
    }

    // Open: no attempt for `open_for`, then exactly one half-open attempt (refused: re-opens).
    wait_until("the half-open attempt", ms(3000), || {
        h.exchange.stats().refused_at.len() >= 6
    })
    .await;
    let refused = h.exchange.stats().refused_at;
    assert_gap(
        "open period",
        refused[5].duration_since(refused[4]),
        ms(1000),
    );
    let s = h
        .wait_for(
            "circuit re-opened after the failed half-open attempt",
            |s| s.state == LinkState::CircuitOpen,
            ms(500),
        )
        .await;
    assert_eq!(s.circuit_breaker, "open");
    assert_eq!(s.reconnect_attempts, 6);
    assert_eq!(h.exchange.stats().connections_accepted, 1);

    // The exchange recovers; the next half-open attempt connects.
    faults.clear();
    let s = h.wait_for("connected again", connected, ms(3000)).await;
    assert_eq!(s.circuit_breaker, "closed");
    assert_eq!(s.consecutive_failures, 0);
    assert_eq!(s.reconnect_attempts, 7);
    let stats = h.exchange.stats();
    assert_eq!(stats.refused_at.len(), 6, "{stats:?}");
    assert_eq!(stats.accepted_at.len(), 2, "{stats:?}");
    assert_gap(
        "second open period",
        stats.accepted_at[1].duration_since(stats.refused_at[5]),
        ms(1000),
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_exchange_is_detected_as_stale_and_reconnected() {
    let _shared = TIMING.read().await;
    let exchange = start_exchange().await;
    let url = exchange.url();
    let h = harness(exchange, broker_config(&url), None).await;
    h.wait_for("connected", connected, WAIT).await;
    h.wait_for_ticks_above(0).await;

    // Silent for 1 s; the broker gives up on the session after 2 × 200 ms.
    let stalled_at = Instant::now();
    h.exchange.faults().stall_for(ms(1000));
    let s = h
        .wait_for(
            "the stale session to be dropped",
            |s| s.state != LinkState::Connected,
            WAIT,
        )
        .await;
    // Silence counts from the last frame, which came up to one tick period (50 ms) before the
    // stall began: 2 × 200 ms of silence ends 350–400 ms after `stalled_at`, and the broker checks
    // every 50 ms.
    let detected_after = stalled_at.elapsed();
    assert!(
        detected_after >= HEARTBEAT * 2 - ms(100) && detected_after < ms(900),
        "silence detected after {detected_after:?}"
    );
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("no message")),
        "{s:#?}"
    );

    let s = h.wait_for("reconnected", connected, WAIT).await;
    assert!(s.reconnect_attempts >= 1, "{s:#?}");
    assert!(h.exchange.stats().connections_accepted >= 2);
    // The stale session was closed, not left open beside the new one.
    wait_until("one open connection", WAIT, || {
        h.exchange.stats().active_connections == 1
    })
    .await;
    let ticks = h.ticks();
    h.wait_for_ticks_above(ticks).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_counted_and_the_session_survives() {
    let _shared = TIMING.read().await;
    let exchange = start_exchange().await;
    let url = exchange.url();
    let h = harness(exchange, broker_config(&url), None).await;
    h.wait_for("connected", connected, WAIT).await;
    h.wait_for_ticks_above(0).await;

    // One of each kind: invalid JSON, a JSON array, a notification without params, a binary
    // frame, a ticker with wrongly typed fields. Each is one malformed frame.
    h.exchange.faults().send_malformed(5);
    let s = h
        .wait_for("5 malformed frames", |s| s.malformed_frames >= 5, WAIT)
        .await;
    assert_eq!(s.malformed_frames, 5, "{s:#?}");
    assert_eq!(s.state, LinkState::Connected);

    let ticks = h.ticks();
    h.wait_for_ticks_above(ticks).await;
    let s = h.status().await;
    assert_eq!(s.state, LinkState::Connected);
    assert_eq!(s.reconnect_attempts, 0);
    assert_eq!(h.exchange.stats().connections_accepted, 1);
    call_t!(h.broker, BrokerMsg::Ping, 1000).expect("the broker still answers");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_appear_in_status() {
    let _shared = TIMING.read().await;
    const SECRET: &str = "Zq8-very-secret-value-4711";
    const WRONG: &str = "Wx3-wrong-secret-value-0815";

    let exchange = start_exchange().await;
    exchange.add_credentials("bot", SECRET);
    let url = exchange.url();
    let h = harness(
        exchange,
        broker_config(&url),
        Some(Credentials {
            client_id: "bot".into(),
            client_secret: Secret::new(SECRET),
        }),
    )
    .await;
    let s = h
        .wait_for(
            "connected with market data",
            |s| connected(s) && s.market_data_messages > 0,
            WAIT,
        )
        .await;
    assert!(s.authenticated);
    let debug = format!("{s:?} {s:#?}");
    let json = serde_json::to_string(&s).unwrap();
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(!json.contains(SECRET), "{json}");
    h.stop().await;

    // A wrong secret: the error says auth failed, and still does not show the secret.
    let exchange = start_exchange().await;
    exchange.add_credentials("bot", SECRET);
    let url = exchange.url();
    let credentials = Credentials {
        client_id: "bot".into(),
        client_secret: Secret::new(WRONG),
    };
    assert!(!format!("{credentials:?}").contains(WRONG));
    let names = unique_names();
    let args = broker_args(&names, &exchange, broker_config(&url), Some(credentials));
    let metrics = args.metrics.clone();
    let (broker, _) = Actor::spawn(
        Some(names.of(ChildName::BrokerConnection)),
        BrokerActor,
        args,
    )
    .await
    .unwrap();
    let s = wait_for(
        &broker,
        "a failed authentication",
        |s| s.last_error.is_some(),
        WAIT,
    )
    .await;
    assert!(!s.authenticated);
    assert_ne!(s.state, LinkState::Connected);
    let error = s.last_error.clone().unwrap();
    assert!(error.contains("auth"), "{error}");
    for shown in [
        format!("{s:?}"),
        serde_json::to_string(&s).unwrap(),
        metrics.render().unwrap(),
    ] {
        assert!(!shown.contains(WRONG), "{shown}");
        assert!(!shown.contains(SECRET), "{shown}");
    }
    broker.stop_and_wait(None, Some(WAIT)).await.unwrap();
    exchange.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_broker_is_a_supervision_event() {
    let _shared = TIMING.read().await;
    let exchange = start_exchange().await;
    let names = unique_names();
    let (strategy, _ticks) = spawn_strategy(&names).await;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (parent, _) = Actor::spawn(None, Recorder, events_tx).await.unwrap();
    let url = exchange.url();
    let (broker, broker_task) = Actor::spawn_linked(
        Some(names.of(ChildName::BrokerConnection)),
        BrokerActor,
        broker_args(&names, &exchange, broker_config(&url), None),
        parent.get_cell(),
    )
    .await
    .unwrap();
    wait_for(&broker, "connected", connected, WAIT).await;

    broker
        .send_message(BrokerMsg::Hook(TestHook::Panic(
            "injected broker panic".into(),
        )))
        .unwrap();
    let event = tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("a supervision event")
        .unwrap();
    let name = names.of(ChildName::BrokerConnection);
    assert!(event.starts_with(&format!("failed {name}: ")), "{event}");
    assert!(event.contains("injected broker panic"), "{event}");
    tokio::time::timeout(WAIT, broker_task)
        .await
        .expect("the broker's task ends")
        .expect("the panic was caught by the actor, not propagated to its task");
    assert!(
        names.get::<BrokerMsg>().is_none(),
        "the failed broker is still registered"
    );

    // The session went with the actor (a panic skips post_stop, so this relies on drop).
    wait_until("the exchange to see the session close", WAIT, || {
        exchange.stats().active_connections == 0
    })
    .await;
    // The parent and this test are unaffected.
    assert_eq!(parent.get_status(), ractor::ActorStatus::Running);
    parent.stop_and_wait(None, Some(WAIT)).await.unwrap();
    strategy.stop_and_wait(None, Some(WAIT)).await.unwrap();
    exchange.shutdown().await;
}

#[path = "broker/requests.rs"]
mod requests;
#[path = "broker/session.rs"]
mod session;
