//! Schema migration, verification, recovery on open, backups, the run marker and the lock.

use super::*;
use serde_json::json;

fn temp() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tradebaas.db");
    let backups = dir.path().join("backups");
    (dir, path, backups)
}

fn store_with_events(path: &Path, n: usize) -> Store {
    let mut store = Store::open(path).unwrap();
    for i in 0..n {
        store
            .commit(&Change::event("test", json!({ "i": i })).set("k", json!(i)))
            .unwrap();
    }
    store
}

/// A version-1 store made with the exact v1 DDL, with a few chained events.
fn v1_fixture(path: &Path) {
    let mut conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL").unwrap();
    let tx = conn.transaction().unwrap();
    tx.execute_batch(V1_DDL).unwrap();
    let mut prev = GENESIS_HASH.to_string();
    for seq in 1..=3u64 {
        let id = uuid::Uuid::now_v7().to_string();
        let ts = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let payload = json!({ "seq": seq }).to_string();
        let hash = chain_hash(&prev, seq, &id, &ts, "legacy", &payload);
        tx.execute(
            "INSERT INTO events VALUES (?1, ?2, ?3, 'legacy', ?4, ?5, ?6)",
            params![seq as i64, id, ts, payload, prev, hash],
        )
        .unwrap();
        prev = hash;
    }
    tx.execute(
        "INSERT INTO state VALUES ('mode', '{\"mode\":\"ACTIVE\"}', '2026-01-01T00:00:00Z')",
        [],
    )
    .unwrap();
    tx.commit().unwrap();
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_v1_store_migrates_to_the_current_version_and_verifies() {
    let (_dir, path, _) = temp();
    v1_fixture(&path);
    let before = verify(&path);
    assert!(before.ok, "{:?}", before.problems);
    assert_eq!(before.schema_version, Some(1));
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.last_seq(), 3);
    assert_eq!(store.state().unwrap()["mode"], json!({"mode": "ACTIVE"}));
    store
        .snapshot(SnapshotKind::Daily, &json!({"capital": 1}))
        .unwrap();
    drop(store);
    let after = verify(&path);
    assert!(after.ok, "{:?}", after.problems);
    assert_eq!(after.schema_version, Some(SCHEMA_VERSION));
    assert_eq!((after.events, after.last_seq, after.snapshots), (4, 4, 1));
}

#[test]
fn v1_to_v2_alone_adds_the_snapshots_table() {
    let mut conn = Connection::open_in_memory().unwrap();
    let tx = conn.transaction().unwrap();
    v0_to_v1(&tx).unwrap();
    v1_to_v2(&tx).unwrap();
    tx.commit().unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 2);
    conn.execute(
        "INSERT INTO snapshots (taken_at, kind, payload, event_seq) VALUES ('t', 'daily', '{}', 1)",
        [],
    )
    .unwrap();
    assert!(
        conn.execute(
            "INSERT INTO snapshots (taken_at, kind, payload, event_seq) VALUES ('t', 'daily', '{}', 2)",
            [],
        )
        .is_err(),
        "taken_at is unique"
    );
    assert!(
        conn.execute(
            "INSERT INTO snapshots (taken_at, kind, payload, event_seq) VALUES ('u', 'weekly', '{}', 2)",
            [],
        )
        .is_err(),
        "kind is daily or on_demand"
    );
}

#[test]
fn a_fresh_store_is_created_at_the_current_version() {
    let (_dir, path, _) = temp();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
}

