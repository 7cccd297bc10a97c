//! Strategy execution end to end against the paper exchange, on the real tree: the example
//! strategy's signal opens a position with both protective legs, a leg closes it; the entry is
//! idempotent when the exchange accepts it and drops the connection; a rejected leg is rolled
//! back; orphans are cancelled and foreign orders left alone; the guards and the fail-safe refuse
//! entries while exits still happen; each class of exchange error is handled as documented.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;
use tradebaas::paper_exchange::{Direction, OrderSeed};
use tradebaas_actors::alert::{AlertMsg, AlertStatus};
use tradebaas_actors::failsafe::{FailSafeMsg, InitialMode};
use tradebaas_actors::mode::TradingMode;
use tradebaas_actors::strategy::signal::MaCrossConfig;
use tradebaas_actors::strategy::{
    Lifecycle, StrategyEntry, StrategyInstanceStatus, StrategyMsg, StrategyStatus,
};

const ID: &str = "x";
const INSTRUMENT: &str = "BTC-PERPETUAL";

/// A harness that trades: AGGRESSIVE, execution on, quick checks, a 2/3-tick crossover with
/// one signal only (a long cooldown), 0.5 % stop and 1 % take-profit.
async fn trading(
    customize: impl FnOnce(&mut tradebaas_actors::tree::TreeConfig),
) -> common::Harness {
    let h = common::start(|t, _| {
        t.initial_mode = InitialMode::explicit(TradingMode::Aggressive);
        t.execution.enabled = true;
        t.execution.check_interval = Duration::from_millis(100);
        t.execution.not_found_grace = Duration::from_millis(300);
        t.execution.resolve_timeout = Duration::from_secs(20);
        t.execution.retry.backoff.initial = Duration::from_millis(50);
        t.execution.retry.backoff.max = Duration::from_millis(500);
        t.broker.reconnect.backoff.initial = Duration::from_millis(100);
        t.broker.reconnect.backoff.max = Duration::from_millis(400);
        t.strategies = vec![StrategyEntry {
            id: ID.into(),
            instrument: INSTRUMENT.into(),
            ma_cross: MaCrossConfig {
                fast: 2,
                slow: 3,
                stop_distance_pct: 0.5,
                take_profit_pct: 1.0,
                min_ticks_between_signals: 1_000_000,
            },
        }];
        customize(t);
    })
    .await;
    h.paper.pause_market(true);
    h.ready().await;
    let fs = h.names.get::<FailSafeMsg>().unwrap();
    fs.send_message(FailSafeMsg::RecoveryFinished).unwrap();
    wait_instance(&h, "analyzing with specs", |s, i| {
        i.lifecycle == Lifecycle::Analyzing
            && s.instrument_specs.iter().any(|n| n == INSTRUMENT)
            && i.last_mark_price.is_some()
    })
    .await;
    h
}

async fn status(h: &common::Harness) -> Option<StrategyStatus> {
    let strategy = h.names.get::<StrategyMsg>()?;
    strategy
        .call(StrategyMsg::Status, Some(Duration::from_secs(2)))
        .await
        .ok()?
        .success_or(())
        .ok()
}

