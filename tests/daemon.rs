//! The real `tradebaas` binary, started as a process: what only a process shows (ports, signals,
//! exit codes, log lines).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{
    BIN, Daemon, FakeNotifySocket, ROOT, default_config, poll, wait_health, wait_status,
};
use serde_json::Value;
use tradebaas::status::get;
use tradebaas_actors::testkit::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_config_becomes_ready_and_healthy() {
    let daemon = Daemon::fresh();
    let base = daemon.base_url();
    let ready = wait_status(&base, "/ready", 200, Duration::from_secs(20)).await;
    assert_eq!(ready["ready"], true);
    let health = wait_status(&base, "/health", 200, Duration::from_secs(10)).await;
    assert!(
        matches!(health["status"].as_str(), Some("healthy" | "degraded")),
        "{health}"
    );
    for actor in common::ACTORS {
        assert_eq!(
            health["actors"][actor]["status"], "running",
            "{actor}: {health}"
        );
    }
    assert_eq!(health["actors"]["broker-connection"]["state"], "connected");
    // The first daily snapshot is taken right after recovery on a fresh store.
    wait_health(&base, Duration::from_secs(10), |v| {
        v["actors"]["state-persister"]["last_snapshot_at"].is_string()
    })
    .await;
    let (code, _) = get(&base, "/live", Duration::from_secs(2)).await.unwrap();
    assert_eq!(code, 200);
    let (code, body) = get(&base, "/metrics", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("tradebaas_broker_connected 1"), "{text}");
    // Secrets: the embedded exchange's generated credentials never reach the log or health.
    let log = daemon.lines.lock().unwrap().join("\n");
    assert!(!log.contains("client_secret\":\""), "{log}");
}

/// The shipped unit's `ProcSubset=pid`, for real: the binary runs in its own mount and PID
/// namespace with `/proc` mounted `subset=pid` (no `/proc/meminfo`, no `/proc/stat`). Memory is
/// then measured against the cgroup limit or reported unknown, never 0 %, and CPU is measured
/// from `/proc/self/stat`. Needs `unshare` and the right to mount (root, as in CI's container);
/// where that is refused it says so and checks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_proc_subset_pid_health_never_reports_zero_memory() {
    const MOUNT: &str = "mount -t proc -o subset=pid proc /proc && test ! -e /proc/meminfo";
    let probe = Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "sh", "-c", MOUNT])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: cannot mount /proc with subset=pid here (needs unshare and root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = default_config();
    let script = format!("{MOUNT} && exec \"$0\" \"$@\"");
    let wrapper = [
        "unshare",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "sh",
        "-c",
        &script,
    ];
    let daemon = Daemon::start_wrapped(&wrapper, dir.path(), &config, &[]);
    let base = daemon.base_url();
    wait_status(&base, "/ready", 200, Duration::from_secs(20)).await;
    // The first heartbeat round (5 s) brings the CPU figure.
    let sys = wait_health(&base, Duration::from_secs(20), |v| {
        v["system"]["cpu_percent"].is_number()
    })
    .await["system"]
        .clone();
    assert!(sys["rss_bytes"].as_u64() > Some(0), "{sys:#}");
    assert!(
        sys["total_memory_bytes"].is_null(),
        "meminfo is hidden: {sys:#}"
    );
    match sys["memory_percent"].as_f64() {
        Some(p) => {
            assert!(p > 0.0 && p <= 100.0, "{sys:#}");
            assert_eq!(sys["memory_limit_source"], "cgroup", "{sys:#}");
            assert_ne!(sys["memory"], "unknown", "{sys:#}");
        }
        None => {
            assert_eq!(sys["memory"], "unknown", "{sys:#}");
            let why = sys["unknown"][0].as_str().unwrap_or_default();
            assert!(why.starts_with("memory:"), "{sys:#}");
        }
    }
    // The Prometheus process collector reads /proc/self/stat too.
    let (_, body) = get(&base, "/metrics", Duration::from_secs(2))
        .await
        .unwrap();
    let text = String::from_utf8(body).unwrap();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    assert!(value("process_resident_memory_bytes ") > 0.0, "{text}");
    assert!(value("process_cpu_seconds_total ") >= 0.0, "{text}");
    eprintln!("under subset=pid: system {sys}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_logs_the_four_steps() {
    let mut daemon = Daemon::fresh();
    let base = daemon.base_url();
    wait_status(&base, "/ready", 200, Duration::from_secs(20)).await;
    let t = Instant::now();
    daemon.signal("TERM");
    let code = daemon.wait_exit(Duration::from_secs(10));
    let took = t.elapsed();
    let log = daemon.lines.lock().unwrap().join("\n");
    assert_eq!(code, Some(0), "exit code after SIGTERM; log:\n{log}");
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    let lines = daemon.json_lines();
    let steps: Vec<&str> = lines
        .iter()
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shutdown step") && m.contains("done"))
        })
        .filter_map(|v| v["step"].as_str())
        .collect();
    assert_eq!(
        steps,
        ["stop_http", "stop_trading", "flush_state", "stop_actors"],
        "log:\n{log}"
    );
    assert!(
        lines
            .iter()
            .filter(
                |v| v["step"].is_string() && v["message"].as_str().unwrap_or("").contains("done")
            )
            .all(|v| v["duration_ms"].is_u64()),
        "every step logs its duration"
    );
    // The broker closed its session during stop_trading.
    assert!(log.contains("exchange session closed"), "log:\n{log}");
}

