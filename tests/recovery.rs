//! Recovery on the real tree against the paper exchange: every lifecycle state survives a
//! strategy restart, each reconciliation difference is found on a seeded exchange, a clean
//! reconciliation resumes, and an exchange that does not answer leaves the daemon OBSERVE_ONLY
//! within the configured timeout.

mod common;

use std::time::{Duration, Instant};

use ractor::cast;
use tradebaas::paper_exchange::{Direction, OrderSeed};
use tradebaas_actors::alert::{AlertMsg, AlertStatus, Severity};
use tradebaas_actors::backoff::Backoff;
use tradebaas_actors::failsafe::FailSafeMsg;
use tradebaas_actors::hooks::TestHook;
use tradebaas_actors::mode::TradingMode;
use tradebaas_actors::recovery::{Difference, RecoveryConfig, RecoveryReport, recover};
use tradebaas_actors::strategy::{
    Lifecycle, Side, StrategyEntry, StrategyMsg, StrategyStatus, TransitionData,
};
use tradebaas_actors::testkit;

const FAST: Backoff =
    Backoff::fixed_ratio(Duration::from_millis(20), Duration::from_millis(200), 2.0);

fn entries(ids: &[(&str, &str)]) -> Vec<StrategyEntry> {
    ids.iter()
        .map(|(id, instrument)| StrategyEntry {
            ma_cross: Default::default(),
            id: (*id).into(),
            instrument: (*instrument).into(),
        })
        .collect()
}

async fn transition(
    h: &common::Harness,
    id: &str,
    to: Lifecycle,
    data: Option<TransitionData>,
) -> Result<(), String> {
    let strategy = h.names.get::<StrategyMsg>().unwrap();
    testkit::transition(&strategy, id, to, data, Duration::from_secs(10)).await
}

/// Drives `id` from IDLE along the cycle to `target`; `data` goes with the last step.
async fn drive(h: &common::Harness, id: &str, target: Lifecycle, data: Option<TransitionData>) {
    use Lifecycle::*;
    let path: &[Lifecycle] = match target {
        Idle => &[Analyzing, Idle],
        Analyzing => &[Analyzing],
        SignalDetected => &[Analyzing, SignalDetected],
        EnteringPosition => &[Analyzing, SignalDetected, EnteringPosition],
        PositionOpen => &[Analyzing, SignalDetected, EnteringPosition, PositionOpen],
        Closing => &[
            Analyzing,
            SignalDetected,
            EnteringPosition,
            PositionOpen,
            Closing,
        ],
    };
    for (i, to) in path.iter().enumerate() {
        let d = if i + 1 == path.len() {
            data.clone()
        } else {
            None
        };
        transition(h, id, *to, d)
            .await
            .unwrap_or_else(|e| panic!("{id} -> {to:?}: {e}"));
    }
}

async fn strategy_status(h: &common::Harness) -> Option<StrategyStatus> {
    let strategy = h.names.get::<StrategyMsg>()?;
    strategy
        .call(StrategyMsg::Status, Some(Duration::from_secs(2)))
        .await
        .ok()?
        .success_or(())
        .ok()
}

async fn fail_safe_mode(h: &common::Harness) -> TradingMode {
    let fs = h.names.get::<FailSafeMsg>().unwrap();
    fs.call(FailSafeMsg::GetMode, Some(Duration::from_secs(2)))
        .await
        .unwrap()
        .unwrap()
}

/// Sets AGGRESSIVE (and so stores it), retrying while the fail-safe is still loading.
async fn set_aggressive(h: &common::Harness) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fs = h.names.get::<FailSafeMsg>().unwrap();
        let r = fs
            .call(
                |reply| FailSafeMsg::SetMode {
                    mode: TradingMode::Aggressive,
                    reason: "test".into(),
                    reply,
                },
                Some(Duration::from_secs(5)),
            )
            .await
            .unwrap()
            .unwrap();
        if r.is_ok() && fail_safe_mode(h).await == TradingMode::Aggressive {
            return;
        }
        assert!(Instant::now() < deadline, "AGGRESSIVE refused: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn alerts(h: &common::Harness) -> AlertStatus {
    let a = h.names.get::<AlertMsg>().unwrap();
    a.call(AlertMsg::Status, Some(Duration::from_secs(2)))
        .await
        .unwrap()
        .unwrap()
}

/// Waits for the alert actor to have recorded the recovery alert (it is a cast).
async fn recovery_alerts(h: &common::Harness) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let n = alerts(h)
            .await
            .recent
            .iter()
            .filter(|r| {
                r.alert.title.starts_with("Recovery:") && r.alert.severity == Severity::Warning
            })
            .count();
        if n > 0 || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config(timeout: Duration, currencies: &[&str]) -> RecoveryConfig {
    RecoveryConfig {
        timeout,
        label_prefix: "tb".into(),
        currencies: currencies.iter().map(|c| (*c).to_string()).collect(),
    }
}

