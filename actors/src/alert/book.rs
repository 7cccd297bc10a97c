//! The alert actor's decisions as a pure state machine: which raise is a new record and which a
//! repeat folded into an open one (the dedup window), resolve, acknowledge, the rate at which
//! repeat counts reach the store, and the merge of the stored history under this run's records.
//! Each [`Event`] returns the [`Effect`]s the actor carries out (log, store, notify the sinks,
//! schedule, answer).
//!
//! It owns the open alerts, the recent records and the counters. It does no I/O, talks to no
//! actor, reads no clock and makes no ids: the monotonic `now`, the wall-clock `at` and a new
//! record's id are passed in. It imports only data types (`record`, `config`, `store::Change`).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use super::{ALERTS_STATE_KEY, AlertConfig};
use crate::protocol::alert::{Alert, AlertError, AlertRecord, AlertStatus, Severity, alert_kind};
use crate::store::Change;

/// The `alerts` state value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StoredAlerts {
    #[serde(default)]
    open: Vec<AlertRecord>,
    #[serde(default)]
    recent: Vec<AlertRecord>,
}

/// What happened, as the alert decisions see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Raise (or repeat) `alert`; `alert_id` names the record if it is a new one.
    Raise { alert: Alert, alert_id: String },
    /// Close the open alert with this key, if any.
    Resolve { key: String },
    /// An operator acknowledges this alert.
    Acknowledge { alert_id: String },
    /// The count-persist interval after a repeat has passed.
    PersistCounts,
    /// A read of the stored `alerts` value answered.
    Loaded {
        attempt: u32,
        result: Result<Option<Value>, String>,
    },
}

/// What the actor must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Commit this change (the `alerts` state is attached once the stored alerts are loaded).
    Store(Change),
    /// Hand this raised or resolved record to every sink.
    Notify(AlertRecord),
    /// Send `PersistCounts` after [`super::COUNT_PERSIST_INTERVAL`].
    SchedulePersistCounts,
    /// Read the stored alerts again (attempt `attempt`) after the retry delay.
    ScheduleLoad { attempt: u32 },
    /// Answer the acknowledging caller.
    Reply(Result<AlertRecord, AlertError>),
    /// Log this.
    Log(Note),
}

/// What the actor logs, one variant per log line.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A key that is no allowed alert kind (error).
    Refused { key: String, title: String },
    /// A new record (the alert's own log line, at its severity).
    Raised(AlertRecord),
    /// A repeat folded into an open alert (debug).
    Repeat {
        alert_id: String,
        key: String,
        count: Option<u64>,
    },
    /// An open alert was resolved (info).
    Resolved { alert_id: String, key: String },
    /// A resolve for a key with no open alert (debug).
    NothingToResolve { key: String },
    /// An alert was acknowledged (info).
    Acknowledged { alert_id: String, key: String },
    /// The stored history could not be decoded (error).
    HistoryUnreadable { error: String },
    /// A read failed; another follows (debug).
    LoadRetry { attempt: u32, error: String },
    /// The last read failed; the history starts empty (error).
    LoadGaveUp { attempts: u32, error: String },
    /// The stored history was merged (info).
    HistoryLoaded {
        open: usize,
        restored_open: usize,
        superseded: usize,
        recent: usize,
    },
}

/// One open alert.
#[derive(Debug, Clone)]
struct Open {
    /// The open record as it is now (count and acknowledgement kept current).
    record: AlertRecord,
    /// When it was raised, on the monotonic clock (the dedup window runs from here).
    raised_at: Instant,
}

/// The alert decision state.
#[derive(Debug, Clone)]
pub struct AlertBook {
    dedup_window: Duration,
    max_recent: usize,
    load_attempts: u32,
    /// Open alerts by key.
    open: HashMap<String, Open>,
    recent: VecDeque<AlertRecord>,
    raised_total: u64,
    deduplicated_total: u64,
    refused_total: u64,
    /// Alerts whose count changed since the last stored write.
    repeated: BTreeSet<String>,
    /// Whether a `PersistCounts` is scheduled.
    counts_scheduled: bool,
    /// Whether the stored alerts were read (or reading them was given up).
    loaded: bool,
    /// Changes made before the load finished, whose state write is still owed.
    unsaved: bool,
    /// Events raised before the persister was running (it starts after the alert actor),
    /// committed once the load finds it; at most `pending_max`.
    pending: Vec<Change>,
    pending_max: usize,
    load_error: Option<String>,
}

impl AlertBook {
    /// An empty book, not loaded yet; reading the stored alerts is given up after
    /// `load_attempts`, and at most `pending_max` changes wait for the persister meanwhile.
    pub fn new(config: &AlertConfig, load_attempts: u32, pending_max: usize) -> Self {
        Self {
            dedup_window: config.dedup_window,
            max_recent: config.max_recent,
            load_attempts,
            open: HashMap::new(),
            recent: VecDeque::new(),
            raised_total: 0,
            deduplicated_total: 0,
            refused_total: 0,
            repeated: BTreeSet::new(),
            counts_scheduled: false,
            loaded: false,
            unsaved: false,
            pending: Vec::new(),
            pending_max,
            load_error: None,
        }
    }

