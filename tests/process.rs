//! The process around the tree, against the real binary: the hard shutdown limit and the
//! signals, the systemd watchdog across an escalation and a wedge, and a panic in one of the
//! daemon's detached tasks. Misbehaviour comes from `TRADEBAAS_TEST_HOOKS` (actors/src/hooks.rs;
//! child hooks act on SIGUSR1).

mod common;

use std::time::{Duration, Instant};

use common::process::{Daemon, FakeNotifySocket, ROOT, config_with, wait_health};
use serde_json::Value;

fn default_config() -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{ROOT}/config/default.toml"))
}

/// Waits until /health reports `child` with `status` (e.g. `unresponsive`, `escalated`).
async fn wait_child(base: &str, child: &str, status: &str) -> Value {
    wait_health(base, Duration::from_secs(30), |b| {
        b["actors"][child]["status"] == status
    })
    .await
}

async fn ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = tradebaas::status::get(base, "/ready", Duration::from_secs(2)).await {
            return;
        }
        assert!(Instant::now() < deadline, "not ready within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A wedged actor holds a tokio worker forever, so graceful shutdown cannot finish and dropping
/// the runtime would wait for it: at `server.shutdown_timeout` the process exits 1 anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_wedged_actor_exits_1_at_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        "short-limit.toml",
        &[("shutdown_timeout = \"10s\"", "shutdown_timeout = \"1s\"")],
    );
    let mut daemon = Daemon::start(
        &dir.path().join("data"),
        &config,
        &[("TRADEBAAS_TEST_HOOKS", "wedge:strategy")],
    );
    let base = daemon.base_url();
    ready(&base).await;
    daemon.signal("USR1");
    wait_child(&base, "strategy", "unresponsive").await;

    daemon.signal("TERM");
    let sent = Instant::now();
    let code = daemon.wait_exit(Duration::from_secs(20));
    let took = sent.elapsed();
    assert_eq!(code, Some(1), "took {took:?}; log:\n{}", daemon.log());
    // 1 s limit; the margin is for a loaded machine, far below the hour of the wedge.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "exited after {took:?}, limit 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_0_after_the_four_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(&dir.path().join("data"), &default_config(), &[]);
    let base = daemon.base_url();
    ready(&base).await;
    daemon.signal("INT");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        daemon.log()
    );
    let lines = daemon.json_lines();
    assert!(
        lines
            .iter()
            .any(|v| v["message"] == "shutdown: signal received" && v["signal"] == "SIGINT"),
        "{}",
        daemon.log()
    );
    assert!(daemon.logged("shutdown step 4/4 done: stop_actors"));
}

/// A second signal during a shutdown that is stuck (here on a wedged strategy, well inside the
/// default 10 s limit) exits at once with code 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_a_slow_shutdown_exits_1_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(
        &dir.path().join("data"),
        &default_config(),
        &[("TRADEBAAS_TEST_HOOKS", "wedge:strategy")],
    );
    let base = daemon.base_url();
    ready(&base).await;
    daemon.signal("USR1");
    wait_child(&base, "strategy", "unresponsive").await;
    daemon.signal("TERM");
    // Stopping the wedged strategy takes its 2 s graceful stop plus 2 s for the kill.
    daemon.wait_logged("shutdown step 2/4: stop_trading", Duration::from_secs(10));
    assert_eq!(daemon.wait_exit(Duration::from_millis(300)), None);
    daemon.signal("INT");
    let sent = Instant::now();
    let code = daemon.wait_exit(Duration::from_secs(10));
    let took = sent.elapsed();
    assert_eq!(code, Some(1), "{}", daemon.log());
    assert!(
        took < Duration::from_millis(1500),
        "second signal took {took:?}"
    );
    assert!(daemon.logged("second signal during shutdown"));
}