async fn run_recovery(h: &common::Harness, c: &RecoveryConfig) -> RecoveryReport {
    recover(&h.names, c, &c.currencies, &h.metrics).await
}

fn position(instrument: &str, direction: Side, size: f64, protective: &[&str]) -> TransitionData {
    TransitionData {
        position: Some(testkit::position(instrument, direction, size, protective)),
        intents_in_flight: Vec::new(),
    }
}

fn intents(labels: &[&str]) -> TransitionData {
    TransitionData {
        position: None,
        intents_in_flight: labels.iter().map(|l| testkit::buy_intent(l)).collect(),
    }
}

fn resting(label: &str, direction: Direction, price: f64) -> OrderSeed {
    OrderSeed {
        instrument: "BTC-PERPETUAL".into(),
        direction,
        amount: 10.0,
        order_type: "limit".into(),
        price: Some(price),
        trigger_price: None,
        label: label.into(),
        reduce_only: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lifecycle_state_survives_a_strategy_restart() {
    let ids = [
        ("s-idle", "BTC-PERPETUAL"),
        ("s-analyzing", "BTC-PERPETUAL"),
        ("s-signal", "BTC-PERPETUAL"),
        ("s-entering", "BTC-PERPETUAL"),
        ("s-open", "BTC-PERPETUAL"),
        ("s-closing", "ETH-PERPETUAL"),
        ("s-fresh", "ETH-PERPETUAL"),
    ];
    let h = common::start(|t, _| {
        t.strategies = entries(&ids);
        t.supervisor.children.strategy.backoff = FAST;
    })
    .await;
    h.ready().await;
    let open = position("BTC-PERPETUAL", Side::Buy, 100.0, &["tb-s-open-sl"]);
    let closing = position("ETH-PERPETUAL", Side::Sell, 300.0, &[]);
    let entering = intents(&["tb-s-entering-1"]);
    drive(&h, "s-idle", Lifecycle::Idle, None).await;
    drive(&h, "s-analyzing", Lifecycle::Analyzing, None).await;
    drive(&h, "s-signal", Lifecycle::SignalDetected, None).await;
    drive(
        &h,
        "s-entering",
        Lifecycle::EnteringPosition,
        Some(entering),
    )
    .await;
    drive(&h, "s-open", Lifecycle::PositionOpen, Some(open.clone())).await;
    drive(&h, "s-closing", Lifecycle::Closing, Some(closing.clone())).await;
    // An illegal move is refused and changes nothing.
    let err = transition(&h, "s-open", Lifecycle::Idle, None)
        .await
        .unwrap_err();
    assert!(err.contains("illegal"), "{err}");

    let strategy = h.names.get::<StrategyMsg>().unwrap();
    let old = strategy.get_id();
    let restarted = Instant::now();
    cast!(strategy, StrategyMsg::Hook(TestHook::Panic("crash".into()))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let fresh = h
            .names
            .get::<StrategyMsg>()
            .is_some_and(|s| s.get_id() != old);
        if fresh
            && let Some(s) = strategy_status(&h).await
            && s.records_loaded
        {
            break s;
        }
        assert!(Instant::now() < deadline, "strategy never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("strategy restored within {:?}", restarted.elapsed());
    let by_id = |id: &str| {
        status
            .strategies
            .iter()
            .find(|s| s.id == id)
            .unwrap()
            .clone()
    };
    for (id, lifecycle, restored) in [
        ("s-idle", Lifecycle::Idle, true),
        ("s-analyzing", Lifecycle::Analyzing, true),
        ("s-signal", Lifecycle::SignalDetected, true),
        ("s-entering", Lifecycle::EnteringPosition, true),
        ("s-open", Lifecycle::PositionOpen, true),
        ("s-closing", Lifecycle::Closing, true),
        ("s-fresh", Lifecycle::Idle, false),
    ] {
        let s = by_id(id);
        assert_eq!((s.lifecycle, s.restored), (lifecycle, restored), "{id}");
    }
    assert_eq!(by_id("s-open").position, open.position);
    assert_eq!(by_id("s-closing").position, closing.position);
    assert_eq!(by_id("s-entering").intents_in_flight, 1);
    assert_eq!(by_id("s-idle").position, None);

    // The restored instance goes on from where it was.
    transition(&h, "s-open", Lifecycle::Closing, None)
        .await
        .unwrap();
    // /health shows the restored lifecycle and position.
    let (_, body) = h.get("/health").await;
    let shown = body["actors"]["strategy"].to_string();
    for needle in [
        "\"restored\":true",
        "\"CLOSING\"",
        "\"records_loaded\":true",
        "tb-s-open-sl",
    ] {
        assert!(shown.contains(needle), "{needle} not in {shown}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_finds_each_difference_on_a_seeded_exchange() {
    let h = common::start(|t, _| {
        t.strategies = entries(&[("a", "BTC-PERPETUAL"), ("b", "BTC-PERPETUAL")]);
    })
    .await;
    h.ready().await;
    h.paper.pause_market(true);
    set_aggressive(&h).await;
    // a believes it is long 100 protected by tb-a-sl; the exchange has 200.
    drive(
        &h,
        "a",
        Lifecycle::PositionOpen,
        Some(position("BTC-PERPETUAL", Side::Buy, 100.0, &["tb-a-sl"])),
    )
    .await;
    h.paper
        .seed_position("BTC-PERPETUAL", Direction::Buy, 200.0, 65_000.0);
    assert!(
        !h.paper
            .seed_order(resting("tb-a-sl", Direction::Sell, 500_000.0))
            .is_empty()
    );
    // b sent two entry orders: one reached the exchange, one did not.
    drive(
        &h,
        "b",
        Lifecycle::EnteringPosition,
        Some(intents(&["tb-b-1", "tb-b-2"])),
    )
    .await;
    assert!(
        !h.paper
            .seed_order(resting("tb-b-1", Direction::Buy, 1_000.0))
            .is_empty()
    );
    // Nobody knows about the ETH position or the tb-orphan order; manual-1 is not ours.
    h.paper
        .seed_position("ETH-PERPETUAL", Direction::Sell, 300.0, 3_100.0);
    let orphan = h
        .paper
        .seed_order(resting("tb-orphan-1", Direction::Buy, 1_000.0));
    assert!(
        !h.paper
            .seed_order(resting("manual-1", Direction::Buy, 1_000.0))
            .is_empty()
    );

    let started = Instant::now();
    let report = run_recovery(&h, &config(Duration::from_secs(10), &["BTC", "ETH"])).await;
    eprintln!("recovery took {:?}: {report:#?}", started.elapsed());
    assert!(report.success, "{report:#?}");
    assert!(report.state_restored && report.broker_reconciled);
    assert!(!report.strategy_resumed);
    let expected = [
        Difference::SizeMismatch {
            strategy: "a".into(),
            instrument: "BTC-PERPETUAL".into(),
            local: 100.0,
            exchange: 200.0,
        },
        Difference::UnknownExchangePosition {
            instrument: "ETH-PERPETUAL".into(),
            size: -300.0,
        },
        Difference::IntentReachedExchange {
            strategy: "b".into(),
            label: "tb-b-1".into(),
            order_state: "open".into(),
        },
        Difference::IntentNotOnExchange {
            strategy: "b".into(),
            label: "tb-b-2".into(),
        },
        Difference::OrphanOrder {
            order_id: orphan,
            label: "tb-orphan-1".into(),
            instrument: "BTC-PERPETUAL".into(),
        },
    ];
    for d in &expected {
        assert!(
            report.differences.contains(d),
            "missing {d:?} in {report:#?}"
        );
    }
    assert_eq!(report.differences.len(), expected.len(), "{report:#?}");
    assert_eq!(fail_safe_mode(&h).await, TradingMode::ObserveOnly);
    assert_eq!(recovery_alerts(&h).await, 1);
    assert_eq!(h.metrics.last_recovery_success.get(), 1);
    assert!(h.metrics.last_recovery_duration_seconds.get() > 0.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_position_the_exchange_no_longer_has_is_reported() {
    let h = common::start(|t, _| t.strategies = entries(&[("a", "BTC-PERPETUAL")])).await;
    h.ready().await;
    drive(
        &h,
        "a",
        Lifecycle::PositionOpen,
        Some(position("BTC-PERPETUAL", Side::Sell, 100.0, &[])),
    )
    .await;
    let report = run_recovery(&h, &config(Duration::from_secs(10), &["BTC"])).await;
    assert_eq!(
        report.differences,
        vec![Difference::LocalPositionGone {
            strategy: "a".into(),
            instrument: "BTC-PERPETUAL".into(),
        }]
    );
    assert_eq!(fail_safe_mode(&h).await, TradingMode::ObserveOnly);
    assert_eq!(recovery_alerts(&h).await, 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_reconciliation_with_stored_aggressive_resumes() {
    let h = common::start(|t, _| t.strategies = entries(&[("a", "BTC-PERPETUAL")])).await;
    h.ready().await;
    h.paper.pause_market(true);
    set_aggressive(&h).await;
    drive(
        &h,
        "a",
        Lifecycle::PositionOpen,
        Some(position("BTC-PERPETUAL", Side::Buy, 100.0, &["tb-a-sl"])),
    )
    .await;
    h.paper
        .seed_position("BTC-PERPETUAL", Direction::Buy, 100.0, 65_000.0);
    assert!(
        !h.paper
            .seed_order(resting("tb-a-sl", Direction::Sell, 500_000.0))
            .is_empty()
    );
    let report = run_recovery(&h, &config(Duration::from_secs(10), &["BTC"])).await;
    assert!(report.success, "{report:#?}");
    assert!(report.strategy_resumed, "{report:#?}");
    assert_eq!(report.differences, vec![]);
    assert!(report.errors.is_empty(), "{report:#?}");
    assert_eq!(fail_safe_mode(&h).await, TradingMode::Aggressive);
    assert_eq!(recovery_alerts(&h).await, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_exchange_is_not_reconciled_and_leaves_observe_only_in_time() {
    let h = common::start(|t, _| t.strategies = entries(&[("a", "BTC-PERPETUAL")])).await;
    h.ready().await;
    set_aggressive(&h).await;
    h.paper.faults().stall_for(Duration::from_secs(5));
    let timeout = Duration::from_secs(1);
    let started = Instant::now();
    let report = run_recovery(&h, &config(timeout, &["BTC"])).await;
    let took = started.elapsed();
    eprintln!("stalled recovery took {took:?}: {report:#?}");
    // Bounded by the timeout; the margin absorbs scheduling on a loaded 2-core CI machine.
    assert!(took < timeout + Duration::from_millis(1000), "{took:?}");
    assert!(report.state_restored);
    assert!(!report.broker_reconciled);
    assert!(!report.success && !report.strategy_resumed);
    assert!(!report.errors.is_empty());
    assert_eq!(fail_safe_mode(&h).await, TradingMode::ObserveOnly);
    assert_eq!(recovery_alerts(&h).await, 1);
    assert_eq!(h.metrics.last_recovery_success.get(), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_never_connects_does_not_hang_recovery() {
    let h = common::start(|t, _| t.broker_url = "ws://127.0.0.1:1".into()).await;
    // The tree's children start after `start_tree` returns; on a loaded CI machine the store can
    // take longer to open than the 1 s budget. This test is about the broker, so wait for the
    // persister first (there is no /ready to wait for: the broker never connects).
    let deadline = Instant::now() + Duration::from_secs(10);
    while tradebaas_actors::client::load_state(&h.names, Duration::from_secs(1))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the persister never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let timeout = Duration::from_secs(1);
    let started = Instant::now();
    let report = run_recovery(&h, &config(timeout, &["BTC"])).await;
    let took = started.elapsed();
    // Bounded by the timeout; the margin absorbs scheduling on a loaded 2-core CI machine.
    assert!(took < timeout + Duration::from_millis(1000), "{took:?}");
    assert!(report.state_restored, "{report:#?}");
    assert!(!report.broker_reconciled);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("broker connection")),
        "{report:#?}"
    );
    assert_eq!(fail_safe_mode(&h).await, TradingMode::ObserveOnly);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_restores_its_strategies_and_reconciles() {
    let strategies = entries(&[("a", "BTC-PERPETUAL"), ("b", "ETH-PERPETUAL")]);
    let s1 = strategies.clone();
    let h = common::start(move |t, _| t.strategies = s1).await;
    h.ready().await;
    h.paper.pause_market(true);
    set_aggressive(&h).await;
    drive(
        &h,
        "a",
        Lifecycle::PositionOpen,
        Some(position("BTC-PERPETUAL", Side::Buy, 100.0, &["tb-a-sl"])),
    )
    .await;
    drive(&h, "b", Lifecycle::SignalDetected, None).await;
    h.paper
        .seed_position("BTC-PERPETUAL", Direction::Buy, 100.0, 65_000.0);
    assert!(
        !h.paper
            .seed_order(resting("tb-a-sl", Direction::Sell, 500_000.0))
            .is_empty()
    );

    // The whole tree stops; the exchange and the data directory stay.
    let (paper, dir) = h.stop_tree().await;
    let started = Instant::now();
    let h = common::start_with(paper, dir, move |t, _| t.strategies = strategies).await;
    let report = run_recovery(&h, &config(Duration::from_secs(10), &["BTC", "ETH"])).await;
    eprintln!("restart + recovery took {:?}", started.elapsed());
    assert!(report.success && report.strategy_resumed, "{report:#?}");
    assert_eq!(fail_safe_mode(&h).await, TradingMode::Aggressive);
    let status = strategy_status(&h).await.unwrap();
    assert!(status.records_loaded);
    assert_eq!(status.strategies[0].lifecycle, Lifecycle::PositionOpen);
    assert!(status.strategies[0].restored);
    assert_eq!(status.strategies[1].lifecycle, Lifecycle::SignalDetected);
    h.stop().await;
}
