//! The fail-safe's triggers on the real tree, with scaled-down thresholds: each fires, latches
//! SHUTDOWN (or OBSERVE_ONLY for a lost heartbeat), raises its CRITICAL alert, and SHUTDOWN
//! survives a restart of the whole tree on the same store.

mod common;

use std::time::Duration;

use ractor::cast;
use serde_json::Value;
use tradebaas_actors::failsafe::{InitialMode, TriggerConfig};
use tradebaas_actors::heartbeat::HeartbeatMsg;
use tradebaas_actors::hooks::TestHook;
use tradebaas_actors::mode::TradingMode;
use tradebaas_actors::persister::PersisterMsg;
use tradebaas_actors::store::{Change, SnapshotKind};
use tradebaas_actors::tree::TreeConfig;

const LONG: Duration = Duration::from_secs(3600);

/// Every trigger far away and evaluated often; each test brings one threshold close.
fn quiet() -> TriggerConfig {
    TriggerConfig {
        evaluate_interval: Duration::from_millis(50),
        market_data_stalled: LONG,
        event_log_failing: LONG,
        snapshot_failing: LONG,
        unhealthy_grace: LONG,
        error_rate_per_minute: 1000.0,
        heartbeat_missing: LONG,
    }
}

fn with(t: &mut TreeConfig, triggers: TriggerConfig) {
    t.fail_safe.triggers = triggers;
}

/// Waits until `/health` shows the fail-safe in `mode` after `trigger`; returns the body.
async fn wait_latched(h: &common::Harness, mode: &str, trigger: &str) -> Value {
    let (_, body) = h
        .wait_for("/health", Duration::from_secs(10), |_, b| {
            b["mode"] == mode && b["actors"]["fail-safe"]["last_trigger"] == trigger
        })
        .await;
    body
}