#[test]
fn snapshots_commit_with_an_event_and_are_chronological() {
    let (_dir, path, _) = temp();
    let mut store = Store::open(&path).unwrap();
    let a = store
        .snapshot(
            SnapshotKind::Daily,
            &json!({"capital": 10, "positions": []}),
        )
        .unwrap();
    let b = store
        .snapshot(
            SnapshotKind::OnDemand,
            &json!({"capital": 11, "positions": []}),
        )
        .unwrap();
    let snaps = store.snapshots().unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0].event_seq, a.seq);
    assert_eq!(snaps[1].event_seq, b.seq);
    assert_eq!(snaps[1].kind, "on_demand");
    assert!(snaps[0].taken_at < snaps[1].taken_at);
    let events = store.events(0, 10).unwrap();
    assert!(events.iter().all(|e| e.kind == "snapshot.taken"));
    // A snapshot from the future makes the next one "not later": refused, nothing committed.
    store
        .conn
        .execute(
            "UPDATE snapshots SET taken_at = '2999-01-01T00:00:00.000000Z' WHERE id = ?1",
            [snaps[1].id],
        )
        .unwrap();
    let before = store.last_seq();
    assert!(store.snapshot(SnapshotKind::Daily, &json!({})).is_err());
    assert_eq!(store.events(0, 10).unwrap().len() as u64, before);
}

#[test]
fn verify_accepts_a_good_store_and_reports_counts() {
    let (_dir, path, _) = temp();
    drop(store_with_events(&path, 5));
    let r = verify(&path);
    assert!(r.ok, "{:?}", r.problems);
    assert_eq!((r.events, r.last_seq), (5, 5));
    assert!(serde_json::to_value(&r).unwrap()["problems"].is_array());
}

#[test]
fn verify_finds_an_edited_row_a_gap_and_a_broken_link() {
    let (_dir, path, _) = temp();
    drop(store_with_events(&path, 5));
    let conn = Connection::open(&path).unwrap();
    conn.execute("UPDATE events SET payload = '{\"i\":99}' WHERE seq = 2", [])
        .unwrap();
    conn.execute("DELETE FROM events WHERE seq = 4", [])
        .unwrap();
    drop(conn);
    let r = verify(&path);
    assert!(!r.ok);
    let all = r.problems.join("\n");
    assert!(all.contains("seq 2: stored hash does not match"), "{all}");
    assert!(all.contains("event seq 5: expected seq 4"), "{all}");
    assert!(
        all.contains("event seq 5: prev_hash does not link"),
        "{all}"
    );
}