#[test]
fn a_config_typo_exits_2_naming_the_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[broker]\nheartbeat_intervall = \"10s\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2"), "{err}");
    assert!(err.contains("heartbeat_intervall"), "{err}");

    // The same through `run`, before anything starts.
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_taken_port_exits_2_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["run", "--listen", &addr, "--data-dir"])
        .arg(dir.path())
        .env_remove("TRADEBAAS_LISTEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_a_table_and_exits_by_verdict() {
    let daemon = Daemon::fresh();
    let base = daemon.base_url();
    wait_status(&base, "/ready", 200, Duration::from_secs(20)).await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["status", "--url", &base])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("broker-connection"), "{text}");
    assert!(matches!(out.status.code(), Some(0 | 1)), "{text}");
    drop(daemon);

    let out = Command::new(BIN)
        .args(["status", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "unreachable is exit 2");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_data_dir_exits_2_naming_the_holder() {
    let first = Daemon::fresh();
    let base = first.base_url();
    wait_status(&base, "/ready", 200, Duration::from_secs(20)).await;
    let dir = first.data_dir().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .env_remove("TRADEBAAS_LISTEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&first.child.id().to_string()),
        "holder pid named: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_a_restart_counts_a_crash_recovers_and_becomes_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Daemon::start(dir.path(), &default_config(), &[]);
    let base = first.base_url();
    wait_status(&base, "/ready", 200, Duration::from_secs(20)).await;
    first.signal("KILL");
    assert_eq!(first.wait_exit(Duration::from_secs(5)), Some(-1));

    let t = Instant::now();
    let mut second = Daemon::start(dir.path(), &default_config(), &[]);
    let base = second.base_url();
    let ready = wait_status(&base, "/ready", 200, Duration::from_secs(20)).await;
    let took = t.elapsed();
    assert_eq!(ready["ready"], true);
    println!("kill -9 → restart → /ready 200 in {took:?} (includes process spawn and polling)");
    let (_, body) = get(&base, "/metrics", Duration::from_secs(2))
        .await
        .unwrap();
    let text = String::from_utf8(body).unwrap();
    assert_eq!(metric(&text, "tradebaas_crashes_total "), 1.0, "{text}");
    assert_eq!(metric(&text, "tradebaas_last_recovery_success "), 1.0);
    let health = wait_status(&base, "/health", 200, Duration::from_secs(5)).await;
    let recovery = &health["actors"]["state-persister"]["recovery"];
    assert_eq!(recovery["broker_reconciled"], true, "{health:#}");
    assert!(recovery["recovery_time_ms"].is_u64());

    // A clean stop is not a crash on the next start.
    second.signal("TERM");
    assert_eq!(second.wait_exit(Duration::from_secs(10)), Some(0));
    let third = Daemon::start(dir.path(), &default_config(), &[]);
    let base = third.base_url();
    wait_status(&base, "/ready", 200, Duration::from_secs(20)).await;
    let (_, body) = get(&base, "/metrics", Duration::from_secs(2))
        .await
        .unwrap();
    let text = String::from_utf8(body).unwrap();
    assert_eq!(metric(&text, "tradebaas_crashes_total "), 0.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_store_is_moved_aside_and_trading_starts_observe_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tradebaas.db"),
        b"this is not a database at all",
    )
    .unwrap();
    // A configuration that would trade at once on a fresh store.
    let config = dir.path().join("aggressive.toml");
    let default = std::fs::read_to_string(format!("{ROOT}/config/default.toml")).unwrap();
    let aggressive = default.replace(
        "# initial_mode = \"OBSERVE_ONLY\"",
        "initial_mode = \"AGGRESSIVE\"  ",
    );
    assert_ne!(aggressive, default, "default.toml documents initial_mode");
    std::fs::write(&config, aggressive).unwrap();
    let daemon = Daemon::start(dir.path(), &config, &[]);
    let base = daemon.base_url();
    let health = wait_health(&base, Duration::from_secs(20), |v| {
        v["actors"]["state-persister"]["recovery"].is_object()
            && v["actors"]["alert"]["open_critical"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(health["mode"], "OBSERVE_ONLY", "{health:#}");
    let recent = health["actors"]["alert"]["recent"].to_string();
    assert!(recent.contains("store:recovered"), "{recent}");
    let moved: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("tradebaas.db.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "the damaged store is kept aside: {moved:?}");
    drop(daemon);
}

/// Polls `/health` until the strategy instance `id` satisfies `pred`; returns it.
async fn wait_strategy(base: &str, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let instance = |v: &Value| {
        v["actors"]["strategy"]["strategies"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["id"] == id))
            .cloned()
    };
    let matched = |_, v: &Value| instance(v).is_some_and(|i| pred(&i));
    let within = Duration::from_secs(30);
    let (_, v) = poll(base, "/health", within, matched, || {
        format!("strategy never {what}")
    })
    .await;
    instance(&v).unwrap()
}

/// The idempotency rule across a process death: the daemon commits the entry intent, sends it,
/// the exchange executes it but holds the answer, and the daemon is SIGKILLed before it hears
/// back. The restarted daemon finds the order by its label, adopts the position, puts its
/// protection back, and never sends the entry again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_commit_and_answer_never_duplicates_the_entry() {
    use tradebaas::paper_exchange::PaperExchange;
    let paper = common::paper_exchange(|c| c.seed = Some(3)).await;
    paper.add_credentials("kill-test", "kill-test-secret-0123456789");
    paper.pause_market(true);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tradebaas.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[broker]
url = "{url}"
heartbeat_interval = "1s"

[fail_safe]
initial_mode = "AGGRESSIVE"

[execution]
check_interval = "100ms"
not_found_grace = "300ms"

[[strategies]]
id = "x"
instrument = "BTC-PERPETUAL"

[strategies.ma_cross]
fast = 2
slow = 3
stop_distance_pct = 0.5
take_profit_pct = 1.0
min_ticks_between_signals = 1000000
"#,
            url = paper.url()
        ),
    )
    .unwrap();
    let env = [
        ("DERIBIT_CLIENT_ID", "kill-test"),
        ("DERIBIT_CLIENT_SECRET", "kill-test-secret-0123456789"),
    ];
    let data = dir.path().join("data");
    let mut first = Daemon::start(&data, &config, &env);
    let base = first.base_url();
    let i = wait_strategy(&base, "x", "analyzing", |i| {
        i["lifecycle"] == "ANALYZING" && i["last_mark_price"].is_f64()
    })
    .await;
    let p0 = i["last_mark_price"].as_f64().unwrap();

    // The exchange will execute the entry at once and sit on the answer for 3 s.
    paper
        .faults()
        .hold_after_accept("private/buy", 1, Duration::from_secs(3));
    paper.set_price("BTC-PERPETUAL", p0 * 0.998);
    tokio::time::sleep(Duration::from_millis(400)).await;
    paper.set_price("BTC-PERPETUAL", p0);
    let entries = |p: &PaperExchange| {
        p.all_orders()
            .into_iter()
            .filter(|o| o["label"] == "tb-x-0")
            .count()
    };
    let what = "the entry reached the exchange";
    wait_until(what, Duration::from_secs(15), async || entries(&paper) > 0).await;
    // Executed on the exchange, answer not sent: the daemon's record says ENTERING_POSITION.
    first.signal("KILL");
    assert_eq!(first.wait_exit(Duration::from_secs(5)), Some(-1));

    let second = Daemon::start(&data, &config, &env);
    let base = second.base_url();
    let i = wait_strategy(&base, "x", "adopted the position", |i| {
        i["lifecycle"] == "POSITION_OPEN" && i["job"].is_null()
    })
    .await;
    let size = i["position"]["size"].as_f64().unwrap();
    // The legs the kill's disconnect cancelled are placed again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let open = paper.open_orders();
        let resting = |l: &str| open.iter().filter(|o| o["label"] == l).count();
        if resting("tb-x-0-sl") == 1 && resting("tb-x-0-tp") == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "protection never restored: {open:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(entries(&paper), 1, "the entry was sent twice");
    assert_eq!(
        paper.stats().requests_by_method.get("private/buy").copied(),
        Some(1),
        "private/buy is the entry only (legs re-placed as sells)"
    );
    let position = paper
        .positions()
        .into_iter()
        .find(|p| p["instrument_name"] == "BTC-PERPETUAL")
        .unwrap();
    assert_eq!(position["size"].as_f64().unwrap(), size);
    drop(second);
    paper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_after_recovery_watchdog_while_alive_stopping_on_sigterm() {
    let systemd = FakeNotifySocket::new();
    let dir = tempfile::tempdir().unwrap();
    let config = default_config();
    let socket = systemd.path.to_str().unwrap().to_owned();
    // WatchdogSec=1s: heartbeat rounds every 500 ms although `[heartbeat] interval` is 5 s.
    let mut daemon = Daemon::start(
        dir.path(),
        &config,
        &[
            ("NOTIFY_SOCKET", socket.as_str()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let base = daemon.base_url();

    // READY=1 only once start-up recovery has finished: its report is already stored.
    let ready = systemd.wait("READY=1", 1, Duration::from_secs(30));
    let (_, body) = get(&base, "/health", Duration::from_secs(2)).await.unwrap();
    let health: Value = serde_json::from_slice(&body).unwrap();
    let recovery = &health["actors"]["state-persister"]["recovery"];
    assert!(
        recovery["finished_at"].is_string(),
        "READY=1 before the recovery report was stored: {health:#}"
    );
    assert!(ready[0].1.contains("STATUS=started"), "{:?}", ready[0].1);
    assert!(
        health["system"]["error_rate_per_minute"].is_f64(),
        "{health:#}"
    );
    wait_status(&base, "/ready", 200, Duration::from_secs(10)).await;
    assert_eq!(systemd.with("READY=1").len(), 1, "READY=1 is sent once");

    // WATCHDOG=1 keeps coming, about every 500 ms.
    let before = systemd.with("WATCHDOG=1").len();
    let pings = systemd.wait("WATCHDOG=1", before + 4, Duration::from_secs(10));
    let mut gaps: Vec<Duration> = pings
        .windows(2)
        .map(|w| w[1].0.duration_since(w[0].0))
        .collect();
    gaps.sort();
    // Rounds every half watchdog (500 ms), not every `interval` (5 s); the median tolerates a
    // loaded machine.
    assert!(
        gaps[gaps.len() / 2] < Duration::from_millis(1000),
        "watchdog gaps {gaps:?} exceed WatchdogSec"
    );
    let (_, body) = get(&base, "/metrics", Duration::from_secs(2))
        .await
        .unwrap();
    let text = String::from_utf8(body).unwrap();
    assert!(metric(&text, "tradebaas_errors_total ") >= 0.0, "{text}");

    // SIGTERM: STOPPING=1, then a clean exit.
    daemon.signal("TERM");
    let stopping = systemd.wait("STOPPING=1", 1, Duration::from_secs(10));
    assert!(stopping[0].0 > ready[0].0);
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notify_socket_nothing_is_sent_and_the_daemon_runs() {
    // The default test daemon has no NOTIFY_SOCKET (and WATCHDOG_USEC alone is ignored).
    let dir = tempfile::tempdir().unwrap();
    let config = default_config();
    let mut daemon = Daemon::start(dir.path(), &config, &[("WATCHDOG_USEC", "1000000")]);
    let base = daemon.base_url();
    wait_status(&base, "/ready", 200, Duration::from_secs(20)).await;
    daemon.wait_line("notify warning", Duration::from_secs(5), |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("NOTIFY_SOCKET is not"))
    });
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_safe_shutdown_survives_a_process_restart() {
    let dir = tempfile::tempdir().unwrap();
    // No exchange at all, and the fail-safe's health grace scaled down: the broker stays
    // disconnected, /health is unhealthy, and the `unhealthy` trigger latches SHUTDOWN.
    let default = std::fs::read_to_string(format!("{ROOT}/config/default.toml")).unwrap();
    let mut text = default.clone();
    for (from, to) in [
        ("url = \"paper\"", "url = \"ws://127.0.0.1:1/ws/api/v2\""),
        ("broker_grace = \"5s\"", "broker_grace = \"200ms\""),
        ("evaluate_interval = \"5s\"", "evaluate_interval = \"50ms\""),
        ("unhealthy_grace = \"10m\"", "unhealthy_grace = \"300ms\""),
    ] {
        assert!(text.contains(from), "default.toml has no {from}");
        text = text.replace(from, to);
    }
    let broken = dir.path().join("no-exchange.toml");
    std::fs::write(&broken, text).unwrap();
    let data = dir.path().join("data");
    let mut daemon = Daemon::start(&data, &broken, &[]);
    let base = daemon.base_url();
    // The trigger's CRITICAL alert reaches the alert actor just after the mode changes: wait for
    // both (asserting the alert on the first SHUTDOWN body was a race, seen 2 in ~9 runs).
    let body = wait_health(&base, Duration::from_secs(20), |b| {
        b["mode"] == "SHUTDOWN"
            && b["actors"]["fail-safe"]["last_trigger"] == "unhealthy"
            && b["actors"]["alert"]["open_critical"].as_u64() >= Some(1)
    })
    .await;
    assert!(
        body["actors"]["alert"]["open_critical"].as_u64() >= Some(1),
        "{body:#}"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(0));

    // A healthy restart with the embedded exchange: the stored SHUTDOWN holds.
    let config = default_config();
    let mut daemon = Daemon::start(&data, &config, &[]);
    let base = daemon.base_url();
    let body = wait_health(&base, Duration::from_secs(20), |b| {
        b["actors"]["fail-safe"]["loaded"] == true
            && b["actors"]["broker-connection"]["state"] == "connected"
    })
    .await;
    assert_eq!(body["mode"], "SHUTDOWN", "{body:#}");
    assert!(
        body["actors"]["fail-safe"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("unhealthy: ")),
        "{body:#}"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(0));
}

/// `tradebaas check-config` on `text` (written to a file) with `env` added; (exit code, stdout).
fn check_config(text: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tradebaas.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("TRADEBAAS_BROKER_URL")
        .env_remove("TRADEBAAS_LISTEN")
        .env_remove("TRADEBAAS_DATA_DIR")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The `# strategies: …` line of a check-config output.
fn strategies_line(out: &str) -> &str {
    out.lines()
        .find(|l| l.starts_with("# strategies: "))
        .unwrap_or_else(|| panic!("no strategies line:\n{out}"))
}

const REAL: &str = "wss://www.deribit.com/ws/api/v2";

#[test]
fn check_config_on_a_minimal_real_exchange_file_says_observe_only_and_no_strategies() {
    let (code, out) = check_config(&format!("[broker]\nurl = \"{REAL}\"\n"), &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "# initial mode OBSERVE_ONLY: broker is not the embedded paper exchange and \
             [fail_safe] initial_mode is not set"
        ),
        "{out}"
    );
    assert!(
        strategies_line(&out).starts_with("# strategies: none: "),
        "{out}"
    );
    assert!(!out.contains("example"), "{out}");
    assert!(!out.contains("AGGRESSIVE"), "{out}");
    assert!(out.contains("# paper/* control methods: off"), "{out}");
}

#[test]
fn check_config_on_the_default_config_with_a_real_broker_url_in_the_env_says_observe_only() {
    let default = std::fs::read_to_string(format!("{ROOT}/config/default.toml")).unwrap();
    // Without the override: the embedded paper exchange trades the example.
    let (code, out) = check_config(&default, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("# initial mode AGGRESSIVE: "), "{out}");
    assert!(
        strategies_line(&out).starts_with("# strategies: example (BTC-PERPETUAL): "),
        "{out}"
    );
    let (code, out) = check_config(&default, &[("TRADEBAAS_BROKER_URL", REAL)]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("# initial mode OBSERVE_ONLY: "), "{out}");
    assert!(
        strategies_line(&out).starts_with("# strategies: none: "),
        "{out}"
    );
    assert!(!out.contains("AGGRESSIVE"), "{out}");
}

#[test]
fn check_config_honours_an_explicit_mode_and_strategies_on_a_real_exchange() {
    let (code, out) = check_config(
        &format!(
            "[broker]\nurl = \"{REAL}\"\n\n[fail_safe]\ninitial_mode = \"AGGRESSIVE\"\n\n\
             [[strategies]]\nid = \"btc-main\"\ninstrument = \"BTC-PERPETUAL\"\n"
        ),
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "# initial mode AGGRESSIVE: [fail_safe] initial_mode is set in the configuration"
        ),
        "{out}"
    );
    assert!(
        strategies_line(&out).starts_with("# strategies: btc-main (BTC-PERPETUAL): named by"),
        "{out}"
    );
}

/// A daemon against an exchange that is not its embedded one (here a paper exchange on a
/// loopback port, which the daemon must treat as real) starts OBSERVE_ONLY with no strategy,
/// and says why in its start-up log line and in /health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_non_embedded_exchange_the_daemon_starts_observe_only_and_says_why() {
    let paper = common::paper_exchange(|c| c.seed = Some(5)).await;
    paper.add_credentials("observe-test", "observe-test-secret-0123456789");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tradebaas.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nurl = \"{}\"\nheartbeat_interval = \"1s\"\n",
            paper.url()
        ),
    )
    .unwrap();
    let env = [
        ("DERIBIT_CLIENT_ID", "observe-test"),
        ("DERIBIT_CLIENT_SECRET", "observe-test-secret-0123456789"),
    ];
    let daemon = Daemon::start(&dir.path().join("data"), &config, &env);
    let started = daemon.wait_line("tradebaas started", Duration::from_secs(20), |v| {
        v["message"] == "tradebaas started"
    });
    assert_eq!(started["initial_mode"], "OBSERVE_ONLY", "{started}");
    assert_eq!(started["strategies"], "none", "{started}");
    assert_eq!(started["embedded_paper"], false, "{started}");
    let why = "broker is not the embedded paper exchange and [fail_safe] initial_mode is not set";
    assert_eq!(started["initial_mode_reason"], why, "{started}");

    let base = daemon.base_url();
    let health = wait_health(&base, Duration::from_secs(20), |b| {
        b["actors"]["fail-safe"]["loaded"] == true
            && b["actors"]["fail-safe"]["recovered"] == true
            && b["actors"]["broker-connection"]["state"] == "connected"
    })
    .await;
    assert_eq!(health["mode"], "OBSERVE_ONLY", "{health:#}");
    let fs = &health["actors"]["fail-safe"];
    assert_eq!(fs["initial_mode"], "OBSERVE_ONLY", "{fs:#}");
    assert_eq!(fs["initial_mode_reason"], why, "{fs:#}");
    assert!(
        fs["reason"].as_str().is_some_and(|r| r.contains(why)),
        "{fs:#}"
    );
    let hosted = health["actors"]["strategy"]["strategies"]
        .as_array()
        .cloned();
    assert_eq!(hosted, Some(Vec::new()), "{health:#}");
    assert!(paper.all_orders().is_empty(), "{:?}", paper.all_orders());
    drop(daemon);
    paper.shutdown().await;
}
