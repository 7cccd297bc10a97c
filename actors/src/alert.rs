//! The `alert` actor: raises, deduplicates and resolves operator alerts.
//!
//! An alert is one structured log line (CRITICAL → `error`, WARNING → `warn`, INFO → `info`, all
//! with `alert = true`) and one `alert_raised` event in the store, written through the
//! `state-persister` without waiting for it. A repeat of an open alert inside the dedup window only
//! bumps its count, so a flapping cause cannot flood the log or the store. The actor keeps the most
//! recent records for `/health` and the API; the store holds the full history.
//!
//! External sinks ([`sink`]: Alertmanager, a webhook in Alertmanager's v4 shape, Telegram) each
//! get a background task fed by a bounded queue: the actor pushes a prepared body and moves on,
//! so a slow or dead receiver never blocks it. Alertmanager also gets every open alert again each
//! `resend_interval`, and a resolved alert once with `endsAt`. Each sink's delivery counts, last
//! error and `failing` flag are part of this actor's status, hence of `/health`.
//!
//! Callers must not put secrets into an alert: its fields are logged, stored and sent verbatim.

pub mod payload;
pub mod sink;
#[cfg(test)]
mod sink_tests;
pub mod transport;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use self::sink::{
    AlertmanagerConfig, Delivery, DeliveryConfig, Sink, SinkKind, SinkStatus, TelegramConfig,
    WebhookConfig,
};

use crate::names::{ChildName, Names};
use crate::persister::PersisterMsg;
use crate::secret::Secret;
use crate::store::Change;

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    /// Needs a human now (trading stopped, data at risk).
    Critical,
    /// Degraded but handled automatically.
    Warning,
    /// Worth knowing.
    Info,
}

impl Severity {
    /// The stored and displayed name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        }
    }
}

/// What a caller raises.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Dedup key, e.g. `failsafe:heartbeat` or `broker:circuit_open`.
    pub key: String,
    pub severity: Severity,
    pub title: String,
    pub message: String,
    pub root_cause: String,
    pub recommended_action: String,
    pub metadata: Value,
}

/// `[alert]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// A repeat of an open alert raised less than this long ago only bumps its count.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Records kept in memory for status.
    pub max_recent: usize,
    /// `[alert.delivery]`: queue, timeout, retries and backoff of every external sink.
    pub delivery: DeliveryConfig,
    /// `[alert.alertmanager]`.
    pub alertmanager: AlertmanagerConfig,
    /// `[alert.webhook]`.
    pub webhook: WebhookConfig,
    /// `[alert.telegram]`.
    pub telegram: TelegramConfig,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            dedup_window: Duration::from_secs(5 * 60),
            max_recent: 50,
            delivery: DeliveryConfig::default(),
            alertmanager: AlertmanagerConfig::default(),
            webhook: WebhookConfig::default(),
            telegram: TelegramConfig::default(),
        }
    }
}

impl AlertConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_recent == 0 {
            return Err("max_recent must be at least 1".into());
        }
        if self.max_recent > 10_000 {
            return Err("max_recent must be at most 10000 (the store keeps the history)".into());
        }
        self.delivery
            .validate()
            .map_err(|e| format!("delivery.{e}"))?;
        let url = |enabled: bool, field: &str, url: &str| -> Result<(), String> {
            if enabled {
                transport::Endpoint::parse(url).map_err(|e| format!("{field} {e}"))?;
            }
            Ok(())
        };
        let am = &self.alertmanager;
        url(am.enabled, "alertmanager.url", &am.url)?;
        // Alertmanager resolves an alert `resolve_timeout` (5 min by default) after its last
        // send; re-sending less often would make open alerts flap.
        if am.resend_interval.is_zero() || am.resend_interval > Duration::from_secs(5 * 60) {
            return Err("alertmanager.resend_interval must be between 0 and 5m".into());
        }
        url(self.webhook.enabled, "webhook.url", &self.webhook.url)?;
        let tg = &self.telegram;
        url(tg.enabled, "telegram.base_url", &tg.base_url)?;
        if tg.enabled && tg.chat_id.trim().is_empty() {
            return Err("telegram.chat_id must be set when telegram is enabled".into());
        }
        if tg.enabled && tg.token_env.trim().is_empty() {
            return Err(
                "telegram.token_env must name the environment variable with the bot token".into(),
            );
        }
        Ok(())
    }
}