#[test]
fn verify_finds_time_going_backwards() {
    let (_dir, path, _) = temp();
    drop(store_with_events(&path, 2));
    // Rewrite event 2 with an earlier timestamp and a consistent hash: only the order is wrong.
    let conn = Connection::open(&path).unwrap();
    let (id, kind, payload, prev): (String, String, String, String) = conn
        .query_row(
            "SELECT event_id, kind, payload, prev_hash FROM events WHERE seq = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let ts = "2000-01-01T00:00:00.000000Z";
    let hash = chain_hash(&prev, 2, &id, ts, &kind, &payload);
    conn.execute(
        "UPDATE events SET ts = ?1, hash = ?2 WHERE seq = 2",
        params![ts, hash],
    )
    .unwrap();
    drop(conn);
    let r = verify(&path);
    assert!(!r.ok);
    assert!(
        r.problems[0].contains("before the previous"),
        "{:?}",
        r.problems
    );
}

#[test]
fn open_verified_creates_a_missing_store() {
    let (_dir, path, backups) = temp();
    let (store, report) = open_verified(&path, &backups).unwrap();
    assert!(report.created && !report.crashed && !report.degraded());
    assert_eq!(store.events(0, 10).unwrap()[0].kind, "run.started");
}

/// Makes a store with events and two backups (an older and a newer one); returns the newer.
fn store_and_backups(path: &Path, backups: &Path) -> PathBuf {
    let mut store = store_with_events(path, 3);
    store.backup_to(backups).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    store.commit(&Change::event("more", json!(1))).unwrap();
    let newest = store.backup_to(backups).unwrap();
    store
        .commit(&Change::event("after-backup", json!(2)))
        .unwrap();
    drop(store);
    newest
}

fn assert_moved_aside_and_restored(
    path: &Path,
    backups: &Path,
    newest: &Path,
    damage: impl FnOnce(&Path),
) {
    damage(path);
    let (store, report) = open_verified(path, backups).unwrap();
    assert!(report.degraded(), "{report:?}");
    assert_eq!(
        report.restored_from.as_deref(),
        Some(newest.display().to_string().as_str())
    );
    let aside = PathBuf::from(report.moved_aside.clone().unwrap());
    assert!(aside.exists(), "the failed store is kept");
    assert!(
        aside
            .file_name()
            .unwrap()
            .to_string_lossy()
            .contains(".corrupt-")
    );
    assert!(report.reason.is_some());
    assert!(!report.created);
    let alert = crate::protocol::alert::Alert::for_store_open(&report).unwrap();
    assert_eq!(alert.key, "store:recovered");
    assert_eq!(alert.severity, crate::alert::Severity::Critical);
    assert!(alert.message.contains(".corrupt-"), "{}", alert.message);
    // The newest backup had 4 events; open adds run.started.
    let kinds = first_kinds(&store);
    assert_eq!(kinds, ["test", "test", "test", "more", "run.started"]);
    drop(store);
    assert!(verify(path).ok);
}

#[test]
fn an_empty_file_is_moved_aside_and_the_newest_backup_restored() {
    let (_dir, path, backups) = temp();
    let newest = store_and_backups(&path, &backups);
    assert_moved_aside_and_restored(&path, &backups, &newest, |p| {
        for c in super::verify::tests_companions(p) {
            let _ = std::fs::remove_file(c);
        }
        std::fs::write(p, b"").unwrap();
    });
}

#[test]
fn a_truncated_file_is_moved_aside_and_the_newest_backup_restored() {
    let (_dir, path, backups) = temp();
    let newest = store_and_backups(&path, &backups);
    // Make the main file self-contained first, then cut it in half.
    drop(Store::open(&path).unwrap().checkpoint());
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 4096, "{len}");
    assert_moved_aside_and_restored(&path, &backups, &newest, |p| {
        for c in super::verify::tests_companions(p) {
            let _ = std::fs::remove_file(c);
        }
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(len / 2).unwrap();
    });
}

#[test]
fn random_bytes_are_moved_aside_with_companions_and_the_newest_backup_restored() {
    let (dir, path, backups) = temp();
    let newest = store_and_backups(&path, &backups);
    assert_moved_aside_and_restored(&path, &backups, &newest, |p| {
        let bytes: Vec<u8> = (0..20_000).map(|_| fastrand::u8(..)).collect();
        std::fs::write(p, bytes).unwrap();
        std::fs::write(super::verify::tests_companions(p)[0].clone(), b"junk wal").unwrap();
    });
    let names = file_names(dir.path());
    assert!(
        names
            .iter()
            .any(|n| n.contains(".corrupt-") && n.ends_with("-wal")),
        "{names:?}"
    );
}

#[test]
fn an_edited_event_row_is_moved_aside_and_the_newest_backup_restored() {
    let (_dir, path, backups) = temp();
    let newest = store_and_backups(&path, &backups);
    assert_moved_aside_and_restored(&path, &backups, &newest, |p| {
        let conn = Connection::open(p).unwrap();
        conn.execute(
            "UPDATE events SET payload = '{\"i\":1000}' WHERE seq = 1",
            [],
        )
        .unwrap();
    });
}

#[test]
fn a_bad_newest_backup_is_skipped_for_an_older_good_one() {
    let (_dir, path, backups) = temp();
    let newest = store_and_backups(&path, &backups);
    std::fs::write(&newest, b"garbage").unwrap();
    std::fs::write(&path, b"garbage").unwrap();
    let (store, report) = open_verified(&path, &backups).unwrap();
    let restored = report.restored_from.unwrap();
    assert_ne!(restored, newest.display().to_string());
    assert_eq!(
        store.events(0, 10).unwrap().len(),
        4,
        "3 events + run.started"
    );
}

