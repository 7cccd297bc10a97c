//! The `state-persister` actor: the only writer of the durable store.
//!
//! The store runs on a database worker of its own (a task that runs the jobs, in mailbox order
//! and in batches, on tokio's blocking pool); the actor hands it jobs and never waits for the
//! disk, so it answers `Status` while a commit is being fsynced. A commit's
//! reply goes to the sender only after the commit is durable. `Flush` is answered after every job
//! queued before it has finished, which is what "flush" means for the shutdown path.
//!
//! Backups run on the database worker too, every `backup_interval` of tokio's clock (between
//! jobs, so they never block the actor): SQLite's online backup API into `backups_dir`, verified, the newest
//! `backups_keep` kept. A failed backup raises a WARNING alert (`store:backup`) and nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{error, info, warn};

use crate::protocol::alert::Alert;
use crate::protocol::dispatch;

use crate::client;
use crate::metrics::Metrics;
use crate::names::Names;
use crate::protocol::Internal;
use crate::protocol::alert::Severity;
pub use crate::protocol::persister::{
    BACKUP_ALERT_KEY, CommitReply, FlushReport, PersisterMsg, PersisterStatus,
};
use crate::store::{
    Change, Committed, RetentionConfig, SnapshotKind, Store, StoreError, archives_dir,
    backup_count, prune_backups,
};

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// How often the persister backs the store up into `<data_dir>/backups`.
    #[serde(with = "humantime_serde")]
    pub backup_interval: Duration,
    /// Backups kept; older ones are deleted after each successful backup.
    pub backups_keep: usize,
    /// A `daily` snapshot of capital and positions is taken when the newest is older than this.
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    /// Free bytes on the data directory's filesystem below which the disk alert fires
    /// (`tradebaas_store_disk_free_bytes` < `tradebaas_store_disk_free_floor_bytes`).
    pub disk_free_floor: u64,
    /// `[store.retention]`: old heartbeat events archived out of the live table.
    pub retention: RetentionConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backup_interval: Duration::from_secs(60 * 60),
            backups_keep: 24,
            snapshot_interval: Duration::from_secs(24 * 60 * 60),
            disk_free_floor: 1 << 30,
            retention: RetentionConfig::default(),
        }
    }
}

impl StoreConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.backup_interval < Duration::from_secs(60) {
            return Err("backup_interval must be at least 1m".into());
        }
        if self.backup_interval > Duration::from_secs(7 * 24 * 60 * 60) {
            return Err("backup_interval must be at most 7d".into());
        }
        if self.snapshot_interval < Duration::from_secs(60) {
            return Err("snapshot_interval must be at least 1m".into());
        }
        if self.backups_keep == 0 {
            return Err("backups_keep must be at least 1".into());
        }
        if self.backups_keep > 10_000 {
            return Err("backups_keep must be at most 10000".into());
        }
        self.retention.validate()
    }
}

/// What the persister is spawned with.
#[derive(Clone)]
pub struct PersisterArgs {
    pub names: Names,
    /// The SQLite file.
    pub path: PathBuf,
    pub metrics: Metrics,
    /// Where backups go (`<data_dir>/backups`).
    pub backups_dir: PathBuf,
    /// Time between backups (the first one is one interval after start).
    pub backup_interval: Duration,
    /// Backups kept.
    pub backups_keep: usize,
    /// `[store] disk_free_floor`, reported with the free space (the fail-safe alerts below it).
    pub disk_free_floor: u64,
    /// `[store.retention]`, run on the database worker before each timed backup.
    pub retention: RetentionConfig,
}

impl PersisterArgs {
    /// Arguments with the `[store]` defaults and backups in `<dir of path>/backups`.
    pub fn new(names: Names, path: PathBuf, metrics: Metrics) -> Self {
        let config = StoreConfig::default();
        let backups_dir = path
            .parent()
            .map_or_else(|| PathBuf::from("backups"), |d| d.join("backups"));
        Self {
            names,
            path,
            metrics,
            backups_dir,
            backup_interval: config.backup_interval,
            backups_keep: config.backups_keep,
            disk_free_floor: config.disk_free_floor,
            retention: config.retention,
        }
    }
}

