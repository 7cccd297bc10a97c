//! Integrity verification, opening with recovery, and the backups directory.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::{EventRow, GENESIS_HASH, SCHEMA_VERSION, SnapshotRow, Store, StoreError, chain_hash};

/// At most this many problems are listed one by one; the rest are counted.
const MAX_LISTED_PROBLEMS: usize = 20;

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    pub path: String,
    /// No problem found.
    pub ok: bool,
    /// `PRAGMA user_version` (None when the file could not be read).
    pub schema_version: Option<i64>,
    pub events: u64,
    pub last_seq: u64,
    pub snapshots: u64,
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
            snapshots: 0,
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
            format!("ok ({} events, last seq {})", self.events, self.last_seq)
        } else {
            self.problems.join("; ")
        }
    }
}

/// Verifies the store at `path` without writing to it: `PRAGMA quick_check`, the schema
/// version, the event chain (seq continuous from 1, unique ids, recomputed hashes, `prev_hash`
/// links, non-decreasing timestamps), state values are JSON, snapshots chronological.
pub fn verify(path: &Path) -> VerifyReport {
    let mut report = VerifyReport::new(path);
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
    check(&conn, &mut report);
    report.ok = report.problems.is_empty();
    report
}

fn check(conn: &Connection, report: &mut VerifyReport) {
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
    match quick_check(conn) {
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
    if let Err(e) = check_events(conn, report) {
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

fn check_events(conn: &Connection, report: &mut VerifyReport) -> rusqlite::Result<()> {
    let mut chain = ChainVerifier::new();
    for_each_event(conn, |row| chain.push(&row))?;
    report.events = chain.events;
    report.last_seq = chain.last_seq;
    for p in chain.problems {
        report.problem(p);
    }
    Ok(())
}

/// Streams every event, oldest first, into `f` (one row in memory at a time).
pub(crate) fn for_each_event(
    conn: &Connection,
    mut f: impl FnMut(EventRow),
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT seq, event_id, ts, kind, payload, prev_hash, hash FROM events ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        f(EventRow {
            seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or_default(),
            event_id: r.get(1)?,
            ts: r.get(2)?,
            kind: r.get(3)?,
            payload: r.get(4)?,
            prev_hash: r.get(5)?,
            hash: r.get(6)?,
        });
    }
    Ok(())
}

/// Verifies the event chain one row at a time, oldest first: seq continuous from 1, unique ids,
/// recomputed hashes, `prev_hash` links, parseable and non-decreasing timestamps, JSON payloads.
/// Used by [`verify`] and by the integrity checks (`crate::checks`), which also look at
/// [`ChainVerifier::newest_ts`] (timestamps in the future).
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_seq: u64,
    prev_hash: String,
    prev_ts: Option<DateTime<Utc>>,
    ids: HashSet<String>,
    /// Events seen.
    pub events: u64,
    /// The last event's seq.
    pub last_seq: u64,
    /// The newest timestamp seen.
    pub newest_ts: Option<DateTime<Utc>>,
    /// What is wrong, at most [`MAX_LISTED_PROBLEMS`] listed (then one "more" line).
    pub problems: Vec<String>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    /// Before the first event.
    pub fn new() -> Self {
        Self {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
            prev_ts: None,
            ids: HashSet::new(),
            events: 0,
            last_seq: 0,
            newest_ts: None,
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

    /// Checks the next event (rows must come in stored `seq` order).
    pub fn push(&mut self, row: &EventRow) {
        let seq = row.seq;
        self.events += 1;
        if seq != self.expected_seq {
            self.problem(format!(
                "event seq {seq}: expected seq {} (gap or reorder)",
                self.expected_seq
            ));
        }
        if !self.ids.insert(row.event_id.clone()) {
            self.problem(format!(
                "event seq {seq}: duplicate event id {}",
                row.event_id
            ));
        }
        if row.prev_hash != self.prev_hash {
            self.problem(format!(
                "event seq {seq}: prev_hash does not link to the previous event's hash"
            ));
        }
        if chain_hash(
            &row.prev_hash,
            seq,
            &row.event_id,
            &row.ts,
            &row.kind,
            &row.payload,
        ) != row.hash
        {
            self.problem(format!(
                "event seq {seq}: stored hash does not match its contents (edited row)"
            ));
        }
        match DateTime::parse_from_rfc3339(&row.ts) {
            Ok(t) => {
                let t = t.with_timezone(&Utc);
                if let Some(p) = self.prev_ts
                    && t < p
                {
                    self.problem(format!(
                        "event seq {seq}: timestamp {} is before the previous event's",
                        row.ts
                    ));
                }
                self.prev_ts = Some(t);
                self.newest_ts = Some(self.newest_ts.map_or(t, |n| n.max(t)));
            }
            Err(e) => self.problem(format!("event seq {seq}: bad timestamp {:?}: {e}", row.ts)),
        }
        if serde_json::from_str::<serde_json::Value>(&row.payload).is_err() {
            self.problem(format!("event seq {seq}: payload is not JSON"));
        }
        self.last_seq = seq;
        self.expected_seq = seq.saturating_add(1);
        self.prev_hash = row.hash.clone();
    }
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

/// What the integrity checks (`crate::checks`) read from a store: the verified event chain, the
/// snapshots and the raw state values, all from one read transaction (a consistent view even
/// while the daemon commits).
#[derive(Debug, Clone)]
pub struct IntegrityFacts {
    pub path: String,
    pub chain: ChainVerifier,
    /// Oldest first.
    pub snapshots: Vec<SnapshotRow>,
    /// Every state key with its stored text (not parsed: an unreadable value is a finding).
    pub state: BTreeMap<String, String>,
}

/// Reads [`IntegrityFacts`] from the store at `path`, read-only (no lock, no migration, no
/// write): safe beside a running daemon. The event chain is streamed, never held in memory.
pub fn read_integrity_facts(path: &Path) -> Result<IntegrityFacts, StoreError> {
    let err = |e: rusqlite::Error| StoreError::Sqlite {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    if !path.exists() {
        return Err(StoreError::Sqlite {
            path: path.to_path_buf(),
            reason: "no such file".into(),
        });
    }
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err)?;
    let tx = conn.transaction().map_err(err)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("schema version {version}: not an initialised TradeBaas store"),
        });
    }
    let mut chain = ChainVerifier::new();
    for_each_event(&tx, |row| chain.push(&row)).map_err(err)?;
    // The id set is only needed while walking; the report must not keep it alive.
    chain.ids = HashSet::new();
    let mut snapshots = Vec::new();
    if version >= 2 {
        let mut stmt = tx
            .prepare("SELECT id, taken_at, kind, payload, event_seq FROM snapshots ORDER BY id")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(SnapshotRow {
                    id: r.get(0)?,
                    taken_at: r.get(1)?,
                    kind: r.get(2)?,
                    payload: r.get(3)?,
                    event_seq: u64::try_from(r.get::<_, i64>(4)?).unwrap_or_default(),
                })
            })
            .map_err(err)?;
        for row in rows {
            snapshots.push(row.map_err(err)?);
        }
    }
    let mut state = BTreeMap::new();
    {
        let mut stmt = tx
            .prepare("SELECT key, value FROM state ORDER BY key")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(err)?;
        for row in rows {
            let (k, v) = row.map_err(err)?;
            state.insert(k, v);
        }
    }
    drop(tx);
    Ok(IntegrityFacts {
        path: path.display().to_string(),
        chain,
        snapshots,
        state,
    })
}

