//! Integrity verification, opening with recovery, and the backups directory.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::archive::{ArchivedRows, archive_entries, archives_dir, covered};
use super::{EventRow, GENESIS_HASH, SCHEMA_VERSION, SnapshotRow, Store, StoreError, chain_hash};

/// At most this many problems are listed one by one; the rest are counted.
const MAX_LISTED_PROBLEMS: usize = 20;

/// The state key holding the newest verified point of the event chain ([`Checkpoint`]).
pub const CHECKPOINT_KEY: &str = "chain.verified";

/// "Every event up to `seq` was verified, and the event at `seq` has `hash`": where a start-up
/// verification resumes. Written with the `run.started` event once the store verified at open,
/// and as a `chain.checkpoint` event by the periodic integrity check after it verified the tail.
/// It protects itself: the event it names must still have that hash (an edit anywhere before it
/// changes every later hash, and the rows after it must link to it), and a checkpoint naming an
/// event that no longer exists is a finding (rows were deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    /// When it was verified (RFC 3339).
    pub at: String,
}

impl Checkpoint {
    /// A checkpoint at `seq`/`hash`, verified now.
    pub fn now(seq: u64, hash: String) -> Self {
        Self {
            seq,
            hash,
            at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// How much of the event chain a verification walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `PRAGMA quick_check` and every event from seq 1 (`tradebaas state verify --full`, the
    /// periodic check's background slices): cost grows with history.
    Full,
    /// The events after the stored [`Checkpoint`] only, no `quick_check` (start-up, backups):
    /// cost independent of history. Without a checkpoint it is [`Scope::Full`].
    Tail,
}

/// Reads the stored checkpoint: `Ok(None)` when there is none; an unreadable one is an error
/// (a finding, not a reason to trust less or more).
fn read_checkpoint(conn: &Connection) -> Result<Option<Checkpoint>, String> {
    let text: Option<String> = conn
        .query_row(
            "SELECT value FROM state WHERE key = ?1",
            [CHECKPOINT_KEY],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e.to_string()),
        })?;
    text.map(|t| {
        serde_json::from_str::<Checkpoint>(&t)
            .map_err(|e| format!("state key {CHECKPOINT_KEY:?} is not a checkpoint: {e}"))
    })
    .transpose()
}

/// The stored event at `seq`, by primary key: its hash when its contents still hash to it
/// (`Err` text when not: an edited row), and its timestamp.
fn event_at(
    conn: &Connection,
    seq: u64,
) -> rusqlite::Result<Option<(Result<String, String>, String)>> {
    conn.query_row(
        "SELECT seq, event_id, ts, kind, payload, prev_hash, hash FROM events WHERE seq = ?1",
        [i64::try_from(seq).unwrap_or(i64::MAX)],
        |r| {
            let row = EventRow::from_row(r)?;
            let own = chain_hash(
                &row.prev_hash,
                row.seq,
                &row.event_id,
                &row.ts,
                &row.kind,
                &row.payload,
            );
            let hash = if own == row.hash {
                Ok(row.hash)
            } else {
                Err(format!(
                    "event seq {seq}: stored hash does not match its contents (edited row)"
                ))
            };
            Ok((hash, row.ts))
        },
    )
    .map(Some)
    .or_else(|e| match e {
        rusqlite::Error::QueryReturnedNoRows => Ok(None),
        e => Err(e),
    })
}

/// Where a walk of the chain starts: a verifier resumed after the checkpoint, or from seq 1 when
/// there is none (`None` when the checkpoint itself is wrong: the problem is in `problems`).
fn start_point(
    conn: &Connection,
    scope: Scope,
    problems: &mut Vec<String>,
) -> rusqlite::Result<(Option<ChainVerifier>, Option<u64>)> {
    if scope == Scope::Full {
        return Ok((Some(ChainVerifier::untracked()), None));
    }
    let cp = match read_checkpoint(conn) {
        Ok(Some(cp)) => cp,
        Ok(None) => return Ok((Some(ChainVerifier::untracked()), None)),
        Err(e) => {
            problems.push(e);
            return Ok((None, None));
        }
    };
    if cp.seq == 0 {
        return Ok((Some(ChainVerifier::new()), Some(0)));
    }
    match event_at(conn, cp.seq)? {
        Some((Ok(hash), ts)) if hash == cp.hash => {
            Ok((Some(ChainVerifier::resume(cp.seq, hash, &ts)), Some(cp.seq)))
        }
        Some((Err(edited), _)) => {
            problems.push(edited);
            Ok((None, Some(cp.seq)))
        }
        Some(_) => {
            problems.push(format!(
                "event seq {}: its hash is not the one verified at {} (edited row)",
                cp.seq, cp.at
            ));
            Ok((None, Some(cp.seq)))
        }
        None => {
            problems.push(format!(
                "event seq {} was verified at {} and no longer exists (events deleted)",
                cp.seq, cp.at
            ));
            Ok((None, Some(cp.seq)))
        }
    }
}

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
            for_each_event_after(conn, checkpoint.unwrap_or(0), |row| chain.push(&row))?;
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