/// What the Persister sends itself, wrapped in [`PersisterMsg::Internal`].
pub(crate) enum InternalMsg {
    /// The database worker finished a write.
    Written(WriteOutcome),
    /// The database worker finished a backup.
    BackedUp(BackupOutcome),
    /// The database worker committed a snapshot taken at `at`; `capital` when it holds
    /// capital ([`crate::checks::capital_missing`]), not an error instead.
    SnapshotTaken { at: DateTime<Utc>, capital: bool },
}

impl From<InternalMsg> for PersisterMsg {
    fn from(m: InternalMsg) -> Self {
        PersisterMsg::Internal(Internal::new(m))
    }
}

/// A write the database worker finished.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub result: Result<u64, String>,
    pub took: Duration,
}

/// A backup the database worker finished.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The file and how many backups are kept now.
    pub result: Result<(PathBuf, usize), String>,
    pub at: DateTime<Utc>,
}

enum Job {
    Commit(Change, Option<CommitReply>),
    Load(RpcReplyPort<Result<BTreeMap<String, Value>, StoreError>>),
    Flush(RpcReplyPort<Result<FlushReport, StoreError>>, Instant),
    MarkClean(RpcReplyPort<Result<(), StoreError>>),
    Backup(Option<RpcReplyPort<Result<PathBuf, StoreError>>>),
    Snapshot(SnapshotKind, Value, Option<CommitReply>),
}

/// The persister actor.
pub struct PersisterActor;

/// The persister's state.
pub struct PersisterState {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    path: PathBuf,
    schema_version: i64,
    last_seq: u64,
    writes_ok: u64,
    writes_failed: u64,
    last_write_at: Option<DateTime<Utc>>,
    last_write: Option<Duration>,
    failing_since: Option<DateTime<Utc>>,
    last_error: Option<String>,
    queued: u64,
    done: u64,
    names: Names,
    backups_dir: PathBuf,
    last_backup_at: Option<DateTime<Utc>>,
    last_backup_error: Option<String>,
    backups: Option<usize>,
    recovery: Option<Value>,
    last_snapshot_at: Option<DateTime<Utc>>,
    last_capital_snapshot_at: Option<DateTime<Utc>>,
    disk_free_floor: u64,
}

/// Where and how often the database worker backs up (and archives, just before).
struct BackupPlan {
    dir: PathBuf,
    interval: Duration,
    keep: usize,
    retention: RetentionConfig,
    archives: PathBuf,
}

/// One retention run on the database worker; its `store.archived` commit is reported like
/// any other write.
fn retain(store: &mut Store, plan: &BackupPlan, actor: &ActorRef<PersisterMsg>) {
    let started = Instant::now();
    match store.archive_old(&plan.archives, &plan.retention, crate::clock::now()) {
        Ok(Some(r)) => {
            info!(
                actor = "state-persister",
                file = %r.file.display(),
                first_seq = r.first_seq,
                last_seq = r.last_seq,
                rows = r.rows,
                bytes = r.bytes,
                freed_pages = r.freed_pages,
                took_ms = started.elapsed().as_millis() as u64,
                "retention: old events archived"
            );
            let outcome = WriteOutcome {
                result: Ok(store.last_seq()),
                took: started.elapsed(),
            };
            let _ = actor.send_message(InternalMsg::Written(outcome).into());
        }
        Ok(None) => {}
        Err(e) => {
            error!(actor = "state-persister", error = %e, "retention run failed; the events stay live")
        }
    }
}

/// Bytes available to an unprivileged writer on the filesystem holding `store_path`
/// (`statvfs`: `f_bavail * f_frsize`), or None when the call fails.
pub fn disk_free_bytes(store_path: &Path) -> Option<u64> {
    let dir = match store_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    rustix::fs::statvfs(dir)
        .ok()
        .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
}

fn backup(store: &Store, plan: &BackupPlan) -> Result<(PathBuf, usize), StoreError> {
    let file = store.backup_to(&plan.dir)?;
    let kept = prune_backups(&plan.dir, plan.keep)?;
    Ok((file, kept))
}