/// Errors of alert operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// No recent or open alert has this id (the store keeps older ones).
    #[error("no open or recent alert has id {alert_id}")]
    UnknownAlert { alert_id: String },
}

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
    /// Test-only misbehaviour.
    #[cfg(any(test, feature = "test-hooks"))]
    Hook(crate::hooks::TestHook),
}

/// One alert as recorded and stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRecord {
    /// UUID v7.
    pub alert_id: String,
    /// When it was first raised.
    pub timestamp: DateTime<Utc>,
    pub severity: Severity,
    pub title: String,
    pub message: String,
    pub root_cause: String,
    pub recommended_action: String,
    pub metadata: Value,
    pub acknowledged: bool,
    /// Raises folded into this record (1 + repeats inside the dedup window).
    pub count: u64,
    pub resolved_at: Option<DateTime<Utc>>,
    pub key: String,
}

/// The alert actor's answer to `Status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertStatus {
    /// Open alerts (one per key).
    pub open: usize,
    pub open_critical: usize,
    /// Records created since start.
    pub raised_total: u64,
    /// Repeats folded into an open record since start.
    pub deduplicated_total: u64,
    /// Newest last, at most `max_recent`.
    pub recent: Vec<AlertRecord>,
    /// Enabled external sinks that are currently `failing`.
    pub sinks_failing: usize,
    /// One entry per enabled external sink.
    pub sinks: Vec<SinkStatus>,
}

/// The alert actor.
pub struct AlertActor;

struct Open {
    /// The open record as it is now (count and acknowledgement kept current).
    record: AlertRecord,
    raised_at: Instant,
}

/// The alert actor's state.
pub struct AlertState {
    args: AlertArgs,
    /// Open alerts by key.
    open: HashMap<String, Open>,
    recent: VecDeque<AlertRecord>,
    raised_total: u64,
    deduplicated_total: u64,
    /// Enabled external sinks; dropping one stops its task.
    sinks: Vec<Sink>,
    /// The Alertmanager re-send timer.
    resend: Option<JoinHandle<()>>,
}

impl Drop for AlertState {
    /// A state dropped without `post_stop` (a panic) must not leave the re-send timer behind;
    /// the sinks stop themselves on drop.
    fn drop(&mut self) {
        if let Some(timer) = self.resend.take() {
            timer.abort();
        }
    }
}

impl AlertState {
    fn new(args: AlertArgs) -> Self {
        Self {
            args,
            open: HashMap::new(),
            recent: VecDeque::new(),
            raised_total: 0,
            deduplicated_total: 0,
            sinks: Vec::new(),
            resend: None,
        }
    }

    /// Starts a delivery task for every enabled sink.
    fn start_sinks(&mut self) {
        let c = &self.args.config;
        if c.alertmanager.enabled {
            self.sinks.push(Sink::start(
                SinkKind::Alertmanager,
                &c.alertmanager.url,
                Ok(Secret::new("/api/v2/alerts")),
                &c.delivery,
            ));
        }
        if c.webhook.enabled {
            self.sinks.push(Sink::start(
                SinkKind::Webhook,
                &c.webhook.url,
                Ok(Secret::new("")),
                &c.delivery,
            ));
        }
        if c.telegram.enabled {
            let var = &c.telegram.token_env;
            // The token only ever lives inside the request path, wrapped in `Secret`.
            let token = c.telegram.token.clone().or_else(|| {
                std::env::var(var)
                    .ok()
                    .filter(|t| !t.trim().is_empty())
                    .map(|t| Secret::new(t.trim()))
            });
            let path = token
                .map(|t| Secret::new(format!("/bot{}/sendMessage", t.expose())))
                .ok_or_else(|| format!("the bot token variable {var} is not set"));
            self.sinks.push(Sink::start(
                SinkKind::Telegram,
                &c.telegram.base_url,
                path,
                &c.delivery,
            ));
        }
    }

    /// Hands a raised or resolved record to every sink (queue only; never waits).
    fn notify_sinks(&mut self, record: &AlertRecord) {
        let c = &self.args.config;
        let what = format!(
            "{} {}",
            if record.resolved_at.is_some() {
                "resolved"
            } else {
                "firing"
            },
            record.key
        );
        for sink in &mut self.sinks {
            let body = match sink.kind() {
                SinkKind::Alertmanager => {
                    payload::alertmanager_body([record], c.alertmanager.generator_url.as_deref())
                }
                SinkKind::Webhook => {
                    payload::webhook_v4(record, &c.webhook.receiver, &c.webhook.external_url)
                }
                SinkKind::Telegram => payload::telegram_message(record, &c.telegram.chat_id),
            };
            sink.push(Delivery {
                what: what.clone(),
                body: body.to_string().into(),
            });
        }
    }

