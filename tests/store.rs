//! `tradebaas state verify|export|backups` on real data directories.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use tradebaas_actors::store::{Change, SnapshotKind, Store, open_verified};

const BIN: &str = env!("CARGO_BIN_EXE_tradebaas");

fn state(action: &str, data_dir: &Path) -> Output {
    Command::new(BIN)
        .args(["state", action, "--data-dir"])
        .arg(data_dir)
        .env_remove("TRADEBAAS_DATA_DIR")
        .output()
        .unwrap()
}

fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn populated(dir: &Path) -> Store {
    let (mut store, _) = open_verified(&dir.join("tradebaas.db"), &dir.join("backups")).unwrap();
    store
        .commit(
            &Change::event("mode.changed", json!({"mode": "ACTIVE"})).set("mode", json!("ACTIVE")),
        )
        .unwrap();
    store
        .snapshot(
            SnapshotKind::Daily,
            &json!({"capital": 100, "positions": []}),
        )
        .unwrap();
    store
}

#[test]
fn state_verify_exits_0_on_a_good_store_and_1_on_an_edited_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    // While the store is open (as under a running daemon): read-only verify works.
    let out = state("verify", dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_out(&out);
    assert_eq!(report["ok"], json!(true));
    assert_eq!(
        report["schema_version"],
        json!(tradebaas_actors::store::SCHEMA_VERSION)
    );
    assert_eq!(report["last_seq"], json!(3));
    drop(store);
    edit_event_bytes(&dir.path().join("tradebaas.db"));
    let out = state("verify", dir.path());
    assert_eq!(out.status.code(), Some(1));
    let report = json_out(&out);
    assert_eq!(report["ok"], json!(false));
    assert!(
        report["problems"][0]
            .as_str()
            .unwrap()
            .contains("edited row"),
        "{report}"
    );
}

/// Edits an event payload in the file's bytes, behind the store's back (as a tampering tool or a
/// bit flip would); the page stays well-formed, only the hash chain can tell.
fn edit_event_bytes(path: &Path) {
    let store = Store::open(path).unwrap();
    store.checkpoint().unwrap();
    drop(store);
    let mut bytes = std::fs::read(path).unwrap();
    let needle = br#"{"mode":"ACTIVE"}"#;
    let pos = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the event payload is in the main file after a checkpoint");
    bytes[pos + 9..pos + 15].copy_from_slice(b"PAUSED");
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn state_verify_of_a_missing_store_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = state("verify", dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_out(&out)["ok"], json!(false));
}

#[test]
fn state_export_prints_state_events_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let _store = populated(dir.path());
    let out = state("export", dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = json_out(&out);
    assert_eq!(e["state"]["mode"], json!("ACTIVE"));
    assert_eq!(e["state"]["run"]["clean"], json!(false));
    let kinds: Vec<&str> = e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ev| ev["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["run.started", "mode.changed", "snapshot.taken"]);
    assert_eq!(e["snapshots"][0]["kind"], json!("daily"));
}

#[test]
fn state_backups_lists_verified_backups_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    let backups = dir.path().join("backups");
    let older = store.backup_to(&backups).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let newer = store.backup_to(&backups).unwrap();
    let out = state("backups", dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = json_out(&out);
    assert_eq!(list["count"], json!(2));
    assert_eq!(
        list["backups"][0]["path"],
        json!(newer.display().to_string())
    );
    assert_eq!(
        list["backups"][1]["path"],
        json!(older.display().to_string())
    );
    assert_eq!(list["backups"][0]["verified"]["ok"], json!(true));
    std::fs::write(&older, b"broken").unwrap();
    let out = state("backups", dir.path());
    assert_eq!(
        out.status.code(),
        Some(1),
        "a backup that fails verification"
    );
    assert_eq!(json_out(&out)["backups"][1]["verified"]["ok"], json!(false));
}
