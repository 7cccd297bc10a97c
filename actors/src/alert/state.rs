//! The alert actor's state and its decisions: open alerts, dedup within the window, resolve,
//! acknowledge, the stored `alerts` value, counts, sinks and the re-send timer.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use ractor::ActorRef;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::sink::{Delivery, Sink, SinkKind, SinkStatus};

use crate::names::ChildName;
use crate::persister::PersisterMsg;
use crate::secret::Secret;
use crate::store::Change;

use super::*;

pub(super) struct Open {
    /// The open record as it is now (count and acknowledgement kept current).
    pub(super) record: AlertRecord,
    pub(super) raised_at: Instant,
}

/// The alert actor's state.
pub struct AlertState {
    pub(super) args: AlertArgs,
    /// Open alerts by key.
    pub(super) open: HashMap<String, Open>,
    pub(super) recent: VecDeque<AlertRecord>,
    pub(super) raised_total: u64,
    pub(super) deduplicated_total: u64,
    /// Enabled external sinks; dropping one stops its task.
    pub(super) sinks: Vec<Sink>,
    /// The Alertmanager re-send timer.
    pub(super) resend: Option<JoinHandle<()>>,
    pub(super) refused_total: u64,
    /// Alerts whose count changed since the last stored write.
    pub(super) repeated: BTreeSet<String>,
    /// Whether a `PersistCounts` is scheduled.
    pub(super) counts_scheduled: bool,
    /// Whether the stored alerts were read (or reading them was given up).
    pub(super) loaded: bool,
    /// Changes made before the load finished, whose state write is still owed.
    pub(super) unsaved: bool,
    /// Events raised before the persister was running (it starts after this actor), committed
    /// once the load finds it; at most `PENDING_MAX`.
    pub(super) pending: Vec<Change>,
    pub(super) load_error: Option<String>,
    pub(super) store_failures: u64,
    pub(super) last_store_error: Option<String>,
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
    pub(super) fn new(args: AlertArgs) -> Self {
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
    pub(super) fn start_sinks(&mut self) {
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
    pub(super) fn notify_sinks(&mut self, record: &AlertRecord) {
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
    pub(super) fn resend_open(&mut self) {
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

    pub(super) fn record_mut(&mut self, alert_id: &str) -> Option<&mut AlertRecord> {
        self.recent
            .iter_mut()
            .rev()
            .find(|r| r.alert_id == alert_id)
    }

    /// Raises `alert`; returns the new record, or `None` when it was folded into an open one.
    pub(super) fn raise(&mut self, alert: Alert, now: Instant) -> Option<AlertRecord> {
        let window = self.args.config.dedup_window;
        if let Some(open) = self.open.get_mut(&alert.key)
            && now.saturating_duration_since(open.raised_at) < window
        {
            let at = crate::clock::now();
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
        let now_utc = crate::clock::now();
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
    pub(super) fn resolve(&mut self, key: &str) -> Option<AlertRecord> {
        let mut record = self.open.remove(key)?.record;
        let at = crate::clock::now();
        record.resolved_at = Some(at);
        if let Some(r) = self.record_mut(&record.alert_id) {
            r.resolved_at = Some(at);
        }
        Some(record)
    }

    /// Marks the alert acknowledged (idempotent); returns the record.
    pub(super) fn acknowledge(&mut self, alert_id: &str) -> Result<AlertRecord, AlertError> {
        let mut found = None;
        let at = crate::clock::now();
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

    pub(super) fn status(&self) -> AlertStatus {
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

    pub(super) fn trim_recent(&mut self) {
        while self.recent.len() > self.args.config.max_recent.max(1) {
            self.recent.pop_front();
        }
    }

    /// The open records, oldest first.
    pub(super) fn open_records(&self) -> Vec<AlertRecord> {
        let mut open: Vec<AlertRecord> = self.open.values().map(|o| o.record.clone()).collect();
        open.sort_by(|a, b| a.alert_id.cmp(&b.alert_id));
        open
    }

    /// The `alerts` state value as it is now.
    pub(super) fn stored_value(&self) -> Value {
        let stored = StoredAlerts {
            open: self.open_records(),
            recent: self.recent.iter().cloned().collect(),
        };
        serde_json::to_value(&stored).unwrap_or_else(|e| json!({ "encode_error": e.to_string() }))
    }

    /// Commits `event` through the persister with the current `alerts` state (once the stored
    /// alerts are loaded; before that the state write is owed, so the stored history is not
    /// overwritten by a partial one). Never waits: a task reports the outcome as `Stored`.
    pub(super) fn store(&mut self, myself: &ActorRef<AlertMsg>, event: Change) {
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

    pub(super) fn store_failed(&mut self, error: String) {
        self.store_failures += 1;
        self.last_store_error = Some(error);
    }

    /// Writes the counts of repeated alerts (one event for all of them) with the state.
    pub(super) fn persist_counts(&mut self, myself: &ActorRef<AlertMsg>) {
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
    pub(super) fn start_load(&self, myself: &ActorRef<AlertMsg>, attempt: u32) {
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
    pub(super) fn on_loaded(
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
            let age = (crate::clock::now() - record.timestamp)
                .to_std()
                .unwrap_or_default();
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

pub(super) fn log_raised(r: &AlertRecord) {
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
