//! The operator commands against the real binary: `tradebaas mode …` and `tradebaas alerts ack …`
//! over the daemon's admin socket (`<data_dir>/admin.sock`).

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::process::{BIN, Daemon, ROOT, cli_with, default_config, wait_ready};
use serde_json::{Value, json};
use tradebaas_actors::store::{Change, Store};

/// The uid of `nobody`, used to be someone else when the tests run as root.
const NOBODY: u32 = 65534;
/// Generous: two cores shared with other builds.
const WAIT: Duration = Duration::from_secs(30);

/// Polls `/health` until `pred` holds; returns the body.
async fn wait_health(
    daemon: &Daemon,
    base: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    daemon.wait_health(base, what, WAIT, pred).await
}

/// Waits for a log line matching `pred`.
fn wait_line(daemon: &Daemon, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    daemon.wait_line(what, Duration::from_secs(20), pred)
}

/// A path to the binary that another user can execute: the build output itself when every
/// directory above it is searchable by others, else a link (or copy) in a 0755 temporary
/// directory (a checkout under a 0700 home would otherwise fail the exec, not the test's point).
fn binary_for_others() -> (PathBuf, Option<tempfile::TempDir>) {
    let bin = PathBuf::from(BIN);
    let searchable = bin
        .ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if searchable {
        return (bin, None);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("tradebaas");
    if std::fs::hard_link(&bin, &copy).is_err() {
        std::fs::copy(&bin, &copy).unwrap();
    }
    (copy, Some(dir))
}

/// Runs the CLI (blocking, on a blocking thread) with `args`, optionally as another uid.
async fn cli(args: &[&str], uid: Option<u32>) -> Output {
    let Some(uid) = uid else {
        return common::process::cli(args).await;
    };
    let (bin, _keep) = binary_for_others();
    cli_with(bin, args, move |cmd| {
        cmd.uid(uid).gid(uid);
    })
    .await
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn socket(dir: &Path) -> PathBuf {
    dir.join("admin.sock")
}

/// Waits for the daemon's admin socket to exist.
fn wait_socket(daemon: &Daemon, dir: &Path) -> PathBuf {
    wait_line(daemon, "admin serving", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("admin: serving"))
    });
    socket(dir)
}