/// Streams the events with a seq above `after`, oldest first, into `f` (by primary key; one
/// row in memory at a time).
pub(crate) fn for_each_event_after(
    conn: &Connection,
    after: u64,
    f: impl FnMut(EventRow),
) -> rusqlite::Result<()> {
    for_each_event_in(conn, after, u64::MAX, f)
}

/// Streams the events with `after < seq <= through`, oldest first, into `f`.
pub(crate) fn for_each_event_in(
    conn: &Connection,
    after: u64,
    through: u64,
    mut f: impl FnMut(EventRow),
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT seq, event_id, ts, kind, payload, prev_hash, hash FROM events \
         WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
    )?;
    let bound = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut rows = stmt.query([bound(after), bound(through)])?;
    while let Some(r) = rows.next()? {
        f(EventRow::from_row(r)?);
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
    /// The ids seen, for a bounded walk; `None` for a full walk, where [`duplicate_ids`] asks
    /// the index instead (an id set of a year of events is hundreds of MB).
    ids: Option<HashSet<String>>,
    /// Events seen.
    pub events: u64,
    /// The last event's seq.
    pub last_seq: u64,
    /// The newest timestamp seen.
    pub newest_ts: Option<DateTime<Utc>>,
    /// What is wrong, at most [`MAX_LISTED_PROBLEMS`] listed (then one "more" line).
    pub problems: Vec<String>,
    /// Seq ranges moved to archives: a live-only walk accepts a gap inside them (their links
    /// are checked by the merged walk of `verify --full`).
    archived: Vec<(u64, u64)>,
    /// Gaps accepted because archives cover them.
    pub gaps_archived: u64,
    /// The previous row was archived: the next row's link cannot be checked in a live walk.
    link_unknown: bool,
}

