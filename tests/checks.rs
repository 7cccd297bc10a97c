//! Start-up checks and periodic data integrity on the real binary: each check failing on a
//! crafted store starts the daemon in OBSERVE_ONLY with one `startup_checks` alert naming it; an
//! unreachable exchange fails `exchange`; a violation introduced while running is caught by the
//! periodic run (and resolved when repaired); `tradebaas check` prints the report and exits by it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::process::{BIN, Daemon};
use serde_json::{Value, json};
use tradebaas::status::get;
use tradebaas_actors::store::{Change, SnapshotKind, Store, chain_hash};
use tradebaas_actors::strategy::{Lifecycle, StrategyRecord};
use tradebaas_actors::testkit;

/// Generous: one daemon per crafted fault starts at once on two shared cores.
const WAIT: Duration = Duration::from_secs(40);

/// Polls `/health` until `pred` holds; returns the body (the daemon's log in the failure).
async fn wait_health(d: &Daemon, base: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    d.wait_health(base, what, WAIT, pred).await
}

fn checks(health: &Value) -> &Value {
    &health["actors"]["fail-safe"]["checks"]
}

fn failed(health: &Value) -> Vec<String> {
    checks(health)["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["passed"] == false)
                .map(|c| c["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn alert<'a>(health: &'a Value, key: &str) -> Option<&'a Value> {
    health["actors"]["alert"]["recent"]
        .as_array()?
        .iter()
        .rev()
        .find(|a| a["key"] == key)
}

/// A config on the embedded paper exchange that would trade at once, without order management.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("tradebaas.toml");
    std::fs::write(
        &path,
        format!(
            "[fail_safe]\ninitial_mode = \"AGGRESSIVE\"\n\n[execution]\nenabled = false\n\n{extra}"
        ),
    )
    .unwrap();
    path
}

/// A store whose only fault is the one `craft` makes.
fn crafted_store(data: &Path, craft: impl FnOnce(&mut Store, &Path)) {
    std::fs::create_dir_all(data).unwrap();
    let path = data.join("tradebaas.db");
    let mut store = Store::open(&path).unwrap();
    store.begin_run(None).unwrap();
    store.mark_clean().unwrap();
    craft(&mut store, &path);
}

/// Appends an event dated `ts` with a correct chain hash (the chain verifies; only the time is
/// wrong).
fn append_event_at(store: &Store, path: &Path, ts: &str) {
    let last = store.events(0, usize::MAX).unwrap().pop().unwrap();
    let seq = last.seq + 1;
    let hash = chain_hash(&last.hash, seq, "crafted-future", ts, "crafted", "{}");
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute(
        "INSERT INTO events (seq, event_id, ts, kind, payload, prev_hash, hash)
         VALUES (?1, 'crafted-future', ?2, 'crafted', '{}', ?3, ?4)",
        rusqlite::params![seq as i64, ts, last.hash, hash],
    )
    .unwrap();
}

/// One daemon per crafted fault, all at once: each starts OBSERVE_ONLY (or stricter) with one
/// CRITICAL `startup_checks` alert naming the check, shown in /health and /ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failed_startup_check_starts_observe_only_with_an_alert_naming_it() {
    type Craft = Box<dyn FnOnce(&mut Store, &Path)>;
    let cases: Vec<(&str, Craft)> = vec![
        (
            "event_log",
            Box::new(|s, p| append_event_at(s, p, "2099-01-01T00:00:00.000000Z")),
        ),
        (
            "snapshots",
            Box::new(|_, p| {
                let conn = rusqlite::Connection::open(p).unwrap();
                let payload =
                    json!({ "capital": testkit::btc_capital(10.0), "positions": [] }).to_string();
                conn.execute(
                    "INSERT INTO snapshots (taken_at, kind, payload, event_seq)
                     VALUES ('2099-01-01T00:00:00.000000Z', 'daily', ?1, 1)",
                    [payload],
                )
                .unwrap();
            }),
        ),
        (
            // Consistent locally, but the paper account holds 10 BTC: 50% apart.
            "capital",
            Box::new(|s, _| {
                s.snapshot(
                    SnapshotKind::Daily,
                    &json!({ "capital": testkit::btc_capital(5.0), "positions": [] }),
                )
                .unwrap();
            }),
        ),
        (
            "strategy_states",
            Box::new(|s, _| {
                let mut r = StrategyRecord::idle("example");
                r.lifecycle = Lifecycle::PositionOpen;
                s.commit(
                    &Change::event("crafted", json!({}))
                        .set("strategy.example", serde_json::to_value(r).unwrap()),
                )
                .unwrap();
            }),
        ),
        (
            "mode",
            Box::new(|s, _| {
                s.commit(&Change::event("crafted", json!({})).set("mode", json!({"mode": "YOLO"})))
                    .unwrap();
            }),
        ),
        ("none", Box::new(|_, _| {})),
    ];
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let mut daemons = Vec::new();
    for (name, craft) in cases {
        let data = root.path().join(name);
        crafted_store(&data, craft);
        let d = Daemon::start(&data, &config, &[]);
        let base = d.base_url();
        daemons.push((name, d, base));
    }
    for (name, d, base) in &daemons {
        let health = wait_health(d, base, "a start-up checks report", |h| {
            checks(h)["kind"] == "startup"
        })
        .await;
        if *name == "none" {
            assert_eq!(checks(&health)["passed"], true, "{health:#}");
            assert!(
                alert(&health, "startup_checks:failed").is_none(),
                "{health:#}"
            );
            continue;
        }
        assert_eq!(failed(&health), [name.to_string()], "{name}: {health:#}");
        let health = wait_health(d, base, "the alert and the restriction", |h| {
            alert(h, "startup_checks:failed").is_some() && h["mode"] != "AGGRESSIVE"
        })
        .await;
        let a = alert(&health, "startup_checks:failed").unwrap();
        assert_eq!(a["severity"], "CRITICAL");
        assert!(
            a["message"].as_str().unwrap().contains(name),
            "{name}: {a:#}"
        );
        assert_eq!(a["metadata"]["failed"], json!([name]), "{a:#}");
        // A stored mode that cannot be read latches SHUTDOWN (the fail-safe fails closed).
        let want = if *name == "mode" {
            "SHUTDOWN"
        } else {
            "OBSERVE_ONLY"
        };
        assert_eq!(health["mode"], want, "{name}: {health:#}");
        let (_, body) = get(base, "/ready", Duration::from_secs(2)).await.unwrap();
        let ready: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(ready["checks_failed"][0]["name"], *name, "{ready:#}");
    }
}

/// The exchange refuses every connection: `exchange` fails at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_exchange_fails_the_exchange_check() {
    use tradebaas::paper_exchange::{PaperConfig, PaperExchange};
    let paper = PaperExchange::start(PaperConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    paper.add_credentials("checks", "checks-secret-0123456789");
    paper.faults().refuse_for(Duration::from_secs(120));
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        &format!(
            "[broker]\nurl = \"{}\"\n\n[recovery]\ntimeout = \"1s\"\n",
            paper.url()
        ),
    );
    let env = [
        ("DERIBIT_CLIENT_ID", "checks"),
        ("DERIBIT_CLIENT_SECRET", "checks-secret-0123456789"),
    ];
    let d = Daemon::start(&root.path().join("data"), &config, &env);
    let base = d.base_url();
    let health = wait_health(&d, &base, "the exchange check failing", |h| {
        checks(h)["kind"] == "startup" && alert(h, "startup_checks:failed").is_some()
    })
    .await;
    assert_eq!(failed(&health), ["exchange"], "{health:#}");
    assert_eq!(health["mode"], "OBSERVE_ONLY");
    let a = alert(&health, "startup_checks:failed").unwrap();
    assert!(a["message"].as_str().unwrap().contains("exchange"), "{a:#}");
    let (code, body) = get(&base, "/ready", Duration::from_secs(2)).await.unwrap();
    let ready: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 503, "the broker is not connected: {ready:#}");
    assert_eq!(ready["checks_failed"][0]["name"], "exchange", "{ready:#}");
    drop(d);
    paper.shutdown().await;
}

