//! Integrity verification, opening with recovery, and the backups directory.
//!
//! This file holds the full verification (`verify`, `VerifyReport`, the schema, state and
//! snapshot checks); `verify/checkpoint.rs` the `chain.verified` checkpoint and where a walk
//! starts; `verify/chain.rs` the streaming `ChainVerifier`; `verify/facts.rs` the bounded
//! slice and the read-only `IntegrityFacts` for the checks; `verify/open.rs` opening with
//! recovery (move aside, restore); `verify/backups.rs` the backups directory.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::store::SCHEMA_VERSION;
use crate::store::archive::{ArchivedRows, archive_entries, archives_dir};

mod backups;
mod chain;
mod checkpoint;
#[cfg(test)]
mod checkpoint_tests;
mod facts;
mod open;
#[cfg(test)]
mod schema_table_tests;

use backups::backup_paths;
pub use backups::{BackupInfo, backup_count, backup_file_name, list_backups, prune_backups};
pub use chain::ChainVerifier;
use chain::archived_ranges;
pub(crate) use chain::{for_each_event_after, for_each_event_in};
pub use checkpoint::{CHECKPOINT_KEY, Checkpoint, Scope};
use checkpoint::{event_at, start_point};
pub use facts::{IntegrityFacts, Slice, read_integrity_facts, verify_slice};
pub use open::{OpenReport, open_verified};

/// At most this many problems are listed one by one; the rest are counted.
const MAX_LISTED_PROBLEMS: usize = 20;

/// Event ids stored more than once (the `UNIQUE` index should make this impossible; a damaged
/// or hand-edited file need not honour it). Streams the index: no id set in memory.
fn duplicate_ids(conn: &Connection, problems: &mut Vec<String>) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT event_id, count(*) FROM events GROUP BY event_id HAVING count(*) > 1 LIMIT 20",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let n: i64 = r.get(1)?;
        problems.push(format!("duplicate event id {id} ({n} events)"));
    }
    Ok(())
}

/// Events stored with a seq below 1: outside the chain (it starts at 1), so no walk reads them,
/// yet they are rows of the event log (inserted by hand or by damage). One primary-key range
/// lookup, so every scope runs it.
fn rows_outside_chain(conn: &Connection, problems: &mut Vec<String>) -> rusqlite::Result<()> {
    let n: i64 = conn.query_row("SELECT count(*) FROM events WHERE seq < 1", [], |r| {
        r.get(0)
    })?;
    if n > 0 {
        problems.push(format!(
            "{n} event(s) stored with a seq below 1, outside the chain (inserted rows)"
        ));
    }
    Ok(())
}

/// The tables each schema version introduced (see `MIGRATIONS`) and the columns the store
/// writes. A store declaring an older version must not hold a later version's table (its
/// `user_version` was edited or damaged: the migration from the declared version would fail on
/// start), and a table the version has must have its columns (a damaged schema text opens, but
/// every commit would fail).
const TABLES_SINCE: &[(i64, &str, &[&str])] = &[
    (1, "state", &["key", "value", "updated_at"]),
    (
        1,
        "events",
        &[
            "seq",
            "event_id",
            "ts",
            "kind",
            "payload",
            "prev_hash",
            "hash",
        ],
    ),
    (
        2,
        "snapshots",
        &["id", "taken_at", "kind", "payload", "event_seq"],
    ),
    (
        3,
        "archives",
        &[
            "id",
            "file",
            "first_seq",
            "last_seq",
            "rows",
            "sha256",
            "created_at",
        ],
    ),
];