    /// Whether the stored alerts were read (or reading them was given up).
    pub fn loaded(&self) -> bool {
        self.loaded
    }

    /// Keeps `change` (an [`Effect::Store`] the actor found no persister for) until the load
    /// finds the persister; false when it cannot be kept (already loaded, or too many waiting).
    pub fn hold_until_loaded(&mut self, change: Change) -> bool {
        if self.loaded || self.pending.len() >= self.pending_max {
            return false;
        }
        self.pending.push(change);
        true
    }

    /// The open records, oldest first.
    pub fn open_records(&self) -> Vec<AlertRecord> {
        let mut open: Vec<AlertRecord> = self.open.values().map(|o| o.record.clone()).collect();
        open.sort_by(|a, b| a.alert_id.cmp(&b.alert_id));
        open
    }

    /// The status, with what only the actor knows (its sinks and store failures) filled in by
    /// the caller.
    pub fn status(&self) -> AlertStatus {
        AlertStatus {
            open: self.open.len(),
            open_critical: self
                .open
                .values()
                .filter(|o| o.record.alert.severity == Severity::Critical)
                .count(),
            raised_total: self.raised_total,
            deduplicated_total: self.deduplicated_total,
            recent: self.recent.iter().cloned().collect(),
            open_alerts: self.open_records(),
            refused_total: self.refused_total,
            history_loaded: self.loaded,
            history_load_error: self.load_error.clone(),
            store_failures: 0,
            last_store_error: None,
            sinks_failing: 0,
            sinks: Vec::new(),
        }
    }

    /// Decides what `event` changes and what must be done.
    pub fn on(&mut self, event: Event, now: Instant, at: DateTime<Utc>) -> Vec<Effect> {
        let mut out = Vec::new();
        match event {
            Event::Raise { alert, alert_id } => {
                if alert_kind(&alert.key).is_none() {
                    self.refused_total += 1;
                    out.push(Effect::Log(Note::Refused {
                        key: alert.key,
                        title: alert.title,
                    }));
                    return out;
                }
                match self.raise(alert, alert_id, now, at, &mut out) {
                    Some(record) => {
                        out.push(Effect::Log(Note::Raised(record.clone())));
                        let payload = serde_json::to_value(&record).unwrap_or_else(
                            |e| json!({ "alert_id": record.alert_id, "encode_error": e.to_string() }),
                        );
                        out.push(self.store(Change::event("alert_raised", payload)));
                        out.push(Effect::Notify(record));
                    }
                    None if !self.counts_scheduled => {
                        self.counts_scheduled = true;
                        out.push(Effect::SchedulePersistCounts);
                    }
                    None => {}
                }
            }
            Event::Resolve { key } => match self.resolve(&key, at) {
                Some(record) => {
                    out.push(Effect::Log(Note::Resolved {
                        alert_id: record.alert_id.clone(),
                        key: key.clone(),
                    }));
                    out.push(self.store(Change::event(
                        "alert_resolved",
                        json!({
                            "alert_id": record.alert_id,
                            "key": key,
                            "count": record.count,
                            "resolved_at": record.resolved_at,
                        }),
                    )));
                    out.push(Effect::Notify(record));
                }
                None => out.push(Effect::Log(Note::NothingToResolve { key })),
            },
            Event::Acknowledge { alert_id } => {
                let result = self.acknowledge(&alert_id, at);
                if let Ok(record) = &result {
                    out.push(Effect::Log(Note::Acknowledged {
                        alert_id: alert_id.clone(),
                        key: record.alert.key.clone(),
                    }));
                    out.push(self.store(Change::event(
                        "alert_acknowledged",
                        json!({
                            "alert_id": alert_id,
                            "key": record.alert.key,
                            "count": record.count,
                            "acknowledged_at": record.acknowledged_at,
                        }),
                    )));
                }
                out.push(Effect::Reply(result));
            }
            Event::PersistCounts => self.persist_counts(&mut out),
            Event::Loaded { attempt, result } => self.on_loaded(attempt, result, now, at, &mut out),
        }
        out
    }

    fn record_mut(&mut self, alert_id: &str) -> Option<&mut AlertRecord> {
        self.recent
            .iter_mut()
            .rev()
            .find(|r| r.alert_id == alert_id)
    }