/// Most jobs handed to the blocking pool at once (one `spawn_blocking` per batch).
const BATCH: usize = 256;

/// The database worker: a task that hands the jobs, in mailbox order and in batches, to tokio's
/// blocking pool, and queues a timed backup every `plan.interval` on tokio's clock (so paused
/// time drives it in tests). While a batch runs on the blocking pool a paused clock does not
/// auto-advance: simulated time stands still while SQLite works, as no timeout may fire because
/// the disk is slower than a simulated second.
async fn run_db_worker(
    mut store: Store,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    actor: ActorRef<PersisterMsg>,
    plan: BackupPlan,
) {
    // Never a busy loop (PersisterArgs need not come from StoreConfig).
    let interval = plan.interval.max(Duration::from_millis(10));
    let first = tokio::time::Instant::now()
        .checked_add(interval)
        .unwrap_or_else(tokio::time::Instant::now);
    let mut timer = tokio::time::interval_at(first, interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let plan = std::sync::Arc::new(plan);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            // The timer first: it is ready once an interval, so a flood of jobs cannot starve it.
            biased;
            _ = timer.tick() => batch.push(Job::Backup(None)),
            n = jobs.recv_many(&mut batch, BATCH) => if n == 0 { break },
        }
        let work = std::mem::take(&mut batch);
        let (me, plan) = (actor.clone(), std::sync::Arc::clone(&plan));
        let ran = tokio::task::spawn_blocking(move || {
            for job in work {
                run_job(&mut store, job, &me, &plan);
            }
            store
        })
        .await;
        match ran {
            Ok(back) => store = back,
            Err(e) => {
                // The jobs of the batch lost their replies (their callers see the reply port
                // dropped); later ones are refused by `submit`.
                error!(actor = "state-persister", error = %e, "the database worker failed");
                break;
            }
        }
    }
}

/// A finished write: its outcome to the actor (status, metrics, health), its result to the
/// caller that waits for it.
fn written(
    actor: &ActorRef<PersisterMsg>,
    started: Instant,
    result: Result<Committed, StoreError>,
    reply: Option<CommitReply>,
) {
    let outcome = WriteOutcome {
        result: result.as_ref().map(|c| c.seq).map_err(ToString::to_string),
        took: started.elapsed(),
    };
    let _ = actor.send_message(InternalMsg::Written(outcome).into());
    if let Some(reply) = reply {
        let _ = reply.send(result);
    }
}