/// ADR 0002 under systemd: an escalated child is left stopped on purpose and reported by
/// /health, its alert and SHUTDOWN; the watchdog (is the process wedged?) keeps being fed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_go_on_after_an_escalation() {
    let systemd = FakeNotifySocket::new();
    let dir = tempfile::tempdir().unwrap();
    let socket = systemd.path.to_str().unwrap().to_owned();
    let daemon = Daemon::start(
        &dir.path().join("data"),
        &default_config(),
        &[
            ("NOTIFY_SOCKET", socket.as_str()),
            // WatchdogSec=1s: a round every 500 ms.
            ("WATCHDOG_USEC", "1000000"),
            ("TRADEBAAS_TEST_HOOKS", "escalate:strategy"),
        ],
    );
    let base = daemon.base_url();
    systemd.wait("READY=1", 1, Duration::from_secs(30));
    let before = systemd.with("WATCHDOG=1").len();
    systemd.wait("WATCHDOG=1", before + 2, Duration::from_secs(10));

    daemon.signal("USR1");
    let body = wait_health(&base, Duration::from_secs(30), |b| {
        b["actors"]["strategy"]["status"] == "escalated" && b["mode"] == "SHUTDOWN"
    })
    .await;
    assert!(
        body["actors"]["alert"]["open_alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["key"] == "escalation:strategy" && a["severity"] == "CRITICAL"),
        "{body:#}"
    );
    // From now on every round counts the strategy as escalated, not unanswered.
    let escalated = Instant::now();
    let fed = systemd.with("WATCHDOG=1").len();
    let pings = systemd.wait("WATCHDOG=1", fed + 4, Duration::from_secs(10));
    let last = &pings.last().unwrap().1;
    assert!(pings.last().unwrap().0 > escalated);
    assert!(
        last.contains("escalated (stopped, see /health): strategy"),
        "{last}"
    );
    let body = wait_health(&base, Duration::from_secs(5), |b| {
        b["actors"]["heartbeat"]["escalated"] == serde_json::json!(["strategy"])
    })
    .await;
    assert_eq!(
        body["actors"]["heartbeat"]["unanswered"],
        serde_json::json!([])
    );
    // One root cause, one alert: no open heartbeat alert for the escalated child.
    let open: Vec<&Value> = body["actors"]["alert"]["open_alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["key"] == "heartbeat:unanswered:strategy")
        .collect();
    assert!(open.is_empty(), "{open:#?}");
    // Still unhealthy: the escalation is reported where operators look.
    let (code, _) = tradebaas::status::get(&base, "/health", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(code, 503);
}

/// A running child that does not answer is a wedge: WATCHDOG=1 stops, so systemd restarts us.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_stop_while_an_actor_is_wedged() {
    let systemd = FakeNotifySocket::new();
    let dir = tempfile::tempdir().unwrap();
    let socket = systemd.path.to_str().unwrap().to_owned();
    let daemon = Daemon::start(
        &dir.path().join("data"),
        &default_config(),
        &[
            ("NOTIFY_SOCKET", socket.as_str()),
            ("WATCHDOG_USEC", "1000000"),
            ("TRADEBAAS_TEST_HOOKS", "wedge:strategy"),
        ],
    );
    let base = daemon.base_url();
    systemd.wait("READY=1", 1, Duration::from_secs(30));
    let before = systemd.with("WATCHDOG=1").len();
    systemd.wait("WATCHDOG=1", before + 2, Duration::from_secs(10));

    daemon.signal("USR1");
    daemon.wait_logged(
        "actor does not answer its heartbeat",
        Duration::from_secs(10),
    );
    // A round answered just before the wedge may still arrive; then nothing for 4 rounds.
    std::thread::sleep(Duration::from_millis(700));
    let fed = systemd.with("WATCHDOG=1").len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        systemd.with("WATCHDOG=1").len(),
        fed,
        "WATCHDOG=1 sent while the strategy was wedged"
    );
    let last = systemd.received.lock().unwrap().last().cloned().unwrap().1;
    assert!(last.contains("no answer from strategy"), "{last}");
    let body = wait_child(&base, "strategy", "unresponsive").await;
    assert_eq!(
        body["actors"]["heartbeat"]["escalated"],
        serde_json::json!([])
    );
}

/// A panic in a detached task of the daemon (here its recovery task, after start-up) goes the
/// way of a panic in `main`: SHUTDOWN latched and stored, CRITICAL `failsafe:unrecoverable_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_detached_task_latches_shutdown_and_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut daemon = Daemon::start(
        &data,
        &default_config(),
        &[("TRADEBAAS_TEST_HOOKS", "panic:after_startup")],
    );
    let base = daemon.base_url();
    let body = wait_health(&base, Duration::from_secs(30), |b| {
        b["mode"] == "SHUTDOWN" && b["actors"]["fail-safe"]["last_trigger"] == "unrecoverable_error"
    })
    .await;
    let alert = body["actors"]["alert"]["open_alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "failsafe:unrecoverable_error")
        .cloned()
        .unwrap_or_else(|| panic!("no unrecoverable_error alert: {body:#}"));
    assert_eq!(alert["severity"], "CRITICAL");
    assert!(
        alert["message"].as_str().is_some_and(
            |m| m.contains("the task `recovery` panicked: test hook: panic at after_startup")
        ),
        "{alert:#}"
    );
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        daemon.log()
    );

    // SHUTDOWN was stored: the next run, without the hook, still does not trade.
    let daemon = Daemon::start(&data, &default_config(), &[]);
    let base = daemon.base_url();
    let body = wait_health(&base, Duration::from_secs(30), |b| {
        b["actors"]["fail-safe"]["loaded"] == true
    })
    .await;
    assert_eq!(body["mode"], "SHUTDOWN", "{body:#}");
    assert!(
        body["actors"]["fail-safe"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("unrecoverable_error: ")),
        "{body:#}"
    );
}

/// A loopback HTTP receiver on a thread: answers 200 to every request and keeps the bodies.
fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Head, then as many body bytes as Content-Length says.
            let complete = |buf: &[u8]| {
                let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                (buf.len() >= end + 4 + len).then(|| end + 4)
            };
            let body_at = loop {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if let Some(at) = complete(&buf) {
                    break Some(at);
                }
            };
            let Some(at) = body_at else { continue };
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[at..]).into_owned());
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
        }
    });
    (url, seen)
}

