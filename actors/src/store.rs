//! The durable store: an SQLite database (WAL journal, `synchronous=FULL`) holding the state the
//! actors re-read on start and an append-only, hash-chained event log.
//!
//! Only the `state-persister` actor writes it (through its database thread). A state change and
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

/// The schema version this binary writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

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
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(&err)?;
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
        if found == 0 {
            let tx = self.conn.transaction().map_err(sqlite_err(&self.path))?;
            tx.execute_batch(
                "CREATE TABLE state (
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
                 PRAGMA user_version = 1;",
            )
            .map_err(sqlite_err(&self.path))?;
            tx.commit().map_err(sqlite_err(&self.path))?;
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
        let err = sqlite_err(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&err)?;
        let (last_seq, last_hash): (i64, String) = tx
            .query_row(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(&err)?
            .unwrap_or((0, GENESIS_HASH.to_string()));
        let seq = u64::try_from(last_seq).unwrap_or_default() + 1;
        let at = Utc::now();
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
        tx.commit().map_err(&err)?;
        self.last_seq = seq;
        self.last_hash = hash;
        Ok(Committed { seq, event_id, at })
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
                |r| {
                    Ok(EventRow {
                        seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or_default(),
                        event_id: r.get(1)?,
                        ts: r.get(2)?,
                        kind: r.get(3)?,
                        payload: r.get(4)?,
                        prev_hash: r.get(5)?,
                        hash: r.get(6)?,
                    })
                },
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn temp() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        (dir, path)
    }

    #[test]
    fn commits_state_and_event_together_and_survive_reopen() {
        let (_dir, path) = temp();
        let mut store = Store::open(&path).unwrap();
        let c = store
            .commit(
                &Change::event("mode.changed", json!({"mode": "OBSERVE_ONLY"}))
                    .set("mode", json!({"mode": "OBSERVE_ONLY"})),
            )
            .unwrap();
        assert_eq!(c.seq, 1);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.last_seq(), 1);
        assert_eq!(
            store.state().unwrap()["mode"],
            json!({"mode": "OBSERVE_ONLY"})
        );
        let events = store.events(0, 10).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].prev_hash, GENESIS_HASH);
        assert_eq!(
            events[0].hash,
            chain_hash(
                GENESIS_HASH,
                1,
                &events[0].event_id,
                &events[0].ts,
                "mode.changed",
                &events[0].payload
            )
        );
    }

    #[test]
    fn the_chain_links_each_event_to_the_previous() {
        let (_dir, path) = temp();
        let mut store = Store::open(&path).unwrap();
        for i in 0..5 {
            store
                .commit(&Change::event("test", json!({ "i": i })))
                .unwrap();
        }
        let events = store.events(0, 10).unwrap();
        for pair in events.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
            assert_eq!(pair[1].seq, pair[0].seq + 1);
        }
    }

    #[test]
    fn two_connections_never_fork_the_chain() {
        let (_dir, path) = temp();
        let mut a = Store::open(&path).unwrap();
        let mut b = Store::open(&path).unwrap();
        a.commit(&Change::event("a", json!(1))).unwrap();
        b.commit(&Change::event("b", json!(2))).unwrap();
        a.commit(&Change::event("a", json!(3))).unwrap();
        let events = a.events(0, 10).unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        for pair in events.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
    }

    #[test]
    fn a_store_from_a_newer_binary_is_refused() {
        let (_dir, path) = temp();
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(conn);
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
        assert!(err.to_string().contains("newer than this binary"));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_reported_corrupt() {
        let (_dir, path) = temp();
        std::fs::write(
            &path,
            b"this is not sqlite, just some bytes that are long enough to matter",
        )
        .unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
}
