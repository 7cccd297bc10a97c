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

pub mod payload;
pub mod sink;
#[cfg(test)]
mod sink_tests;
pub mod transport;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
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

/// The alert kinds the issue allows, by the key's first `:`-separated segment: fail-safe triggers
/// and shutdowns, restart-intensity escalations, start-up check and periodic integrity failures,
/// prolonged heartbeat loss, capital-integrity violations, store failures (a failed backup is
/// `store:backup`), and unprotected positions (`strategy:<id>:unprotected` only).
pub const ALLOWED_ALERT_KINDS: [&str; 8] = [
    "failsafe",
    "escalation",
    "startup_checks",
    "integrity",
    "heartbeat",
    "capital",
    "store",
    "strategy",
];

/// The allowed kind of an alert key, or `None` when the actor must refuse it. `strategy` keys
/// are allowed only in the shape `strategy:<id>:unprotected`; every other kind needs a
/// non-empty name after its prefix (`failsafe:heartbeat`).
pub fn alert_kind(key: &str) -> Option<&'static str> {
    let (prefix, rest) = key.split_once(':')?;
    let kind = ALLOWED_ALERT_KINDS.iter().find(|k| **k == prefix)?;
    if rest.trim().is_empty() {
        return None;
    }
    if *kind == "strategy" {
        let id = rest.strip_suffix(":unprotected")?;
        if id.is_empty() || id.contains(':') {
            return None;
        }
    }
    Some(kind)
}

/// What a caller raises.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Dedup key, e.g. `failsafe:heartbeat`; its prefix must be an allowed kind
    /// ([`alert_kind`]).
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
    /// Records kept in memory for status and in the store's `alerts` state key (open alerts are
    /// kept besides, however old).
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
            max_recent: 200,
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

/// One alert as recorded and stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The newest raise folded into it (the first one for a fresh record).
    #[serde(default)]
    pub last_raised_at: Option<DateTime<Utc>>,
    /// When an operator acknowledged it.
    #[serde(default)]
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub key: String,
}