/// The archived seq ranges, sorted (empty before schema 3).
fn archived_ranges(conn: &Connection) -> rusqlite::Result<Vec<(u64, u64)>> {
    Ok(archive_entries(conn)?
        .into_iter()
        .map(|e| (e.first_seq, e.last_seq))
        .collect())
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
            ids: Some(HashSet::new()),
            events: 0,
            last_seq: 0,
            newest_ts: None,
            problems: Vec::new(),
            archived: Vec::new(),
            gaps_archived: 0,
            link_unknown: false,
        }
    }

    /// Before the first event, without an id set (uniqueness is checked by [`duplicate_ids`]).
    fn untracked() -> Self {
        Self {
            ids: None,
            ..Self::new()
        }
    }

    /// After the verified event `seq` with `hash` and timestamp `ts`.
    pub fn resume(seq: u64, hash: String, ts: &str) -> Self {
        let prev_ts = DateTime::parse_from_rfc3339(ts)
            .ok()
            .map(|t| t.with_timezone(&Utc));
        Self {
            expected_seq: seq.saturating_add(1),
            prev_hash: hash,
            prev_ts,
            last_seq: seq,
            newest_ts: prev_ts,
            ..Self::new()
        }
    }

    /// The hash of the last event pushed (of the checkpoint for a resumed walk with none yet).
    pub fn last_hash(&self) -> &str {
        &self.prev_hash
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
        let across_archive =
            seq > self.expected_seq && covered(&self.archived, self.expected_seq, seq - 1);
        if across_archive {
            self.gaps_archived += 1;
        } else if seq != self.expected_seq {
            self.problem(format!(
                "event seq {seq}: expected seq {} (gap or reorder)",
                self.expected_seq
            ));
        }
        if let Some(ids) = &mut self.ids
            && !ids.insert(row.event_id.clone())
        {
            self.problem(format!(
                "event seq {seq}: duplicate event id {}",
                row.event_id
            ));
        }
        if !across_archive
            && !std::mem::take(&mut self.link_unknown)
            && row.prev_hash != self.prev_hash
        {
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

/// One bounded slice of a full walk of the chain ([`verify_slice`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slice {
    /// The slice covered `after < seq <= through`.
    pub after: u64,
    pub through: u64,
    pub events: u64,
    /// It reached the newest event: the pass is complete (`quick_check` and the id
    /// uniqueness ran too); the next slice starts again at seq 1.
    pub done: bool,
    pub problems: Vec<String>,
}

/// Verifies at most `max` events after seq `after`, linked to the stored event at `after`
/// (which the previous slice verified), read-only. The periodic integrity check walks the whole
/// chain this way, a slice per run, so an edited old row is found within
/// `ceil(events / max)` runs without any run reading the whole log. The last slice of a pass
/// also runs `PRAGMA quick_check` and the duplicate-id query.
pub fn verify_slice(path: &Path, after: u64, max: u64) -> Result<Slice, StoreError> {
    let err = |e: rusqlite::Error| StoreError::Sqlite {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut conn = open_read_only(path).map_err(err)?;
    let tx = conn.transaction().map_err(err)?;
    let mut problems = Vec::new();
    let ranges = archived_ranges(&tx).map_err(err)?;
    let mut chain = if after == 0 {
        ChainVerifier::new()
    } else {
        match event_at(&tx, after).map_err(err)? {
            Some((Ok(hash), ts)) => ChainVerifier::resume(after, hash, &ts),
            Some((Err(edited), _)) => {
                problems.push(edited);
                ChainVerifier::new()
            }
            // Archived since the last slice: the walk goes on from the next live row.
            None if covered(&ranges, after, after) => {
                let mut c = ChainVerifier::resume(after, String::new(), "");
                c.link_unknown = true;
                c
            }
            None => {
                problems.push(format!(
                    "event seq {after} (where the last slice ended) no longer exists (events deleted)"
                ));
                ChainVerifier::new()
            }
        }
    };
    chain.archived = ranges;
    let through = after.saturating_add(max.max(1));
    for_each_event_in(&tx, after, through, |row| chain.push(&row)).map_err(err)?;
    let head: i64 = tx
        .query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))
        .map_err(err)?;
    let done = chain.last_seq >= u64::try_from(head).unwrap_or_default();
    if done {
        match quick_check(&tx) {
            Ok(lines) if lines == ["ok"] => {}
            Ok(lines) => problems.extend(lines.into_iter().map(|l| format!("quick_check: {l}"))),
            Err(e) => problems.push(format!("quick_check failed: {e}")),
        }
        duplicate_ids(&tx, &mut problems).map_err(err)?;
        rows_outside_chain(&tx, &mut problems).map_err(err)?;
    }
    problems.append(&mut chain.problems);
    Ok(Slice {
        after,
        through: chain.last_seq,
        events: chain.events,
        done,
        problems,
    })
}

/// What the integrity checks (`crate::checks`) read from a store: the verified event chain, the
/// snapshots and the raw state values, all from one read transaction (a consistent view even
/// while the daemon commits).
#[derive(Debug, Clone)]
pub struct IntegrityFacts {
    pub path: String,
    /// The walk: the events after `checkpoint_seq` for [`Scope::Tail`], all for [`Scope::Full`].
    pub chain: ChainVerifier,
    /// What was walked (a tail without a stored checkpoint is a full walk).
    pub scope: Scope,
    /// The checkpoint the walk resumed from.
    pub checkpoint_seq: Option<u64>,
    /// Oldest first.
    pub snapshots: Vec<SnapshotRow>,
    /// Every state key with its stored text (not parsed: an unreadable value is a finding).
    pub state: BTreeMap<String, String>,
}