/// What [`open_verified`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OpenReport {
    /// A new, empty store was created (none existed, or nothing good was left).
    pub created: bool,
    /// The backup copied into place.
    pub restored_from: Option<String>,
    /// Where the failed store was moved (`<name>.corrupt-<UTC>`; never deleted).
    pub moved_aside: Option<String>,
    /// Why the store was moved aside.
    pub reason: Option<String>,
    /// The previous run did not stop cleanly (no `run.stopped`).
    pub crashed: bool,
}

impl OpenReport {
    /// The store was moved aside (and maybe restored): start in OBSERVE_ONLY and raise a
    /// CRITICAL alert.
    pub fn degraded(&self) -> bool {
        self.moved_aside.is_some() || self.restored_from.is_some()
    }

    /// The alert to raise for this open: CRITICAL `store:recovered` when [`Self::degraded`],
    /// WARNING `store:unclean_stop` when only the previous run crashed, else none.
    pub fn alert(&self) -> Option<crate::alert::Alert> {
        use crate::alert::{Alert, Severity};
        let metadata = serde_json::to_value(self).unwrap_or_default();
        if self.degraded() {
            let what = match &self.restored_from {
                Some(b) => format!("restored from backup {b}"),
                None => "no backup verified; started with an EMPTY store".into(),
            };
            let aside = self.moved_aside.clone().unwrap_or_default();
            Some(Alert {
                key: "store:recovered".into(),
                severity: Severity::Critical,
                title: "the store failed verification and was replaced".into(),
                message: format!("moved aside to {aside}; {what}; trading is OBSERVE_ONLY"),
                root_cause: self.reason.clone().unwrap_or_default(),
                recommended_action: format!(
                    "Keep {aside} for investigation. Events after the restored backup exist only \
                     there: reconcile positions with the exchange before enabling trading \
                     (docs/OPERATIONS.md)."
                ),
                metadata,
            })
        } else if self.crashed {
            Some(Alert {
                key: "store:unclean_stop".into(),
                severity: Severity::Warning,
                title: "the previous run did not stop cleanly".into(),
                message: "no run.stopped was recorded before this start".into(),
                root_cause: "crash, kill -9, power loss or a shutdown past its time limit".into(),
                recommended_action: "Read the previous run's last log lines; check positions \
                                     against the exchange."
                    .into(),
                metadata,
            })
        } else {
            None
        }
    }
}