    /// Raises `alert`; returns the new record, or `None` when it was folded into an open one.
    fn raise(
        &mut self,
        alert: Alert,
        alert_id: String,
        now: Instant,
        at: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) -> Option<AlertRecord> {
        if let Some(open) = self.open.get_mut(&alert.key)
            && now.saturating_duration_since(open.raised_at) < self.dedup_window
        {
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
            out.push(Effect::Log(Note::Repeat {
                alert_id,
                key: alert.key,
                count,
            }));
            return None;
        }
        // A repeat after the window is a fresh record (a reminder) that takes the key over.
        let record = AlertRecord {
            alert_id,
            timestamp: at,
            alert,
            acknowledged: false,
            count: 1,
            last_raised_at: Some(at),
            acknowledged_at: None,
            resolved_at: None,
        };
        self.open.insert(
            record.alert.key.clone(),
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
    fn resolve(&mut self, key: &str, at: DateTime<Utc>) -> Option<AlertRecord> {
        let mut record = self.open.remove(key)?.record;
        record.resolved_at = Some(at);
        if let Some(r) = self.record_mut(&record.alert_id) {
            r.resolved_at = Some(at);
        }
        Some(record)
    }

    /// Marks the alert acknowledged (idempotent); returns the record.
    fn acknowledge(
        &mut self,
        alert_id: &str,
        at: DateTime<Utc>,
    ) -> Result<AlertRecord, AlertError> {
        let mut found = None;
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

    fn trim_recent(&mut self) {
        while self.recent.len() > self.max_recent.max(1) {
            self.recent.pop_front();
        }
    }

    /// The `alerts` state value as it is now.
    fn stored_value(&self) -> Value {
        let stored = StoredAlerts {
            open: self.open_records(),
            recent: self.recent.iter().cloned().collect(),
        };
        serde_json::to_value(&stored).unwrap_or_else(|e| json!({ "encode_error": e.to_string() }))
    }

    /// `event` to be committed with the current `alerts` state (once the stored alerts are
    /// loaded; before that the state write is owed, so the stored history is not overwritten by
    /// a partial one). Every stored state carries every count, so no count is owed after it.
    fn store(&mut self, event: Change) -> Effect {
        self.repeated.clear();
        if self.loaded {
            Effect::Store(event.set(ALERTS_STATE_KEY, self.stored_value()))
        } else {
            self.unsaved = true;
            Effect::Store(event)
        }
    }

    /// Writes the counts of repeated alerts (one event for all of them) with the state.
    fn persist_counts(&mut self, out: &mut Vec<Effect>) {
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
                    .map(
                        |r| json!({ "alert_id": r.alert_id, "key": r.alert.key, "count": r.count }),
                    )
            })
            .collect();
        out.push(self.store(Change::event(
            "alert_repeated",
            json!({ "alerts": repeated }),
        )));
    }

    /// Merges the stored alerts under what this run raised already (this run's records win).
    fn on_loaded(
        &mut self,
        attempt: u32,
        result: Result<Option<Value>, String>,
        now: Instant,
        at: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        if self.loaded {
            return;
        }
        let stored = match result {
            Ok(None) => StoredAlerts::default(),
            Ok(Some(value)) => match serde_json::from_value::<StoredAlerts>(value) {
                Ok(stored) => stored,
                Err(e) => {
                    out.push(Effect::Log(Note::HistoryUnreadable {
                        error: e.to_string(),
                    }));
                    self.load_error = Some(format!("stored alert history unreadable: {e}"));
                    StoredAlerts::default()
                }
            },
            Err(e) if attempt < self.load_attempts => {
                out.push(Effect::Log(Note::LoadRetry { attempt, error: e }));
                out.push(Effect::ScheduleLoad {
                    attempt: attempt + 1,
                });
                return;
            }
            Err(e) => {
                self.load_error = Some(format!("stored alerts could not be loaded: {e}"));
                out.push(Effect::Log(Note::LoadGaveUp {
                    attempts: attempt,
                    error: e,
                }));
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
        let (restored_open, mut superseded) = (stored.open.len(), 0usize);
        for record in stored.open {
            if self.open.contains_key(&record.alert.key) {
                superseded += 1;
                continue;
            }
            // The dedup window keeps running from the first raise, across the restart.
            let age = (at - record.timestamp).to_std().unwrap_or_default();
            let raised_at = now.checked_sub(age).unwrap_or(now);
            self.open
                .insert(record.alert.key.clone(), Open { record, raised_at });
        }
        out.push(Effect::Log(Note::HistoryLoaded {
            open: self.open.len(),
            restored_open,
            superseded,
            recent: self.recent.len(),
        }));
        let pending = std::mem::take(&mut self.pending);
        let owed = std::mem::take(&mut self.unsaved);
        if !pending.is_empty() {
            // Now loaded, each commit carries the merged state as well.
            for change in pending {
                out.push(self.store(change));
            }
        } else if owed {
            out.push(self.store(Change::event(
                "alert_history_merged",
                json!({ "open": self.open.len(), "recent": self.recent.len() }),
            )));
        }
    }
}

#[cfg(test)]
#[path = "book_tests.rs"]
mod tests;