/// A panic inside an alert sink's delivery task is supervised: the task starts again, the
/// delivery it held is delivered, and the sink's status says what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_an_alert_sink_restarts_its_task_and_the_alert_is_still_delivered() {
    let (url, seen) = receiver();
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        "sink.toml",
        &[
            (
                "[alert.webhook]                # POST the Alertmanager webhook-v4 body, so Alertmanager receivers accept it\nenabled = false\nurl = \"http://127.0.0.1:9095/alerts\"",
                &format!("[alert.webhook]\nenabled = true\nurl = \"{url}\""),
            ),
            (
                "backoff = { initial = \"1s\", max = \"30s\", multiplier = 2.0, jitter = 0.1 }  # between tries",
                "backoff = { initial = \"100ms\", max = \"1s\", multiplier = 2.0, jitter = 0.1 }  # between tries",
            ),
        ],
    );
    // The recovery task panics (an alert to deliver), and so does the sink's first delivery.
    let daemon = Daemon::start(
        &dir.path().join("data"),
        &config,
        &[(
            "TRADEBAAS_TEST_HOOKS",
            "panic:after_startup,panic_once:alert_sink_delivery",
        )],
    );
    let base = daemon.base_url();
    let body = wait_health(&base, Duration::from_secs(30), |b| {
        b["actors"]["alert"]["sinks"][0]["delivered"].as_u64() >= Some(1)
    })
    .await;
    let sink = &body["actors"]["alert"]["sinks"][0];
    assert_eq!(sink["sink"], "webhook", "{sink:#}");
    assert_eq!(sink["restarts"], 1, "{sink:#}");
    assert!(
        sink["last_error"]
            .as_str()
            .is_some_and(|e| e == "delivery task panicked: test hook: panic at alert_sink_delivery"),
        "{sink:#}"
    );
    let bodies = seen.lock().unwrap().clone();
    assert!(
        bodies.iter().any(|b| b.contains("unrecoverable_error")),
        "the held alert was not delivered after the restart: {bodies:?}"
    );
    assert!(
        daemon.logged("alert sink delivery task panicked; starting it again"),
        "{}",
        daemon.log()
    );
}

/// Below `[store] disk_free_floor` the daemon itself raises `store:disk_low` (WARNING) before
/// any write fails; trading is not restricted by it. (A floor above any real disk's free space
/// stands in for a full disk.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_space_below_the_floor_raises_the_disk_alert() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        "disk.toml",
        &[
            (
                "disk_free_floor = 1073741824",
                "disk_free_floor = 18446744073709551615",
            ),
            (
                "evaluate_interval = \"5s\"",
                "evaluate_interval = \"100ms\"",
            ),
        ],
    );
    let daemon = Daemon::start(&dir.path().join("data"), &config, &[]);
    let base = daemon.base_url();
    let body = wait_health(&base, Duration::from_secs(30), |b| {
        b["actors"]["alert"]["open_alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["key"] == "store:disk_low"))
    })
    .await;
    let alert = body["actors"]["alert"]["open_alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "store:disk_low")
        .unwrap()
        .clone();
    assert_eq!(alert["severity"], "WARNING", "{alert:#}");
    assert!(
        alert["message"]
            .as_str()
            .is_some_and(|m| m.contains("below the floor") && m.contains("disk_free_floor")),
        "{alert:#}"
    );
    assert_eq!(
        body["mode"], "AGGRESSIVE",
        "the disk alert does not change the mode"
    );
    let p = &body["actors"]["state-persister"];
    assert!(p["disk_free_bytes"].as_u64().is_some(), "{p:#}");
    assert_eq!(p["disk_free_floor_bytes"], u64::MAX, "{p:#}");
}

/// A panic in one of an actor's helper tasks (here the fail-safe's evaluation task) fails the
/// actor, so the supervisor restarts it and the work goes on; before, the fail-safe waited
/// forever for the evaluation the task never sent, and its watch stopped without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_an_actors_helper_task_restarts_the_actor_and_its_work_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        "helper.toml",
        &[
            // A condition the watch reports at once, to see that it still evaluates.
            (
                "disk_free_floor = 1073741824",
                "disk_free_floor = 18446744073709551615",
            ),
            (
                "evaluate_interval = \"5s\"",
                "evaluate_interval = \"100ms\"",
            ),
        ],
    );
    let daemon = Daemon::start(
        &dir.path().join("data"),
        &config,
        &[("TRADEBAAS_TEST_HOOKS", "panic_once:failsafe_evaluate")],
    );
    let base = daemon.base_url();
    let body = wait_health(&base, Duration::from_secs(30), |b| {
        b["actors"]["alert"]["open_alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["key"] == "store:disk_low"))
    })
    .await;
    let fs = &body["actors"]["fail-safe"];
    assert_eq!(fs["restarts"], 1, "{fs:#}");
    assert!(
        fs["last_failure"]["reason"].as_str().is_some_and(
            |f| f.contains("task `evaluate` panicked: test hook: panic at failsafe_evaluate")
        ),
        "{fs:#}"
    );
    assert_eq!(
        body["mode"], "AGGRESSIVE",
        "the stored mode is reloaded after the restart"
    );
}