/// The name of a backup taken at `at`: `tradebaas-YYYYmmddTHHMMSSmmmZ.db` (sorts by time).
pub fn backup_file_name(at: DateTime<Utc>) -> String {
    format!("tradebaas-{}.db", at.format("%Y%m%dT%H%M%S%3fZ"))
}

fn parse_backup_name(name: &str) -> Option<DateTime<Utc>> {
    let stamp = name.strip_prefix("tradebaas-")?.strip_suffix("Z.db")?;
    NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%3f")
        .ok()
        .map(|n| n.and_utc())
}

/// A file in the backups directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupInfo {
    pub path: PathBuf,
    /// From the file name.
    pub taken_at: DateTime<Utc>,
    pub size_bytes: u64,
    /// The verification of the file ([`verify`]).
    pub verified: VerifyReport,
}

fn backup_paths(dir: &Path) -> Vec<(PathBuf, DateTime<Utc>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            parse_backup_name(&name).map(|t| (e.path(), t))
        })
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    out
}

/// The backups in `dir`, newest first, each verified. A missing directory has none.
pub fn list_backups(dir: &Path) -> Vec<BackupInfo> {
    backup_paths(dir)
        .into_iter()
        .map(|(path, taken_at)| BackupInfo {
            size_bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
            verified: verify(&path),
            path,
            taken_at,
        })
        .collect()
}

/// How many backups `dir` holds (by name; not verified).
pub fn backup_count(dir: &Path) -> usize {
    backup_paths(dir).len()
}

/// Deletes all but the newest `keep` backups in `dir`, and `.partial` leftovers of interrupted
/// backups; returns how many backups remain. Only the backup writer may call it.
pub fn prune_backups(dir: &Path, keep: usize) -> Result<usize, StoreError> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("tradebaas-") && name.ends_with(".db.partial") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let all = backup_paths(dir);
    for (path, _) in all.iter().skip(keep) {
        std::fs::remove_file(path).map_err(|e| StoreError::Sqlite {
            path: path.clone(),
            reason: format!("cannot delete an old backup: {e}"),
        })?;
    }
    Ok(all.len().min(keep))
}

fn companions(path: &Path) -> [PathBuf; 2] {
    let with = |suffix: &str| {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    [with("-wal"), with("-shm")]
}

/// Renames the store (and its `-wal`/`-shm`) to `<name>.corrupt-<UTC>`; returns the new name.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut target = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{}.corrupt-{stamp}-{n}", path.display()));
        n += 1;
    }
    let io = |e: std::io::Error| StoreError::Sqlite {
        path: path.to_path_buf(),
        reason: format!(
            "cannot move the failed store aside to {}: {e}",
            target.display()
        ),
    };
    if path.exists() {
        std::fs::rename(path, &target).map_err(io)?;
    }
    for (from, to) in companions(path).iter().zip(companions(&target).iter()) {
        if from.exists() {
            std::fs::rename(from, to).map_err(io)?;
        }
    }
    Ok(target)
}

