//! The probes by contract, against the real binary and an exchange it reaches over loopback:
//! `/ready` answers 503 while the broker link is down and 200 again once it is back; `/live`
//! answers 200 through the whole outage (liveness is the process, not the exchange: a pod
//! restarted for an exchange outage would only lose its place). And `/health` serves
//! `application/health+json` (draft-inadarei-api-health-check) when, and only when, asked.

mod common;

use std::time::{Duration, Instant};

use common::process::{Daemon, config_with, wait_status};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tradebaas::paper_exchange::PaperExchange;

/// One GET: status code, `Content-Type`, `Vary`, and the body as JSON.
async fn get(base: &str, path: &str, accept: Option<&str>) -> (u16, String, String, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = hyper::Request::get(format!("{base}{path}"));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(req.body(Empty::new()).unwrap()),
    )
    .await
    .unwrap_or_else(|_| panic!("{path}: no answer within 5 s"))
    .unwrap_or_else(|e| panic!("{path}: {e}"));
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (ct, vary) = (header("content-type"), header("vary"));
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (code, ct, vary, json)
}

/// A daemon on `url`, OBSERVE_ONLY (the default off the embedded exchange), reconnecting fast,
/// with a 1 s broker grace; the circuit breaker stays closed through a few seconds of refusals.
fn daemon(dir: &std::path::Path, url: &str) -> Daemon {
    let config = config_with(
        dir,
        "probes.toml",
        &[
            ("url = \"paper\"", &format!("url = \"{url}\"")),
            ("broker_grace = \"5s\"", "broker_grace = \"1s\""),
            (
                "heartbeat_interval = \"10s\"",
                "heartbeat_interval = \"1s\"",
            ),
            ("failures_before_open = 5", "failures_before_open = 1000"),
            (
                "backoff = { initial = \"1s\", max = \"16s\", multiplier = 2.0, jitter = 0.1 }  #",
                "backoff = { initial = \"100ms\", max = \"300ms\", multiplier = 2.0, jitter = 0.1 }  #",
            ),
        ],
    );
    Daemon::start(&dir.join("data"), &config, &[])
}

