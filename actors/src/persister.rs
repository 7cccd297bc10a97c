//! The `state-persister` actor: the only writer of the durable store.
//!
//! The store runs on a database thread of its own; the actor hands it jobs in mailbox order and
//! never waits for the disk, so it answers `Status` while a commit is being fsynced. A commit's
//! reply goes to the sender only after the commit is durable. `Flush` is answered after every job
//! queued before it has finished, which is what "flush" means for the shutdown path.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use serde_json::Value;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::names::Names;
use crate::store::{Change, Committed, Store, StoreError};

/// What the persister is spawned with.
#[derive(Clone)]
pub struct PersisterArgs {
    pub names: Names,
    /// The SQLite file.
    pub path: PathBuf,
    pub metrics: Metrics,
}

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
    /// Internal: the database thread finished a write.
    Written(WriteOutcome),
    /// Test-only misbehaviour.
    #[cfg(any(test, feature = "test-hooks"))]
    Hook(crate::hooks::TestHook),
}

/// What a flush did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlushReport {
    pub last_seq: u64,
    pub took_ms: u64,
}

/// A write the database thread finished.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub result: Result<u64, String>,
    pub took: Duration,
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
    /// Jobs handed to the database thread and not finished yet.
    pub queue_depth: u64,
}

enum Job {
    Commit(Change, Option<CommitReply>),
    Load(RpcReplyPort<Result<BTreeMap<String, Value>, StoreError>>),
    Flush(RpcReplyPort<Result<FlushReport, StoreError>>, Instant),
}

/// The persister actor.
pub struct PersisterActor;

/// The persister's state.
pub struct PersisterState {
    jobs: mpsc::Sender<Job>,
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
}

fn run_db_thread(mut store: Store, jobs: mpsc::Receiver<Job>, actor: ActorRef<PersisterMsg>) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Commit(change, reply) => {
                let started = Instant::now();
                let result = store.commit(&change);
                let outcome = WriteOutcome {
                    result: result.as_ref().map(|c| c.seq).map_err(ToString::to_string),
                    took: started.elapsed(),
                };
                let _ = actor.send_message(PersisterMsg::Written(outcome));
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
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
}

impl PersisterState {
    fn submit(&mut self, job: Job) {
        if matches!(job, Job::Commit(..)) {
            self.queued += 1;
        }
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            // The database thread is gone (it only ends when this sender drops, or by panic).
            let reason = "the database thread has stopped".to_string();
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
        let schema_version = store.schema_version()?;
        let last_seq = store.last_seq();
        let (tx, rx) = mpsc::channel();
        let me = myself.clone();
        std::thread::Builder::new()
            .name("tradebaas-store".into())
            .spawn(move || run_db_thread(store, rx, me))?;
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
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PersisterMsg::Commit { change, reply } => state.submit(Job::Commit(change, reply)),
            PersisterMsg::Load(reply) => state.submit(Job::Load(reply)),
            PersisterMsg::Flush(reply) => state.submit(Job::Flush(reply, Instant::now())),
            PersisterMsg::Written(outcome) => {
                state.done += 1;
                state.last_write = Some(outcome.took);
                match outcome.result {
                    Ok(seq) => {
                        state.writes_ok += 1;
                        state.last_seq = seq;
                        state.last_write_at = Some(Utc::now());
                        if state.failing_since.take().is_some() {
                            info!(actor = "state-persister", "store writes succeed again");
                        }
                    }
                    Err(e) => {
                        state.writes_failed += 1;
                        if state.failing_since.is_none() {
                            error!(actor = "state-persister", error = %e, "store write failed");
                            state.failing_since = Some(Utc::now());
                        } else {
                            warn!(actor = "state-persister", error = %e, "store write failed again");
                        }
                        state.last_error = Some(e);
                    }
                }
            }
            PersisterMsg::Status(reply) => {
                let _ = reply.send(PersisterStatus {
                    path: state.path.display().to_string(),
                    schema_version: state.schema_version,
                    last_seq: state.last_seq,
                    writes_ok: state.writes_ok,
                    writes_failed: state.writes_failed,
                    last_write_at: state.last_write_at,
                    last_write_ms: state
                        .last_write
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    failing_since: state.failing_since,
                    last_error: state.last_error.clone(),
                    queue_depth: state.queued.saturating_sub(state.done),
                });
            }
            PersisterMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            #[cfg(any(test, feature = "test-hooks"))]
            PersisterMsg::Hook(hook) => hook.act(&_myself.get_cell()).await?,
        }
        Ok(())
    }
}