#[test]
fn a_damaged_store_without_a_good_backup_becomes_a_fresh_store() {
    let (dir, path, backups) = temp();
    std::fs::write(&path, b"not a database at all, not even close").unwrap();
    let (store, report) = open_verified(&path, &backups).unwrap();
    assert!(report.created && report.degraded() && report.restored_from.is_none());
    assert_eq!(store.last_seq(), 1);
    assert!(
        file_names(dir.path())
            .iter()
            .any(|n| n.starts_with("tradebaas.db.corrupt-"))
    );
}

#[test]
fn a_store_from_a_newer_schema_is_refused_and_left_in_place() {
    let (dir, path, backups) = temp();
    let newest = store_and_backups(&path, &backups);
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let err = open_verified(&path, &backups).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    assert!(!file_names(dir.path()).iter().any(|n| n.contains("corrupt")));
    assert!(newest.exists());
}

#[test]
fn the_run_marker_detects_a_crash_and_a_clean_stop() {
    let (_dir, path, backups) = temp();
    let (mut store, r) = open_verified(&path, &backups).unwrap();
    assert!(!r.crashed);
    store.mark_clean().unwrap();
    drop(store);
    let (store, r) = open_verified(&path, &backups).unwrap();
    assert!(!r.crashed, "the previous run stopped cleanly");
    assert!(crate::protocol::alert::Alert::for_store_open(&r).is_none());
    assert_eq!(store.state().unwrap()[RUN_KEY]["clean"], json!(false));
    drop(store); // no mark_clean: a crash
    let (store, r) = open_verified(&path, &backups).unwrap();
    assert!(r.crashed);
    assert!(!r.degraded(), "a crash alone does not degrade");
    assert_eq!(
        crate::protocol::alert::Alert::for_store_open(&r)
            .unwrap()
            .severity,
        crate::alert::Severity::Warning
    );
    let kinds = first_kinds(&store);
    assert_eq!(
        kinds,
        ["run.started", "run.stopped", "run.started", "run.started"]
    );
}

#[test]
fn backups_are_verified_sortable_and_pruned() {
    let (_dir, path, backups) = temp();
    let mut store = store_with_events(&path, 2);
    let mut made = Vec::new();
    for i in 0..4 {
        store.commit(&Change::event("b", json!(i))).unwrap();
        made.push(store.backup_to(&backups).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    let list = list_backups(&backups);
    assert_eq!(list.len(), 4);
    assert_eq!(list[0].path, made[3], "newest first");
    assert!(list.iter().all(|b| b.verified.ok && b.size_bytes > 0));
    assert!(list[0].taken_at > list[3].taken_at);
    assert_eq!(list[0].verified.last_seq, 6);
    assert_eq!(prune_backups(&backups, 2).unwrap(), 2);
    let names = file_names(&backups);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(made[3].exists() && made[2].exists() && !made[0].exists());
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with("-wal") || n.ends_with(".partial"))
    );
}

#[test]
fn a_backup_into_an_unusable_directory_fails_and_leaves_nothing() {
    let (dir, path, _) = temp();
    let store = store_with_events(&path, 1);
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    assert!(store.backup_to(&not_a_dir).is_err());
}

#[test]
fn the_data_dir_lock_is_exclusive_and_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let first = DataDirLock::acquire(dir.path()).unwrap();
    let err = DataDirLock::acquire(dir.path()).unwrap_err();
    let pid = std::process::id();
    assert!(
        matches!(err, StoreError::Locked { holder: Some(p), .. } if p == pid),
        "{err}"
    );
    assert!(err.to_string().contains(&pid.to_string()));
    drop(first);
    let again = DataDirLock::acquire(dir.path()).unwrap();
    assert!(again.path().ends_with("tradebaas.lock"));
}

