//! Supervision on the real tree: restarts under policy, transient exits, escalation to SHUTDOWN,
//! and restart counts in `/health` and `/metrics`.

mod common;

use std::time::Duration;

use ractor::cast;
use tradebaas_actors::backoff::Backoff;
use tradebaas_actors::broker::BrokerMsg;
use tradebaas_actors::failsafe::FailSafeMsg;
use tradebaas_actors::hooks::TestHook;
use tradebaas_actors::strategy::StrategyMsg;
use tradebaas_actors::supervisor::policy::RestartType;

const FAST: Backoff =
    Backoff::fixed_ratio(Duration::from_millis(20), Duration::from_millis(200), 2.0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_strategy_is_restarted_and_reached_by_name() {
    let h = common::start(|t, _| t.supervisor.children.strategy.backoff = FAST).await;
    h.ready().await;
    let strategy = h.names.get::<StrategyMsg>().unwrap();
    cast!(strategy, StrategyMsg::Hook(TestHook::Panic("boom".into()))).unwrap();
    // The new instance gets ticks from the broker, which sends by name.
    let (_, body) = h
        .wait_for("/health", Duration::from_secs(10), |c, b| {
            let s = &b["actors"]["strategy"];
            c == 200
                && s["restarts"] == 1
                && s["status"] == "running"
                && s["ticks_received"].as_u64() > Some(0)
        })
        .await;
    let failure = &body["actors"]["strategy"]["last_failure"];
    assert!(
        failure["reason"].as_str().unwrap().contains("boom"),
        "{failure}"
    );
    assert!(failure["at"].is_string());
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("tradebaas_actor_restarts_total{actor=\"strategy\"} 1"),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_reconnects_and_resubscribes() {
    let h = common::start(|t, _| t.supervisor.children.broker_connection.backoff = FAST).await;
    h.ready().await;
    let broker = h.names.get::<BrokerMsg>().unwrap();
    cast!(
        broker,
        BrokerMsg::Hook(TestHook::Panic("broker bug".into()))
    )
    .unwrap();
    h.wait_for("/health", Duration::from_secs(10), |c, b| {
        let s = &b["actors"]["broker-connection"];
        c == 200 && s["restarts"] == 1 && s["state"] == "connected"
    })
    .await;
    let stats = h.paper.stats();
    let subscribes: u64 = ["public/subscribe", "private/subscribe"]
        .iter()
        .filter_map(|m| stats.requests_by_method.get(*m).copied())
        .sum();
    assert!(subscribes >= 2, "subscribed {subscribes} times");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_child_that_exits_normally_stays_stopped() {
    let h =
        common::start(|t, _| t.supervisor.children.strategy.restart = RestartType::Transient).await;
    h.ready().await;
    let strategy = h.names.get::<StrategyMsg>().unwrap();
    cast!(strategy, StrategyMsg::Hook(TestHook::Exit)).unwrap();
    let (code, body) = h
        .wait_for("/health", Duration::from_secs(5), |_, b| {
            b["actors"]["strategy"]["status"] == "not_running"
        })
        .await;
    assert_eq!(code, 503);
    assert_eq!(body["actors"]["strategy"]["restarts"], 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, body) = h.get("/health").await;
    assert_eq!(
        body["actors"]["strategy"]["status"], "not_running",
        "{body:#}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_latches_shutdown_alerts_and_reports_unhealthy() {
    let h = common::start(|t, _| {
        t.supervisor.children.strategy.backoff = FAST;
        t.supervisor.children.strategy.max_restarts = 1;
        t.supervisor.children.fail_safe.backoff = FAST;
    })
    .await;
    h.ready().await;
    for round in 0..2 {
        let strategy = h.names.get::<StrategyMsg>().unwrap();
        cast!(
            strategy,
            StrategyMsg::Hook(TestHook::Panic(format!("crash {round}")))
        )
        .unwrap();
        if round == 0 {
            h.wait_for("/health", Duration::from_secs(5), |_, b| {
                b["actors"]["strategy"]["restarts"] == 1
                    && b["actors"]["strategy"]["status"] == "running"
            })
            .await;
        }
    }
    let (code, body) = h
        .wait_for("/health", Duration::from_secs(5), |_, b| {
            b["actors"]["strategy"]["status"] == "escalated" && b["mode"] == "SHUTDOWN"
        })
        .await;
    assert_eq!(code, 503);
    assert!(
        body["reasons"]
            .to_string()
            .contains("strategy is escalated"),
        "{body:#}"
    );
    assert!(
        body["actors"]["alert"]["open_critical"].as_u64() >= Some(1),
        "{body:#}"
    );

    // SHUTDOWN is latched: a restarted fail-safe reads it back from the store.
    let fs = h.names.get::<FailSafeMsg>().unwrap();
    cast!(
        fs,
        FailSafeMsg::Hook(TestHook::Panic("fail-safe bug".into()))
    )
    .unwrap();
    let (_, body) = h
        .wait_for("/health", Duration::from_secs(5), |_, b| {
            b["actors"]["fail-safe"]["restarts"] == 1 && b["actors"]["fail-safe"]["loaded"] == true
        })
        .await;
    assert_eq!(body["mode"], "SHUTDOWN", "{body:#}");
    h.stop().await;
}
