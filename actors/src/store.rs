//! The durable store: an SQLite database (WAL journal, `synchronous=FULL`) holding the state the
//! actors re-read on start and an append-only, hash-chained event log.
//!
//! Only the `state-persister` actor writes it (through its database worker). A state change and
//! the event that explains it are one transaction; [`Store::commit`] returns only after the
//! commit is durable.
//!
//! The event chain: `hash = sha256(prev_hash ‖ seq ‖ event_id ‖ ts ‖ kind ‖ payload)`, with the
//! all-zero hash before the first event, so a gap, a reorder or an edited row is detectable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

mod archive;
mod lock;
mod verify;

pub use archive::{ARCHIVABLE_KINDS, ArchiveReport, RetentionConfig, archives_dir};
pub use lock::DataDirLock;
pub use verify::{
    BackupInfo, CHECKPOINT_KEY, ChainVerifier, Checkpoint, IntegrityFacts, OpenReport, Scope,
    Slice, VerifyReport, backup_count, backup_file_name, list_backups, open_verified,
    prune_backups, read_integrity_facts, verify, verify_scoped, verify_slice, verify_tail,
};

/// The schema version this binary writes (`PRAGMA user_version`).
///
/// History: 1 = `state` + `events`; 2 = adds `snapshots`; 3 = adds `archives` (retention).
pub const SCHEMA_VERSION: i64 = 3;

/// The schema of version 1, exactly as the first release created it.
pub const V1_DDL: &str = "CREATE TABLE state (
                    key TEXT PRIMARY KEY,
                    value TEXT NOT NULL,
                    updated_at TEXT NOT NULL
                 );
                 CREATE TABLE events (
                    seq INTEGER PRIMARY KEY,
                    event_id TEXT NOT NULL UNIQUE,
                    ts TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    prev_hash TEXT NOT NULL,
                    hash TEXT NOT NULL
                 );
                 PRAGMA user_version = 1;";

/// An empty database → version 1.
pub fn v0_to_v1(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(V1_DDL)
}

/// Version 1 → 2: the `snapshots` table (capital and positions at a point in time). Each
/// snapshot names the event committed with it (`event_seq`); `taken_at` is unique and, by
/// [`Store::snapshot`], strictly increasing.
pub fn v1_to_v2(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE snapshots (
            id INTEGER PRIMARY KEY,
            taken_at TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL CHECK (kind IN ('daily', 'on_demand')),
            payload TEXT NOT NULL,
            event_seq INTEGER NOT NULL
         );
         PRAGMA user_version = 2;",
    )
}

/// Version 2 → 3: the `archives` table, one row per sealed archive file of events moved out of
/// the live table by retention ([`archive`]): which seq range it covers, how many rows, and the
/// sha256 of the file.
pub fn v2_to_v3(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE archives (
            id INTEGER PRIMARY KEY,
            file TEXT NOT NULL UNIQUE,
            first_seq INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            rows INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            created_at TEXT NOT NULL
         );
         PRAGMA user_version = 3;",
    )
}

/// The migration steps: `MIGRATIONS[v]` takes a store from version `v` to `v + 1`.
const MIGRATIONS: [fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>; 3] =
    [v0_to_v1, v1_to_v2, v2_to_v3];

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    Daily,
    OnDemand,
}

impl SnapshotKind {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Daily => "daily",
            SnapshotKind::OnDemand => "on_demand",
        }
    }
}

/// A snapshot as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRow {
    pub id: i64,
    pub taken_at: String,
    pub kind: String,
    pub payload: String,
    pub event_seq: u64,
}

/// The state key of the clean-shutdown marker.
pub const RUN_KEY: &str = "run";

/// The hash before the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What can go wrong with the store. Messages name the file and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {reason}")]
    Sqlite { path: PathBuf, reason: String },
    #[error("store {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "store {path} has schema version {found}, newer than this binary supports ({supported}); \
         run the newer tradebaas or restore a backup"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "data directory lock {path} is held by another tradebaas (pid {}); \
         stop it first — two daemons must never share a store",
        holder.map_or_else(|| "unknown".to_string(), |p| p.to_string())
    )]
    Locked { path: PathBuf, holder: Option<u32> },
    #[error("the state-persister is not available: {0}")]
    Unavailable(String),
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// A dotted type, e.g. `mode.changed`, `lifecycle.transition`.
    pub kind: String,
    pub payload: Value,
}

impl NewEvent {
    /// An event of `kind` with `payload`.
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
        }
    }
}

/// One write to the state table: set a key, or delete it with `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateWrite {
    pub key: String,
    pub value: Option<Value>,
}

