//! Retention: high-volume, low-value events (heartbeats first) older than `[store.retention]
//! keep` are moved out of the live `events` table into sealed, zstd-compressed archive files
//! (`<data_dir>/archives/events-<first>-<last>.jsonl.zst`), so the store stops growing with
//! its age. Events that carry money (orders, fills, mode changes, operator actions, recovery,
//! snapshots) are never archived: only the kinds in [`ARCHIVABLE_KINDS`] can be configured.
//!
//! Sealed: the file's sha256 is recorded in the `archives` table and in a `store.archived`
//! event of the chain itself, so editing or removing an archive is found by
//! `tradebaas state verify --full`, which walks the live rows and the archived rows merged by
//! seq as one unbroken chain. The start-up walk (after the checkpoint) never reaches archived
//! rows: retention only takes rows before the checkpoint. A live walk (periodic slices) accepts
//! a gap in `seq` only where an archive covers it.

use std::collections::{BTreeMap, BinaryHeap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, params_from_iter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{CHECKPOINT_KEY, Change, Checkpoint, EventRow, Store, StoreError, sqlite_err};

/// The kinds retention may archive: nothing that carries money or explains a decision.
pub const ARCHIVABLE_KINDS: [&str; 2] = ["heartbeat", "chain.checkpoint"];

/// The first line of an archive file.
const FORMAT: &str = "tradebaas-archive-1";

/// `[store.retention]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Archive at all (every backup interval, before the backup).
    pub enabled: bool,
    /// Which kinds (a subset of [`ARCHIVABLE_KINDS`]).
    pub kinds: Vec<String>,
    /// Events younger than this stay in the live table.
    #[serde(with = "humantime_serde")]
    pub keep: Duration,
    /// At most this many events per run (one archive file each), so a first run on an old
    /// store does not hold the database worker for long; the backlog goes over several runs.
    pub max_events_per_run: u64,
    /// A run archives only when at least this many events are due, so archives are few and
    /// large rather than one small file (and one `store.archived` event, which stays live) per
    /// hourly run: with the default, about one a day at the default heartbeat rate.
    pub min_events_per_run: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            kinds: ARCHIVABLE_KINDS.iter().map(|k| (*k).to_owned()).collect(),
            keep: Duration::from_secs(7 * 24 * 60 * 60),
            max_events_per_run: 100_000,
            min_events_per_run: 2_000,
        }
    }
}

impl RetentionConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for k in &self.kinds {
            if !ARCHIVABLE_KINDS.contains(&k.as_str()) {
                return Err(format!(
                    "retention.kinds: {k:?} cannot be archived (only {}; events that carry money \
                     are never archived)",
                    ARCHIVABLE_KINDS.join(", ")
                ));
            }
        }
        if self.keep < Duration::from_secs(60 * 60) {
            return Err("retention.keep must be at least 1h".into());
        }
        if self.max_events_per_run == 0 {
            return Err("retention.max_events_per_run must be at least 1".into());
        }
        if self.min_events_per_run > self.max_events_per_run {
            return Err(
                "retention.min_events_per_run must not exceed retention.max_events_per_run".into(),
            );
        }
        Ok(())
    }
}

/// What one retention run archived.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchiveReport {
    pub file: PathBuf,
    pub first_seq: u64,
    pub last_seq: u64,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    /// Pages given back to the filesystem by `incremental_vacuum` (0 for a store created
    /// before auto_vacuum was set: its free pages are reused instead).
    pub freed_pages: u64,
}

/// `<dir of the store>/archives`.
pub fn archives_dir(store_path: &Path) -> PathBuf {
    store_path
        .parent()
        .map_or_else(|| PathBuf::from("archives"), |d| d.join("archives"))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Sqlite {
        path: path.to_path_buf(),
        reason: format!("archive: {e}"),
    }
}

