//! The checkpoint, tail and slice verification against edited and damaged stores.

use std::path::{Path, PathBuf};

use super::checkpoint::read_checkpoint;
use super::*;
use crate::store::{Change, Store};
use rusqlite::params;
use serde_json::json;

fn store_with(events: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tradebaas.db");
    let backups = dir.path().join("backups");
    let mut store = Store::open(&path).unwrap();
    for i in 0..events {
        store
            .commit(&Change::event("heartbeat", json!({ "n": i })))
            .unwrap();
    }
    (dir, path, backups)
}

/// Appends `n` events of kind `x` to the store at `path`.
fn append(path: &Path, n: usize) {
    let mut store = Store::open(path).unwrap();
    for i in 0..n {
        store
            .commit(&Change::event("x", json!({ "i": i })))
            .unwrap();
    }
}

fn stored_checkpoint(path: &Path) -> Option<Checkpoint> {
    let conn = Connection::open(path).unwrap();
    read_checkpoint(&conn).unwrap()
}

/// Rewrites the payload of event `seq` without fixing any hash (an edited row).
fn edit(path: &Path, seq: u64) {
    let conn = Connection::open(path).unwrap();
    let n = conn
        .execute(
            "UPDATE events SET payload = '{\"edited\":true}' WHERE seq = ?1",
            params![seq as i64],
        )
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn an_open_stores_the_verified_head_as_checkpoint_and_the_next_open_walks_only_the_tail() {
    let (_dir, path, backups) = store_with(50);
    let (store, _) = open_verified(&path, &backups).unwrap();
    drop(store);
    // The head that was verified (seq 50), stored with the `run.started` event (seq 51).
    let cp = stored_checkpoint(&path).expect("a checkpoint");
    assert_eq!(cp.seq, 50);
    let report = verify_tail(&path);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.scope, Scope::Tail);
    assert_eq!(report.checkpoint_seq, Some(50));
    assert_eq!(report.events, 1, "only run.started after the checkpoint");
    assert_eq!(report.last_seq, 51);

    append(&path, 10);
    let report = verify_tail(&path);
    assert!(report.ok, "{report:?}");
    assert_eq!((report.events, report.last_seq), (11, 61));
    let facts = read_integrity_facts(&path, Scope::Tail).unwrap();
    assert_eq!(facts.checkpoint_seq, Some(50));
    assert_eq!(facts.chain.events, 11);
    assert!(
        facts.chain.problems.is_empty(),
        "{:?}",
        facts.chain.problems
    );
    // The next open moves the checkpoint to the new head.
    let (store, _) = open_verified(&path, &backups).unwrap();
    drop(store);
    assert_eq!(stored_checkpoint(&path).unwrap().seq, 61);
}

#[test]
fn without_a_checkpoint_the_tail_verification_is_the_full_walk() {
    let (_dir, path, _) = store_with(5);
    let report = verify_tail(&path);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.scope, Scope::Full);
    assert_eq!((report.events, report.checkpoint_seq), (5, None));
    edit(&path, 2);
    assert!(!verify_tail(&path).ok);
}

#[test]
fn an_edit_after_the_checkpoint_fails_the_start_and_one_before_it_is_found_by_the_full_walks() {
    let (_dir, path, backups) = store_with(30);
    drop(open_verified(&path, &backups).unwrap());
    append(&path, 5);

    // After the checkpoint (seq 30): the start-up walk sees it.
    let dir2 = tempfile::tempdir().unwrap();
    let copy = dir2.path().join("tradebaas.db");
    std::fs::copy(&path, &copy).unwrap();
    edit(&copy, 33);
    let r = verify_tail(&copy);
    assert!(!r.ok);
    assert!(r.summary().contains("event seq 33"), "{}", r.summary());

    // Before it: the start-up walk does not read that row (that is the point), the full
    // verification and the periodic slices do.
    edit(&path, 10);
    assert!(
        verify_tail(&path).ok,
        "the start-up walk reads only the tail"
    );
    let full = verify(&path);
    assert!(!full.ok);
    assert!(
        full.summary().contains("event seq 10"),
        "{}",
        full.summary()
    );
    let mut after = 0;
    let mut found = Vec::new();
    loop {
        let slice = verify_slice(&path, after, 8).unwrap();
        found.extend(slice.problems.clone());
        if slice.done {
            break;
        }
        after = slice.through;
    }
    assert!(
        found.iter().any(|p| p.contains("event seq 10")),
        "slices found: {found:?}"
    );
}