/// One job, on the blocking pool.
fn run_job(store: &mut Store, job: Job, actor: &ActorRef<PersisterMsg>, plan: &BackupPlan) {
    match job {
        Job::Backup(reply) => {
            if reply.is_none() {
                // Retention first, so the backup is of the trimmed store.
                retain(store, plan, actor);
            }
            let result = backup(store, plan);
            let outcome = BackupOutcome {
                result: result
                    .as_ref()
                    .map(|(p, n)| (p.clone(), *n))
                    .map_err(ToString::to_string),
                at: crate::clock::now(),
            };
            let _ = actor.send_message(InternalMsg::BackedUp(outcome).into());
            if let Some(reply) = reply {
                let _ = reply.send(result.map(|(p, _)| p));
            }
        }
        Job::MarkClean(reply) => {
            let _ = reply.send(store.mark_clean().map(|_| ()));
        }
        Job::Snapshot(kind, payload, reply) => {
            let started = Instant::now();
            let result = store.snapshot(kind, &payload);
            if let Ok(c) = &result {
                let capital = crate::checks::capital_missing(&payload).is_none();
                let _ = actor.send_message(InternalMsg::SnapshotTaken { at: c.at, capital }.into());
            }
            written(actor, started, result, reply);
        }
        Job::Commit(change, reply) => {
            let started = Instant::now();
            let result = store.commit(&change);
            written(actor, started, result, reply);
        }
        Job::Load(reply) => {
            let _ = reply.send(store.state());
        }
        Job::Flush(reply, started) => {
            let result = store.checkpoint().map(|()| FlushReport {
                last_seq: store.last_seq(),
                took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
            let _ = reply.send(result);
        }
    }
}

impl PersisterState {
    /// What `/health` shows of the store (answer to `Status`).
    fn status(&self) -> PersisterStatus {
        PersisterStatus {
            path: self.path.display().to_string(),
            schema_version: self.schema_version,
            last_seq: self.last_seq,
            writes_ok: self.writes_ok,
            writes_failed: self.writes_failed,
            last_write_at: self.last_write_at,
            last_write_ms: self
                .last_write
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            failing_since: self.failing_since,
            last_error: self.last_error.clone(),
            queue_depth: self.queued.saturating_sub(self.done),
            backups_dir: self.backups_dir.display().to_string(),
            last_backup_at: self.last_backup_at,
            last_backup_error: self.last_backup_error.clone(),
            backups: self.backups,
            recovery: self.recovery.clone(),
            last_snapshot_at: self.last_snapshot_at,
            last_capital_snapshot_at: self.last_capital_snapshot_at,
            disk_free_bytes: disk_free_bytes(&self.path),
            disk_free_floor_bytes: self.disk_free_floor,
        }
    }

    fn backed_up(&mut self, outcome: BackupOutcome) {
        match outcome.result {
            Ok((file, kept)) => {
                info!(actor = "state-persister", backup = %file.display(), kept, "store backed up");
                self.last_backup_at = Some(outcome.at);
                self.backups = Some(kept);
                if self.last_backup_error.take().is_some() {
                    client::resolve(&self.names, BACKUP_ALERT_KEY);
                }
            }
            Err(e) => {
                warn!(actor = "state-persister", error = %e, "store backup failed");
                self.last_backup_error = Some(e.clone());
                let alert = Alert {
                    key: BACKUP_ALERT_KEY.into(),
                    severity: Severity::Warning,
                    title: "store backup failed".into(),
                    message: e.clone(),
                    root_cause: e,
                    recommended_action: format!(
                        "Check free space and permissions of {}; the daemon keeps running and \
                         retries at the next interval. Run `tradebaas state backups` to see what \
                         is kept.",
                        self.backups_dir.display()
                    ),
                    metadata: json!({
                        "backups_dir": self.backups_dir.display().to_string(),
                        "last_backup_at": self.last_backup_at,
                    }),
                };
                client::raise(&self.names, alert);
            }
        }
    }

    fn submit(&mut self, job: Job) {
        if matches!(job, Job::Commit(..) | Job::Snapshot(..)) {
            self.queued += 1;
        }
        if let Err(tokio::sync::mpsc::error::SendError(job)) = self.jobs.send(job) {
            // The database worker is gone (it only ends when this sender drops, or by panic).
            let reason = "the database worker has stopped".to_string();
            match job {
                Job::Commit(_, Some(reply)) => {
                    let _ = reply.send(Err(StoreError::Unavailable(reason)));
                }
                Job::Commit(_, None) => {}
                Job::Load(reply) => {
                    let _ = reply.send(Err(StoreError::Unavailable(reason)));
                }
                Job::Flush(reply, _) => {
                    let _ = reply.send(Err(StoreError::Unavailable(reason)));
                }
                Job::MarkClean(reply) => {
                    let _ = reply.send(Err(StoreError::Unavailable(reason)));
                }
                Job::Snapshot(_, _, Some(reply)) => {
                    let _ = reply.send(Err(StoreError::Unavailable(reason)));
                }
                Job::Snapshot(_, _, None) => {}
                Job::Backup(Some(reply)) => {
                    let _ = reply.send(Err(StoreError::Unavailable(reason)));
                }
                Job::Backup(None) => {}
            }
        }
    }
}

impl Actor for PersisterActor {
    type Msg = PersisterMsg;
    type State = PersisterState;
    type Arguments = PersisterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let store = Store::open(&args.path)?;
        let recovery = store.state()?.remove(crate::recovery::RECOVERY_KEY);
        let snapshots = store.snapshots()?;
        let taken_at = |s: &crate::store::SnapshotRow| {
            DateTime::parse_from_rfc3339(&s.taken_at)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        let last_snapshot_at = snapshots.last().and_then(taken_at);
        let last_capital_snapshot_at = snapshots
            .iter()
            .rev()
            .find(|s| {
                serde_json::from_str::<Value>(&s.payload)
                    .is_ok_and(|p| crate::checks::capital_missing(&p).is_none())
            })
            .and_then(taken_at);
        let backups_dir = args.backups_dir.clone();
        let backups = backup_count(&backups_dir);
        let names = args.names.clone();
        let schema_version = store.schema_version()?;
        let last_seq = store.last_seq();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let me = myself.clone();
        let archives = archives_dir(&args.path);
        tokio::spawn(run_db_worker(
            store,
            rx,
            me,
            BackupPlan {
                dir: args.backups_dir,
                interval: args.backup_interval,
                keep: args.backups_keep.max(1),
                retention: args.retention,
                archives,
            },
        ));
        info!(
            actor = "state-persister",
            path = %args.path.display(),
            schema_version,
            last_seq,
            "store open"
        );
        Ok(PersisterState {
            jobs: tx,
            path: args.path,
            schema_version,
            last_seq,
            writes_ok: 0,
            writes_failed: 0,
            last_write_at: None,
            last_write: None,
            failing_since: None,
            last_error: None,
            queued: 0,
            done: 0,
            names,
            backups_dir,
            last_backup_at: None,
            last_backup_error: None,
            backups: Some(backups),
            recovery,
            last_snapshot_at,
            last_capital_snapshot_at,
            disk_free_floor: args.disk_free_floor,
        })
    }

    dispatch!(
        PersisterMsg,
        "state-persister",
        |myself, msg, state| match msg {
            PersisterMsg::Commit { change, reply } => {
                if let Some(v) = change
                    .state
                    .iter()
                    .find(|w| w.key == crate::recovery::RECOVERY_KEY)
                    .and_then(|w| w.value.clone())
                {
                    state.recovery = Some(v);
                }
                state.submit(Job::Commit(change, reply))
            }
            PersisterMsg::Load(reply) => state.submit(Job::Load(reply)),
            PersisterMsg::Flush(reply) => state.submit(Job::Flush(reply, Instant::now())),
            PersisterMsg::MarkClean(reply) => state.submit(Job::MarkClean(reply)),
            PersisterMsg::Snapshot {
                kind,
                payload,
                reply,
            } => state.submit(Job::Snapshot(kind, payload, reply)),
            PersisterMsg::Backup(reply) => state.submit(Job::Backup(Some(reply))),
        }
    );
}

/// The actor's messages to itself ([`InternalMsg`]).
async fn handle_internal(
    _myself: ActorRef<PersisterMsg>,
    msg: InternalMsg,
    state: &mut PersisterState,
) -> Result<(), ActorProcessingErr> {
    match msg {
        InternalMsg::BackedUp(outcome) => state.backed_up(outcome),
        InternalMsg::SnapshotTaken { at, capital } => {
            state.last_snapshot_at = Some(at);
            if capital {
                state.last_capital_snapshot_at = Some(at);
            } else {
                warn!(
                    actor = "state-persister",
                    taken_at = %at,
                    "snapshot stored without capital: a failed snapshot (snapshot_failing \
                     still counts from the last one with capital)"
                );
            }
        }
        InternalMsg::Written(outcome) => {
            state.done += 1;
            state.last_write = Some(outcome.took);
            match outcome.result {
                Ok(seq) => {
                    state.writes_ok += 1;
                    state.last_seq = seq;
                    state.last_write_at = Some(crate::clock::now());
                    if state.failing_since.take().is_some() {
                        info!(actor = "state-persister", "store writes succeed again");
                    }
                }
                Err(e) => {
                    state.writes_failed += 1;
                    if state.failing_since.is_none() {
                        error!(actor = "state-persister", error = %e, "store write failed");
                        state.failing_since = Some(crate::clock::now());
                    } else {
                        warn!(actor = "state-persister", error = %e, "store write failed again");
                    }
                    state.last_error = Some(e);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