async fn wait_instance(
    h: &common::Harness,
    what: &str,
    pred: impl Fn(&StrategyStatus, &StrategyInstanceStatus) -> bool,
) -> StrategyInstanceStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = status(h).await
            && let Some(i) = s.strategies.iter().find(|i| i.id == ID)
            && pred(&s, i)
        {
            return i.clone();
        }
        assert!(
            Instant::now() < deadline,
            "never {what}: {:#?}",
            status(h).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn mark(h: &common::Harness) -> f64 {
    status(h).await.unwrap().strategies[0]
        .last_mark_price
        .unwrap()
}

/// Moves the price so the 2-tick average crosses the 3-tick one: down first (records "below"),
/// then up (crossing up → a buy) or the mirror for a sell.
async fn cross(h: &common::Harness, up: bool) -> f64 {
    let p0 = mark(h).await;
    let (first, second) = if up {
        (p0 * 0.998, p0)
    } else {
        (p0 * 1.002, p0)
    };
    h.paper.set_price(INSTRUMENT, first);
    tokio::time::sleep(Duration::from_millis(400)).await;
    h.paper.set_price(INSTRUMENT, second);
    second
}

fn orders_labelled(orders: &[Value], label: &str) -> Vec<Value> {
    orders
        .iter()
        .filter(|o| o["label"] == label)
        .cloned()
        .collect()
}

fn position_size(h: &common::Harness) -> f64 {
    h.paper
        .positions()
        .iter()
        .find(|p| p["instrument_name"] == INSTRUMENT)
        .and_then(|p| p["size"].as_f64())
        .unwrap_or(0.0)
}

async fn alerts(h: &common::Harness) -> AlertStatus {
    let a = h.names.get::<AlertMsg>().unwrap();
    a.call(AlertMsg::Status, Some(Duration::from_secs(2)))
        .await
        .unwrap()
        .unwrap()
}

/// The legs of entry `seq` that are resting on the exchange, by label.
fn resting_legs(h: &common::Harness, seq: u64) -> (usize, usize) {
    let open = h.paper.open_orders();
    (
        orders_labelled(&open, &format!("tb-{ID}-{seq}-sl")).len(),
        orders_labelled(&open, &format!("tb-{ID}-{seq}-tp")).len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_opens_a_protected_position_and_the_take_profit_closes_it() {
    let h = trading(|_| {}).await;
    let entry = cross(&h, true).await;
    let open = wait_instance(&h, "position open", |_, i| {
        i.lifecycle == Lifecycle::PositionOpen
    })
    .await;
    let position = open.position.clone().unwrap();
    assert_eq!(position.entry_label.as_deref(), Some("tb-x-0"));
    assert!(
        position.size > 0.0 && position.size <= 1000.0,
        "{position:?}"
    );
    // Both legs rest on the exchange, reduce-only, on the tick grid.
    let all = h.paper.all_orders();
    assert_eq!(orders_labelled(&all, "tb-x-0").len(), 1, "one entry order");
    let sl = &orders_labelled(&h.paper.open_orders(), "tb-x-0-sl")[0];
    let tp = &orders_labelled(&h.paper.open_orders(), "tb-x-0-tp")[0];
    assert_eq!(sl["reduce_only"], true);
    assert_eq!(tp["reduce_only"], true);
    assert_eq!(sl["direction"], "sell");
    let stop = sl["trigger_price"].as_f64().unwrap();
    let take = tp["price"].as_f64().unwrap();
    assert!(
        stop < entry && take > entry,
        "stop {stop} entry {entry} tp {take}"
    );
    assert_eq!(stop % 0.5, 0.0);
    assert_eq!(take % 0.5, 0.0);
    assert_eq!(position_size(&h), position.size);
    let (_, _) = h.get("/health").await; // gauges are set from the replies at scrape time
    assert_eq!(h.metrics.positions_open.get(), 1);

    // The take-profit is hit: the exchange closes the position and cancels the stop (OCO).
    h.paper.set_price(INSTRUMENT, take + 10.0);
    let idle = wait_instance(&h, "back to idle", |_, i| {
        matches!(i.lifecycle, Lifecycle::Idle | Lifecycle::Analyzing) && i.job.is_none()
    })
    .await;
    assert_eq!(idle.position, None);
    assert_eq!(position_size(&h), 0.0);
    assert_eq!(resting_legs(&h, 0), (0, 0));
    assert_eq!(h.metrics.trades.get(), 1);
    assert_eq!(h.metrics.trades_success.get(), 1);
    assert_eq!(h.metrics.trades_failed.get(), 0);
    assert_eq!(h.metrics.orders.with_label_values(&["filled"]).get(), 1);
    assert!(h.metrics.order_latency.get_sample_count() >= 1);
    // /health shows the decision and /metrics the order counters.
    let (_, body) = h.get("/health").await;
    let shown = body["actors"]["strategy"].to_string();
    assert!(shown.contains("\"last_decision\""), "{shown}");
    let text = h.metrics.render().unwrap();
    assert!(text.contains("tradebaas_trades_success_total 1"), "{text}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_loss_closes_a_position_at_a_loss() {
    let h = trading(|_| {}).await;
    cross(&h, true).await;
    wait_instance(&h, "position open", |_, i| {
        i.lifecycle == Lifecycle::PositionOpen
    })
    .await;
    let stop = orders_labelled(&h.paper.open_orders(), "tb-x-0-sl")[0]["trigger_price"]
        .as_f64()
        .unwrap();
    h.paper.set_price(INSTRUMENT, stop - 10.0);
    wait_instance(&h, "closed by the stop", |_, i| {
        matches!(i.lifecycle, Lifecycle::Idle | Lifecycle::Analyzing) && i.job.is_none()
    })
    .await;
    assert_eq!(position_size(&h), 0.0);
    assert_eq!(resting_legs(&h, 0), (0, 0), "the take-profit was cancelled");
    assert_eq!(h.metrics.trades_failed.get(), 1);
    assert_eq!(h.metrics.trades_success.get(), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_accepted_then_dropped_exists_once_and_is_protected_after_reconnect() {
    let h = trading(|_| {}).await;
    h.paper.faults().drop_after_accept("private/buy", 1);
    cross(&h, true).await;
    let open = wait_instance(&h, "position open after the drop", |_, i| {
        i.lifecycle == Lifecycle::PositionOpen && i.job.is_none()
    })
    .await;
    // Cancel-on-disconnect was armed for the entry, so the drop took the legs; they are back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while resting_legs(&h, 0) != (1, 1) {
        assert!(
            Instant::now() < deadline,
            "legs never re-placed: {:#?}",
            h.paper.open_orders()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = h.paper.all_orders();
    assert_eq!(
        orders_labelled(&all, "tb-x-0").len(),
        1,
        "exactly one entry: {all:#?}"
    );
    assert_eq!(buys(&h), 1);
    assert_eq!(position_size(&h), open.position.unwrap().size);
    assert_eq!(h.metrics.orders.with_label_values(&["unknown"]).get(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_protective_leg_rolls_the_position_back_with_an_alert() {
    let h = trading(|_| {}).await;
    h.paper.faults().reject_linked_legs(1);
    cross(&h, true).await;
    wait_instance(&h, "rolled back", |_, i| {
        i.next_intent_seq == 1
            && matches!(i.lifecycle, Lifecycle::Idle | Lifecycle::Analyzing)
            && i.job.is_none()
    })
    .await;
    assert_eq!(position_size(&h), 0.0);
    let close = orders_labelled(&h.paper.all_orders(), "tb-x-0-close");
    assert_eq!(close.len(), 1, "{close:#?}");
    assert_eq!(close[0]["reduce_only"], true);
    assert_eq!(close[0]["order_state"], "filled");
    let a = alerts(&h).await;
    assert!(
        a.recent
            .iter()
            .any(|r| r.alert.key == "strategy:x:unprotected"
                && r.alert.severity.as_str() == "CRITICAL"),
        "{a:#?}"
    );
    assert_eq!(h.metrics.trades.get(), 1);
    h.stop().await;
}

fn resting(label: &str, price: f64) -> OrderSeed {
    OrderSeed {
        instrument: INSTRUMENT.into(),
        direction: Direction::Buy,
        amount: 10.0,
        order_type: "limit".into(),
        price: Some(price),
        trigger_price: None,
        label: label.into(),
        reduce_only: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reconnect_our_orphans_are_cancelled_and_other_orders_left_alone() {
    let h = trading(|_| {}).await;
    let low = mark(&h).await * 0.5;
    let orphan = h.paper.seed_order(resting("tb-x-7", low));
    let orphan_leg = h.paper.seed_order(resting("tb-other-3-sl", low));
    let manual = h.paper.seed_order(resting("manual-1", low));
    let unlabelled = h.paper.seed_order(resting("", low));
    let lookalike = h.paper.seed_order(resting("tb-x-007", low));
    h.paper.faults().drop_all();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = status(&h).await.unwrap();
        if s.orphans_cancelled >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "orphans never cancelled: {s:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open: Vec<String> = h
        .paper
        .open_orders()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap().to_string())
        .collect();
    assert!(!open.contains(&orphan) && !open.contains(&orphan_leg));
    for kept in [&manual, &unlabelled, &lookalike] {
        assert!(open.contains(kept), "{kept} was touched: {open:?}");
    }
    let cancelled = h
        .paper
        .all_orders()
        .into_iter()
        .find(|o| o["order_id"] == orphan.as_str())
        .unwrap();
    assert_eq!(cancelled["order_state"], "cancelled");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_entry_is_refused_and_observe_only_blocks_entries_but_not_exits() {
    let h = trading(|t| {
        t.strategies[0].ma_cross.min_ticks_between_signals = 0;
    })
    .await;
    cross(&h, true).await;
    wait_instance(&h, "position open", |_, i| {
        i.lifecycle == Lifecycle::PositionOpen
    })
    .await;
    // A sell crossing while the position is open: refused by the single-position guard.
    cross(&h, false).await;
    let i = wait_instance(&h, "second entry refused", |_, i| i.last_refusal.is_some()).await;
    assert!(
        i.last_refusal.as_deref().unwrap().contains("already open"),
        "{i:?}"
    );
    assert_eq!(orders_labelled(&h.paper.all_orders(), "tb-x-1").len(), 0);

    // OBSERVE_ONLY: the take-profit still closes the position.
    let fs = h.names.get::<FailSafeMsg>().unwrap();
    let restricted = fs
        .call(
            |reply| FailSafeMsg::Restrict {
                mode: TradingMode::ObserveOnly,
                reason: "test".into(),
                reply,
            },
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(restricted.is_ok(), "{restricted:?}");
    let take = orders_labelled(&h.paper.open_orders(), "tb-x-0-tp")[0]["price"]
        .as_f64()
        .unwrap();
    h.paper.set_price(INSTRUMENT, take + 10.0);
    wait_instance(&h, "closed in OBSERVE_ONLY", |_, i| {
        i.lifecycle == Lifecycle::Analyzing && i.job.is_none()
    })
    .await;
    assert_eq!(position_size(&h), 0.0);
    // …and a new signal is refused by the fail-safe, nothing is sent.
    let buys_before = buys(&h);
    cross(&h, true).await;
    let i = wait_instance(&h, "entry refused in OBSERVE_ONLY", |_, i| {
        i.last_refusal
            .as_deref()
            .is_some_and(|r| r.contains("OBSERVE_ONLY"))
    })
    .await;
    assert_eq!(i.lifecycle, Lifecycle::Analyzing);
    let buys_after = buys(&h);
    assert_eq!(buys_before, buys_after);
    // Every later crossing is refused for the same reason: counted, but recorded only once.
    let refused = || h.metrics.orders.with_label_values(&["refused"]).get();
    let counted = refused();
    for up in [false, true] {
        cross(&h, up).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while refused() < counted + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "crossings not refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let db = rusqlite::Connection::open(tradebaas::state_cmd::store_path(h.dir.path())).unwrap();
    let recorded: i64 = db
        .query_row(
            "SELECT count(*) FROM events WHERE kind = 'entry.refused' \
             AND payload LIKE '%OBSERVE_ONLY%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        recorded,
        1,
        "one event for {} refusals",
        refused() - counted + 1
    );
    h.stop().await;
}

/// One entry with `code` injected into `private/buy` `times` times.
async fn entry_with_error(
    code: i64,
    message: &str,
    times: u32,
) -> (common::Harness, StrategyInstanceStatus) {
    let h = trading(|_| {}).await;
    h.paper
        .faults()
        .inject_error("private/buy", code, message, times);
    cross(&h, true).await;
    let i = wait_instance(&h, "entry settled", |_, i| {
        i.next_intent_seq == 1
            && matches!(i.lifecycle, Lifecycle::Analyzing | Lifecycle::PositionOpen)
            && i.job.is_none()
    })
    .await;
    (h, i)
}

fn buys(h: &common::Harness) -> u64 {
    h.paper
        .stats()
        .requests_by_method
        .get("private/buy")
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_errors_are_handled_by_class() {
    // Retryable: sent again after a backoff, then filled.
    let (h, i) = entry_with_error(10028, "too_many_requests", 2).await;
    assert_eq!(i.lifecycle, Lifecycle::PositionOpen, "{i:?}");
    assert_eq!(buys(&h), 3);
    assert_eq!(h.metrics.orders.with_label_values(&["retried"]).get(), 2);
    h.stop().await;

    // Fatal for the order: not retried, back to analyzing with the reason.
    let (h, i) = entry_with_error(10009, "not_enough_funds", 1).await;
    assert_eq!(i.lifecycle, Lifecycle::Analyzing, "{i:?}");
    assert_eq!(buys(&h), 1);
    assert_eq!(h.metrics.orders.with_label_values(&["rejected"]).get(), 1);
    h.stop().await;

    // Auth: re-authenticated once, sent once more, filled.
    let (h, i) = entry_with_error(13009, "unauthorized", 1).await;
    assert_eq!(i.lifecycle, Lifecycle::PositionOpen, "{i:?}");
    assert_eq!(buys(&h), 2);
    h.stop().await;

    // Unknown (timed_out): never re-sent; looked up by label, not found, back to analyzing.
    let (h, i) = entry_with_error(13888, "timed_out", 1).await;
    assert_eq!(i.lifecycle, Lifecycle::Analyzing, "{i:?}");
    assert_eq!(buys(&h), 1);
    assert!(
        h.paper
            .stats()
            .requests_by_method
            .get("private/get_order_state_by_label")
            .copied()
            .unwrap_or(0)
            >= 2
    );
    h.stop().await;
}

/// The broker's status (cancel-on-disconnect, reconnects).
async fn broker_status(h: &common::Harness) -> tradebaas_actors::broker::BrokerStatus {
    let b = h
        .names
        .get::<tradebaas_actors::broker::BrokerMsg>()
        .unwrap();
    b.call(
        tradebaas_actors::broker::BrokerMsg::Status,
        Some(Duration::from_secs(2)),
    )
    .await
    .unwrap()
    .unwrap()
}

/// Waits until cancel-on-disconnect on the broker's session reads `want`, with `extra` true.
async fn wait_cod(h: &common::Harness, what: &str, want: &str, extra: impl Fn(u64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = broker_status(h).await;
        if b.cancel_on_disconnect == want && extra(b.reconnect_attempts) {
            return;
        }
        assert!(Instant::now() < deadline, "never {what}: {b:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the strategy actor holds an equity reading for BTC younger than `max_ms`.
async fn wait_equity(h: &common::Harness, max_ms: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = status(h).await
            && s.equity_age_ms.get("BTC").is_some_and(|age| *age < max_ms)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no equity cached: {:#?}",
            status(h).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_is_sized_from_the_cached_equity_without_asking_the_exchange() {
    // Long enough that no background refresh falls into the test.
    let h = trading(|t| t.execution.equity_max_age = Duration::from_secs(120)).await;
    wait_equity(&h, 60_000).await;
    // Asking now would fail (an unknown outcome is not retried): only the cache can size it.
    h.paper
        .faults()
        .inject_error("private/get_account_summary", 13888, "timed_out", 1);
    cross(&h, true).await;
    let i = wait_instance(&h, "entered or refused", |_, i| {
        i.lifecycle == Lifecycle::PositionOpen || i.last_refusal.is_some()
    })
    .await;
    assert_eq!(i.lifecycle, Lifecycle::PositionOpen, "{i:#?}");
    assert_eq!(buys(&h), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_equity_is_not_used_the_entry_asks_and_the_cache_is_refreshed() {
    let h = trading(|t| {
        t.execution.equity_max_age = Duration::from_millis(400);
        t.strategies[0].ma_cross.min_ticks_between_signals = 0;
    })
    .await;
    wait_equity(&h, 400).await;
    // Every answer fails from now on: the reading ages past the bound.
    h.paper
        .faults()
        .inject_error("private/get_account_summary", 13888, "timed_out", 100_000);
    tokio::time::sleep(Duration::from_millis(600)).await;
    cross(&h, true).await;
    let i = wait_instance(&h, "entered or refused", |_, i| {
        i.lifecycle == Lifecycle::PositionOpen || i.last_refusal.is_some()
    })
    .await;
    assert_eq!(i.lifecycle, Lifecycle::Analyzing, "{i:#?}");
    assert!(
        i.last_refusal
            .as_deref()
            .is_some_and(|r| r.contains("account equity unknown")),
        "{i:#?}"
    );
    assert_eq!(buys(&h), 0);
    // Answers again: the background refresh brings a fresh reading, and the next signal (the
    // move down or the move back up) trades.
    h.paper.faults().clear();
    wait_equity(&h, 400).await;
    cross(&h, true).await;
    wait_instance(&h, "position open", |_, i| {
        i.lifecycle == Lifecycle::PositionOpen
    })
    .await;
    let sells = h
        .paper
        .stats()
        .requests_by_method
        .get("private/sell")
        .copied()
        .unwrap_or(0);
    assert_eq!(buys(&h) + sells, 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_disconnect_is_armed_ahead_so_an_entry_does_not_wait_for_it() {
    let h = trading(|_| {}).await;
    wait_cod(&h, "armed while flat", "armed", |_| true).await;
    // Arming now would fail: only an arming done ahead lets the entry go.
    h.paper.faults().inject_error(
        "private/enable_cancel_on_disconnect",
        13888,
        "timed_out",
        100_000,
    );
    cross(&h, true).await;
    let i = wait_instance(&h, "entered or refused", |_, i| {
        i.lifecycle == Lifecycle::PositionOpen || i.last_refusal.is_some()
    })
    .await;
    assert_eq!(i.lifecycle, Lifecycle::PositionOpen, "{i:#?}");
    wait_instance(&h, "protected", |_, _| resting_legs(&h, 0) == (1, 1)).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_disconnect_is_armed_again_on_a_new_session_before_the_next_entry() {
    let h = trading(|_| {}).await;
    wait_cod(&h, "armed while flat", "armed", |_| true).await;
    // A new session starts without it; it must be armed on that one before the entry leaves.
    let before = broker_status(&h).await.reconnect_attempts;
    h.paper.faults().drop_all();
    wait_cod(&h, "reconnected", "armed", |r| r > before).await;
    // The entry is accepted and the connection dropped at once: with cancel-on-disconnect in
    // force on the session it went out on, the exchange cancels its new legs.
    h.paper.faults().drop_after_accept("private/buy", 1);
    cross(&h, true).await;
    wait_instance(&h, "position open", |_, i| {
        i.lifecycle == Lifecycle::PositionOpen && i.job.is_none()
    })
    .await;
    let all = h.paper.all_orders();
    let sl = orders_labelled(&all, "tb-x-0-sl");
    assert!(
        sl.iter()
            .any(|o| o["cancel_reason"] == "cancel_on_disconnect"),
        "the legs were not under cancel-on-disconnect: {all:#?}"
    );
    // …and they are placed again.
    wait_instance(&h, "protected", |_, _| resting_legs(&h, 0) == (1, 1)).await;
    assert_eq!(orders_labelled(&all, "tb-x-0").len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_disconnect_is_off_while_a_position_is_open() {
    let h = trading(|_| {}).await;
    cross(&h, true).await;
    wait_instance(&h, "position open", |_, i| {
        i.lifecycle == Lifecycle::PositionOpen && i.job.is_none()
    })
    .await;
    wait_instance(&h, "protected", |_, _| resting_legs(&h, 0) == (1, 1)).await;
    // Several check intervals with the position open: nothing arms it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(broker_status(&h).await.cancel_on_disconnect, "off");
    let legs = |h: &common::Harness| {
        let open = h.paper.open_orders();
        let mut ids: Vec<String> = ["tb-x-0-sl", "tb-x-0-tp"]
            .iter()
            .flat_map(|l| orders_labelled(&open, l))
            .map(|o| o["order_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let before = legs(&h);
    assert_eq!(before.len(), 2);
    // A disconnect leaves the protective orders where they are.
    let reconnects = broker_status(&h).await.reconnect_attempts;
    h.paper.faults().drop_all();
    wait_cod(&h, "reconnected", "off", |r| r > reconnects).await;
    // A few checks on the new session: still off, the legs untouched.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(broker_status(&h).await.cancel_on_disconnect, "off");
    assert_eq!(legs(&h), before, "{:#?}", h.paper.all_orders());
    assert!(
        !h.paper
            .all_orders()
            .iter()
            .any(|o| o["cancel_reason"] == "cancel_on_disconnect"),
        "{:#?}",
        h.paper.all_orders()
    );
    h.stop().await;
}