/// Every `operator_action` and `mode_changed` event, from `tradebaas state export`.
fn events(dir: &Path, kind: &str) -> Vec<Value> {
    let out = Command::new(BIN)
        .args(["state", "export", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let export: Value = serde_json::from_slice(&out.stdout).unwrap();
    export["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| serde_json::from_str(e["payload"].as_str().unwrap()).unwrap())
        .collect()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_socket_is_0600_and_refuses_other_users() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &default_config(), &[]);
    let path = wait_socket(&daemon, dir.path());
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    let sock = path.to_str().unwrap();

    // The daemon's own user is allowed.
    let out = cli(&["mode", "--socket", sock], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    if !is_root() {
        eprintln!("not root: the other-uid part of this test needs root to switch users");
        return;
    }
    // Another user cannot even open the 0600 socket.
    let out = cli(
        &["mode", "observe", "--reason", "intruder", "--socket", sock],
        Some(NOBODY),
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        text(&out)
    );

    // With the file modes opened up, the daemon's own peer check still refuses, says why, logs a
    // warning and records the attempt.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = cli(
        &["mode", "observe", "--reason", "intruder", "--socket", sock],
        Some(NOBODY),
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("uid 65534 may not use the admin socket"),
        "{}",
        text(&out)
    );
    let warn = wait_line(&daemon, "refusal warning", |v| {
        v["message"] == "admin: connection refused" && v["peer_uid"] == NOBODY
    });
    assert_eq!(warn["level"], "WARN", "{warn}");
    let actions = events(dir.path(), "operator_action");
    let refused = actions
        .iter()
        .find(|a| a["peer_uid"] == NOBODY)
        .unwrap_or_else(|| panic!("no recorded attempt: {actions:?}"));
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(refused["reason"], "intruder");
    // Nothing changed.
    assert!(
        events(dir.path(), "mode_changed")
            .iter()
            .all(|m| m["to"] != "OBSERVE_ONLY")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_in_allowed_uids_may_act() {
    if !is_root() {
        eprintln!("not root: this test needs root to switch users");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("admin.toml");
    let default = std::fs::read_to_string(format!("{ROOT}/config/default.toml")).unwrap();
    let listed = default.replace("allowed_uids = []", &format!("allowed_uids = [{NOBODY}]"));
    assert_ne!(listed, default);
    std::fs::write(&config, listed).unwrap();
    let data = dir.path().join("data");
    let daemon = Daemon::start(&data, &config, &[]);
    let path = wait_socket(&daemon, &data);
    // Mode changes are refused ("try again shortly") until the fail-safe has loaded the mode.
    wait_ready(&daemon.base_url(), WAIT).await;
    // The operator opens the file modes for that user's group or, as here, for everyone.
    for (p, mode) in [
        (dir.path(), 0o755),
        (data.as_path(), 0o755),
        (path.as_path(), 0o666),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let sock = path.to_str().unwrap();
    let out = cli(
        &[
            "mode",
            "observe",
            "--reason",
            "listed user",
            "--socket",
            sock,
        ],
        Some(NOBODY),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let actions = events(&data, "operator_action");
    let done = actions
        .iter()
        .find(|a| a["reason"] == "listed user")
        .unwrap_or_else(|| panic!("not recorded: {actions:#?}"));
    assert_eq!(done["peer_uid"], NOBODY);
    assert_eq!(done["outcome"], "accepted");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_cleared_to_observe_only_first_and_every_action_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A latched SHUTDOWN from an earlier run.
        let mut store = Store::open(&dir.path().join("tradebaas.db")).unwrap();
        let change = Change::event(
            "mode_changed",
            json!({"from": "AGGRESSIVE", "to": "SHUTDOWN", "reason": "crafted trigger"}),
        )
        .set(
            "mode",
            json!({"mode": "SHUTDOWN", "reason": "crafted trigger", "changed_at": chrono::Utc::now()}),
        );
        store.commit(&change).unwrap();
    }
    let daemon = Daemon::start(dir.path(), &default_config(), &[]);
    let base = daemon.base_url();
    let path = wait_socket(&daemon, dir.path());
    let sock = path.to_str().unwrap().to_owned();
    wait_ready(&base, WAIT).await;
    wait_health(&daemon, &base, "mode SHUTDOWN", |v| v["mode"] == "SHUTDOWN").await;

    let mode = |m: &str, reason: &str| {
        let args = [
            "mode".to_owned(),
            m.to_owned(),
            "--reason".to_owned(),
            reason.to_owned(),
            "--socket".to_owned(),
            sock.clone(),
        ];
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&args, None).await
        }
    };

    // SHUTDOWN → AGGRESSIVE directly is refused.
    let out = mode("aggressive", "straight back").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("OBSERVE_ONLY first"),
        "{}",
        text(&out)
    );
    // A change without a reason never reaches the daemon; a blank one is refused by it.
    let out = cli(&["mode", "observe", "--socket", &sock], None).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--reason"));
    let out = mode("observe", "   ").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let out = mode("observe", "x").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OBSERVE_ONLY"),
        "{}",
        text(&out)
    );
    wait_health(&daemon, &base, "mode OBSERVE_ONLY", |v| {
        v["mode"] == "OBSERVE_ONLY"
    })
    .await;

    // AGGRESSIVE needs the store's integrity at that moment: edit the first event behind the
    // daemon's back and the pre-flight refuses, naming the check.
    let db = rusqlite::Connection::open(dir.path().join("tradebaas.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let original: String = db
        .query_row("SELECT payload FROM events WHERE seq = 1", [], |r| r.get(0))
        .unwrap();
    let edit = |payload: &str| {
        db.execute("UPDATE events SET payload = ?1 WHERE seq = 1", [payload])
            .unwrap()
    };
    edit(r#"{"from":"AGGRESSIVE","to":"SHUTDOWN","reason":"edited"}"#);
    let out = mode("aggressive", "on a tampered store").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("pre-flight") && stderr.contains("check event_log"),
        "{}",
        text(&out)
    );
    edit(&original);
    drop(db);

    // Now AGGRESSIVE, once the pre-flight checks pass (this run's recovery reaches the fail-safe
    // just after /ready, so allow a moment).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = mode("aggressive", "checks are green").await;
        if out.status.code() == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline
                && String::from_utf8_lossy(&out.stderr).contains("pre-flight"),
            "{}",
            text(&out)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = cli(&["mode", "--socket", &sock], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("mode AGGRESSIVE"),
        "{}",
        text(&out)
    );

    // The event log has every action with its reason, and the mode changes.
    let actions = events(dir.path(), "operator_action");
    let find = |reason: &str, outcome: &str| {
        actions
            .iter()
            .find(|a| a["reason"] == reason && a["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {outcome} action with reason {reason:?}: {actions:#?}"))
    };
    let refused = find("straight back", "refused");
    assert_eq!(refused["action"], "mode");
    assert_eq!(refused["args"]["mode"], "aggressive");
    assert!(refused["peer_uid"].is_u64());
    find("   ", "refused");
    let observe = find("x", "accepted");
    assert_eq!(observe["args"]["mode"], "observe");
    find("checks are green", "accepted");
    let tampered = find("on a tampered store", "refused");
    assert!(
        tampered["problems"].to_string().contains("check event_log"),
        "{tampered}"
    );
    let changes = events(dir.path(), "mode_changed");
    let cleared = changes
        .iter()
        .find(|c| c["from"] == "SHUTDOWN")
        .unwrap_or_else(|| panic!("no change out of SHUTDOWN: {changes:#?}"));
    assert_eq!(cleared["to"], "OBSERVE_ONLY");
    assert!(
        cleared["reason"].as_str().unwrap().ends_with(": x"),
        "{cleared}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c["from"] == "OBSERVE_ONLY" && c["to"] == "AGGRESSIVE"),
        "{changes:#?}"
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_ack_acknowledges_an_open_alert() {
    let dir = tempfile::tempdir().unwrap();
    // A damaged store is restored at start and raises the `store:recovered` alert.
    std::fs::write(dir.path().join("tradebaas.db"), b"not a database").unwrap();
    let daemon = Daemon::start(dir.path(), &default_config(), &[]);
    let base = daemon.base_url();
    let sock = wait_socket(&daemon, dir.path());
    let sock = sock.to_str().unwrap();
    let health = wait_health(&daemon, &base, "an open alert", |v| {
        v["actors"]["alert"]["open"].as_u64() >= Some(1)
    })
    .await;
    let alert = health["actors"]["alert"]["recent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "store:recovered")
        .unwrap_or_else(|| panic!("no store alert: {health:#}"))
        .clone();
    assert_eq!(alert["acknowledged"], false);
    let id = alert["alert_id"].as_str().unwrap();

    let out = cli(&["alerts", "ack", "nope", "--socket", sock], None).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));

    let out = cli(
        &[
            "alerts",
            "ack",
            id,
            "--reason",
            "restored, looked at it",
            "--socket",
            sock,
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("acknowledged"),
        "{}",
        text(&out)
    );
    wait_health(&daemon, &base, "the alert acknowledged", |v| {
        v["actors"]["alert"]["recent"].as_array().is_some_and(|r| {
            r.iter()
                .any(|a| a["alert_id"] == id && a["acknowledged"] == true)
        })
    })
    .await;
    let actions = events(dir.path(), "operator_action");
    let ack = actions
        .iter()
        .find(|a| a["action"] == "alerts_ack" && a["args"]["alert_id"] == id)
        .unwrap_or_else(|| panic!("ack not recorded: {actions:#?}"));
    assert_eq!(ack["outcome"], "accepted");
    assert_eq!(ack["reason"], "restored, looked at it");
    drop(daemon);
}

#[test]
fn the_cli_says_when_the_daemon_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["mode", "observe", "--reason", "x", "--data-dir"])
        .arg(dir.path())
        .env_remove("TRADEBAAS_CONFIG")
        .env_remove("TRADEBAAS_DATA_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not running") && stderr.contains("admin.sock"),
        "{stderr}"
    );
    // A socket file nobody listens on (a daemon killed with -9) is also "not running".
    drop(std::os::unix::net::UnixListener::bind(socket(dir.path())).unwrap());
    let out = Command::new(BIN)
        .args(["alerts", "ack", "a1", "--socket"])
        .arg(socket(dir.path()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not running"),
        "{}",
        text(&out)
    );
}
