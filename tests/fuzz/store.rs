//! Store open-path fuzzing shared by `tests/fuzz.rs` (fast subset) and
//! `tests/bench/fuzz_store.rs` (≥ 10,000 files): a small good store (a few hundred events, a
//! checkpoint from `open_verified`, snapshots, one good backup), then for each mutation a copy
//! of the file is damaged (truncated, bits flipped in pages, bytes overwritten, header zeroed,
//! `user_version` wrong or newer, a newer schema, rows edited / deleted / swapped / inserted
//! through SQL, the checkpoint edited, tables dropped, pages swapped, a garbage `-wal`) and
//! opened with `open_verified` next to the good backup. Each outcome must be one of:
//!
//! - opened without being moved aside, with every original event intact (a prefix when only the
//!   newest events after the checkpoint are gone: the chain cannot know about what was never
//!   anchored), and passing the full `verify` — or, the documented exception, failing only the
//!   full walk because of damage before the checkpoint (`deferred` to the periodic full walk);
//! - moved aside (the file kept byte for byte), the good backup restored, the result passing the
//!   full `verify`, with the CRITICAL `store:recovered` alert;
//! - refused as `TooNew` (a newer schema version), the file untouched.
//!
//! A panic, another error, or an accepted store whose chain lost or changed rows after the
//! checkpoint is a failure.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use serde_json::json;
use tradebaas_actors::alert::Severity;
use tradebaas_actors::store::{
    CHECKPOINT_KEY, Change, EventRow, SCHEMA_VERSION, SnapshotKind, Store, StoreError, chain_hash,
    open_verified, verify,
};

#[path = "store_mutate.rs"]
mod mutate;
use mutate::mutate;

/// The good store every mutation starts from.
pub struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    pub db: Vec<u8>,
    pub page_size: usize,
    pub backup: PathBuf,
    pub backup_events: Vec<EventRow>,
    pub events: Vec<EventRow>,
    pub checkpoint_seq: u64,
    pub state: BTreeMap<String, String>,
}

fn read_events(conn: &Connection) -> rusqlite::Result<Vec<EventRow>> {
    let mut stmt = conn.prepare(
        "SELECT seq, event_id, ts, kind, payload, prev_hash, hash FROM events ORDER BY seq",
    )?;
    let rows = stmt.query_map([], EventRow::from_row)?;
    rows.collect()
}