#[test]
fn the_data_dir_lock_holds_against_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let _held = DataDirLock::acquire(dir.path()).unwrap();
    // flock(1) from util-linux, if present: -n fails at once when the lock is held.
    let Ok(out) = std::process::Command::new("flock")
        .arg("-n")
        .arg(dir.path().join("tradebaas.lock"))
        .arg("true")
        .output()
    else {
        return;
    };
    assert!(
        !out.status.success(),
        "another process must not get the lock"
    );
}

#[test]
fn a_crashed_run_with_a_live_wal_verifies_and_is_not_moved_aside() {
    // The files as a kill -9 leaves them: copied while the writer still has them open, with
    // commits only in the -wal.
    let (dir, path, backups) = temp();
    let (mut store, _) = open_verified(&path, &backups).unwrap();
    for i in 0..10 {
        store.commit(&Change::event("live", json!(i))).unwrap();
    }
    let crashed_dir = dir.path().join("crashed");
    std::fs::create_dir(&crashed_dir).unwrap();
    let copy = crashed_dir.join("tradebaas.db");
    let wal = super::verify::tests_companions(&path);
    assert!(wal[0].exists(), "the commits are in the WAL");
    std::fs::copy(&path, &copy).unwrap();
    for (from, to) in wal
        .iter()
        .zip(super::verify::tests_companions(&copy).iter())
    {
        std::fs::copy(from, to).unwrap();
    }
    drop(store);
    let r = verify(&copy);
    assert!(r.ok && r.last_seq == 11, "{r:?}");
    // Without the -shm (e.g. a copy made by hand): still readable, nothing lost.
    let no_shm = crashed_dir.join("no-shm.db");
    std::fs::copy(&copy, &no_shm).unwrap();
    std::fs::copy(
        &super::verify::tests_companions(&copy)[0],
        &super::verify::tests_companions(&no_shm)[0],
    )
    .unwrap();
    let r = verify(&no_shm);
    assert!(r.ok && r.last_seq == 11, "{r:?}");
    let (store, report) = open_verified(&copy, &crashed_dir.join("backups")).unwrap();
    assert!(report.crashed && !report.degraded(), "{report:?}");
    assert_eq!(store.last_seq(), 12);
}

#[test]
fn a_missing_store_with_a_leftover_wal_is_recovered_not_replayed_into_a_new_file() {
    let (dir, path, backups) = temp();
    let newest = store_and_backups(&path, &backups);
    // Keep a -wal with frames, then lose the main file.
    let (mut store, _) = open_verified(&path, &backups).unwrap();
    store.commit(&Change::event("in-wal", json!(1))).unwrap();
    let wal = super::verify::tests_companions(&path)[0].clone();
    let saved = std::fs::read(&wal).unwrap();
    drop(store);
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&wal, saved).unwrap();
    let (_store, report) = open_verified(&path, &backups).unwrap();
    assert!(report.degraded(), "{report:?}");
    assert_eq!(
        report.restored_from.as_deref(),
        Some(newest.display().to_string().as_str())
    );
    assert!(report.reason.unwrap().contains("missing"));
    assert!(
        file_names(dir.path())
            .iter()
            .any(|n| n.contains(".corrupt-") && n.ends_with("-wal"))
    );
}

#[test]
fn an_interrupted_first_initialisation_without_backups_is_initialised_not_alerted() {
    let (dir, path, backups) = temp();
    // Killed between creating the file and the first commit: zero bytes, no backups yet.
    std::fs::write(&path, b"").unwrap();
    let (store, report) = open_verified(&path, &backups).unwrap();
    drop(store);
    assert!(report.created, "{report:?}");
    assert!(!report.degraded(), "{report:?}");
    assert!(report.moved_aside.is_none());
    assert!(verify(&path).ok);
    let corrupt = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".corrupt-"))
        .count();
    assert_eq!(corrupt, 0);
}

/// The kinds of the store's first ten events, in order.
fn first_kinds(store: &Store) -> Vec<String> {
    let events = store.events(0, 10).unwrap();
    events.into_iter().map(|e| e.kind).collect()
}
