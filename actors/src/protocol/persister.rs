//! The `state-persister` actor's messages, replies and status.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use ractor::RpcReplyPort;
use serde::Serialize;
use serde_json::Value;

use super::Internal;
use crate::store::{Change, Committed, SnapshotKind, StoreError};

/// The alert key of a failed backup.
pub const BACKUP_ALERT_KEY: &str = "store:backup";

/// The reply to a commit.
pub type CommitReply = RpcReplyPort<Result<Committed, StoreError>>;

/// Messages of the persister.
pub enum PersisterMsg {
    /// Report store facts.
    Status(RpcReplyPort<PersisterStatus>),
    /// Liveness.
    Ping(RpcReplyPort<()>),
    /// Commit a state change with its event; the reply (if any) comes after the commit.
    Commit {
        change: Change,
        reply: Option<CommitReply>,
    },
    /// Every state key and value (what actors re-read when they start).
    Load(RpcReplyPort<Result<BTreeMap<String, Value>, StoreError>>),
    /// Answered once every earlier job is durable; checkpoints the WAL.
    Flush(RpcReplyPort<Result<FlushReport, StoreError>>),
    /// Record a clean stop (`run.stopped`); answered after every job queued before it.
    MarkClean(RpcReplyPort<Result<(), StoreError>>),
    /// Take a backup now (as the timer does); answered with the backup file.
    Backup(RpcReplyPort<Result<PathBuf, StoreError>>),
    /// Commit a snapshot of capital and positions with its `snapshot.taken` event.
    Snapshot {
        kind: SnapshotKind,
        payload: Value,
        reply: Option<CommitReply>,
    },
    /// The actor's messages to itself (timers, its tasks' results): only it makes and reads
    /// them ([`Internal`]).
    Internal(Internal),
    /// Test-only misbehaviour.
    #[cfg(any(test, feature = "test-hooks"))]
    Hook(crate::hooks::TestHook),
}

impl crate::names::Child for PersisterMsg {
    const NAME: crate::names::ChildName = crate::names::ChildName::StatePersister;
}

/// What a flush did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlushReport {
    pub last_seq: u64,
    pub took_ms: u64,
}

/// The persister's answer to `Status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersisterStatus {
    pub path: String,
    pub schema_version: i64,
    pub last_seq: u64,
    pub writes_ok: u64,
    pub writes_failed: u64,
    pub last_write_at: Option<DateTime<Utc>>,
    pub last_write_ms: Option<u64>,
    /// Since when writes fail (None when the last write succeeded).
    pub failing_since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Jobs handed to the database worker and not finished yet.
    pub queue_depth: u64,
    pub backups_dir: String,
    pub last_backup_at: Option<DateTime<Utc>>,
    /// The last backup's error (None once one succeeds).
    pub last_backup_error: Option<String>,
    /// Backups in `backups_dir` (counted at start, then after each successful backup).
    pub backups: Option<usize>,
    /// The last start-up recovery report (state key `recovery.last`), as stored.
    pub recovery: Option<Value>,
    /// When the newest snapshot was taken (with capital or not).
    pub last_snapshot_at: Option<DateTime<Utc>>,
    /// When the newest snapshot *with capital* was taken: one holding an error instead of an
    /// account summary is a failed snapshot and does not count ([`crate::checks::capital_missing`]).
    /// The `snapshot_failing` trigger watches this one.
    pub last_capital_snapshot_at: Option<DateTime<Utc>>,
    /// Bytes available to the daemon on the store's filesystem, read when this status was asked
    /// for (None when `statvfs` failed).
    pub disk_free_bytes: Option<u64>,
    /// `[store] disk_free_floor`: below it the fail-safe raises `store:disk_low`.
    pub disk_free_floor_bytes: u64,
}