fn read_state(conn: &Connection) -> rusqlite::Result<BTreeMap<String, String>> {
    let mut stmt = conn.prepare("SELECT key, value FROM state")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

fn commit_events(store: &mut Store, from: usize, n: usize) {
    for i in from..from + n {
        let change = match i % 5 {
            0 => Change::event("heartbeat", json!({ "n": i, "rss_kb": 15_000 + i })),
            1 => Change::event(
                "order.submitted",
                json!({ "label": format!("tb-1-{i:04}"), "amount": 10, "price": 60_000.5 }),
            ),
            2 => Change::event(
                "fill",
                json!({ "label": format!("tb-1-{i:04}"), "qty": 10 }),
            )
            .set(
                "capital",
                json!({ "equity": 1_000.0 + i as f64, "positions": [] }),
            ),
            3 => Change::event("mode.changed", json!({ "to": "OBSERVE_ONLY", "i": i }))
                .set("mode", json!("OBSERVE_ONLY")),
            _ => Change::event("heartbeat", json!({ "n": i, "note": "x".repeat(i % 97) })),
        };
        store.commit(&change).expect("commit");
    }
}

impl Fixture {
    /// ~300 events: created through `open_verified`, 120 events, reopened (checkpoint), a
    /// snapshot, 60 events, the backup, 120 more events.
    pub fn build() -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let root = dir.path().to_path_buf();
        let base = root.join("base");
        std::fs::create_dir_all(&base).expect("mkdir");
        let path = base.join("tradebaas.db");
        let backups = base.join("backups");
        let (mut store, _) = open_verified(&path, &backups).expect("create");
        commit_events(&mut store, 0, 120);
        store
            .snapshot(SnapshotKind::Daily, &json!({ "equity": 1_000.0 }))
            .expect("snapshot");
        store.mark_clean().expect("clean");
        drop(store);
        let (mut store, report) = open_verified(&path, &backups).expect("reopen");
        assert!(!report.degraded(), "{report:?}");
        commit_events(&mut store, 120, 60);
        store
            .snapshot(SnapshotKind::OnDemand, &json!({ "equity": 1_010.0 }))
            .expect("snapshot");
        let backup = store.backup_to(&backups).expect("backup");
        commit_events(&mut store, 180, 120);
        drop(store);
        for c in ["tradebaas.db-wal", "tradebaas.db-shm"] {
            let p = base.join(c);
            assert!(
                !p.exists() || std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) == 0,
                "{c} left behind"
            );
            let _ = std::fs::remove_file(p);
        }
        let full = verify(&path);
        assert!(full.ok, "{full:?}");
        let conn = Connection::open(&path).expect("open");
        let events = read_events(&conn).expect("events");
        let state = read_state(&conn).expect("state");
        let checkpoint: serde_json::Value =
            serde_json::from_str(&state[CHECKPOINT_KEY]).expect("checkpoint");
        let checkpoint_seq = checkpoint["seq"].as_u64().expect("checkpoint seq");
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("page size");
        drop(conn);
        let backup_events =
            read_events(&Connection::open(&backup).expect("backup")).expect("backup events");
        assert!(checkpoint_seq > 100 && checkpoint_seq + 100 < events.len() as u64);
        Fixture {
            db: std::fs::read(&path).expect("read"),
            page_size: page_size as usize,
            backup,
            backup_events,
            events,
            checkpoint_seq,
            state,
            root,
            _dir: dir,
        }
    }
}

/// The mutations, by name (the counts are printed per name).
pub const MUTATIONS: &[&str] = &[
    "truncate",
    "bit_flips",
    "overwrite_bytes",
    "user_version",
    "zero_header",
    "zero_page",
    "edit_event_column",
    "forge_one_event",
    "delete_rows",
    "swap_rows",
    "insert_row",
    "edit_checkpoint",
    "newer_schema",
    "drop_table",
    "swap_pages",
    "append_garbage",
    "garbage_wal",
    "edit_state",
];

fn pick<'a, T>(rng: &mut fastrand::Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

/// A random seq: before the checkpoint, at it, or after it.
fn some_seq(rng: &mut fastrand::Rng, fx: &Fixture) -> u64 {
    let last = fx.events.len() as u64;
    match rng.u8(..4) {
        0 => rng.u64(1..fx.checkpoint_seq),
        1 => fx.checkpoint_seq,
        _ => rng.u64(fx.checkpoint_seq + 1..=last),
    }
}

fn sql(path: &Path, f: impl FnOnce(&Connection) -> rusqlite::Result<()>) {
    let conn = Connection::open(path).expect("open the copy");
    f(&conn).expect("sql mutation");
}

fn flip_random_bits(rng: &mut fastrand::Rng, bytes: &mut [u8], page_size: usize) {
    let pages = bytes.len().div_ceil(page_size).max(1);
    for _ in 0..rng.usize(1..4) {
        let page = rng.usize(..pages);
        let start = page * page_size;
        let end = (start + page_size).min(bytes.len());
        if start >= end {
            continue;
        }
        for _ in 0..rng.usize(1..9) {
            let i = rng.usize(start..end);
            bytes[i] ^= 1 << rng.u8(..8);
        }
    }
}

/// What one open did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Opened in place; every original event intact; full `verify` passes.
    AcceptedIntact,
    /// Opened in place; the newest events (after the checkpoint) gone, the rest intact.
    AcceptedTailLost,
    /// Opened in place; the full walk fails on damage before the checkpoint or outside the
    /// chain (found by the periodic full walk, as documented).
    Deferred,
    /// Opened in place with rows after the checkpoint rewritten into a chain that verifies (a
    /// forged head with its hash recomputed, a chain-correct appended row): a keyless hash
    /// chain cannot tell such a rewrite from the original. Only the two mutations that
    /// recompute hashes may end here.
    AcceptedRewritten,
    /// Moved aside, the backup restored, CRITICAL alert.
    Recovered,
    /// Refused: a newer schema version; file untouched.
    RefusedTooNew,
    /// A failure: panic, error, or a silent accept of a damaged chain.
    Failure,
}