async fn exchange() -> PaperExchange {
    common::paper_exchange(|c| c.ticks_per_second = 20.0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_the_broker_is_lost_and_200_again_and_live_stays_200() {
    let paper = exchange().await;
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path(), &paper.url());
    let base = d.base_url();
    let body = wait_status(&base, "/ready", 200, Duration::from_secs(30)).await;
    assert_eq!(body["ready"], true, "{body:#}");

    // The outage: every connection dropped, reconnects refused for 4 s.
    let outage = Duration::from_secs(4);
    paper.faults().refuse_for(outage);
    paper.faults().drop_all();
    let began = Instant::now();

    // Through it, /live is polled continuously and must never answer anything but 200;
    // /ready must turn 503 and say it is the broker.
    let mut saw_unready = None::<Value>;
    let mut saw_unhealthy = None::<Value>;
    let mut live_polls = 0;
    while began.elapsed() < outage {
        let (code, _, _, live) = get(&base, "/live", None).await;
        assert_eq!(code, 200, "/live during the outage: {live:#}\n{}", d.log());
        assert_eq!(live["live"], true);
        live_polls += 1;
        let (code, _, _, ready) = get(&base, "/ready", None).await;
        if code == 503 && saw_unready.is_none() {
            saw_unready = Some(ready);
        }
        // Past the 1 s grace the link is down for real: /health is 503, and the health+json
        // view fails on the broker's connection check.
        if saw_unhealthy.is_none() && began.elapsed() > Duration::from_millis(1500) {
            let (code, ct, _, hj) = get(&base, "/health", Some("application/health+json")).await;
            if code == 503 {
                assert_eq!(ct, "application/health+json");
                saw_unhealthy = Some(hj);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unready =
        saw_unready.unwrap_or_else(|| panic!("/ready never 503 in the outage\n{}", d.log()));
    assert_eq!(unready["ready"], false);
    let reason = unready["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("broker is "), "{unready:#}");
    let hj =
        saw_unhealthy.unwrap_or_else(|| panic!("/health never 503 in the outage\n{}", d.log()));
    assert_eq!(hj["status"], "fail", "{hj:#}");
    let link = &hj["checks"]["broker-connection:connection"][0];
    assert_eq!(link["status"], "fail", "{hj:#}");
    assert!(
        link["output"]
            .as_str()
            .is_some_and(|o| o.starts_with("broker disconnected for")),
        "{hj:#}"
    );
    assert!(
        live_polls >= 10,
        "only {live_polls} /live polls in the outage"
    );

    // The exchange is back: ready again, healthy again, and /live never wavered.
    let back = wait_status(&base, "/ready", 200, Duration::from_secs(20)).await;
    assert_eq!(back["ready"], true, "{back:#}");
    let (code, _, _, live) = get(&base, "/live", None).await;
    assert_eq!((code, &live["live"]), (200, &Value::Bool(true)));
    let (code, _, _, hj) = get(&base, "/health", Some("application/health+json")).await;
    assert_eq!(code, 200, "{hj:#}");
    assert_eq!(
        hj["checks"]["broker-connection:connection"][0]["status"],
        "pass"
    );
    assert!(
        paper.stats().connections_refused > 0,
        "the outage refused nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stays_200_while_the_exchange_holds_every_answer() {
    let paper = exchange().await;
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path(), &paper.url());
    let base = d.base_url();
    wait_status(&base, "/ready", 200, Duration::from_secs(30)).await;

    // A silent exchange: the connection stays open but nothing comes back (no ticks, no
    // heartbeats, no answers). The daemon's dead-connection check (2 x 1 s) drops it.
    let stall = Duration::from_secs(4);
    paper.faults().stall_for(stall);
    let began = Instant::now();
    let mut saw_unready = false;
    while began.elapsed() < stall {
        let (code, _, _, live) = get(&base, "/live", None).await;
        assert_eq!(code, 200, "/live during the stall: {live:#}\n{}", d.log());
        let (code, _, _, _) = get(&base, "/ready", None).await;
        saw_unready |= code == 503;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        saw_unready,
        "/ready stayed 200 on a silent exchange\n{}",
        d.log()
    );
    wait_status(&base, "/ready", 200, Duration::from_secs(20)).await;
    let (code, _, _, _) = get(&base, "/live", None).await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_health_json_only_when_asked() {
    let paper = exchange().await;
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path(), &paper.url());
    let base = d.base_url();
    wait_status(&base, "/ready", 200, Duration::from_secs(30)).await;

    // Plain JSON, as before, for no Accept, a wildcard or application/json.
    for accept in [None, Some("*/*"), Some("application/json")] {
        let (code, ct, vary, body) = get(&base, "/health", accept).await;
        assert_eq!(code, 200, "{accept:?}: {body:#}");
        assert_eq!(ct, "application/json", "{accept:?}");
        assert_eq!(vary, "Accept", "{accept:?}");
        assert_eq!(body["status"], "healthy", "{accept:?}: {body:#}");
        assert!(body["actors"].is_object());
    }

    let (code, ct, vary, body) = get(
        &base,
        "/health",
        Some("application/health+json, application/json;q=0.5"),
    )
    .await;
    assert_eq!(
        (code, ct.as_str(), vary.as_str()),
        (200, "application/health+json", "Accept")
    );
    assert_eq!(body["status"], "pass", "{body:#}");
    assert_eq!(body["serviceId"], "tradebaas");
    assert_eq!(body["releaseId"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["notes"][0], "trading mode OBSERVE_ONLY", "{body:#}");
    let checks = body["checks"].as_object().unwrap();
    for actor in common::ACTORS {
        let c = &checks[&format!("{actor}:status")][0];
        assert_eq!(c["status"], "pass", "{actor}: {body:#}");
        assert_eq!(c["observedValue"], "running", "{actor}");
        assert!(c["time"].as_str().is_some(), "{actor}");
    }
    let link = &checks["broker-connection:connection"][0];
    assert_eq!(link["observedValue"], "connected", "{body:#}");
    let age = &checks["broker-connection:marketDataAge"][0];
    assert_eq!(age["observedUnit"], "ms");
    assert!(age["observedValue"].as_u64().is_some(), "{body:#}");
    for key in ["errors:rate", "event-log:age", "execution-queue:status"] {
        assert_eq!(checks[key][0]["status"], "pass", "{key}: {body:#}");
    }
    // Every check is pass/warn/fail and the overall status is the worst of them.
    for (key, list) in checks {
        let s = list[0]["status"].as_str().unwrap_or_default();
        assert!(["pass", "warn", "fail"].contains(&s), "{key}: {s}");
    }
    drop(d);
}