/// The `alerts` state value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StoredAlerts {
    #[serde(default)]
    open: Vec<AlertRecord>,
    #[serde(default)]
    recent: Vec<AlertRecord>,
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
    /// The open alerts themselves (one per key), oldest first.
    pub open_alerts: Vec<AlertRecord>,
    /// Raises refused because their key is not an allowed kind ([`alert_kind`]).
    pub refused_total: u64,
    /// Whether the stored alerts were reloaded (or there were none); false while loading.
    pub history_loaded: bool,
    /// Why reloading the stored alerts failed, if it did.
    pub history_load_error: Option<String>,
    /// Commits of alert changes that failed or timed out since start.
    pub store_failures: u64,
    pub last_store_error: Option<String>,
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
    refused_total: u64,
    /// Alerts whose count changed since the last stored write.
    repeated: BTreeSet<String>,
    /// Whether a `PersistCounts` is scheduled.
    counts_scheduled: bool,
    /// Whether the stored alerts were read (or reading them was given up).
    loaded: bool,
    /// Changes made before the load finished, whose state write is still owed.
    unsaved: bool,
    /// Events raised before the persister was running (it starts after this actor), committed
    /// once the load finds it; at most `PENDING_MAX`.
    pending: Vec<Change>,
    load_error: Option<String>,
    store_failures: u64,
    last_store_error: Option<String>,
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
            refused_total: 0,
            repeated: BTreeSet::new(),
            counts_scheduled: false,
            loaded: false,
            unsaved: false,
            pending: Vec::new(),
            load_error: None,
            store_failures: 0,
            last_store_error: None,
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
            let at = Utc::now();
            open.record.count += 1;
            open.record.last_raised_at = Some(at);
            let alert_id = open.record.alert_id.clone();
            self.deduplicated_total += 1;
            let count = self.record_mut(&alert_id).map(|r| {
                r.count += 1;
                r.last_raised_at = Some(at);
                r.count
            });
            self.repeated.insert(alert_id.clone());
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
        let now_utc = Utc::now();
        let record = AlertRecord {
            alert_id: uuid::Uuid::now_v7().to_string(),
            timestamp: now_utc,
            severity: alert.severity,
            title: alert.title,
            message: alert.message,
            root_cause: alert.root_cause,
            recommended_action: alert.recommended_action,
            metadata: alert.metadata,
            acknowledged: false,
            count: 1,
            last_raised_at: Some(now_utc),
            acknowledged_at: None,
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
        self.trim_recent();
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
        let at = Utc::now();
        if let Some(open) = self
            .open
            .values_mut()
            .find(|o| o.record.alert_id == alert_id)
        {
            if !open.record.acknowledged {
                open.record.acknowledged = true;
                open.record.acknowledged_at = Some(at);
            }
            found = Some(open.record.clone());
        }
        if let Some(r) = self.record_mut(alert_id) {
            if !r.acknowledged {
                r.acknowledged = true;
                r.acknowledged_at = Some(at);
            }
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
            open_alerts: self.open_records(),
            refused_total: self.refused_total,
            history_loaded: self.loaded,
            history_load_error: self.load_error.clone(),
            store_failures: self.store_failures,
            last_store_error: self.last_store_error.clone(),
            sinks_failing: sinks.iter().filter(|s| s.failing).count(),
            sinks,
        }
    }

    fn trim_recent(&mut self) {
        while self.recent.len() > self.args.config.max_recent.max(1) {
            self.recent.pop_front();
        }
    }

    /// The open records, oldest first.
    fn open_records(&self) -> Vec<AlertRecord> {
        let mut open: Vec<AlertRecord> = self.open.values().map(|o| o.record.clone()).collect();
        open.sort_by(|a, b| a.alert_id.cmp(&b.alert_id));
        open
    }

    /// The `alerts` state value as it is now.
    fn stored_value(&self) -> Value {
        let stored = StoredAlerts {
            open: self.open_records(),
            recent: self.recent.iter().cloned().collect(),
        };
        serde_json::to_value(&stored).unwrap_or_else(|e| json!({ "encode_error": e.to_string() }))
    }

    /// Commits `event` through the persister with the current `alerts` state (once the stored
    /// alerts are loaded; before that the state write is owed, so the stored history is not
    /// overwritten by a partial one). Never waits: a task reports the outcome as `Stored`.
    fn store(&mut self, myself: &ActorRef<AlertMsg>, event: Change) {
        // Every stored state carries every count, so nothing is owed any more.
        self.repeated.clear();
        let change = if self.loaded {
            event.set(ALERTS_STATE_KEY, self.stored_value())
        } else {
            self.unsaved = true;
            event
        };
        let Some(persister) = self
            .args
            .names
            .lookup::<PersisterMsg>(ChildName::StatePersister)
        else {
            if !self.loaded && self.pending.len() < PENDING_MAX {
                // The persister starts after this actor: keep the event until the load finds it.
                self.pending.push(change);
                return;
            }
            warn!(
                actor = "alert",
                "state-persister not running; alert logged but not stored"
            );
            self.store_failed("the state-persister is not running".into());
            return;
        };
        let (tx, rx) = ractor::concurrency::oneshot();
        if let Err(e) = persister.send_message(PersisterMsg::Commit {
            change,
            reply: Some(tx.into()),
        }) {
            warn!(actor = "alert", error = %e, "could not hand the alert to the state-persister");
            self.store_failed(format!("could not reach the state-persister: {e}"));
            return;
        }
        let me = myself.clone();
        tokio::spawn(async move {
            let outcome = match tokio::time::timeout(COMMIT_TIMEOUT, rx).await {
                Ok(Ok(Ok(_))) => Ok(()),
                Ok(Ok(Err(e))) => Err(e.to_string()),
                Ok(Err(_)) => Err("the state-persister dropped the commit".into()),
                Err(_) => Err(format!(
                    "the state-persister did not commit within {} s",
                    COMMIT_TIMEOUT.as_secs()
                )),
            };
            let _ = me.send_message(AlertMsg::Stored(outcome));
        });
    }

    fn store_failed(&mut self, error: String) {
        self.store_failures += 1;
        self.last_store_error = Some(error);
    }

    /// Writes the counts of repeated alerts (one event for all of them) with the state.
    fn persist_counts(&mut self, myself: &ActorRef<AlertMsg>) {
        self.counts_scheduled = false;
        if self.repeated.is_empty() {
            return;
        }
        let repeated: Vec<Value> = self
            .repeated
            .iter()
            .filter_map(|id| {
                self.recent
                    .iter()
                    .find(|r| &r.alert_id == id)
                    .or_else(|| {
                        self.open
                            .values()
                            .map(|o| &o.record)
                            .find(|r| &r.alert_id == id)
                    })
                    .map(|r| json!({ "alert_id": r.alert_id, "key": r.key, "count": r.count }))
            })
            .collect();
        self.store(
            myself,
            Change::event("alert_repeated", json!({ "alerts": repeated })),
        );
    }

    /// Starts one load of the stored alerts in a task that reports back as `Loaded`.
    fn start_load(&self, myself: &ActorRef<AlertMsg>, attempt: u32) {
        let names = self.args.names.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let result = crate::persister::load_state(&names, LOAD_TIMEOUT)
                .await
                .map(|mut state| state.remove(ALERTS_STATE_KEY));
            let _ = me.send_message(AlertMsg::Loaded { attempt, result });
        });
    }

    /// Merges the stored alerts under what this run raised already (this run's records win).
    fn on_loaded(
        &mut self,
        myself: &ActorRef<AlertMsg>,
        attempt: u32,
        result: Result<Option<Value>, String>,
    ) {
        if self.loaded {
            return;
        }
        let stored = match result {
            Ok(None) => StoredAlerts::default(),
            Ok(Some(value)) => match serde_json::from_value::<StoredAlerts>(value) {
                Ok(stored) => stored,
                Err(e) => {
                    error!(actor = "alert", error = %e, "the stored alert history is unreadable; starting without it");
                    self.load_error = Some(format!("stored alert history unreadable: {e}"));
                    StoredAlerts::default()
                }
            },
            Err(e) if attempt < LOAD_ATTEMPTS => {
                debug!(actor = "alert", attempt, error = %e, "stored alerts not loaded yet; retrying");
                let next = attempt + 1;
                myself.send_after(LOAD_RETRY_DELAY, move || AlertMsg::Load { attempt: next });
                return;
            }
            Err(e) => {
                error!(actor = "alert", attempts = attempt, error = %e, "giving up reloading the stored alerts; history starts empty");
                self.load_error = Some(format!("stored alerts could not be loaded: {e}"));
                StoredAlerts::default()
            }
        };
        self.loaded = true;
        let ours: HashSet<String> = self.recent.iter().map(|r| r.alert_id.clone()).collect();
        let mut recent: VecDeque<AlertRecord> = stored
            .recent
            .into_iter()
            .filter(|r| !ours.contains(&r.alert_id))
            .collect();
        recent.extend(self.recent.drain(..));
        self.recent = recent;
        self.trim_recent();
        let now = Instant::now();
        let (restored_open, mut superseded) = (stored.open.len(), 0usize);
        for record in stored.open {
            if self.open.contains_key(&record.key) {
                superseded += 1;
                continue;
            }
            // The dedup window keeps running from the first raise, across the restart.
            let age = (Utc::now() - record.timestamp).to_std().unwrap_or_default();
            let raised_at = now.checked_sub(age).unwrap_or(now);
            self.open
                .insert(record.key.clone(), Open { record, raised_at });
        }
        info!(
            actor = "alert",
            open = self.open.len(),
            restored_open,
            superseded,
            recent = self.recent.len(),
            "alert history loaded"
        );
        let pending = std::mem::take(&mut self.pending);
        let owed = std::mem::take(&mut self.unsaved);
        if !pending.is_empty() {
            // Now loaded, each commit carries the merged state as well.
            for change in pending {
                self.store(myself, change);
            }
        } else if owed {
            self.store(
                myself,
                Change::event(
                    "alert_history_merged",
                    json!({ "open": self.open.len(), "recent": self.recent.len() }),
                ),
            );
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