/// A state change and the event that explains it: committed together or not at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub event: NewEvent,
    pub state: Vec<StateWrite>,
}

impl Change {
    /// An event without state writes.
    pub fn event(kind: impl Into<String>, payload: Value) -> Self {
        Self {
            event: NewEvent::new(kind, payload),
            state: Vec::new(),
        }
    }

    /// Adds a state write.
    #[must_use]
    pub fn set(mut self, key: impl Into<String>, value: Value) -> Self {
        self.state.push(StateWrite {
            key: key.into(),
            value: Some(value),
        });
        self
    }
}

/// What a commit produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    pub seq: u64,
    pub event_id: String,
    pub at: DateTime<Utc>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub seq: u64,
    pub event_id: String,
    pub ts: String,
    pub kind: String,
    pub payload: String,
    pub prev_hash: String,
    pub hash: String,
}

impl EventRow {
    /// A row of `SELECT seq, event_id, ts, kind, payload, prev_hash, hash FROM events` (public
    /// for the tools and tests that read a store file directly).
    pub fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or_default(),
            event_id: r.get(1)?,
            ts: r.get(2)?,
            kind: r.get(3)?,
            payload: r.get(4)?,
            prev_hash: r.get(5)?,
            hash: r.get(6)?,
        })
    }
}

/// The chain hash of an event.
pub fn chain_hash(
    prev_hash: &str,
    seq: u64,
    event_id: &str,
    ts: &str,
    kind: &str,
    payload: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [prev_hash, &seq.to_string(), event_id, ts, kind, payload] {
        h.update(part.as_bytes());
        h.update([0x1f]);
    }
    format!("{:x}", h.finalize())
}