fn row_json(r: &EventRow) -> serde_json::Value {
    serde_json::json!({
        "seq": r.seq, "event_id": r.event_id, "ts": r.ts, "kind": r.kind,
        "payload": r.payload, "prev_hash": r.prev_hash, "hash": r.hash,
    })
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path)?;
    std::io::copy(&mut f, &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

impl Store {
    /// One retention run: moves at most `max_events_per_run` events of the configured kinds,
    /// older than `keep` and before the verified checkpoint, into a sealed archive file in
    /// `dir`, then deletes them from the live table with a `store.archived` event in the same
    /// transaction, and gives the freed pages back (`incremental_vacuum`). `None` when there is
    /// nothing to archive (or no checkpoint yet). The file is complete and fsynced before the
    /// transaction: a crash in between leaves the rows live and an orphan file the next run
    /// overwrites.
    pub fn archive_old(
        &mut self,
        dir: &Path,
        policy: &RetentionConfig,
        now: DateTime<Utc>,
    ) -> Result<Option<ArchiveReport>, StoreError> {
        if !policy.enabled || policy.kinds.is_empty() {
            return Ok(None);
        }
        let store_path = self.path.clone();
        let err = sqlite_err(&store_path);
        let checkpoint: Option<Checkpoint> = self
            .state()?
            .remove(CHECKPOINT_KEY)
            .and_then(|v| serde_json::from_value(v).ok());
        let Some(cp) = checkpoint else {
            return Ok(None);
        };
        let cutoff = (now
            - chrono::Duration::from_std(policy.keep).unwrap_or(chrono::Duration::MAX))
        .to_rfc3339_opts(SecondsFormat::Micros, true);
        let marks = vec!["?"; policy.kinds.len()].join(", ");
        let filter = format!("seq < ? AND ts < ? AND kind IN ({marks})");
        let mut args: Vec<rusqlite::types::Value> = vec![
            rusqlite::types::Value::Integer(i64::try_from(cp.seq).unwrap_or(i64::MAX)),
            rusqlite::types::Value::Text(cutoff),
        ];
        args.extend(
            policy
                .kinds
                .iter()
                .map(|k| rusqlite::types::Value::Text(k.clone())),
        );
        let limit = i64::try_from(policy.max_events_per_run).unwrap_or(i64::MAX);
        let rows: Vec<EventRow> = {
            let mut stmt = self
                .conn
                .prepare(&format!(
                    "SELECT seq, event_id, ts, kind, payload, prev_hash, hash FROM events \
                     WHERE {filter} ORDER BY seq LIMIT {limit}"
                ))
                .map_err(&err)?;
            let mapped = stmt
                .query_map(params_from_iter(args.iter()), EventRow::from_row)
                .map_err(&err)?;
            mapped.collect::<Result<_, _>>().map_err(&err)?
        };
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(None);
        };
        if (rows.len() as u64) < policy.min_events_per_run {
            return Ok(None);
        }
        let (first_seq, last_seq, count) = (first.seq, last.seq, rows.len() as u64);
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let name = format!("events-{first_seq:012}-{last_seq:012}.jsonl.zst");
        let file = dir.join(&name);
        let partial = dir.join(format!("{name}.partial"));
        {
            let out = std::fs::File::create(&partial).map_err(io_err(&partial))?;
            let mut z = zstd::Encoder::new(out, 3).map_err(io_err(&partial))?;
            let header = serde_json::json!({
                "format": FORMAT, "first_seq": first_seq, "last_seq": last_seq, "rows": count,
            });
            writeln!(z, "{header}").map_err(io_err(&partial))?;
            for r in &rows {
                writeln!(z, "{}", row_json(r)).map_err(io_err(&partial))?;
            }
            let out = z.finish().map_err(io_err(&partial))?;
            out.sync_all().map_err(io_err(&partial))?;
        }
        std::fs::rename(&partial, &file).map_err(io_err(&file))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        let sha256 = sha256_file(&file).map_err(io_err(&file))?;
        let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let change = Change::event(
            "store.archived",
            serde_json::json!({
                "file": name, "first_seq": first_seq, "last_seq": last_seq,
                "rows": count, "sha256": sha256, "kinds": policy.kinds,
            }),
        );
        let delete = format!("DELETE FROM events WHERE seq BETWEEN ? AND ? AND {filter}");
        let mut del_args = vec![
            rusqlite::types::Value::Integer(i64::try_from(first_seq).unwrap_or(i64::MAX)),
            rusqlite::types::Value::Integer(i64::try_from(last_seq).unwrap_or(i64::MAX)),
        ];
        del_args.extend(args.iter().cloned());
        let path = self.path.clone();
        let sha = sha256.clone();
        self.commit_with(&change, |tx, c| {
            let err = sqlite_err(&path);
            let deleted = tx
                .execute(&delete, params_from_iter(del_args.iter()))
                .map_err(&err)?;
            if deleted as u64 != count {
                return Err(StoreError::Sqlite {
                    path: path.clone(),
                    reason: format!(
                        "archive: {deleted} rows matched for deletion, {count} were archived"
                    ),
                });
            }
            tx.execute(
                "INSERT INTO archives (file, first_seq, last_seq, rows, sha256, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![
                    name,
                    i64::try_from(first_seq).unwrap_or(i64::MAX),
                    i64::try_from(last_seq).unwrap_or(i64::MAX),
                    i64::try_from(count).unwrap_or(i64::MAX),
                    sha,
                    c.at.to_rfc3339_opts(SecondsFormat::Micros, true)
                ],
            )
            .map_err(&err)?;
            Ok(())
        })?;
        let before: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .map_err(&err)?;
        // The pragma frees one page per step: step it to the end.
        {
            let mut stmt = self
                .conn
                .prepare("PRAGMA incremental_vacuum")
                .map_err(&err)?;
            let mut rows = stmt.query([]).map_err(&err)?;
            while rows.next().map_err(&err)?.is_some() {}
        }
        let after: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .map_err(&err)?;
        Ok(Some(ArchiveReport {
            file,
            first_seq,
            last_seq,
            rows: count,
            bytes,
            sha256,
            freed_pages: u64::try_from(before - after).unwrap_or(0),
        }))
    }
}

