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

mod config;
pub mod payload;
mod record;
pub mod sink;
#[cfg(test)]
mod sink_tests;
mod state;
pub mod transport;

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{debug, error, info};

use self::sink::SinkKind;

use crate::names::Names;
use crate::store::Change;
// Used by the test modules (`tests`, `sink_tests`) through `use super::*`.
#[cfg(test)]
use self::sink::SinkStatus;
#[cfg(test)]
use crate::names::ChildName;
#[cfg(test)]
use crate::persister::PersisterMsg;
#[cfg(test)]
use crate::secret::Secret;
#[cfg(test)]
use chrono::{DateTime, Utc};

pub use config::{AlertConfig, AlertError};
use record::StoredAlerts;
pub use record::{ALLOWED_ALERT_KINDS, Alert, AlertRecord, AlertStatus, Severity, alert_kind};
pub use state::AlertState;
use state::log_raised;

/// The state key holding `{open: [AlertRecord], recent: [AlertRecord]}`, rewritten with every
/// stored alert change and reloaded at start.
pub const ALERTS_STATE_KEY: &str = "alerts";

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

/// Messages of the alert actor.
pub enum AlertMsg {
    /// Report counts and the recent records.
    Status(RpcReplyPort<AlertStatus>),
    /// Liveness.
    Ping(RpcReplyPort<()>),
    /// Raise (or repeat) an alert.
    Raise(Alert),
    /// Close the open alert with this key, if any.
    Resolve { key: String },
    /// Mark one alert acknowledged by an operator (stored as an `alert_acknowledged` event);
    /// answers the updated record.
    Acknowledge {
        alert_id: String,
        reply: RpcReplyPort<Result<AlertRecord, AlertError>>,
    },
    /// Re-send open alerts to Alertmanager (sent to itself every `resend_interval`).
    Resend,
    /// Internal: write the counts of repeated alerts (sent to itself after a repeat).
    PersistCounts,
    /// Internal: try to reload the stored alerts (attempt number, from 1).
    Load { attempt: u32 },
    /// Internal: what the load task read (the `alerts` state value, if stored).
    Loaded {
        attempt: u32,
        result: Result<Option<Value>, String>,
    },
    /// Internal: how a commit handed to the persister ended.
    Stored(Result<(), String>),
    /// Test-only misbehaviour.
    #[cfg(any(test, feature = "test-hooks"))]
    Hook(crate::hooks::TestHook),
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

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AlertMsg::Raise(alert) => {
                if alert_kind(&alert.key).is_none() {
                    state.refused_total += 1;
                    error!(
                        actor = "alert",
                        key = %alert.key,
                        title = %alert.title,
                        allowed = ?ALLOWED_ALERT_KINDS,
                        "alert refused: its key is not an allowed alert kind (a routine event must not be an alert)"
                    );
                    return Ok(());
                }
                match state.raise(alert, Instant::now()) {
                    Some(record) => {
                        log_raised(&record);
                        let payload = serde_json::to_value(&record).unwrap_or_else(
                            |e| json!({ "alert_id": record.alert_id, "encode_error": e.to_string() }),
                        );
                        state.store(&myself, Change::event("alert_raised", payload));
                        state.notify_sinks(&record);
                    }
                    None if !state.counts_scheduled => {
                        state.counts_scheduled = true;
                        myself.send_after(COUNT_PERSIST_INTERVAL, || AlertMsg::PersistCounts);
                    }
                    None => {}
                }
            }
            AlertMsg::PersistCounts => state.persist_counts(&myself),
            AlertMsg::Load { attempt } => state.start_load(&myself, attempt),
            AlertMsg::Loaded { attempt, result } => state.on_loaded(&myself, attempt, result),
            AlertMsg::Stored(Ok(())) => {}
            AlertMsg::Stored(Err(e)) => {
                error!(actor = "alert", error = %e, "an alert change was not stored");
                state.store_failed(e);
            }
            AlertMsg::Resolve { key } => match state.resolve(&key) {
                Some(record) => {
                    info!(
                        actor = "alert",
                        alert = true,
                        alert_id = %record.alert_id,
                        key,
                        "alert resolved"
                    );
                    state.store(
                        &myself,
                        Change::event(
                            "alert_resolved",
                            json!({
                                "alert_id": record.alert_id,
                                "key": key,
                                "count": record.count,
                                "resolved_at": record.resolved_at,
                            }),
                        ),
                    );
                    state.notify_sinks(&record);
                }
                None => debug!(actor = "alert", key, "resolve for a key with no open alert"),
            },
            AlertMsg::Acknowledge { alert_id, reply } => {
                let result = state.acknowledge(&alert_id);
                if let Ok(record) = &result {
                    info!(
                        actor = "alert",
                        alert_id,
                        key = %record.key,
                        "alert acknowledged"
                    );
                    state.store(
                        &myself,
                        Change::event(
                            "alert_acknowledged",
                            json!({
                                "alert_id": alert_id,
                                "key": record.key,
                                "count": record.count,
                                "acknowledged_at": record.acknowledged_at,
                            }),
                        ),
                    );
                }
                let _ = reply.send(result);
            }
            AlertMsg::Resend => state.resend_open(),
            AlertMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            AlertMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            #[cfg(any(test, feature = "test-hooks"))]
            AlertMsg::Hook(hook) => hook.act(&myself.get_cell()).await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::persister::{PersisterActor, PersisterArgs};
    use ractor::call_t;