fn check_schema_objects(conn: &Connection, version: i64, report: &mut VerifyReport) {
    for &(since, table, columns) in TABLES_SINCE {
        let found: rusqlite::Result<Vec<String>> = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .and_then(|mut stmt| {
                stmt.query_map([table], |r| r.get::<_, String>(0))?
                    .collect()
            });
        match found {
            Err(e) => report.problem(format!("cannot read the schema: {e}")),
            Ok(found) if since > version && !found.is_empty() => report.problem(format!(
                "schema version {version}, but table {table} of version {since} exists \
                 (user_version edited or damaged)"
            )),
            Ok(found) if since <= version => {
                let missing: Vec<&str> = columns
                    .iter()
                    .copied()
                    .filter(|c| !found.iter().any(|f| f == c))
                    .collect();
                if !missing.is_empty() {
                    report.problem(format!(
                        "table {table} lacks column(s) {} (damaged schema)",
                        missing.join(", ")
                    ));
                }
            }
            Ok(_) => {}
        }
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    pub path: String,
    /// No problem found.
    pub ok: bool,
    /// `PRAGMA user_version` (None when the file could not be read).
    pub schema_version: Option<i64>,
    /// Events walked (all of them for [`Scope::Full`], those after the checkpoint for a tail).
    pub events: u64,
    pub last_seq: u64,
    /// The newest event's hash (the next checkpoint when the report is ok).
    pub last_hash: Option<String>,
    pub snapshots: u64,
    /// What was walked: `full`, or `tail` (after `checkpoint_seq`).
    pub scope: Scope,
    /// The checkpoint the walk resumed from (a tail), if one was stored.
    pub checkpoint_seq: Option<u64>,
    pub problems: Vec<String>,
}

impl VerifyReport {
    fn new(path: &Path) -> Self {
        Self {
            path: path.display().to_string(),
            ok: false,
            schema_version: None,
            events: 0,
            last_seq: 0,
            last_hash: None,
            snapshots: 0,
            scope: Scope::Full,
            checkpoint_seq: None,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_LISTED_PROBLEMS {
            self.problems.push(p);
        } else if self.problems.len() == MAX_LISTED_PROBLEMS {
            self.problems.push("… more problems not listed".into());
        }
    }

    /// The store was written by a newer binary (not a corruption: refuse, do not move aside).
    pub fn too_new(&self) -> bool {
        self.schema_version.is_some_and(|v| v > SCHEMA_VERSION)
    }

    /// One line: the first problems.
    pub fn summary(&self) -> String {
        if self.ok {
            match (self.scope, self.checkpoint_seq) {
                (Scope::Tail, Some(cp)) => format!(
                    "ok ({} events after the checkpoint at seq {cp}, last seq {})",
                    self.events, self.last_seq
                ),
                _ => format!("ok ({} events, last seq {})", self.events, self.last_seq),
            }
        } else {
            self.problems.join("; ")
        }
    }
}

/// Verifies the store at `path` without writing to it: `PRAGMA quick_check`, the schema
/// version, the event chain (seq continuous from 1, unique ids, recomputed hashes, `prev_hash`
/// links, non-decreasing timestamps), state values are JSON, snapshots chronological.
/// Cost grows with history: see [`verify_tail`] for the start-up path.
pub fn verify(path: &Path) -> VerifyReport {
    verify_scoped(path, Scope::Full)
}

/// [`verify`] of only what changed since the stored [`Checkpoint`]: the checkpoint's event
/// still has its hash, every later event links to it, state and snapshots as in [`verify`]; no
/// `quick_check` (a damaged page elsewhere surfaces as a read error, or in the periodic check's
/// full walk). Without a checkpoint, the full walk.
pub fn verify_tail(path: &Path) -> VerifyReport {
    verify_scoped(path, Scope::Tail)
}

/// [`verify`] or [`verify_tail`]; a full walk reads the archives next to the store.
pub fn verify_scoped(path: &Path, scope: Scope) -> VerifyReport {
    verify_with_archives(path, scope, &archives_dir(path))
}

/// [`verify_scoped`] with the archives in `archives` (a backup's are the data directory's).
pub fn verify_with_archives(path: &Path, scope: Scope, archives: &Path) -> VerifyReport {
    let mut report = VerifyReport::new(path);
    report.scope = scope;
    match std::fs::metadata(path) {
        Err(e) => {
            report.problem(format!("cannot read the file: {e}"));
            return report;
        }
        Ok(m) if m.len() == 0 => {
            report.problem("the file is empty (0 bytes)".into());
            return report;
        }
        Ok(_) => {}
    }
    let conn = match Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(c) => c,
        Err(e) => {
            report.problem(format!("cannot open: {e}"));
            return report;
        }
    };
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    // One read transaction: a consistent view while the daemon commits.
    let _ = conn.execute_batch("BEGIN");
    check(&conn, &mut report, archives);
    let _ = conn.execute_batch("COMMIT");
    report.ok = report.problems.is_empty();
    report
}

fn check(conn: &Connection, report: &mut VerifyReport, archives: &Path) {
    match conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)) {
        Ok(v) => report.schema_version = Some(v),
        Err(e) => {
            report.problem(format!("not a database or unreadable: {e}"));
            return;
        }
    }
    let version = report.schema_version.unwrap_or_default();
    if version > SCHEMA_VERSION {
        report.problem(format!(
            "schema version {version} is newer than this binary supports ({SCHEMA_VERSION})"
        ));
        return;
    }
    if version < 1 {
        report.problem(format!(
            "schema version {version}: not an initialised TradeBaas store"
        ));
        return;
    }
    check_schema_objects(conn, version, report);
    if !report.problems.is_empty() {
        return;
    }
    match if report.scope == Scope::Full {
        quick_check(conn)
    } else {
        Ok(vec!["ok".to_owned()])
    } {
        Ok(lines) if lines == ["ok"] => {}
        Ok(lines) => {
            for l in lines {
                report.problem(format!("quick_check: {l}"));
            }
            return;
        }
        Err(e) => {
            report.problem(format!("quick_check failed: {e}"));
            return;
        }
    }
    if let Err(e) = check_events(conn, report, archives) {
        report.problem(format!("cannot read events: {e}"));
    }
    if let Err(e) = check_state(conn, report) {
        report.problem(format!("cannot read state: {e}"));
    }
    if version >= 2
        && let Err(e) = check_snapshots(conn, report)
    {
        report.problem(format!("cannot read snapshots: {e}"));
    }
}

fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

fn check_events(
    conn: &Connection,
    report: &mut VerifyReport,
    archives: &Path,
) -> rusqlite::Result<()> {
    let mut problems = Vec::new();
    let (chain, checkpoint) = start_point(conn, report.scope, &mut problems)?;
    report.checkpoint_seq = checkpoint;
    if checkpoint.is_none() {
        report.scope = Scope::Full;
    }
    if let Some(mut chain) = chain {
        if report.scope == Scope::Full {
            // The whole chain: live rows and archived rows merged by seq, every link checked.
            let mut archived = ArchivedRows::new(archives.to_path_buf(), archive_entries(conn)?);
            for_each_event_after(conn, 0, |row| {
                while let Some(a) = archived.next_before(row.seq) {
                    chain.push(&a);
                }
                chain.push(&row);
            })?;
            while let Some(a) = archived.next_before(u64::MAX) {
                chain.push(&a);
            }
            problems.append(&mut archived.problems);
        } else {
            chain.archived = archived_ranges(conn)?;
            // No quick_check here, so the B-tree's order is checked where the next writes go:
            // every tail row must be found again by its key. A damaged interior page (a flipped
            // divider key) still lets the range scan read every row, but a seek takes the wrong
            // branch, and the daemon's next insert would land out of order.
            let mut seek = conn.prepare("SELECT 1 FROM events WHERE seq = ?1")?;
            for_each_event_after(conn, checkpoint.unwrap_or(0), |row| {
                chain.push(&row);
                match seek.exists([i64::try_from(row.seq).unwrap_or(i64::MAX)]) {
                    Ok(true) => {}
                    Ok(false) => chain.problem(format!(
                        "event seq {}: read by the scan but not found by its key (damaged \
                         B-tree page)",
                        row.seq
                    )),
                    Err(e) => {
                        chain.problem(format!("event seq {}: seek by key failed: {e}", row.seq))
                    }
                }
            })?;
        }
        if report.scope == Scope::Full {
            duplicate_ids(conn, &mut problems)?;
        }
        rows_outside_chain(conn, &mut problems)?;
        report.events = chain.events;
        report.last_seq = chain.last_seq;
        report.last_hash = Some(chain.prev_hash.clone());
        problems.extend(chain.problems);
    }
    for p in problems {
        report.problem(p);
    }
    Ok(())
}

fn check_state(conn: &Connection, report: &mut VerifyReport) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT key, value FROM state ORDER BY key")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let key: String = r.get(0)?;
        let value: String = r.get(1)?;
        if serde_json::from_str::<serde_json::Value>(&value).is_err() {
            report.problem(format!("state key {key:?}: value is not JSON"));
        }
    }
    Ok(())
}

fn check_snapshots(conn: &Connection, report: &mut VerifyReport) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT id, taken_at, payload FROM snapshots ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut prev: Option<String> = None;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let taken_at: String = r.get(1)?;
        let payload: String = r.get(2)?;
        report.snapshots += 1;
        if let Some(p) = &prev
            && taken_at <= *p
        {
            report.problem(format!(
                "snapshot {id}: taken_at {taken_at} is not after the previous one"
            ));
        }
        if serde_json::from_str::<serde_json::Value>(&payload).is_err() {
            report.problem(format!("snapshot {id}: payload is not JSON"));
        }
        prev = Some(taken_at);
    }
    Ok(())
}

/// A read-only connection beside a running daemon (no lock, no migration, waits up to 5 s for
/// a writer's lock).
fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

#[cfg(test)]
pub(super) fn tests_companions(path: &Path) -> [std::path::PathBuf; 2] {
    open::companions(path)
}
