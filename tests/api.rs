//! The read-only JSON API over real HTTP: each route's shape, the `/api/alerts` filters, 405 for
//! every method but GET/HEAD on every route, and alerts (with their acknowledgement) surviving a
//! restart of the tree on the same store.

mod common;

use std::time::Duration;

use ractor::{ActorRef, call_t};
use serde_json::{Value, json};
use tradebaas_actors::alert::{Alert, AlertMsg, Severity};
use tradebaas_actors::persister::PersisterMsg;
use tradebaas_actors::testkit::eventually;

const API: [&str; 5] = [
    "/api/health",
    "/api/health/status",
    "/api/health/uptime",
    "/api/health/last_snapshot",
    "/api/alerts",
];

fn alert(key: &str, severity: Severity) -> Alert {
    Alert {
        key: key.into(),
        severity,
        title: format!("{key} happened"),
        message: "a test condition".into(),
        root_cause: "the test raised it".into(),
        recommended_action: "none".into(),
        metadata: json!({ "test": true }),
    }
}

/// The alert actor once it has reloaded the stored alerts (a change made before that is stored
/// as an event at once but in the `alerts` state only when the load finishes).
async fn alert_actor(h: &common::Harness) -> ActorRef<AlertMsg> {
    let what = "the alert actor loaded its history";
    eventually(what, Duration::from_secs(5), async || {
        let a = h.names.get::<AlertMsg>()?;
        let loaded = call_t!(a, AlertMsg::Status, 1000).is_ok_and(|s| s.history_loaded);
        loaded.then_some(a)
    })
    .await
}