#[test]
fn an_edited_or_deleted_checkpoint_event_fails_the_start() {
    let (_dir, path, backups) = store_with(20);
    drop(open_verified(&path, &backups).unwrap());
    let dir2 = tempfile::tempdir().unwrap();
    let copy = dir2.path().join("tradebaas.db");
    std::fs::copy(&path, &copy).unwrap();

    edit(&path, 20);
    let r = verify_tail(&path);
    assert!(!r.ok);
    assert!(
        r.summary()
            .contains("event seq 20: stored hash does not match its contents"),
        "{}",
        r.summary()
    );

    let conn = Connection::open(&copy).unwrap();
    conn.execute("DELETE FROM events WHERE seq >= 20", [])
        .unwrap();
    drop(conn);
    let r = verify_tail(&copy);
    assert!(!r.ok);
    assert!(
        r.summary().contains("was verified at") && r.summary().contains("no longer exists"),
        "{}",
        r.summary()
    );
    // And the open moves such a store aside (no backup: a fresh one).
    let (_, report) = open_verified(&copy, &dir2.path().join("backups")).unwrap();
    assert!(report.moved_aside.is_some(), "{report:?}");
}

#[test]
fn slices_cover_the_whole_chain_and_the_last_one_runs_quick_check() {
    let (_dir, path, _) = store_with(25);
    let mut after = 0;
    let mut covered = 0;
    let mut slices = 0;
    loop {
        let s = verify_slice(&path, after, 10).unwrap();
        assert!(s.problems.is_empty(), "{s:?}");
        covered += s.events;
        slices += 1;
        if s.done {
            assert_eq!(s.through, 25);
            break;
        }
        after = s.through;
    }
    assert_eq!((covered, slices), (25, 3));
}

/// Found by the store fuzz (tests/fuzz.rs): a row inserted with seq 0 or below is outside
/// every walk (they start after seq 0), so the full verification accepted it.
#[test]
fn an_event_stored_below_seq_1_fails_every_verification() {
    let (_dir, path, backups) = store_with(5);
    drop(open_verified(&path, &backups).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO events (seq, event_id, ts, kind, payload, prev_hash, hash) \
         SELECT 0, 'inserted', ts, kind, payload, prev_hash, hash FROM events WHERE seq = 1",
        [],
    )
    .unwrap();
    drop(conn);
    for report in [verify(&path), verify_tail(&path)] {
        assert!(!report.ok, "{report:?}");
        assert!(
            report.summary().contains("seq below 1"),
            "{}",
            report.summary()
        );
    }
    let s = verify_slice(&path, 0, 1_000).unwrap();
    assert!(
        s.done && s.problems.iter().any(|p| p.contains("seq below 1")),
        "{s:?}"
    );
    let facts = read_integrity_facts(&path, Scope::Tail).unwrap();
    assert!(
        facts
            .chain
            .problems
            .iter()
            .any(|p| p.contains("seq below 1")),
        "{:?}",
        facts.chain.problems
    );
    let (_, report) = open_verified(&path, &backups).unwrap();
    assert!(report.moved_aside.is_some(), "{report:?}");
}

/// Found by the store fuzz: `user_version` 1 on a version-2 store verified, then the
/// 1 → 2 migration failed on the existing `snapshots` table, so the daemon refused to start
/// instead of restoring a backup.
/// The start-up verification of the store at `path` fails saying `why`, and opening it moves
/// the store aside (to restore a backup) instead of refusing to start.
fn fails_tail_and_is_moved_aside(path: &Path, backups: &Path, why: &str) {
    let r = verify_tail(path);
    assert!(!r.ok && r.summary().contains(why), "{r:?}");
    let (_, report) = open_verified(path, backups).expect("moved aside, not refused");
    assert!(report.moved_aside.is_some(), "{report:?}");
}