/// Reads [`IntegrityFacts`] from the store at `path`, read-only (no lock, no migration, no
/// write): safe beside a running daemon. The event chain is streamed, never held in memory;
/// with [`Scope::Tail`] only the events after the stored [`Checkpoint`] are read.
pub fn read_integrity_facts(path: &Path, scope: Scope) -> Result<IntegrityFacts, StoreError> {
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
    let mut conn = open_read_only(path).map_err(err)?;
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
    let mut problems = Vec::new();
    let (start, checkpoint_seq) = start_point(&tx, scope, &mut problems).map_err(err)?;
    let scope = if checkpoint_seq.is_some() {
        scope
    } else {
        Scope::Full
    };
    let mut chain = match start {
        Some(mut chain) => {
            chain.archived = archived_ranges(&tx).map_err(err)?;
            for_each_event_after(&tx, checkpoint_seq.unwrap_or(0), |row| chain.push(&row))
                .map_err(err)?;
            chain
        }
        // The checkpoint itself is wrong: nothing after it can be trusted to link.
        None => ChainVerifier::untracked(),
    };
    if scope == Scope::Full {
        duplicate_ids(&tx, &mut problems).map_err(err)?;
    }
    rows_outside_chain(&tx, &mut problems).map_err(err)?;
    // The id set is only needed while walking; the report must not keep it alive.
    chain.ids = None;
    for p in problems {
        chain.problem(p);
    }
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
        scope,
        checkpoint_seq,
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
    // A backup's archived rows are in the data directory's archives (sealed, append-only).
    let archives = dir
        .parent()
        .map_or_else(|| PathBuf::from("archives"), |d| d.join("archives"));
    backup_paths(dir)
        .into_iter()
        .map(|(path, taken_at)| BackupInfo {
            size_bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
            verified: verify_with_archives(&path, Scope::Full, &archives),
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
    // The head this open verified: stored as the chain's checkpoint with `run.started`.
    let mut verified: Option<(u64, String)> = None;
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
        let check = verify_tail(path);
        if check.too_new() {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: check.schema_version.unwrap_or_default(),
                supported: SCHEMA_VERSION,
            });
        }
        if check.ok {
            verified = check.last_hash.clone().map(|h| (check.last_seq, h));
            tracing::info!(store = %path.display(), scope = ?check.scope, checkpoint_seq = ?check.checkpoint_seq, events = check.events, "store chain verified");
        }
        (!check.ok).then(|| check.summary())
    } else if companions(path).iter().any(|c| c.exists()) {
        // A WAL without its database would be replayed into a new, empty file: never open it.
        Some("the store file is missing but its -wal/-shm exist (deleted while in use?)".into())
    } else {
        report.created = true;
        None
    };
    let accepted_in_place = failure.is_none() && !report.created;
    if let Some(reason) = failure {
        verified = recover(path, backups_dir, reason, &mut report)?;
    }
    let opened = Store::open(path).and_then(|mut store| {
        let crashed = store.begin_run(verified.clone())?;
        Ok((store, crashed))
    });
    let (store, crashed) = match opened {
        Ok(pair) => pair,
        // The start-up verification reads only the tail and skips `quick_check`: damage it
        // did not read (a broken page under the state table or an index, say) can still fail
        // the open. When the full verification confirms the file is damaged, it is moved aside
        // like any failed store instead of refusing to start.
        Err(e) if accepted_in_place && !matches!(e, StoreError::TooNew { .. }) => {
            let full = verify(path);
            if full.ok {
                return Err(e);
            }
            let reason = format!("{e} (full verification: {})", full.summary());
            verified = recover(path, backups_dir, reason, &mut report)?;
            let mut store = Store::open(path)?;
            let crashed = store.begin_run(verified)?;
            (store, crashed)
        }
        Err(e) => return Err(e),
    };
    report.crashed = crashed;
    Ok((store, report))
}