    fn alert(key: &str, severity: Severity) -> Alert {
        Alert {
            key: key.into(),
            severity,
            title: format!("{key} happened"),
            message: "something went wrong".into(),
            root_cause: "a test".into(),
            recommended_action: "nothing".into(),
            metadata: json!({ "n": 1 }),
        }
    }

    async fn spawn(prefix: &str, config: AlertConfig) -> (Names, ActorRef<AlertMsg>) {
        let names = Names::with_prefix(prefix);
        let (actor, _) = Actor::spawn(
            Some(names.of(ChildName::Alert)),
            AlertActor,
            AlertArgs {
                names: names.clone(),
                config,
            },
        )
        .await
        .unwrap();
        (names, actor)
    }

    #[test]
    fn default_config_is_valid_and_zero_recent_is_not() {
        assert_eq!(AlertConfig::default().validate(), Ok(()));
        let bad = AlertConfig {
            max_recent: 0,
            ..AlertConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_recent"));
        let parsed: AlertConfig = serde_json::from_value(json!({"dedup_window": "30s"})).unwrap();
        assert_eq!(parsed.dedup_window, Duration::from_secs(30));
        assert!(serde_json::from_value::<AlertConfig>(json!({"bogus": 1})).is_err());
    }

    #[tokio::test]
    async fn repeat_inside_the_window_only_bumps_the_count() {
        tokio::time::pause();
        let (_, actor) = spawn("alert-dedup-", AlertConfig::default()).await;
        for _ in 0..3 {
            actor
                .send_message(AlertMsg::Raise(alert("failsafe:k", Severity::Critical)))
                .unwrap();
        }
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        assert_eq!(s.open, 1);
        assert_eq!(s.open_critical, 1);
        assert_eq!(s.raised_total, 1);
        assert_eq!(s.deduplicated_total, 2);
        assert_eq!(s.recent.len(), 1);
        assert_eq!(s.recent[0].count, 3);
        assert_eq!(s.recent[0].severity, Severity::Critical);
        assert!(uuid::Uuid::parse_str(&s.recent[0].alert_id).is_ok());
        actor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn repeat_after_the_window_is_a_new_record() {
        tokio::time::pause();
        let config = AlertConfig {
            dedup_window: Duration::from_secs(60),
            max_recent: 50,
            ..AlertConfig::default()
        };
        let (_, actor) = spawn("alert-window-", config).await;
        actor
            .send_message(AlertMsg::Raise(alert("failsafe:k", Severity::Warning)))
            .unwrap();
        call_t!(actor, AlertMsg::Ping, 1000).unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        actor
            .send_message(AlertMsg::Raise(alert("failsafe:k", Severity::Warning)))
            .unwrap();
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        assert_eq!(s.raised_total, 2);
        assert_eq!(s.deduplicated_total, 0);
        assert_eq!(s.open, 1);
        assert_eq!(s.open_critical, 0);
        assert_ne!(s.recent[0].alert_id, s.recent[1].alert_id);
        actor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn resolve_closes_and_a_new_raise_opens_again() {
        let (_, actor) = spawn("alert-resolve-", AlertConfig::default()).await;
        actor
            .send_message(AlertMsg::Raise(alert("failsafe:k", Severity::Critical)))
            .unwrap();
        actor
            .send_message(AlertMsg::Resolve {
                key: "failsafe:k".into(),
            })
            .unwrap();
        actor
            .send_message(AlertMsg::Resolve {
                key: "unknown".into(),
            })
            .unwrap();
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        assert_eq!(s.open, 0);
        assert!(s.recent[0].resolved_at.is_some());
        actor
            .send_message(AlertMsg::Raise(alert("failsafe:k", Severity::Critical)))
            .unwrap();
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        assert_eq!(s.open, 1);
        assert_eq!(s.raised_total, 2);
        actor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn keeps_at_most_max_recent_records() {
        let config = AlertConfig {
            max_recent: 3,
            ..AlertConfig::default()
        };
        let (_, actor) = spawn("alert-cap-", config).await;
        for i in 0..10 {
            actor
                .send_message(AlertMsg::Raise(alert(
                    &format!("failsafe:k{i}"),
                    Severity::Info,
                )))
                .unwrap();
        }
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        assert_eq!(s.raised_total, 10);
        assert_eq!(s.recent.len(), 3);
        assert_eq!(s.recent[2].key, "failsafe:k9");
        actor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn raised_and_resolved_alerts_reach_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        // Loaded first: a load finishing mid-test would add its own event.
        let (actor, persister) = spawn_stored("alert-store-", &path).await;
        actor
            .send_message(AlertMsg::Raise(alert("failsafe:k", Severity::Critical)))
            .unwrap();
        actor
            .send_message(AlertMsg::Resolve {
                key: "failsafe:k".into(),
            })
            .unwrap();
        call_t!(actor, AlertMsg::Ping, 1000).unwrap();
        call_t!(persister, PersisterMsg::Flush, 5000)
            .unwrap()
            .unwrap();
        persister.stop_and_wait(None, None).await.unwrap();
        let store = crate::store::Store::open(&path).unwrap();
        let kinds: Vec<String> = store
            .events(0, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["alert_raised", "alert_resolved"]);
        actor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn a_thousand_repeats_are_one_open_alert_counted_a_thousand_times() {
        tokio::time::pause();
        let (_, actor) = spawn("alert-thousand-", AlertConfig::default()).await;
        for _ in 0..1000 {
            actor
                .send_message(AlertMsg::Raise(alert(
                    "failsafe:heartbeat",
                    Severity::Critical,
                )))
                .unwrap();
        }
        let s = call_t!(actor, AlertMsg::Status, 5000).unwrap();
        assert_eq!(s.open, 1);
        assert_eq!(s.raised_total, 1);
        assert_eq!(s.deduplicated_total, 999);
        assert_eq!(s.recent.len(), 1);
        assert_eq!(s.recent[0].count, 1000);
        actor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn acknowledge_marks_the_record_and_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        // Loaded first: a load finishing mid-test would add its own event.
        let (actor, persister) = spawn_stored("alert-ack-", &path).await;
        actor
            .send_message(AlertMsg::Raise(alert("failsafe:k", Severity::Warning)))
            .unwrap();
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        let id = s.recent[0].alert_id.clone();
        assert!(!s.recent[0].acknowledged);

        let acked = call_t!(
            actor,
            |reply| AlertMsg::Acknowledge {
                alert_id: id.clone(),
                reply
            },
            1000
        )
        .unwrap()
        .unwrap();
        assert!(acked.acknowledged);
        assert_eq!(acked.alert_id, id);
        let unknown = call_t!(
            actor,
            |reply| AlertMsg::Acknowledge {
                alert_id: "nope".into(),
                reply
            },
            1000
        )
        .unwrap();
        assert_eq!(
            unknown,
            Err(AlertError::UnknownAlert {
                alert_id: "nope".into()
            })
        );
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        assert!(s.recent[0].acknowledged);
        // A repeat keeps the acknowledgement (it is the same open alert).
        actor
            .send_message(AlertMsg::Raise(alert("failsafe:k", Severity::Warning)))
            .unwrap();
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        assert!(s.recent[0].acknowledged);
        assert_eq!(s.recent[0].count, 2);

        call_t!(persister, PersisterMsg::Flush, 5000)
            .unwrap()
            .unwrap();
        persister.stop_and_wait(None, None).await.unwrap();
        let store = crate::store::Store::open(&path).unwrap();
        let events = store.events(0, 10).unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["alert_raised", "alert_acknowledged"]);
        actor.stop_and_wait(None, None).await.unwrap();
    }

    #[test]
    fn only_the_allowed_kinds_are_alert_keys() {
        for key in [
            "failsafe:heartbeat",
            "escalation:strategy",
            "startup_checks:event_log",
            "integrity:hash_chain",
            "heartbeat:lost",
            "capital:recovery_differences",
            "store:backup",
            "store:recovered",
            "strategy:ma-1:unprotected",
        ] {
            assert!(alert_kind(key).is_some(), "{key} must be allowed");
        }
        assert_eq!(alert_kind("failsafe:heartbeat"), Some("failsafe"));
        assert_eq!(alert_kind("strategy:ma-1:unprotected"), Some("strategy"));
        // The key the persister raises when a backup fails.
        assert_eq!(
            alert_kind(crate::persister::BACKUP_ALERT_KEY),
            Some("store")
        );
        for key in [
            "broker:reconnect",
            // Backups fail as `store:backup`; no `backup` kind is raised anywhere.
            "backup:failed",
            "strategy:ma-1:entry_blocked",
            "strategy::unprotected",
            "strategy:a:b:unprotected",
            "failsafe",
            "failsafe:",
            "",
            "FAILSAFE:heartbeat",
            "trade:blocked",
        ] {
            assert_eq!(alert_kind(key), None, "{key} must be refused");
        }
    }

    #[tokio::test]
    async fn a_routine_event_is_refused_and_counted() {
        let (_, actor) = spawn("alert-refuse-", AlertConfig::default()).await;
        actor
            .send_message(AlertMsg::Raise(alert(
                "broker:reconnect",
                Severity::Warning,
            )))
            .unwrap();
        actor
            .send_message(AlertMsg::Raise(alert(
                "strategy:s1:entry_blocked",
                Severity::Info,
            )))
            .unwrap();
        actor
            .send_message(AlertMsg::Raise(alert(
                "strategy:s1:unprotected",
                Severity::Critical,
            )))
            .unwrap();
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        assert_eq!(s.refused_total, 2);
        assert_eq!(s.raised_total, 1);
        assert_eq!(s.open, 1);
        assert_eq!(s.recent.len(), 1);
        assert_eq!(s.recent[0].key, "strategy:s1:unprotected");
        actor.stop_and_wait(None, None).await.unwrap();
    }

    /// An alert actor and a persister on `path` under fresh names, the history loaded.
    async fn spawn_stored(
        prefix: &str,
        path: &std::path::Path,
    ) -> (ActorRef<AlertMsg>, ActorRef<PersisterMsg>) {
        let (names, actor) = spawn(prefix, AlertConfig::default()).await;
        let (persister, _) = Actor::spawn(
            Some(names.of(ChildName::StatePersister)),
            PersisterActor,
            PersisterArgs::new(names.clone(), path.to_path_buf(), Metrics::new().unwrap()),
        )
        .await
        .unwrap();
        for _ in 0..200 {
            if call_t!(actor, AlertMsg::Status, 1000)
                .unwrap()
                .history_loaded
            {
                return (actor, persister);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the alert history was never loaded");
    }

    async fn stop_stored(actor: ActorRef<AlertMsg>, persister: ActorRef<PersisterMsg>) {
        call_t!(actor, AlertMsg::Ping, 1000).unwrap();
        call_t!(persister, PersisterMsg::Flush, 5000)
            .unwrap()
            .unwrap();
        actor.stop_and_wait(None, None).await.unwrap();
        persister.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn an_acknowledged_alert_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let (actor, persister) = spawn_stored("alert-restart-a-", &path).await;
        actor
            .send_message(AlertMsg::Raise(alert("failsafe:k", Severity::Critical)))
            .unwrap();
        actor
            .send_message(AlertMsg::Raise(alert("store:backup", Severity::Warning)))
            .unwrap();
        actor
            .send_message(AlertMsg::Resolve {
                key: "store:backup".into(),
            })
            .unwrap();
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        let id = s.recent[0].alert_id.clone();
        call_t!(
            actor,
            |reply| AlertMsg::Acknowledge {
                alert_id: id.clone(),
                reply
            },
            1000
        )
        .unwrap()
        .unwrap();
        stop_stored(actor, persister).await;

        let (actor, persister) = spawn_stored("alert-restart-b-", &path).await;
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        assert_eq!(s.history_load_error, None);
        assert_eq!(s.store_failures, 0, "{:?}", s.last_store_error);
        assert_eq!(s.recent.len(), 2);
        assert_eq!(s.open, 1, "the open alert is open again");
        let r = &s.open_alerts[0];
        assert_eq!(r.alert_id, id);
        assert!(r.acknowledged);
        assert!(r.acknowledged_at.is_some());
        assert_eq!(r.severity, Severity::Critical);
        assert_eq!(r.title, "failsafe:k happened");
        assert_eq!(r.root_cause, "a test");
        assert_eq!(r.recommended_action, "nothing");
        assert_eq!(r.metadata, json!({ "n": 1 }));
        assert!(s.recent[1].resolved_at.is_some(), "{:?}", s.recent);
        // The open alert is the same one: a repeat inside the window bumps its count.
        actor
            .send_message(AlertMsg::Raise(alert("failsafe:k", Severity::Critical)))
            .unwrap();
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        assert_eq!(s.open_alerts[0].alert_id, id);
        assert_eq!(s.open_alerts[0].count, 2);
        assert!(s.open_alerts[0].acknowledged);
        // Resolving it after the restart closes it for good.
        actor
            .send_message(AlertMsg::Resolve {
                key: "failsafe:k".into(),
            })
            .unwrap();
        stop_stored(actor, persister).await;
        let (actor, persister) = spawn_stored("alert-restart-c-", &path).await;
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        assert_eq!(s.open, 0);
        assert_eq!(s.recent.len(), 2);
        assert!(s.recent.iter().all(|r| r.resolved_at.is_some()));
        stop_stored(actor, persister).await;
    }

    #[tokio::test]
    async fn a_storm_of_repeats_is_stored_as_one_count_update() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let (actor, persister) = spawn_stored("alert-storm-", &path).await;
        for _ in 0..1000 {
            actor
                .send_message(AlertMsg::Raise(alert("heartbeat:lost", Severity::Critical)))
                .unwrap();
        }
        call_t!(actor, AlertMsg::Ping, 5000).unwrap();
        // The counts are written once, one interval after the first repeat.
        tokio::time::sleep(COUNT_PERSIST_INTERVAL + Duration::from_millis(300)).await;
        stop_stored(actor, persister).await;
        let store = crate::store::Store::open(&path).unwrap();
        let events = store.events(0, 100).unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["alert_raised", "alert_repeated"]);
        let repeated: Value = serde_json::from_str(&events[1].payload).unwrap();
        assert_eq!(repeated["alerts"][0]["count"], 1000);
        let stored = store.state().unwrap();
        assert_eq!(stored[ALERTS_STATE_KEY]["open"][0]["count"], 1000);
    }

    #[tokio::test]
    async fn an_alert_raised_before_the_persister_starts_is_stored_once_it_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let (names, actor) = spawn("alert-early-", AlertConfig::default()).await;
        actor
            .send_message(AlertMsg::Raise(alert(
                "store:recovered",
                Severity::Critical,
            )))
            .unwrap();
        call_t!(actor, AlertMsg::Ping, 1000).unwrap();
        let (persister, _) = Actor::spawn(
            Some(names.of(ChildName::StatePersister)),
            PersisterActor,
            PersisterArgs::new(names.clone(), path.clone(), Metrics::new().unwrap()),
        )
        .await
        .unwrap();
        for _ in 0..200 {
            if call_t!(actor, AlertMsg::Status, 1000)
                .unwrap()
                .history_loaded
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        assert!(s.history_loaded);
        assert_eq!(s.store_failures, 0, "{:?}", s.last_store_error);
        stop_stored(actor, persister).await;
        let store = crate::store::Store::open(&path).unwrap();
        let kinds: Vec<String> = store
            .events(0, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["alert_raised"]);
        let state = store.state().unwrap();
        assert_eq!(state[ALERTS_STATE_KEY]["open"][0]["key"], "store:recovered");
    }

    #[tokio::test]
    async fn an_absent_persister_does_not_stop_alerts() {
        let (_, actor) = spawn("alert-nopersist-", AlertConfig::default()).await;
        actor
            .send_message(AlertMsg::Raise(alert("failsafe:k", Severity::Critical)))
            .unwrap();
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        assert_eq!(s.open, 1);
        actor.stop_and_wait(None, None).await.unwrap();
    }
}