/// One recorded archive.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ArchiveEntry {
    pub file: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub rows: u64,
    pub sha256: String,
}

/// The recorded archives, by `first_seq` (none before schema 3).
pub(crate) fn archive_entries(conn: &Connection) -> rusqlite::Result<Vec<ArchiveEntry>> {
    let has: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'archives'",
        [],
        |r| r.get(0),
    )?;
    if has == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT file, first_seq, last_seq, rows, sha256 FROM archives ORDER BY first_seq, id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(ArchiveEntry {
            file: r.get(0)?,
            first_seq: u64::try_from(r.get::<_, i64>(1)?).unwrap_or_default(),
            last_seq: u64::try_from(r.get::<_, i64>(2)?).unwrap_or_default(),
            rows: u64::try_from(r.get::<_, i64>(3)?).unwrap_or_default(),
            sha256: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// Whether every seq in `from..=to` lies within an archive's range (sorted, may overlap).
pub(crate) fn covered(ranges: &[(u64, u64)], from: u64, to: u64) -> bool {
    let mut next = from;
    for &(a, b) in ranges {
        if a > next {
            break;
        }
        if b >= next {
            next = b.saturating_add(1);
            if next > to {
                return true;
            }
        }
    }
    next > to
}

/// Streams the rows of one archive file after checking its sha256; problems are reported, not
/// raised (a missing or edited archive is a finding of `verify --full`).
fn read_archive(dir: &Path, e: &ArchiveEntry) -> Result<Vec<EventRow>, String> {
    let path = dir.join(&e.file);
    let sha = sha256_file(&path).map_err(|err| format!("archive {}: {err}", e.file))?;
    if sha != e.sha256 {
        return Err(format!(
            "archive {}: sha256 {sha} is not the recorded {} (edited or replaced)",
            e.file, e.sha256
        ));
    }
    let f = std::fs::File::open(&path).map_err(|err| format!("archive {}: {err}", e.file))?;
    let z = zstd::Decoder::new(f).map_err(|err| format!("archive {}: {err}", e.file))?;
    let mut lines = BufReader::new(z).lines();
    let header: serde_json::Value = lines
        .next()
        .and_then(Result::ok)
        .and_then(|l| serde_json::from_str(&l).ok())
        .ok_or_else(|| format!("archive {}: no header", e.file))?;
    if header["format"] != FORMAT {
        return Err(format!(
            "archive {}: unknown format {}",
            e.file, header["format"]
        ));
    }
    let mut rows = Vec::new();
    for line in lines {
        let line = line.map_err(|err| format!("archive {}: {err}", e.file))?;
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|err| format!("archive {}: {err}", e.file))?;
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        rows.push(EventRow {
            seq: v["seq"].as_u64().unwrap_or_default(),
            event_id: text("event_id"),
            ts: text("ts"),
            kind: text("kind"),
            payload: text("payload"),
            prev_hash: text("prev_hash"),
            hash: text("hash"),
        });
    }
    if rows.len() as u64 != e.rows {
        return Err(format!(
            "archive {}: {} rows, {} recorded",
            e.file,
            rows.len(),
            e.rows
        ));
    }
    Ok(rows)
}

/// For `verify --full`: the archived rows, in seq order, merged by the caller with the live
/// rows. One archive is held in memory at a time (at most `max_events_per_run` rows).
pub(crate) struct ArchivedRows {
    dir: PathBuf,
    pending: std::collections::VecDeque<ArchiveEntry>,
    /// Loaded archives' rows by seq (more than one only when ranges overlap).
    open: BinaryHeap<std::cmp::Reverse<(u64, usize)>>,
    loaded: BTreeMap<usize, std::vec::IntoIter<EventRow>>,
    heads: BTreeMap<usize, EventRow>,
    next_id: usize,
    pub problems: Vec<String>,
}

impl ArchivedRows {
    pub fn new(dir: PathBuf, entries: Vec<ArchiveEntry>) -> Self {
        Self {
            dir,
            pending: entries.into(),
            open: BinaryHeap::new(),
            loaded: BTreeMap::new(),
            heads: BTreeMap::new(),
            next_id: 0,
            problems: Vec::new(),
        }
    }

    fn load_next(&mut self) {
        let Some(e) = self.pending.pop_front() else {
            return;
        };
        match read_archive(&self.dir, &e) {
            Ok(rows) => {
                let id = self.next_id;
                self.next_id += 1;
                let mut it = rows.into_iter();
                if let Some(first) = it.next() {
                    self.open.push(std::cmp::Reverse((first.seq, id)));
                    self.heads.insert(id, first);
                    self.loaded.insert(id, it);
                }
            }
            Err(p) => self.problems.push(p),
        }
    }

    /// The next archived row with a seq below `before` (the next live row's seq), if any.
    pub fn next_before(&mut self, before: u64) -> Option<EventRow> {
        loop {
            // Open every archive that may start before the smallest loaded seq.
            let smallest = self.open.peek().map(|r| r.0.0);
            match self.pending.front() {
                Some(e) if smallest.is_none_or(|s| e.first_seq <= s) && e.first_seq < before => {
                    self.load_next();
                    continue;
                }
                _ => {}
            }
            let std::cmp::Reverse((seq, id)) = *self.open.peek()?;
            if seq >= before {
                return None;
            }
            self.open.pop();
            let row = self.heads.remove(&id)?;
            if let Some(next) = self.loaded.get_mut(&id).and_then(Iterator::next) {
                self.open.push(std::cmp::Reverse((next.seq, id)));
                self.heads.insert(id, next);
            } else {
                self.loaded.remove(&id);
            }
            return Some(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Scope, open_verified, verify, verify_slice, verify_tail};
    use serde_json::json;

    /// A store with `n` events, one in 200 an order, the rest heartbeats, opened once (checkpoint at
    /// its head), then `tail` more heartbeats after the checkpoint.
    fn aged(n: usize, tail: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tradebaas.db");
        let mut store = Store::open(&path).unwrap();
        for i in 0..n {
            // Money events are rare next to heartbeats (a few trades a day, 2,880 heartbeats).
            let kind = if i % 200 == 5 {
                "order.placed"
            } else {
                "heartbeat"
            };
            store
                .commit(&Change::event(
                    kind,
                    json!({ "i": i, "pad": "x".repeat(200) }),
                ))
                .unwrap();
        }
        drop(store);
        drop(open_verified(&path, &dir.path().join("backups")).unwrap());
        let mut store = Store::open(&path).unwrap();
        for i in 0..tail {
            store
                .commit(&Change::event("heartbeat", json!({ "late": i })))
                .unwrap();
        }
        (dir, path)
    }

    fn kinds(path: &Path) -> BTreeMap<String, i64> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT kind, count(*) FROM events GROUP BY kind")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn later() -> DateTime<Utc> {
        crate::clock::now() + chrono::Duration::days(30)
    }

    #[test]
    fn old_heartbeats_are_archived_money_events_stay_and_the_chain_still_verifies() {
        let (dir, path) = aged(2_000, 20);
        let before = kinds(&path);
        assert_eq!(before["order.placed"], 10);
        let size_before = std::fs::metadata(&path).unwrap().len();
        let mut store = Store::open(&path).unwrap();
        let archives = archives_dir(&path);
        let policy = RetentionConfig {
            max_events_per_run: 1_000,
            min_events_per_run: 1,
            ..RetentionConfig::default()
        };
        let av: i64 = store
            .conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(av, 2, "auto_vacuum = INCREMENTAL");
        let first = store
            .archive_old(&archives, &policy, later())
            .unwrap()
            .unwrap();
        assert_eq!(first.rows, 1_000);
        assert!(first.freed_pages > 0, "{first:?}");
        let second = store
            .archive_old(&archives, &policy, later())
            .unwrap()
            .unwrap();
        // The rest of the 1,990 heartbeats, but the checkpoint's own row (seq 2,000) stays.
        assert_eq!(second.rows, 989);
        assert!(first.last_seq < second.first_seq);
        assert!(
            store
                .archive_old(&archives, &policy, later())
                .unwrap()
                .is_none()
        );
        // Younger than `keep`: nothing (now is the real now).
        drop(store);
        store_checkpoint_gone_is_fine(&path);

        let after = kinds(&path);
        assert_eq!(after["order.placed"], 10, "money events are never archived");
        assert_eq!(
            after["heartbeat"], 21,
            "the checkpoint's and the ones after it are live"
        );
        assert_eq!(after["store.archived"], 2);
        // The live file shrinks (auto_vacuum = INCREMENTAL on a store created by this binary).
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        drop(conn);
        let size_after = std::fs::metadata(&path).unwrap().len();
        assert!(
            size_after < size_before / 2,
            "{size_before} -> {size_after} bytes"
        );

        let tail = verify_tail(&path);
        assert!(tail.ok, "{tail:?}");
        let full = verify(&path);
        assert!(full.ok, "{full:?}");
        assert_eq!(
            full.events,
            2_000 + 1 + 20 + 2,
            "live and archived rows, merged"
        );
        let mut from = 0;
        loop {
            let slice = verify_slice(&path, from, 333).unwrap();
            assert!(slice.problems.is_empty(), "{slice:?}");
            if slice.done {
                break;
            }
            from = slice.through;
        }
        let _ = dir;
    }

    fn store_checkpoint_gone_is_fine(path: &Path) {
        // Retention with no checkpoint stored does nothing.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.db");
        std::fs::copy(path, &p).unwrap();
        let conn = Connection::open(&p).unwrap();
        conn.execute("DELETE FROM state WHERE key = ?1", [CHECKPOINT_KEY])
            .unwrap();
        drop(conn);
        let mut s = Store::open(&p).unwrap();
        assert!(
            s.archive_old(&dir.path().join("a"), &RetentionConfig::default(), later())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn fewer_due_events_than_min_events_per_run_wait_for_a_later_run() {
        let (_dir, path) = aged(300, 0);
        let mut store = Store::open(&path).unwrap();
        let archives = archives_dir(&path);
        let policy = |min| RetentionConfig {
            min_events_per_run: min,
            ..RetentionConfig::default()
        };
        // How many are due: what a run without a minimum takes, on a copy.
        let copy = _dir.path().join("copy.db");
        std::fs::copy(&path, &copy).unwrap();
        let due = Store::open(&copy)
            .unwrap()
            .archive_old(&_dir.path().join("copy-archives"), &policy(1), later())
            .unwrap()
            .unwrap()
            .rows;
        assert!(due > 100, "{due}");
        // One fewer than the minimum: nothing is archived, no file written.
        assert!(
            store
                .archive_old(&archives, &policy(due + 1), later())
                .unwrap()
                .is_none()
        );
        assert!(!archives.exists() || std::fs::read_dir(&archives).unwrap().count() == 0);
        let r = store
            .archive_old(&archives, &policy(due), later())
            .unwrap()
            .unwrap();
        assert_eq!(r.rows, due);
        assert!(
            RetentionConfig {
                min_events_per_run: 10,
                max_events_per_run: 5,
                ..RetentionConfig::default()
            }
            .validate()
            .unwrap_err()
            .contains("min_events_per_run")
        );
    }

    #[test]
    fn an_edited_or_missing_archive_fails_the_full_verification() {
        let (_dir, path) = aged(300, 0);
        let mut store = Store::open(&path).unwrap();
        let archives = archives_dir(&path);
        let r = store
            .archive_old(
                &archives,
                &RetentionConfig {
                    min_events_per_run: 1,
                    ..RetentionConfig::default()
                },
                later(),
            )
            .unwrap()
            .unwrap();
        drop(store);
        assert!(verify(&path).ok);
        let original = std::fs::read(&r.file).unwrap();
        let mut bytes = original.clone();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        std::fs::write(&r.file, &bytes).unwrap();
        let full = verify(&path);
        assert!(!full.ok);
        assert!(full.summary().contains("sha256"), "{}", full.summary());
        assert!(
            verify_tail(&path).ok,
            "the start-up walk does not read archives"
        );
        std::fs::remove_file(&r.file).unwrap();
        let full = verify(&path);
        assert!(!full.ok, "{full:?}");
        std::fs::write(&r.file, &original).unwrap();
        assert!(verify(&path).ok);
        // A live row next to an archived range edited: the merged walk sees the broken link.
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE events SET prev_hash = 'x' WHERE seq = (SELECT min(seq) FROM events WHERE kind = 'order.placed')",
            [],
        )
        .unwrap();
        drop(conn);
        assert!(!verify_scoped_full(&path));
    }

    fn verify_scoped_full(path: &Path) -> bool {
        crate::store::verify_scoped(path, Scope::Full).ok
    }

    #[test]
    fn coverage_of_a_gap_by_archive_ranges() {
        let r = [(1, 10), (12, 20), (15, 30)];
        assert!(covered(&r, 2, 9));
        assert!(covered(&r, 12, 30));
        assert!(!covered(&r, 10, 12), "11 is not archived");
        assert!(!covered(&r, 31, 31));
        assert!(!covered(&[], 1, 1));
    }

    #[test]
    fn only_archivable_kinds_are_accepted() {
        let mut c = RetentionConfig::default();
        assert!(c.validate().is_ok());
        c.kinds = vec!["order.placed".into()];
        let e = c.validate().unwrap_err();
        assert!(e.contains("never archived"), "{e}");
    }
}