/// The records of `/api/alerts?{query}` with these keys only (the tree may raise its own).
async fn alerts(h: &common::Harness, query: &str, keys: &[&str]) -> Vec<Value> {
    let (code, body) = h.get(&format!("/api/alerts{query}")).await;
    assert_eq!(code, 200, "{body:#}");
    assert_eq!(
        body["count"].as_u64(),
        Some(body["alerts"].as_array().unwrap().len() as u64)
    );
    body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| keys.contains(&a["key"].as_str().unwrap_or_default()))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_answers_in_its_documented_shape() {
    let h = common::start(|_, _| {}).await;
    h.ready().await;

    let (code, body) = h.get("/api/health").await;
    assert_eq!(code, 200, "{body:#}");
    assert!(
        matches!(body["status"].as_str(), Some("healthy" | "degraded")),
        "{body:#}"
    );
    assert_eq!(body["mode"], "OBSERVE_ONLY");
    assert!(body["uptime_seconds"].is_u64());
    assert!(body["reasons"].is_array());
    assert!(
        body.get("actors").is_none(),
        "the summary is short: {body:#}"
    );

    let (code, body) = h
        .wait_for("/api/health/status", Duration::from_secs(10), |c, b| {
            c == 200
                && b["system_health"]["last_event_log_write_at"].is_string()
                && b["system_health"]["last_market_data_at"].is_string()
        })
        .await;
    assert_eq!(code, 200);
    assert_eq!(body["actors"].as_object().unwrap().len(), 6, "{body:#}");
    assert_eq!(body["mode"], "OBSERVE_ONLY");
    assert!(body["checks"].is_object(), "{body:#}");
    // The in-process tree runs no recovery and takes no snapshot (the daemon does both:
    // `the_api_reports_this_runs_recovery_and_the_stored_snapshot_with_their_values`).
    assert!(body["recovery"].is_null(), "{body:#}");
    // Execution is off in the harness: nothing runs.
    assert_eq!(body["queue_status"], "IDLE");
    let sh = &body["system_health"];
    assert_eq!(sh["queue_status"], "IDLE");
    assert!(sh["error_rate_per_minute"].is_number(), "{sh}");
    assert!(sh["last_market_data_at"].is_string(), "{sh}");
    assert!(sh["last_snapshot_at"].is_null(), "{sh}");
    assert!(
        chrono::Utc::now() - at(&sh["last_market_data_at"]) < chrono::Duration::seconds(30),
        "{sh}"
    );
    assert!(body["system"]["error_rate_per_minute"].is_number());
    assert!(!body.to_string().contains(common::SECRET));

    let (code, body) = h.get("/api/health/uptime").await;
    assert_eq!(code, 200);
    assert!(body["uptime_seconds"].is_u64(), "{body:#}");
    let started = chrono::DateTime::parse_from_rfc3339(body["started_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert!(started <= chrono::Utc::now());

    let (code, body) = h.get("/api/health/last_snapshot").await;
    assert_eq!(code, 200, "{body:#}");
    assert!(body["last_snapshot_at"].is_null(), "{body:#}");
    assert!(body["age_seconds"].is_null(), "{body:#}");
    assert!(at(&body["timestamp"]) <= chrono::Utc::now());

    alert_actor(&h)
        .await
        .send_message(AlertMsg::Raise(alert(
            "failsafe:api_test",
            Severity::Critical,
        )))
        .unwrap();
    let (code, body) = h
        .wait_for("/api/alerts", Duration::from_secs(5), |c, b| {
            c == 200 && b["count"].as_u64() > Some(0)
        })
        .await;
    assert_eq!(code, 200);
    let a = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "failsafe:api_test")
        .unwrap();
    for k in [
        "alert_id",
        "timestamp",
        "severity",
        "title",
        "message",
        "root_cause",
        "recommended_action",
        "metadata",
        "acknowledged",
        "key",
        "count",
        "resolved_at",
        "open",
    ] {
        assert!(a.get(k).is_some(), "missing {k}: {a}");
    }
    assert_eq!(a["severity"], "CRITICAL");
    assert_eq!(a["open"], true);
    assert_eq!(a["count"], 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_refuses_every_method_but_get() {
    let h = common::start(|_, _| {}).await;
    let addr = h.http.local_addr;
    for path in API {
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let r = tokio::task::spawn_blocking(move || common::raw(addr, method, path))
                .await
                .unwrap();
            assert!(r.starts_with("HTTP/1.1 405"), "{method} {path}: {r}");
            assert!(r.to_lowercase().contains("allow: get, head"), "{r}");
        }
        let r = tokio::task::spawn_blocking(move || common::raw(addr, "GET", path))
            .await
            .unwrap();
        assert!(!r.starts_with("HTTP/1.1 405"), "GET {path}: {r}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_filter_by_severity_and_open_and_refuse_bad_filters() {
    let h = common::start(|_, _| {}).await;
    let a = alert_actor(&h).await;
    let keys = [
        "failsafe:api_filter",
        "store:backup",
        "integrity:api_filter",
        "broker:reconnect",
    ];
    a.send_message(AlertMsg::Raise(alert(keys[0], Severity::Critical)))
        .unwrap();
    a.send_message(AlertMsg::Raise(alert(keys[1], Severity::Warning)))
        .unwrap();
    a.send_message(AlertMsg::Resolve {
        key: keys[1].into(),
    })
    .unwrap();
    a.send_message(AlertMsg::Raise(alert(keys[2], Severity::Info)))
        .unwrap();
    // Not an allowed kind: refused, never listed.
    a.send_message(AlertMsg::Raise(alert(keys[3], Severity::Warning)))
        .unwrap();
    call_t!(a, AlertMsg::Ping, 1000).unwrap();

    let all = alerts(&h, "", &keys).await;
    let listed: Vec<&str> = all.iter().map(|a| a["key"].as_str().unwrap()).collect();
    // Newest first.
    assert_eq!(listed, [keys[2], keys[1], keys[0]]);

    let critical = alerts(&h, "?severity=CRITICAL", &keys).await;
    assert_eq!(critical.len(), 1);
    assert_eq!(critical[0]["key"], keys[0]);
    let (_, body) = h.get("/api/alerts?severity=CRITICAL").await;
    assert_eq!(body["filters"]["severity"], "CRITICAL");
    assert!(
        body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["severity"] == "CRITICAL")
    );

    let open = alerts(&h, "?open=true", &keys).await;
    let open_keys: Vec<&str> = open.iter().map(|a| a["key"].as_str().unwrap()).collect();
    assert_eq!(open_keys, [keys[2], keys[0]]);
    assert!(
        open.iter()
            .all(|a| a["open"] == true && a["resolved_at"].is_null())
    );

    let closed_warning = alerts(&h, "?severity=WARNING&open=false", &keys).await;
    assert_eq!(closed_warning.len(), 1);
    assert_eq!(closed_warning[0]["key"], keys[1]);
    assert!(closed_warning[0]["resolved_at"].is_string());
    assert_eq!(alerts(&h, "?severity=info", &keys).await.len(), 1);

    for (query, names) in [
        ("?severity=FATAL", "severity"),
        ("?open=yes", "open"),
        ("?colour=red", "colour"),
    ] {
        let (code, body) = h.get(&format!("/api/alerts{query}")).await;
        assert_eq!(code, 400, "{query}: {body:#}");
        let msg = body["error"].as_str().unwrap();
        assert!(msg.contains(names), "{query}: {msg}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_acknowledgements_survive_a_restart() {
    let h = common::start(|_, _| {}).await;
    h.ready().await;
    let a = alert_actor(&h).await;
    a.send_message(AlertMsg::Raise(alert(
        "failsafe:api_restart",
        Severity::Critical,
    )))
    .unwrap();
    let status = call_t!(a, AlertMsg::Status, 1000).unwrap();
    let id = status
        .recent
        .iter()
        .find(|r| r.alert.key == "failsafe:api_restart")
        .unwrap()
        .alert_id
        .clone();
    call_t!(
        a,
        |reply| AlertMsg::Acknowledge {
            alert_id: id.clone(),
            reply
        },
        1000
    )
    .unwrap()
    .unwrap();
    // The acknowledgement is committed before the tree stops.
    let persister = h.names.get::<PersisterMsg>().unwrap();
    call_t!(persister, PersisterMsg::Flush, 5000)
        .unwrap()
        .unwrap();
    let (paper, dir) = h.stop_tree().await;

    let h = common::start_with(paper, dir, |_, _| {}).await;
    let (_, body) = h
        .wait_for("/api/alerts?open=true", Duration::from_secs(10), |c, b| {
            c == 200
                && b["alerts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["alert_id"] == id.as_str()))
        })
        .await;
    let r = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["alert_id"] == id.as_str())
        .unwrap();
    assert_eq!(r["acknowledged"], true, "{r}");
    assert!(r["acknowledged_at"].is_string(), "{r}");
    assert_eq!(r["open"], true);
    assert_eq!(r["key"], "failsafe:api_restart");
    h.stop().await;
}

/// Polls a route of a running binary until `pred(code, body)` holds; returns the body.
async fn wait_route(base: &str, path: &str, pred: impl Fn(u16, &Value) -> bool) -> Value {
    common::process::poll(base, path, Duration::from_secs(30), pred, String::new)
        .await
        .1
}

fn at(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// The real binary on the embedded exchange runs a recovery at every start and takes its first
/// snapshot at once (none is stored): the API must report those values, not just the keys; after
/// a restart on the same store it reports the new run's recovery and the old run's snapshot
/// (the next one is due a day later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reports_this_runs_recovery_and_the_stored_snapshot_with_their_values() {
    use common::process::{Daemon, ROOT};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = std::path::PathBuf::from(format!("{ROOT}/config/default.toml"));

    let before_first = chrono::Utc::now();
    let mut d = Daemon::start(&data, &config, &[]);
    let base = d.base_url();
    let status = wait_route(&base, "/api/health/status", |c, b| {
        c == 200 && b["recovery"].is_object() && b["system_health"]["last_snapshot_at"].is_string()
    })
    .await;
    let rec = &status["recovery"];
    assert_eq!(rec["success"], true, "{rec:#}");
    assert_eq!(rec["state_restored"], true, "{rec:#}");
    assert_eq!(rec["broker_reconciled"], true, "{rec:#}");
    assert_eq!(rec["differences"], json!([]), "{rec:#}");
    assert_eq!(rec["errors"], json!([]), "{rec:#}");
    assert!(
        rec["recovery_time_ms"]
            .as_u64()
            .is_some_and(|ms| ms < 30_000),
        "{rec:#}"
    );
    let first_recovery = at(&rec["finished_at"]);
    assert!(first_recovery >= before_first, "{rec:#}");
    // The embedded exchange starts the example strategy AGGRESSIVE (safe-defaults rule).
    assert_eq!(status["mode"], "AGGRESSIVE", "{status:#}");
    assert_eq!(status["actors"].as_object().unwrap().len(), 6);
    assert_eq!(
        status["checks"]["fail-safe"]["checks"]["passed"], true,
        "the start-up checks passed: {:#}",
        status["checks"]
    );

    let snap = wait_route(&base, "/api/health/last_snapshot", |c, b| {
        c == 200 && b["last_snapshot_at"].is_string()
    })
    .await;
    let first_snapshot = at(&snap["last_snapshot_at"]);
    assert!(first_snapshot >= before_first, "{snap:#}");
    // The embedded exchange answers the account summary: the snapshot holds capital.
    assert_eq!(
        snap["last_capital_snapshot_at"], snap["last_snapshot_at"],
        "{snap:#}"
    );
    assert!(
        snap["age_seconds"]
            .as_i64()
            .is_some_and(|a| (0..60).contains(&a)),
        "{snap:#}"
    );
    assert_eq!(
        status["system_health"]["last_snapshot_at"], snap["last_snapshot_at"],
        "/api/health/status and /api/health/last_snapshot agree"
    );

    let uptime = wait_route(&base, "/api/health/uptime", |c, _| c == 200).await;
    let started = at(&uptime["started_at"]);
    assert!(
        (started - before_first).num_seconds().abs() < 30,
        "started_at {started} vs {before_first}"
    );

    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0), "{}", d.log());
    drop(d);

    // Second run, same store.
    let d = Daemon::start(&data, &config, &[]);
    let base = d.base_url();
    let status = wait_route(&base, "/api/health/status", |c, b| {
        c == 200
            && b["recovery"]["finished_at"]
                .as_str()
                .is_some_and(|t| at(&json!(t)) > first_recovery)
    })
    .await;
    let rec = &status["recovery"];
    assert_eq!(rec["success"], true, "{rec:#}");
    assert_eq!(rec["state_restored"], true, "{rec:#}");
    let snap = wait_route(&base, "/api/health/last_snapshot", |c, _| c == 200).await;
    assert_eq!(
        // The store keeps microseconds; the live status had nanoseconds.
        at(&snap["last_snapshot_at"]).timestamp_micros(),
        first_snapshot.timestamp_micros(),
        "the stored snapshot is reported, and no new one is due yet: {snap:#}"
    );
    assert!(
        snap["age_seconds"].as_i64().is_some_and(|a| a >= 0),
        "{snap:#}"
    );
}