#[test]
fn a_user_version_older_than_the_tables_moves_the_store_aside() {
    let (_dir, path, backups) = store_with(5);
    drop(open_verified(&path, &backups).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA user_version = 1").unwrap();
    drop(conn);
    fails_tail_and_is_moved_aside(&path, &backups, "table snapshots of version 2");
}

/// Found by the store fuzz: bytes overwritten in the schema text (page 1) renamed a column
/// of `state`; the store verified, then every commit failed ("table state has no column
/// named updated_at"), so the daemon refused to start.
#[test]
fn a_damaged_schema_text_fails_verification() {
    let (_dir, path, backups) = store_with(5);
    drop(open_verified(&path, &backups).unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(10)
        .position(|w| w == b"updated_at")
        .expect("the schema text");
    bytes[at..at + 10].copy_from_slice(b"updated_ax");
    std::fs::write(&path, &bytes).unwrap();
    fails_tail_and_is_moved_aside(&path, &backups, "lacks column(s) updated_at");
}

/// Found by the store fuzz: damage the start-up (tail) verification does not read, here the
/// zeroed page of the `event_id` index, failed `begin_run` with "database disk image is
/// malformed" and the daemon refused to start; now the full verification confirms the
/// damage and the store is moved aside and the backup restored.
/// The store file's bytes (no WAL beside it) and the byte range of the root page of the schema
/// object matching `filter` (an `sqlite_master` condition).
/// The open moves the store at `path` aside and restores `backup`; returns its report.
fn opens_restored_from(path: &Path, backups: &Path, backup: &Path) -> OpenReport {
    let (store, report) = open_verified(path, backups).expect("recovered, not refused");
    drop(store);
    assert!(report.moved_aside.is_some(), "{report:?}");
    assert_eq!(
        report.restored_from.as_deref(),
        Some(backup.display().to_string().as_str())
    );
    report
}

fn root_page(path: &Path, filter: &str) -> (Vec<u8>, std::ops::Range<usize>) {
    let conn = Connection::open(path).unwrap();
    let root: i64 = conn
        .query_row(
            &format!("SELECT rootpage FROM sqlite_master WHERE {filter}"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    drop(conn);
    assert!(!tests_companions(path)[0].exists());
    let start = usize::try_from((root - 1) * page_size).unwrap();
    let end = start + usize::try_from(page_size).unwrap();
    (std::fs::read(path).unwrap(), start..end)
}

#[test]
fn damage_the_tail_check_does_not_read_is_recovered_when_the_open_fails() {
    let (_dir, path, backups) = store_with(5);
    let (store, _) = open_verified(&path, &backups).unwrap();
    let backup = store.backup_to(&backups).unwrap();
    drop(store);
    let (mut bytes, page) = root_page(&path, "type = 'index' AND tbl_name = 'events'");
    bytes[page].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    assert!(
        verify_tail(&path).ok,
        "the tail check does not read the index"
    );
    assert!(!verify(&path).ok, "the full check does");
    let report = opens_restored_from(&path, &backups, &backup);
    assert!(
        report
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("quick_check"),
        "{report:?}"
    );
    assert!(verify(&path).ok);
}

/// A bit flip in a divider key of the events table's interior page: the range scan still reads
/// every row in order, but a seek for a row past the flipped key takes the wrong branch, and the
/// next insert would land out of order (found by the store fuzz, seed 11587154055646684578,
/// file 179). The tail check seeks every tail row by its key, so the open moves it aside.
#[test]
fn a_flipped_divider_key_in_the_events_tree_fails_the_tail_check() {
    let (_dir, path, backups) = store_with(300);
    let (store, _) = open_verified(&path, &backups).unwrap();
    drop(store);
    let mut store = Store::open(&path).unwrap();
    for i in 0..60 {
        store
            .commit(&Change::event("heartbeat", json!({ "after": i })))
            .unwrap();
    }
    let backup = store.backup_to(&backups).unwrap();
    drop(store);
    let (mut bytes, page) = root_page(&path, "type = 'table' AND name = 'events'");
    let page = page.start;
    let header = if page == 0 { 100 } else { page };
    assert_eq!(
        bytes[header], 0x05,
        "the events root is an interior table page"
    );
    let cells = usize::from(u16::from_be_bytes([bytes[header + 3], bytes[header + 4]]));
    let pointer = header + 12 + 2 * (cells - 1);
    let last = page + usize::from(u16::from_be_bytes([bytes[pointer], bytes[pointer + 1]]));
    // The cell: a 4-byte left child, then the divider key as a varint (two bytes for 128..16383).
    let (hi, lo) = (bytes[last + 4], bytes[last + 5]);
    assert!(hi & 0x80 != 0 && lo & 0x80 == 0, "a two-byte divider key");
    let key = (u64::from(hi & 0x7f) << 7) | u64::from(lo);
    assert!(
        (300..361).contains(&key),
        "the last divider {key} is in the tail"
    );
    bytes[last + 4] = hi | 0x10; // key + 2048: past every row
    std::fs::write(&path, &bytes).unwrap();

    let report = verify_tail(&path);
    assert!(!report.ok, "{report:?}");
    assert!(
        report.summary().contains("not found by its key"),
        "{}",
        report.summary()
    );
    assert!(!verify(&path).ok, "quick_check sees it too");
    opens_restored_from(&path, &backups, &backup);
    assert!(verify(&path).ok);
}