#[derive(Default)]
pub struct Tally {
    pub files: u64,
    pub by_outcome: BTreeMap<Outcome, u64>,
    pub by_mutation: BTreeMap<&'static str, BTreeMap<Outcome, u64>>,
    /// Accepted in place with a state value changed (state rows are not hash-chained).
    pub accepted_state_changed: u64,
    pub failures: Vec<String>,
}

impl Tally {
    pub fn count(&self, o: Outcome) -> u64 {
        self.by_outcome.get(&o).copied().unwrap_or(0)
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "files={} accepted_intact={} accepted_tail_lost={} accepted_chain_correct_rewrite={} deferred_to_full_walk={} recovered={} refused_too_new={} failures={} (accepted with a state value changed: {})",
            self.files,
            self.count(Outcome::AcceptedIntact),
            self.count(Outcome::AcceptedTailLost),
            self.count(Outcome::AcceptedRewritten),
            self.count(Outcome::Deferred),
            self.count(Outcome::Recovered),
            self.count(Outcome::RefusedTooNew),
            self.count(Outcome::Failure),
            self.accepted_state_changed,
        );
        for (m, outcomes) in &self.by_mutation {
            let parts: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o:?}={n}")).collect();
            s.push_str(&format!("\n  {m:<18} {}", parts.join(" ")));
        }
        s
    }
}

fn header_version(bytes: &[u8]) -> Option<i32> {
    (bytes.len() >= 100 && bytes.starts_with(b"SQLite format 3\0"))
        .then(|| i32::from_be_bytes([bytes[60], bytes[61], bytes[62], bytes[63]]))
}