/// The open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    last_seq: u64,
    last_hash: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::Sqlite {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl Store {
    /// Opens (creating if missing) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = sqlite_err(path);
        // A file that does not exist yet or holds nothing: the only case where the auto_vacuum
        // mode can still be chosen (and where setting it writes nothing to an existing store).
        let fresh = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(&err)?;
        // Only on a new, empty file (before the WAL switch writes its header; later it would
        // need a full VACUUM): retention's deletes then give pages back with
        // `incremental_vacuum`. Never on an existing store: the pragma may write to it (the
        // store fuzz caught it changing a damaged file before it was moved aside).
        if fresh {
            conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
                .map_err(&err)?;
        }
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("not a database or unreadable: {e}"),
            })?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Sqlite {
                path: path.to_path_buf(),
                reason: format!("could not switch to WAL journal (got {mode})"),
            });
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
            .map_err(&err)?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            last_seq: 0,
            last_hash: GENESIS_HASH.to_string(),
        };
        store.migrate()?;
        store.load_head()?;
        Ok(store)
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version on disk.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sqlite_err(&self.path))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < 0 {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                reason: format!("negative schema version {found}"),
            });
        }
        let err = sqlite_err(&self.path);
        for (from, step) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(found).unwrap_or(0))
        {
            // Each step and its version bump are one transaction: a crash leaves the old version.
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(&err)?;
            step(&tx).map_err(|e| StoreError::Sqlite {
                path: self.path.clone(),
                reason: format!("migration from schema version {from} failed: {e}"),
            })?;
            tx.commit().map_err(&err)?;
        }
        Ok(())
    }

    fn load_head(&mut self) -> Result<(), StoreError> {
        let head: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sqlite_err(&self.path))?;
        if let Some((seq, hash)) = head {
            self.last_seq = u64::try_from(seq).map_err(|_| StoreError::Corrupt {
                path: self.path.clone(),
                reason: format!("negative event sequence {seq}"),
            })?;
            self.last_hash = hash;
        }
        Ok(())
    }

    /// The sequence number of the newest event (0 when there is none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Commits a change and its event in one transaction.
    ///
    /// The chain head is read inside the write transaction, so a second connection (a restarted
    /// persister whose predecessor's thread is still draining) can never fork the chain.
    pub fn commit(&mut self, change: &Change) -> Result<Committed, StoreError> {
        self.commit_with(change, |_, _| Ok(()))
    }

    /// Commits `change`, then runs `extra` (given the transaction and the new event) in the same
    /// transaction.
    fn commit_with(
        &mut self,
        change: &Change,
        extra: impl FnOnce(&rusqlite::Transaction<'_>, &Committed) -> Result<(), StoreError>,
    ) -> Result<Committed, StoreError> {
        let err = sqlite_err(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&err)?;
        let (last_seq, last_hash, last_ts): (i64, String, Option<String>) = tx
            .query_row(
                "SELECT seq, hash, ts FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, Some(r.get(2)?))),
            )
            .optional()
            .map_err(&err)?
            .unwrap_or((0, GENESIS_HASH.to_string(), None));
        let seq = u64::try_from(last_seq).unwrap_or_default() + 1;
        // Event times never go backwards, even when the wall clock steps back (an NTP
        // correction): verification refuses a backwards timestamp, and a store that fails
        // verification at start is moved aside and restored from a backup.
        let previous = last_ts
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc));
        let at = previous.map_or_else(crate::clock::now, |p| crate::clock::now().max(p));
        let ts = at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let event_id = uuid::Uuid::now_v7().to_string();
        let payload = change.event.payload.to_string();
        let hash = chain_hash(
            &last_hash,
            seq,
            &event_id,
            &ts,
            &change.event.kind,
            &payload,
        );
        for write in &change.state {
            match &write.value {
                Some(v) => tx.execute(
                    "INSERT INTO state (key, value, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    params![write.key, v.to_string(), ts],
                ),
                None => tx.execute("DELETE FROM state WHERE key = ?1", params![write.key]),
            }
            .map_err(&err)?;
        }
        tx.execute(
            "INSERT INTO events (seq, event_id, ts, kind, payload, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                i64::try_from(seq).unwrap_or(i64::MAX),
                event_id,
                ts,
                change.event.kind,
                payload,
                last_hash,
                hash
            ],
        )
        .map_err(&err)?;
        let committed = Committed { seq, event_id, at };
        extra(&tx, &committed)?;
        tx.commit().map_err(&err)?;
        self.last_seq = seq;
        self.last_hash = hash;
        Ok(committed)
    }

    /// Commits a snapshot of capital and positions (`payload`) together with a
    /// `snapshot.taken` event, in one transaction. Snapshot times are unique and strictly
    /// increasing: a snapshot not later than the newest one is refused.
    pub fn snapshot(
        &mut self,
        kind: SnapshotKind,
        payload: &Value,
    ) -> Result<Committed, StoreError> {
        let path = self.path.clone();
        let change = Change::event(
            "snapshot.taken",
            serde_json::json!({ "kind": kind.as_str() }),
        );
        let body = payload.to_string();
        self.commit_with(&change, move |tx, committed| {
            let err = sqlite_err(&path);
            let taken_at = committed.at.to_rfc3339_opts(SecondsFormat::Micros, true);
            let newest: Option<String> = tx
                .query_row(
                    "SELECT taken_at FROM snapshots ORDER BY id DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(&err)?;
            if let Some(newest) = newest
                && newest >= taken_at
            {
                return Err(StoreError::Sqlite {
                    path: path.clone(),
                    reason: format!(
                        "snapshot at {taken_at} is not later than the newest one ({newest}); \
                         is the clock going backwards?"
                    ),
                });
            }
            tx.execute(
                "INSERT INTO snapshots (taken_at, kind, payload, event_seq) VALUES (?1, ?2, ?3, ?4)",
                params![
                    taken_at,
                    kind.as_str(),
                    body,
                    i64::try_from(committed.seq).unwrap_or(i64::MAX)
                ],
            )
            .map_err(&err)?;
            Ok(())
        })
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotRow>, StoreError> {
        read_snapshots(&self.conn).map_err(sqlite_err(&self.path))
    }

    /// Records the start of a run: state key `run` = `{"clean": false, "started_at", "pid"}` with
    /// a `run.started` event. Returns whether the previous run did not stop cleanly (a `run` key
    /// existed and its `clean` was not `true`).
    ///
    /// `verified` is the head the caller has just verified (seq, hash): when it is still the
    /// head, it is stored as the chain's [`Checkpoint`] with the same event, so the next start
    /// verifies only what comes after it.
    pub fn begin_run(&mut self, verified: Option<(u64, String)>) -> Result<bool, StoreError> {
        let previous = self.state()?.remove(RUN_KEY);
        let crashed = previous
            .as_ref()
            .is_some_and(|v| v.get("clean") != Some(&Value::Bool(true)));
        let now = crate::clock::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let run = serde_json::json!({
            "clean": false,
            "started_at": now,
            "pid": std::process::id(),
        });
        let mut change = Change::event(
            "run.started",
            serde_json::json!({ "previous_run_crashed": crashed, "pid": std::process::id() }),
        )
        .set(RUN_KEY, run);
        if let Some((seq, hash)) = verified
            && seq == self.last_seq
            && hash == self.last_hash
        {
            change = change.set(CHECKPOINT_KEY, Checkpoint::now(seq, hash).to_value());
        }
        self.commit(&change)?;
        Ok(crashed)
    }

    /// Records a clean stop: `run.clean = true` with a `run.stopped` event.
    pub fn mark_clean(&mut self) -> Result<Committed, StoreError> {
        let mut run = self
            .state()?
            .remove(RUN_KEY)
            .filter(Value::is_object)
            .unwrap_or_else(|| serde_json::json!({}));
        let now = crate::clock::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        if let Some(obj) = run.as_object_mut() {
            obj.insert("clean".into(), Value::Bool(true));
            obj.insert("stopped_at".into(), Value::String(now));
        }
        self.commit(&Change::event("run.stopped", serde_json::json!({})).set(RUN_KEY, run))
    }

    /// Copies the store with SQLite's online backup API into `dir` as
    /// `tradebaas-<UTC timestamp>.db` (names sort by time), then verifies the copy (schema, the
    /// event chain after its checkpoint, state, snapshots: [`verify_tail`], so an hourly backup
    /// costs the same after a year). A copy that fails verification is deleted and an error
    /// returned.
    pub fn backup_to(&self, dir: &Path) -> Result<PathBuf, StoreError> {
        let io = |e: std::io::Error| StoreError::Sqlite {
            path: dir.to_path_buf(),
            reason: format!("backup: {e}"),
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let name = backup_file_name(crate::clock::now());
        let final_path = dir.join(&name);
        let partial = dir.join(format!("{name}.partial"));
        let err = sqlite_err(&partial);
        let result = (|| {
            self.conn
                .backup(
                    rusqlite::MAIN_DB,
                    &partial,
                    None::<fn(rusqlite::backup::Progress)>,
                )
                .map_err(&err)?;
            // A backup is one self-contained file: no WAL companions.
            let copy = Connection::open(&partial).map_err(&err)?;
            copy.query_row("PRAGMA journal_mode=DELETE", [], |_| Ok(()))
                .map_err(&err)?;
            drop(copy);
            let report = verify_tail(&partial);
            if !report.ok {
                return Err(StoreError::Corrupt {
                    path: partial.clone(),
                    reason: format!("backup failed verification: {}", report.problems.join("; ")),
                });
            }
            std::fs::rename(&partial, &final_path).map_err(io)?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(final_path.clone())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    }

    /// Opens an existing store read-only (no migration, no writes): for `state verify/export`
    /// while the daemon may be running.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Sqlite {
                path: path.to_path_buf(),
                reason: "no such file".into(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite_err(path))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(sqlite_err(path))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            last_seq: 0,
            last_hash: GENESIS_HASH.to_string(),
        };
        let version = store.schema_version()?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        store.load_head()?;
        Ok(store)
    }

    /// Every state key and its value.
    pub fn state(&self) -> Result<BTreeMap<String, Value>, StoreError> {
        let err = sqlite_err(&self.path);
        let mut stmt = self
            .conn
            .prepare("SELECT key, value FROM state ORDER BY key")
            .map_err(&err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(&err)?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (key, raw) = row.map_err(&err)?;
            let value = serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                reason: format!("state key {key:?} is not JSON: {e}"),
            })?;
            out.insert(key, value);
        }
        Ok(out)
    }

    /// Events after `after_seq`, oldest first, at most `limit`.
    pub fn events(&self, after_seq: u64, limit: usize) -> Result<Vec<EventRow>, StoreError> {
        let err = sqlite_err(&self.path);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, event_id, ts, kind, payload, prev_hash, hash FROM events
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(&err)?;
        let rows = stmt
            .query_map(
                params![
                    i64::try_from(after_seq).unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                EventRow::from_row,
            )
            .map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    /// Checkpoints the WAL into the main file (every commit is already durable; this keeps the
    /// WAL short and makes the main file self-contained for a copy).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(sqlite_err(&self.path))
    }
}

/// Every snapshot row, oldest first, on any connection or transaction to a v2+ store.
pub(crate) fn read_snapshots(conn: &Connection) -> rusqlite::Result<Vec<SnapshotRow>> {
    let mut stmt =
        conn.prepare("SELECT id, taken_at, kind, payload, event_seq FROM snapshots ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(SnapshotRow {
            id: r.get(0)?,
            taken_at: r.get(1)?,
            kind: r.get(2)?,
            payload: r.get(3)?,
            event_seq: u64::try_from(r.get::<_, i64>(4)?).unwrap_or_default(),
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod durability_tests;

#[cfg(test)]
mod tests;