    /// Re-sends every open alert to Alertmanager in one request.
    fn resend_open(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let mut open: Vec<&AlertRecord> = self.open.values().map(|o| &o.record).collect();
        open.sort_by(|a, b| a.alert_id.cmp(&b.alert_id));
        let generator = self.args.config.alertmanager.generator_url.as_deref();
        let body = payload::alertmanager_body(open, generator).to_string();
        let n = self.open.len();
        for sink in &mut self.sinks {
            if sink.kind() == SinkKind::Alertmanager {
                sink.push(Delivery {
                    what: format!("re-send of {n} open alert(s)"),
                    body: body.clone().into(),
                });
            }
        }
    }

    fn record_mut(&mut self, alert_id: &str) -> Option<&mut AlertRecord> {
        self.recent
            .iter_mut()
            .rev()
            .find(|r| r.alert_id == alert_id)
    }

    /// Raises `alert`; returns the new record, or `None` when it was folded into an open one.
    fn raise(&mut self, alert: Alert, now: Instant) -> Option<AlertRecord> {
        let window = self.args.config.dedup_window;
        if let Some(open) = self.open.get_mut(&alert.key)
            && now.saturating_duration_since(open.raised_at) < window
        {
            open.record.count += 1;
            let alert_id = open.record.alert_id.clone();
            self.deduplicated_total += 1;
            let count = self.record_mut(&alert_id).map(|r| {
                r.count += 1;
                r.count
            });
            debug!(
                actor = "alert",
                alert_id,
                key = %alert.key,
                count,
                "repeat of an open alert (deduplicated)"
            );
            return None;
        }
        // A repeat after the window is a fresh record (a reminder) that takes the key over.
        let record = AlertRecord {
            alert_id: uuid::Uuid::now_v7().to_string(),
            timestamp: Utc::now(),
            severity: alert.severity,
            title: alert.title,
            message: alert.message,
            root_cause: alert.root_cause,
            recommended_action: alert.recommended_action,
            metadata: alert.metadata,
            acknowledged: false,
            count: 1,
            resolved_at: None,
            key: alert.key,
        };
        self.open.insert(
            record.key.clone(),
            Open {
                record: record.clone(),
                raised_at: now,
            },
        );
        self.raised_total += 1;
        self.recent.push_back(record.clone());
        while self.recent.len() > self.args.config.max_recent.max(1) {
            self.recent.pop_front();
        }
        Some(record)
    }

    /// Resolves the open alert with `key`; returns the closed record.
    fn resolve(&mut self, key: &str) -> Option<AlertRecord> {
        let mut record = self.open.remove(key)?.record;
        let at = Utc::now();
        record.resolved_at = Some(at);
        if let Some(r) = self.record_mut(&record.alert_id) {
            r.resolved_at = Some(at);
        }
        Some(record)
    }

    /// Marks the alert acknowledged (idempotent); returns the record.
    fn acknowledge(&mut self, alert_id: &str) -> Result<AlertRecord, AlertError> {
        let mut found = None;
        if let Some(open) = self
            .open
            .values_mut()
            .find(|o| o.record.alert_id == alert_id)
        {
            open.record.acknowledged = true;
            found = Some(open.record.clone());
        }
        if let Some(r) = self.record_mut(alert_id) {
            r.acknowledged = true;
            found = Some(r.clone());
        }
        found.ok_or_else(|| AlertError::UnknownAlert {
            alert_id: alert_id.to_owned(),
        })
    }

    fn status(&self) -> AlertStatus {
        let sinks: Vec<SinkStatus> = self.sinks.iter().map(Sink::status).collect();
        AlertStatus {
            open: self.open.len(),
            open_critical: self
                .open
                .values()
                .filter(|o| o.record.severity == Severity::Critical)
                .count(),
            raised_total: self.raised_total,
            deduplicated_total: self.deduplicated_total,
            recent: self.recent.iter().cloned().collect(),
            sinks_failing: sinks.iter().filter(|s| s.failing).count(),
            sinks,
        }
    }

    /// Fire-and-forget write through the persister; an absent persister is logged, not fatal.
    fn store(&self, change: Change) {
        match self
            .args
            .names
            .lookup::<PersisterMsg>(ChildName::StatePersister)
        {
            Some(persister) => {
                if let Err(e) = persister.send_message(PersisterMsg::Commit {
                    change,
                    reply: None,
                }) {
                    warn!(actor = "alert", error = %e, "could not hand the alert to the state-persister");
                }
            }
            None => warn!(
                actor = "alert",
                "state-persister not running; alert logged but not stored"
            ),
        }
    }
}