fn aside_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains(".corrupt-"))
                .filter(|p| {
                    !p.to_string_lossy().ends_with("-wal") && !p.to_string_lossy().ends_with("-shm")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The original events an opened store still holds: `Ok(k)` when its events are the first `k`
/// original ones (each byte-identical) followed only by events this open appended, else the
/// first differing seq.
fn compare_chain(conn: &Connection, original: &[EventRow]) -> Result<u64, String> {
    let rows = read_events(conn).map_err(|e| format!("events unreadable: {e}"))?;
    let known: HashSet<&str> = original.iter().map(|e| e.event_id.as_str()).collect();
    let mut k = 0u64;
    let mut appended = false;
    for row in &rows {
        let orig = row
            .seq
            .checked_sub(1)
            .and_then(|i| original.get(usize::try_from(i).ok()?));
        let same = orig.is_some_and(|o| {
            o.seq == row.seq
                && o.event_id == row.event_id
                && o.ts == row.ts
                && o.kind == row.kind
                && o.payload == row.payload
                && o.prev_hash == row.prev_hash
                && o.hash == row.hash
        });
        if same && !appended && row.seq == k + 1 {
            k += 1;
        } else if !known.contains(row.event_id.as_str()) && row.kind == "run.started" {
            appended = true;
        } else {
            return Err(format!("event seq {} differs from the original", row.seq));
        }
    }
    Ok(k)
}

/// One mutated file through `open_verified`.
pub fn run_one(rng: &mut fastrand::Rng, fx: &Fixture, n: u64, tally: &mut Tally) {
    let name: &'static str = MUTATIONS[rng.usize(..MUTATIONS.len())];
    let work = fx.root.join(format!("w{n}"));
    let backups = work.join("backups");
    std::fs::create_dir_all(&backups).expect("mkdir");
    let path = work.join("tradebaas.db");
    std::fs::write(&path, &fx.db).expect("copy");
    let backup = backups.join(fx.backup.file_name().expect("backup name"));
    std::fs::copy(&fx.backup, &backup).expect("copy backup");
    let mut desc = mutate(rng, fx, name, &path);
    if rng.u8(..8) == 0 {
        // Sometimes a second, byte-level one on top.
        let second = *pick(
            rng,
            &["bit_flips", "truncate", "overwrite_bytes", "user_version"],
        );
        desc = format!("{desc} + {}", mutate(rng, fx, second, &path));
    }
    let mutated = std::fs::read(&path).unwrap_or_default();

    let outcome = catch_unwind(AssertUnwindSafe(|| open_verified(&path, &backups)));
    let verdict = judge(fx, name, &work, &path, &backup, &mutated, outcome, tally);
    let outcome = match verdict {
        Ok(o) => o,
        Err(why) => {
            // TRADEBAAS_FUZZ_KEEP=<dir> keeps each failing file (before the open) to study.
            if let Some(dir) = std::env::var_os("TRADEBAAS_FUZZ_KEEP") {
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(Path::new(&dir).join(format!("file-{n}.db")), &mutated);
            }
            if tally.failures.len() < 20 {
                tally
                    .failures
                    .push(format!("file {n}, {name}: {desc}: {why}"));
            }
            Outcome::Failure
        }
    };
    tally.files += 1;
    *tally.by_outcome.entry(outcome).or_default() += 1;
    *tally
        .by_mutation
        .entry(name)
        .or_default()
        .entry(outcome)
        .or_default() += 1;
    let _ = std::fs::remove_dir_all(&work);
}

type Opened = std::thread::Result<Result<(Store, tradebaas_actors::store::OpenReport), StoreError>>;

#[allow(clippy::too_many_arguments)]
fn judge(
    fx: &Fixture,
    name: &str,
    work: &Path,
    path: &Path,
    backup: &Path,
    mutated: &[u8],
    opened: Opened,
    tally: &mut Tally,
) -> Result<Outcome, String> {
    let (store, report) = match opened {
        Err(_) => return Err("PANIC in open_verified".into()),
        Ok(Err(StoreError::TooNew { found, .. })) => {
            if header_version(mutated).map(i64::from) != Some(found) || found <= SCHEMA_VERSION {
                return Err(format!(
                    "TooNew({found}) but the header says {:?}",
                    header_version(mutated)
                ));
            }
            if std::fs::read(path).unwrap_or_default() != mutated {
                return Err("refused as too new but the file was changed".into());
            }
            if !aside_files(work).is_empty() {
                return Err("refused as too new but something was moved aside".into());
            }
            return Ok(Outcome::RefusedTooNew);
        }
        Ok(Err(e)) => return Err(format!("open_verified failed: {e}")),
        Ok(Ok(pair)) => pair,
    };
    drop(store);
    let full = verify(path);
    let conn = Connection::open(path).map_err(|e| format!("cannot reopen: {e}"))?;
    if report.degraded() {
        if report.restored_from.as_deref() != Some(backup.to_string_lossy().as_ref()) {
            return Err(format!(
                "moved aside but not restored from the good backup: {report:?}"
            ));
        }
        let alert = tradebaas_actors::protocol::alert::Alert::for_store_open(&report)
            .ok_or("degraded without an alert")?;
        if alert.severity != Severity::Critical || alert.key != "store:recovered" {
            return Err(format!("wrong alert {} {:?}", alert.key, alert.severity));
        }
        let aside = aside_files(work);
        let [aside] = aside.as_slice() else {
            return Err(format!("expected one moved-aside file, found {aside:?}"));
        };
        if std::fs::read(aside).unwrap_or_default() != mutated {
            return Err("the moved-aside file is not the damaged file byte for byte".into());
        }
        if !full.ok {
            return Err(format!(
                "the restored store fails verify: {}",
                full.summary()
            ));
        }
        let k = compare_chain(&conn, &fx.backup_events)?;
        if k != fx.backup_events.len() as u64 {
            return Err(format!("the restored store lost backup events ({k})"));
        }
        return Ok(Outcome::Recovered);
    }
    // Accepted in place.
    if let Ok(state) = read_state(&conn) {
        let changed = fx
            .state
            .iter()
            .filter(|(k, _)| k.as_str() != "run" && k.as_str() != CHECKPOINT_KEY)
            .any(|(k, v)| state.get(k) != Some(v));
        tally.accepted_state_changed += u64::from(changed);
    }
    // The chain after the checkpoint, read the way the start-up check reads it (a range scan),
    // against the original; the events up to the checkpoint by their seq.
    let post = post_checkpoint(&conn, fx)?;
    let checkpoint_intact = row_at(&conn, fx.checkpoint_seq).as_ref()
        == Some(&fx.events[fx.checkpoint_seq as usize - 1]);
    let pre_damaged = pre_checkpoint_damaged(&conn, fx);
    let rewrites = matches!(name, "forge_one_event" | "insert_row");
    let fail = |what: &str| {
        Err(format!(
            "SILENT ACCEPT of a damaged chain: {what} (checkpoint {}); full verify: {}",
            fx.checkpoint_seq,
            full.summary()
        ))
    };
    if !checkpoint_intact {
        return fail("the checkpoint's event changed");
    }
    if post.rewritten && !rewrites {
        return fail("events after the checkpoint changed");
    }
    if pre_damaged && full.ok {
        return fail("events before the checkpoint changed and the full walk does not see it");
    }
    Ok(if pre_damaged || !full.ok {
        // Damage before the checkpoint or in pages the tail does not read: the periodic full
        // walk finds it (documented in ADR 0003).
        Outcome::Deferred
    } else if post.rewritten {
        Outcome::AcceptedRewritten
    } else if post.tail_lost {
        Outcome::AcceptedTailLost
    } else {
        Outcome::AcceptedIntact
    })
}

fn row_at(conn: &Connection, seq: u64) -> Option<EventRow> {
    conn.query_row(
        "SELECT seq, event_id, ts, kind, payload, prev_hash, hash FROM events WHERE seq = ?1",
        [seq as i64],
        EventRow::from_row,
    )
    .ok()
}

struct Post {
    /// The newest original events are gone (the rest a prefix).
    tail_lost: bool,
    /// Rows differ from the original (other than the appended `run.started`).
    rewritten: bool,
}

fn post_checkpoint(conn: &Connection, fx: &Fixture) -> Result<Post, String> {
    let original = &fx.events[fx.checkpoint_seq as usize..];
    let known: HashSet<&str> = fx.events.iter().map(|e| e.event_id.as_str()).collect();
    let mut stmt = conn
        .prepare(
            "SELECT seq, event_id, ts, kind, payload, prev_hash, hash FROM events \
             WHERE seq > ?1 ORDER BY seq",
        )
        .map_err(|e| {
            format!("accepted, but the events after the checkpoint are unreadable: {e}")
        })?;
    let rows = stmt
        .query_map([fx.checkpoint_seq as i64], EventRow::from_row)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| {
            format!("accepted, but the events after the checkpoint are unreadable: {e}")
        })?;
    let (mut i, mut appended, mut rewritten) = (0, false, false);
    for row in &rows {
        if !appended && original.get(i) == Some(row) {
            i += 1;
        } else if !appended && row.kind == "run.started" && !known.contains(row.event_id.as_str()) {
            appended = true;
        } else {
            rewritten = true;
        }
    }
    Ok(Post {
        tail_lost: i < original.len(),
        rewritten,
    })
}

/// An event before the checkpoint is missing, unreadable or changed, or rows sit below seq 1.
fn pre_checkpoint_damaged(conn: &Connection, fx: &Fixture) -> bool {
    let below: rusqlite::Result<i64> =
        conn.query_row("SELECT count(*) FROM events WHERE seq < 1", [], |r| {
            r.get(0)
        });
    !matches!(below, Ok(0))
        || fx.events[..fx.checkpoint_seq as usize - 1]
            .iter()
            .any(|o| row_at(conn, o.seq).as_ref() != Some(o))
}

/// `files` mutated files from `seed`.
pub fn run(seed: u64, files: u64) -> Tally {
    let fx = Fixture::build();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tally = Tally::default();
    for n in 0..files {
        run_one(&mut rng, &fx, n, &mut tally);
    }
    tally
}