/// Moves the failed store aside and restores the newest backup that verifies (else leaves no
/// file: a fresh store is created); returns the restored head, the checkpoint for `begin_run`.
fn recover(
    path: &Path,
    backups_dir: &Path,
    reason: String,
    report: &mut OpenReport,
) -> Result<Option<(u64, String)>, StoreError> {
    let aside = move_aside(path)?;
    tracing::error!(
        store = %path.display(),
        moved_aside = %aside.display(),
        reason = %reason,
        "the store failed verification and was moved aside"
    );
    report.moved_aside = Some(aside.display().to_string());
    report.reason = Some(reason);
    let good = backup_paths(backups_dir).into_iter().find_map(|(p, _)| {
        let r = verify_tail(&p);
        r.ok.then(|| (p, r.last_hash.map(|h| (r.last_seq, h))))
    });
    match good {
        Some((backup, head)) => {
            restore(&backup, path)?;
            tracing::warn!(store = %path.display(), backup = %backup.display(), "store restored from backup");
            report.restored_from = Some(backup.display().to_string());
            Ok(head)
        }
        None => {
            tracing::warn!(store = %path.display(), "no backup verifies; starting with a fresh store");
            report.created = true;
            Ok(None)
        }
    }
}

#[cfg(test)]
pub(super) fn tests_companions(path: &Path) -> [PathBuf; 2] {
    companions(path)
}

#[cfg(test)]
mod schema_table_tests {
    use super::*;

    /// Every table a fresh store has is listed in `TABLES_SINCE` with its columns, and the
    /// newest entry is the current version: a schema bump that forgets the list fails here
    /// (the store fuzz found schema 3's table missing from it).
    #[test]
    fn tables_since_lists_every_table_of_the_current_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tradebaas.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        let tables: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for t in &tables {
            let entry = TABLES_SINCE.iter().find(|(_, name, _)| name == t);
            assert!(entry.is_some(), "table {t} is not in TABLES_SINCE");
        }
        assert_eq!(TABLES_SINCE.len(), tables.len(), "{tables:?}");
        assert_eq!(TABLES_SINCE.iter().map(|e| e.0).max(), Some(SCHEMA_VERSION));
        assert!(verify(&path).ok);
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use super::*;
    use crate::store::Change;
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

        let mut store = Store::open(&path).unwrap();
        for i in 0..10 {
            store
                .commit(&Change::event("x", json!({ "i": i })))
                .unwrap();
        }
        drop(store);
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
        let mut store = Store::open(&path).unwrap();
        for i in 0..5 {
            store
                .commit(&Change::event("x", json!({ "i": i })))
                .unwrap();
        }
        drop(store);

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
    #[test]
    fn a_user_version_older_than_the_tables_moves_the_store_aside() {
        let (_dir, path, backups) = store_with(5);
        drop(open_verified(&path, &backups).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 1").unwrap();
        drop(conn);
        let r = verify_tail(&path);
        assert!(
            !r.ok && r.summary().contains("table snapshots of version 2"),
            "{r:?}"
        );
        let (_, report) = open_verified(&path, &backups).expect("moved aside, not refused");
        assert!(report.moved_aside.is_some(), "{report:?}");
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
        let r = verify_tail(&path);
        assert!(
            !r.ok && r.summary().contains("lacks column(s) updated_at"),
            "{r:?}"
        );
        let (_, report) = open_verified(&path, &backups).expect("moved aside, not refused");
        assert!(report.moved_aside.is_some(), "{report:?}");
    }

    /// Found by the store fuzz: damage the start-up (tail) verification does not read, here the
    /// zeroed page of the `event_id` index, failed `begin_run` with "database disk image is
    /// malformed" and the daemon refused to start; now the full verification confirms the
    /// damage and the store is moved aside and the backup restored.
    #[test]
    fn damage_the_tail_check_does_not_read_is_recovered_when_the_open_fails() {
        let (_dir, path, backups) = store_with(5);
        let (store, _) = open_verified(&path, &backups).unwrap();
        let backup = store.backup_to(&backups).unwrap();
        drop(store);
        let conn = Connection::open(&path).unwrap();
        let root: i64 = conn
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        drop(conn);
        assert!(!tests_companions(&path)[0].exists());
        let mut bytes = std::fs::read(&path).unwrap();
        let start = usize::try_from((root - 1) * page_size).unwrap();
        let end = start + usize::try_from(page_size).unwrap();
        bytes[start..end].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            verify_tail(&path).ok,
            "the tail check does not read the index"
        );
        assert!(!verify(&path).ok, "the full check does");
        let (store, report) = open_verified(&path, &backups).expect("recovered, not refused");
        drop(store);
        assert!(report.moved_aside.is_some(), "{report:?}");
        assert_eq!(
            report.restored_from.as_deref(),
            Some(backup.display().to_string().as_str())
        );
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
}
