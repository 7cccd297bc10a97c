//! Health by message over real HTTP: the six actors answer, an unresponsive one fails health
//! quickly, only GET/HEAD are served, and `/metrics` is valid Prometheus text.

mod common;

use std::time::{Duration, Instant};

use ractor::{call_t, cast};
use tradebaas_actors::hooks::TestHook;
use tradebaas_actors::strategy::StrategyMsg;
use tradebaas_actors::testkit::wait_until;

const SIX: [&str; 6] = [
    "alert",
    "broker-connection",
    "fail-safe",
    "heartbeat",
    "state-persister",
    "strategy",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_six_actors_answer_and_the_daemon_is_healthy() {
    let h = common::start(|_, _| {}).await;
    h.ready().await;
    let (code, body) = h
        .wait_for("/health", Duration::from_secs(10), |c, b| {
            // CPU is measured between two heartbeat samples: known after the first round.
            c == 200
                && b["actors"]["strategy"]["ticks_received"].as_u64() > Some(0)
                && b["system"]["cpu_percent"].is_number()
        })
        .await;
    assert_eq!(code, 200);
    assert!(
        matches!(body["status"].as_str(), Some("healthy" | "degraded")),
        "{body:#}"
    );
    let actors = body["actors"].as_object().unwrap();
    let keys: Vec<&str> = actors.keys().map(String::as_str).collect();
    assert_eq!(keys, SIX);
    for (name, a) in actors {
        assert_eq!(a["status"], "running", "{name}: {a}");
        assert_eq!(a["restarts"], 0, "{name}: {a}");
    }
    chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).unwrap();
    assert!(body["uptime_seconds"].is_u64());
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["mode"], "OBSERVE_ONLY");
    let b = &body["actors"]["broker-connection"];
    assert_eq!(b["state"], "connected");
    assert_eq!(b["circuit_breaker"], "closed");
    assert!(b["last_market_data_at"].is_string(), "{b}");
    assert!(b["reconnect_attempts"].is_u64());
    assert_eq!(body["actors"]["strategy"]["active"], 1);
    for k in ["memory_percent", "cpu_percent", "rss_bytes"] {
        assert!(body["system"][k].is_number(), "system.{k}: {body:#}");
    }
    assert!(body["system"]["rss_bytes"].as_u64() > Some(0));
    // The credential never shows.
    assert!(!body.to_string().contains(common::SECRET));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresponsive_actor_makes_health_503_within_the_timeout() {
    let h = common::start(|_, health| health.actor_timeout = Duration::from_millis(250)).await;
    h.ready().await;
    let strategy = h.names.get::<StrategyMsg>().unwrap();
    cast!(
        strategy,
        StrategyMsg::Hook(TestHook::Wedge(Duration::from_millis(2500)))
    )
    .unwrap();
    // Wedged once a ping goes unanswered (not after a guessed delay).
    wait_until("the strategy wedged", Duration::from_secs(5), async || {
        call_t!(strategy, StrategyMsg::Ping, 20).is_err()
    })
    .await;
    let t = Instant::now();
    let (code, body) = h.get("/health").await;
    let took = t.elapsed();
    assert_eq!(code, 503, "{body:#}");
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(
        body["actors"]["strategy"]["status"], "unresponsive",
        "{body:#}"
    );
    assert_eq!(body["actors"]["alert"]["status"], "running");
    assert!(
        took < Duration::from_millis(250 + 250),
        "/health took {took:?} with a 250 ms actor timeout"
    );
    // It recovers by itself once the actor answers again.
    h.wait_for("/health", Duration::from_secs(10), |c, _| c == 200)
        .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_get_and_head_are_served() {
    let h = common::start(|_, _| {}).await;
    let addr = h.http.local_addr;
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in ["/health", "/ready", "/live", "/metrics", "/nope"] {
            let r = tokio::task::spawn_blocking(move || common::raw(addr, method, path))
                .await
                .unwrap();
            assert!(r.starts_with("HTTP/1.1 405"), "{method} {path}: {r}");
            assert!(r.to_lowercase().contains("allow: get, head"), "{r}");
        }
    }
    let r = tokio::task::spawn_blocking(move || common::raw(addr, "GET", "/nope"))
        .await
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    assert!(
        r.contains("application/json") && r.contains("\"error\":\"not found\""),
        "{r}"
    );
    let r = tokio::task::spawn_blocking(move || common::raw(addr, "HEAD", "/live"))
        .await
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let (code, _) = h.get("/live").await;
    assert_eq!(code, 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_text() {
    let h = common::start(|_, _| {}).await;
    h.ready().await;
    let addr = h.http.local_addr;
    let r = tokio::task::spawn_blocking(move || common::raw(addr, "GET", "/metrics"))
        .await
        .unwrap();
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    // Chunked or not, take the exposition text from the first `#` line.
    let text = &body[body.find("# HELP").unwrap()..];
    let text = text.split("\r\n0\r\n").next().unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for want in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "tradebaas_up",
        "tradebaas_healthy",
        "tradebaas_broker_connected",
        "tradebaas_circuit_breaker_open",
        "tradebaas_reconnect_attempts_total",
        "tradebaas_market_data_messages_total",
        "tradebaas_actor_restarts_total",
        "tradebaas_health_check_duration_seconds",
        "tradebaas_strategies_active",
    ] {
        assert!(names.contains(want), "missing {want}");
    }
    // What promtool checks: HELP and TYPE for every family, counters end in _total.
    for (name, doc) in &scrape.docs {
        assert!(!doc.is_empty(), "{name} has no HELP");
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts[3] == "counter" {
            assert!(
                parts[2].ends_with("_total"),
                "counter without _total: {line}"
            );
        }
    }
    let restarts: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "tradebaas_actor_restarts_total")
        .map(|s| s.labels.get("actor").unwrap().to_owned())
        .collect();
    assert_eq!(restarts.len(), 6, "{restarts:?}");
    assert!(text.contains("tradebaas_broker_connected 1"), "{text}");
    assert!(text.contains("tradebaas_strategies_active 1"), "{text}");
    h.stop().await;
}
