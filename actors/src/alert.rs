//! The `alert` actor: raises, deduplicates and resolves operator alerts.
//!
//! An alert is one structured log line (CRITICAL → `error`, WARNING → `warn`, INFO → `info`, all
//! with `alert = true`) and one `alert_raised` event in the store, written through the
//! `state-persister` without waiting for it. A repeat of an open alert inside the dedup window only
//! bumps its count, so a flapping cause cannot flood the log or the store: the counts reach the
//! store at most once per [`COUNT_PERSIST_INTERVAL`] (one `alert_repeated` event) and with every
//! resolve and acknowledgement. Each of these commits also rewrites the state key
//! [`ALERTS_STATE_KEY`] (open alerts and the newest `max_recent` records), which the actor reloads
//! when it starts, so history, counts and acknowledgements survive a restart.
//!
//! Only the kinds the issue allows are accepted ([`alert_kind`], [`ALLOWED_ALERT_KINDS`]): a raise
//! with any other key is refused and logged at `error`, so routine events cannot become alerts.
//!
//! External sinks ([`sink`]: Alertmanager, a webhook in Alertmanager's v4 shape, Telegram) each
//! get a background task fed by a bounded queue: the actor pushes a prepared body and moves on,
//! so a slow or dead receiver never blocks it. Alertmanager also gets every open alert again each
//! `resend_interval`, and a resolved alert once with `endsAt`. Each sink's delivery counts, last
//! error and `failing` flag are part of this actor's status, hence of `/health`.
//!
//! Callers must not put secrets into an alert: its fields are logged, stored and sent verbatim.

pub mod book;
mod config;
pub mod payload;
pub mod sink;
#[cfg(test)]
mod sink_tests;
mod state;
pub mod transport;

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::Value;
use tokio::time::Instant;
use tracing::error;

use crate::names::Names;
use crate::protocol::dispatch;
// Used by the test modules (`tests`, `sink_tests`) through `use super::*`.
#[cfg(test)]
#[cfg(test)]
use crate::protocol::persister::PersisterMsg;
#[cfg(test)]
use crate::secret::Secret;
#[cfg(test)]
use chrono::{DateTime, Utc};

pub use crate::model::ALERTS_STATE_KEY;
use crate::protocol::Internal;
pub use crate::protocol::alert::{
    ALLOWED_ALERT_KINDS, Alert, AlertError, AlertMsg, AlertRecord, AlertStatus, Severity, SinkKind,
    SinkStatus, alert_kind,
};
use book::Event;
pub use config::AlertConfig;
pub use state::AlertState;

/// Repeats of open alerts are written to the store at most this often (one `alert_repeated`
/// event with every changed count), so a storm of repeats costs one write per interval.
pub const COUNT_PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// How often and how long the actor tries to reload the stored alerts at start (the persister
/// starts after it).
const LOAD_ATTEMPTS: u32 = 100;
const LOAD_RETRY_DELAY: Duration = Duration::from_millis(100);
const LOAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Events kept while the persister has not started yet.
const PENDING_MAX: usize = 100;
/// How long a commit may take before it counts as a store failure.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the alert actor is spawned with.
#[derive(Clone)]
pub struct AlertArgs {
    pub names: Names,
    pub config: AlertConfig,
}

/// What the Alert sends itself, wrapped in [`AlertMsg::Internal`].
pub(crate) enum InternalMsg {
    /// Write the counts of repeated alerts (sent to itself after a repeat).
    PersistCounts,
    /// Try to reload the stored alerts (attempt number, from 1).
    Load { attempt: u32 },
    /// What the load task read (the `alerts` state value, if stored).
    Loaded {
        attempt: u32,
        result: Result<Option<Value>, String>,
    },
    /// How a commit handed to the persister ended.
    Stored(Result<(), String>),
}

impl From<InternalMsg> for AlertMsg {
    fn from(m: InternalMsg) -> Self {
        AlertMsg::Internal(Internal::new(m))
    }
}

/// The alert actor.
pub struct AlertActor;

impl Actor for AlertActor {
    type Msg = AlertMsg;
    type State = AlertState;
    type Arguments = AlertArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = AlertState::new(args);
        // Spawning tasks is quick; nothing here waits on the network or the store.
        state.start_sinks();
        state.start_load(&myself, 1);
        if state
            .sinks
            .iter()
            .any(|s| s.kind() == SinkKind::Alertmanager)
        {
            let period = state.args.config.alertmanager.resend_interval;
            state.resend = Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(Instant::now() + period, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if myself.send_message(AlertMsg::Resend).is_err() {
                        return;
                    }
                }
            }));
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.resend.take() {
            timer.abort();
        }
        // Dropping the sinks stops their tasks, so a restart never leaves a second sender.
        state.sinks.clear();
        Ok(())
    }

    dispatch!(AlertMsg, "alert", |myself, msg, state| match msg {
        AlertMsg::Raise(alert) => {
            // The id is made here (it reads the clock), used only if the raise is new.
            let alert_id = uuid::Uuid::now_v7().to_string();
            state.on(&myself, Event::Raise { alert, alert_id }, None);
        }
        AlertMsg::Resolve { key } => state.on(&myself, Event::Resolve { key }, None),
        AlertMsg::Acknowledge { alert_id, reply } => {
            state.on(&myself, Event::Acknowledge { alert_id }, Some(reply));
        }
        AlertMsg::Resend => state.resend_open(),
    });
}

/// The actor's messages to itself ([`InternalMsg`]).
async fn handle_internal(
    myself: ActorRef<AlertMsg>,
    msg: InternalMsg,
    state: &mut AlertState,
) -> Result<(), ActorProcessingErr> {
    match msg {
        InternalMsg::PersistCounts => state.on(&myself, Event::PersistCounts, None),
        InternalMsg::Load { attempt } => state.start_load(&myself, attempt),
        InternalMsg::Loaded { attempt, result } => {
            state.on(&myself, Event::Loaded { attempt, result }, None);
        }
        InternalMsg::Stored(result) => {
            if let Err(e) = result {
                error!(actor = "alert", error = %e, "an alert change was not stored");
                state.store_failed(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