fn run_check(config: &Path, data: &Path, json: bool) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env_remove("TRADEBAAS_DATA_DIR");
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The periodic run (every 300 ms here) catches a bad record written into the running daemon's
/// store, restricts to OBSERVE_ONLY with `integrity:strategy_states`, and resolves the alert once
/// the record is repaired; a capital mismatch fires `capital_inconsistent` (SHUTDOWN). Meanwhile
/// `tradebaas check` reads the same store beside the daemon, exit code by verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_run_catches_a_violation_introduced_while_running() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "[checks]\ninterval = \"300ms\"\n");
    let data = root.path().join("data");
    let d = Daemon::start(&data, &config, &[]);
    let base = d.base_url();
    wait_health(&d, &base, "a passing periodic run", |h| {
        checks(h)["kind"] == "periodic" && checks(h)["passed"] == true && h["mode"] == "AGGRESSIVE"
    })
    .await;
    let (code, out) = run_check(&config, &data, false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("all 5 checks passed"), "{out}");

    let conn = rusqlite::Connection::open(data.join("tradebaas.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "INSERT INTO state (key, value, updated_at) VALUES ('strategy.ghost', '{\"id\": 1}', '2026-01-01T00:00:00Z')",
        [],
    )
    .unwrap();
    let health = wait_health(&d, &base, "the violation caught", |h| {
        checks(h)["kind"] == "periodic"
            && failed(h) == ["strategy_states"]
            && h["mode"] == "OBSERVE_ONLY"
            && alert(h, "integrity:strategy_states").is_some()
    })
    .await;
    let a = alert(&health, "integrity:strategy_states").unwrap();
    assert_eq!(a["severity"], "CRITICAL");
    assert!(a["resolved_at"].is_null());
    assert!(d.log().contains("data integrity check failed"));
    let (code, out) = run_check(&config, &data, true);
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["passed"], false);

    conn.execute("DELETE FROM state WHERE key = 'strategy.ghost'", [])
        .unwrap();
    wait_health(&d, &base, "the alert resolved", |h| {
        checks(h)["passed"] == true
            && alert(h, "integrity:strategy_states").is_some_and(|a| a["resolved_at"].is_string())
    })
    .await;

    // A snapshot whose equity is half the exchange's: the capital reconciliation fails.
    let last_seq: i64 = conn
        .query_row("SELECT max(seq) FROM events", [], |r| r.get(0))
        .unwrap();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let payload = json!({ "capital": testkit::btc_capital(5.0), "positions": [] }).to_string();
    conn.execute(
        "INSERT INTO snapshots (taken_at, kind, payload, event_seq) VALUES (?1, 'daily', ?2, ?3)",
        rusqlite::params![now, payload, last_seq],
    )
    .unwrap();
    let health = wait_health(&d, &base, "capital_inconsistent", |h| {
        h["mode"] == "SHUTDOWN"
            && h["actors"]["fail-safe"]["last_trigger"] == "capital_inconsistent"
    })
    .await;
    assert!(
        alert(&health, "failsafe:capital_inconsistent").is_some(),
        "{health:#}"
    );
    drop(d);
}