/// The alert with `key` from `/health`'s alert status.
async fn alert(h: &common::Harness, key: &str) -> Value {
    let (_, body) = h
        .wait_for("/health", Duration::from_secs(5), |_, b| {
            b["actors"]["alert"]["recent"]
                .as_array()
                .is_some_and(|r| r.iter().any(|a| a["key"] == key))
        })
        .await;
    body["actors"]["alert"]["recent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == key)
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn market_data_stalled_latches_shutdown_which_survives_a_restart() {
    let customize = |t: &mut TreeConfig, _: &mut _| {
        with(
            t,
            TriggerConfig {
                market_data_stalled: Duration::from_millis(600),
                ..quiet()
            },
        )
    };
    let h = common::start(customize).await;
    h.ready().await;
    // The exchange goes silent: no ticks, no heartbeats, no answers.
    h.paper.faults().stall_for(Duration::from_secs(60));
    let body = wait_latched(&h, "SHUTDOWN", "market_data_stalled").await;
    let reason = body["actors"]["fail-safe"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("market_data_stalled: no market data"),
        "{reason}"
    );
    let a = alert(&h, "failsafe:market_data_stalled").await;
    assert_eq!(a["severity"], "CRITICAL", "{a:#}");
    assert!(a["resolved_at"].is_null(), "{a:#}");

    // SHUTDOWN is in memory at once and stored just after; wait for the store (the harness
    // stops the persister without the daemon's flush step).
    let db = rusqlite::Connection::open(tradebaas::state_cmd::store_path(h.dir.path())).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stored: Option<String> = db
            .query_row("SELECT value FROM state WHERE key = 'mode'", [], |r| {
                r.get(0)
            })
            .ok();
        if stored.is_some_and(|v| v.contains("SHUTDOWN")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SHUTDOWN never stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(db);

    // Market data is back and the tree restarts on the same store: still SHUTDOWN.
    let (paper, dir) = h.stop_tree().await;
    paper.faults().clear();
    let h = common::start_with(paper, dir, |t, _| with(t, quiet())).await;
    let (_, body) = h
        .wait_for("/health", Duration::from_secs(10), |_, b| {
            b["actors"]["fail-safe"]["loaded"] == true
        })
        .await;
    assert_eq!(body["mode"], "SHUTDOWN", "{body:#}");
    assert!(
        body["actors"]["fail-safe"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("market_data_stalled"),
        "{body:#}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_event_log_writes_latch_shutdown() {
    let h = common::start(|t, _| {
        with(
            t,
            TriggerConfig {
                event_log_failing: Duration::from_millis(300),
                ..quiet()
            },
        )
    })
    .await;
    h.ready().await;
    // Every event insert now fails, as on a full or broken disk.
    let db = rusqlite::Connection::open(tradebaas::state_cmd::store_path(h.dir.path())).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER fail_events BEFORE INSERT ON events \
         BEGIN SELECT RAISE(ABORT, 'injected write failure'); END;",
    )
    .unwrap();
    let persister = h.names.get::<PersisterMsg>().unwrap();
    cast!(
        persister,
        PersisterMsg::Commit {
            change: Change::event("test", serde_json::json!({})),
            reply: None,
        }
    )
    .unwrap();
    let body = wait_latched(&h, "SHUTDOWN", "event_log_failing").await;
    let reason = body["actors"]["fail-safe"]["reason"].as_str().unwrap();
    assert!(reason.contains("injected write failure"), "{reason}");
    alert(&h, "failsafe:event_log_failing").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_snapshot_within_the_threshold_latches_shutdown() {
    // The harness takes no daily snapshots, so the threshold passes from the run's start.
    let h = common::start(|t, _| {
        with(
            t,
            TriggerConfig {
                snapshot_failing: Duration::from_millis(800),
                ..quiet()
            },
        )
    })
    .await;
    let body = wait_latched(&h, "SHUTDOWN", "snapshot_failing").await;
    assert!(
        body["actors"]["fail-safe"]["conditions"]
            .as_array()
            .unwrap()
            .contains(&Value::from("snapshot_failing")),
        "{body:#}"
    );
    alert(&h, "failsafe:snapshot_failing").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_holding_an_error_instead_of_capital_do_not_hold_off_snapshot_failing() {
    let h = common::start(|t, _| {
        with(
            t,
            TriggerConfig {
                snapshot_failing: Duration::from_millis(1500),
                ..quiet()
            },
        )
    })
    .await;
    // A failed snapshot (the exchange did not answer) every 100 ms, well within the threshold.
    // The persister registers its name as it starts: wait for it rather than assume it.
    let mut persister = None;
    for _ in 0..200 {
        persister = h.names.get::<PersisterMsg>();
        if persister.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let persister = persister.expect("the state-persister is registered within 5 s");
    let snapshots = tokio::spawn(async move {
        loop {
            let _ = cast!(
                persister,
                PersisterMsg::Snapshot {
                    kind: SnapshotKind::OnDemand,
                    payload: serde_json::json!({
                        "capital": {"BTC": {"error": "broker-connection did not answer"}},
                        "positions": [],
                    }),
                    reply: None,
                }
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let body = wait_latched(&h, "SHUTDOWN", "snapshot_failing").await;
    snapshots.abort();
    let reason = body["actors"]["fail-safe"]["reason"].as_str().unwrap();
    assert!(reason.contains("holds no capital"), "{reason}");
    let p = &body["actors"]["state-persister"];
    assert!(p["last_snapshot_at"].is_string(), "{p:#}");
    assert!(p["last_capital_snapshot_at"].is_null(), "{p:#}");
    alert(&h, "failsafe:snapshot_failing").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_beyond_the_grace_latches_shutdown() {
    let h = common::start(|t, health| {
        with(
            t,
            TriggerConfig {
                unhealthy_grace: Duration::from_millis(400),
                ..quiet()
            },
        );
        t.health.broker_grace = Duration::from_millis(100);
        health.broker_grace = Duration::from_millis(100);
    })
    .await;
    h.ready().await;
    // The exchange goes away and stays away: the broker is disconnected past its grace.
    h.paper.faults().refuse_for(Duration::from_secs(30));
    h.paper.faults().drop_all();
    let body = wait_latched(&h, "SHUTDOWN", "unhealthy").await;
    let reason = body["actors"]["fail-safe"]["reason"].as_str().unwrap();
    assert!(reason.contains("broker"), "{reason}");
    alert(&h, "failsafe:unhealthy").await;
    h.paper.faults().clear();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_heartbeat_restricts_to_observe_only_with_an_alert() {
    let h = common::start(|t, _| {
        with(
            t,
            TriggerConfig {
                heartbeat_missing: Duration::from_millis(500),
                ..quiet()
            },
        );
        t.initial_mode = InitialMode::explicit(TradingMode::Aggressive);
    })
    .await;
    h.wait_for("/health", Duration::from_secs(10), |_, b| {
        b["mode"] == "AGGRESSIVE"
    })
    .await;
    let heartbeat = h.names.get::<HeartbeatMsg>().unwrap();
    cast!(
        heartbeat,
        HeartbeatMsg::Hook(TestHook::Wedge(Duration::from_millis(2500)))
    )
    .unwrap();
    let body = wait_latched(&h, "OBSERVE_ONLY", "heartbeat_missing").await;
    assert!(
        body["actors"]["fail-safe"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("heartbeat_missing: no heartbeat"),
        "{body:#}"
    );
    let a = alert(&h, "heartbeat:missing").await;
    assert_eq!(a["severity"], "CRITICAL", "{a:#}");
    // The wedge ends after 2.5 s: rounds resume, the alert resolves, the mode stays restricted.
    let (_, body) = h
        .wait_for("/health", Duration::from_secs(15), |_, b| {
            b["actors"]["alert"]["recent"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|a| a["key"] == "heartbeat:missing" && a["resolved_at"].is_string())
            })
        })
        .await;
    assert_eq!(body["mode"], "OBSERVE_ONLY", "{body:#}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_rate_above_the_threshold_latches_shutdown() {
    let h = common::start(|t, _| {
        with(
            t,
            TriggerConfig {
                error_rate_per_minute: 10.0,
                ..quiet()
            },
        )
    })
    .await;
    h.ready().await;
    // What the logging layer does for every ERROR line (unit-tested in src/logging.rs).
    h.metrics.errors.inc_by(11);
    let body = wait_latched(&h, "SHUTDOWN", "error_rate").await;
    let reason = body["actors"]["fail-safe"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("error_rate: 11 errors"), "{reason}");
    alert(&h, "failsafe:error_rate").await;
    h.stop().await;
}