fn log_raised(r: &AlertRecord) {
    let severity = r.severity.as_str();
    match r.severity {
        Severity::Critical => error!(
            actor = "alert",
            alert = true,
            alert_id = %r.alert_id,
            key = %r.key,
            severity,
            title = %r.title,
            root_cause = %r.root_cause,
            recommended_action = %r.recommended_action,
            "{}",
            r.message
        ),
        Severity::Warning => warn!(
            actor = "alert",
            alert = true,
            alert_id = %r.alert_id,
            key = %r.key,
            severity,
            title = %r.title,
            root_cause = %r.root_cause,
            recommended_action = %r.recommended_action,
            "{}",
            r.message
        ),
        Severity::Info => info!(
            actor = "alert",
            alert = true,
            alert_id = %r.alert_id,
            key = %r.key,
            severity,
            title = %r.title,
            root_cause = %r.root_cause,
            recommended_action = %r.recommended_action,
            "{}",
            r.message
        ),
    }
}

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
        // Spawning tasks is quick; nothing here waits on the network.
        state.start_sinks();
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
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AlertMsg::Raise(alert) => {
                if let Some(record) = state.raise(alert, Instant::now()) {
                    log_raised(&record);
                    let payload = serde_json::to_value(&record).unwrap_or_else(
                        |e| json!({ "alert_id": record.alert_id, "encode_error": e.to_string() }),
                    );
                    state.store(Change::event("alert_raised", payload));
                    state.notify_sinks(&record);
                }
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
                    state.store(Change::event(
                        "alert_resolved",
                        json!({
                            "alert_id": record.alert_id,
                            "key": key,
                            "resolved_at": record.resolved_at,
                        }),
                    ));
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
                    state.store(Change::event(
                        "alert_acknowledged",
                        json!({
                            "alert_id": alert_id,
                            "key": record.key,
                            "acknowledged_at": Utc::now(),
                        }),
                    ));
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
            AlertMsg::Hook(hook) => hook.act(&_myself.get_cell()).await?,
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
                .send_message(AlertMsg::Raise(alert("k", Severity::Critical)))
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
            .send_message(AlertMsg::Raise(alert("k", Severity::Warning)))
            .unwrap();
        call_t!(actor, AlertMsg::Ping, 1000).unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        actor
            .send_message(AlertMsg::Raise(alert("k", Severity::Warning)))
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
            .send_message(AlertMsg::Raise(alert("k", Severity::Critical)))
            .unwrap();
        actor
            .send_message(AlertMsg::Resolve { key: "k".into() })
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
            .send_message(AlertMsg::Raise(alert("k", Severity::Critical)))
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
                .send_message(AlertMsg::Raise(alert(&format!("k{i}"), Severity::Info)))
                .unwrap();
        }
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        assert_eq!(s.raised_total, 10);
        assert_eq!(s.recent.len(), 3);
        assert_eq!(s.recent[2].key, "k9");
        actor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn raised_and_resolved_alerts_reach_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let (names, actor) = spawn("alert-store-", AlertConfig::default()).await;
        let (persister, _) = Actor::spawn(
            Some(names.of(ChildName::StatePersister)),
            PersisterActor,
            PersisterArgs::new(names.clone(), path.clone(), Metrics::new().unwrap()),
        )
        .await
        .unwrap();
        actor
            .send_message(AlertMsg::Raise(alert("k", Severity::Critical)))
            .unwrap();
        actor
            .send_message(AlertMsg::Resolve { key: "k".into() })
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
        let (names, actor) = spawn("alert-ack-", AlertConfig::default()).await;
        let (persister, _) = Actor::spawn(
            Some(names.of(ChildName::StatePersister)),
            PersisterActor,
            PersisterArgs::new(names.clone(), path.clone(), Metrics::new().unwrap()),
        )
        .await
        .unwrap();
        actor
            .send_message(AlertMsg::Raise(alert("k", Severity::Warning)))
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
            .send_message(AlertMsg::Raise(alert("k", Severity::Warning)))
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

    #[tokio::test]
    async fn an_absent_persister_does_not_stop_alerts() {
        let (_, actor) = spawn("alert-nopersist-", AlertConfig::default()).await;
        actor
            .send_message(AlertMsg::Raise(alert("k", Severity::Critical)))
            .unwrap();
        let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
        assert_eq!(s.open, 1);
        actor.stop_and_wait(None, None).await.unwrap();
    }
}