/// Copies `backup` to `path` (through a temporary file and a rename, fsynced).
fn restore(backup: &Path, path: &Path) -> Result<(), StoreError> {
    let io = |e: std::io::Error| StoreError::Sqlite {
        path: path.to_path_buf(),
        reason: format!("cannot restore {}: {e}", backup.display()),
    };
    let tmp = PathBuf::from(format!("{}.restoring", path.display()));
    std::fs::copy(backup, &tmp).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Opens the store at `path` for the daemon, recovering from a damaged file:
///
/// - missing → a fresh store (`created`);
/// - fails [`verify`] (not a database, empty, truncated, quick_check, broken chain, edited row) →
///   moved aside (never deleted), the newest backup in `backups_dir` that verifies is copied in
///   place (`restored_from`), else a fresh store;
/// - written by a newer binary → [`StoreError::TooNew`] (nothing is moved: refuse to start).
///
/// Then records the start of the run (see [`Store::begin_run`]) and reports whether the previous
/// run crashed. When [`OpenReport::degraded`], start in OBSERVE_ONLY and raise a CRITICAL alert.
/// A file that holds no committed TradeBaas data at all: zero bytes, or an SQLite database with
/// `user_version` 0 and no schema objects. Anything unreadable is not blank (it is corrupt).
fn is_blank(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(m) if m.len() == 0 => return true,
        Ok(_) => {}
        Err(_) => return false,
    }
    let Ok(conn) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return false;
    };
    let version: Result<i64, _> = conn.query_row("PRAGMA user_version", [], |r| r.get(0));
    let objects: Result<i64, _> =
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0));
    matches!((version, objects), (Ok(0), Ok(0)))
}

pub fn open_verified(path: &Path, backups_dir: &Path) -> Result<(Store, OpenReport), StoreError> {
    let mut report = OpenReport::default();
    let failure = if path.exists() && is_blank(path) && backup_paths(backups_dir).is_empty() {
        // The very first initialisation was interrupted before its first commit (the schema is
        // created in one transaction): nothing was ever stored, so there is nothing to lose or
        // restore. Initialise it in place instead of raising a false CRITICAL alert.
        tracing::warn!(
            store = %path.display(),
            "store exists but was never initialised (first start interrupted); initialising it"
        );
        report.created = true;
        None
    } else if path.exists() {
        let check = verify(path);
        if check.too_new() {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: check.schema_version.unwrap_or_default(),
                supported: SCHEMA_VERSION,
            });
        }
        (!check.ok).then(|| check.summary())
    } else if companions(path).iter().any(|c| c.exists()) {
        // A WAL without its database would be replayed into a new, empty file: never open it.
        Some("the store file is missing but its -wal/-shm exist (deleted while in use?)".into())
    } else {
        report.created = true;
        None
    };
    if let Some(reason) = failure {
        let aside = move_aside(path)?;
        tracing::error!(
            store = %path.display(),
            moved_aside = %aside.display(),
            reason = %reason,
            "the store failed verification and was moved aside"
        );
        report.moved_aside = Some(aside.display().to_string());
        report.reason = Some(reason);
        let good = backup_paths(backups_dir)
            .into_iter()
            .map(|(p, _)| p)
            .find(|p| verify(p).ok);
        match good {
            Some(backup) => {
                restore(&backup, path)?;
                tracing::warn!(store = %path.display(), backup = %backup.display(), "store restored from backup");
                report.restored_from = Some(backup.display().to_string());
            }
            None => {
                tracing::warn!(store = %path.display(), "no backup verifies; starting with a fresh store");
                report.created = true;
            }
        }
    }
    let mut store = Store::open(path)?;
    report.crashed = store.begin_run()?;
    Ok((store, report))
}

#[cfg(test)]
pub(super) fn tests_companions(path: &Path) -> [PathBuf; 2] {
    companions(path)
}