/// `tradebaas check` on crafted stores: 0 when all pass, 1 when one fails, 2 on a bad config.
#[test]
fn check_exits_by_the_verdict() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), "");
    let data = root.path().join("data");
    crafted_store(&data, |s, _| {
        s.snapshot(
            SnapshotKind::Daily,
            &json!({ "capital": testkit::btc_capital(10.0), "positions": [] }),
        )
        .unwrap();
    });
    let (code, out) = run_check(&config, &data, false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("PASS  capital"), "{out}");

    // An inconsistent snapshot: equity ≠ balance + session_upl.
    let mut bad = testkit::btc_capital(10.0);
    bad["BTC"]["balance"] = json!(7.0);
    let mut store = Store::open(&data.join("tradebaas.db")).unwrap();
    store
        .snapshot(
            SnapshotKind::Daily,
            &json!({ "capital": bad, "positions": [] }),
        )
        .unwrap();
    drop(store);
    let (code, out) = run_check(&config, &data, false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  capital"), "{out}");
    assert!(out.contains("FAILED: capital"), "{out}");

    let (code, out) = run_check(&config, &root.path().join("empty"), false);
    assert_eq!(code, 1, "a missing store fails: {out}");

    let typo = root.path().join("typo.toml");
    std::fs::write(&typo, "[checks]\ncapital_tolerance = 3.0\n").unwrap();
    let (code, _) = run_check(&typo, &data, false);
    assert_eq!(code, 2);
}
