//! The fail-safe's watch: every `evaluate_interval` it gathers every actor's status (the same
//! replies `/health` is built from) and [`Watch::evaluate`] turns them into findings with pure
//! rules, each with its own threshold from `[fail_safe.triggers]`:
//!
//! | trigger | condition | action |
//! |---|---|---|
//! | `market_data_stalled` | subscribed, and no market data for `market_data_stalled` | SHUTDOWN |
//! | `event_log_failing` | event-log writes failing for `event_log_failing` | SHUTDOWN |
//! | `snapshot_failing` | no snapshot *with capital* written for `snapshot_failing` (one holding an error instead of an account summary is a failed snapshot) | SHUTDOWN |
//! | `unhealthy` | `/health` unhealthy for longer than `unhealthy_grace` | SHUTDOWN |
//! | `error_rate` | more than `error_rate_per_minute` errors logged in the last minute | SHUTDOWN |
//! | `heartbeat_missing` | no heartbeat round for `heartbeat_missing` | OBSERVE_ONLY |
//!
//! Ages are measured from the newest of the observed time and the run's start, so a daemon that
//! was stopped for a day does not trip on its own downtime. A finding fires once when its
//! condition starts; it fires again only after the condition has cleared and come back.
//! `capital_inconsistent` (the periodic reconciliation) and `restart_intensity` (the supervisor's
//! escalation hook) are sent to the fail-safe by those components directly.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::health::{self, HealthConfig, Replies, Verdict};

/// `[fail_safe.triggers]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriggerConfig {
    /// How often the conditions below are evaluated.
    #[serde(with = "humantime_serde")]
    pub evaluate_interval: Duration,
    /// No market data for this long while subscribed → SHUTDOWN.
    #[serde(with = "humantime_serde")]
    pub market_data_stalled: Duration,
    /// Event-log writes failing for this long → SHUTDOWN.
    #[serde(with = "humantime_serde")]
    pub event_log_failing: Duration,
    /// No snapshot with capital written for this long → SHUTDOWN (snapshots are daily; one
    /// holding an error instead of an account summary does not count).
    #[serde(with = "humantime_serde")]
    pub snapshot_failing: Duration,
    /// `/health` unhealthy for longer than this → SHUTDOWN.
    #[serde(with = "humantime_serde")]
    pub unhealthy_grace: Duration,
    /// More errors than this logged within one minute → SHUTDOWN.
    pub error_rate_per_minute: f64,
    /// No heartbeat round for this long → OBSERVE_ONLY and an alert.
    #[serde(with = "humantime_serde")]
    pub heartbeat_missing: Duration,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        Self {
            evaluate_interval: Duration::from_secs(5),
            market_data_stalled: Duration::from_secs(10 * 60),
            event_log_failing: Duration::from_secs(15 * 60),
            snapshot_failing: Duration::from_secs(25 * 3600),
            unhealthy_grace: Duration::from_secs(10 * 60),
            error_rate_per_minute: 10.0,
            heartbeat_missing: Duration::from_secs(120),
        }
    }
}

impl TriggerConfig {
    /// Checks the values; the error names the field (under `triggers.`).
    pub fn validate(&self) -> Result<(), String> {
        for (name, d) in [
            ("evaluate_interval", self.evaluate_interval),
            ("market_data_stalled", self.market_data_stalled),
            ("event_log_failing", self.event_log_failing),
            ("snapshot_failing", self.snapshot_failing),
            ("unhealthy_grace", self.unhealthy_grace),
            ("heartbeat_missing", self.heartbeat_missing),
        ] {
            if d.is_zero() {
                return Err(format!("triggers.{name} must be greater than 0"));
            }
        }
        if !(self.error_rate_per_minute.is_finite() && self.error_rate_per_minute > 0.0) {
            return Err("triggers.error_rate_per_minute must be a number greater than 0".into());
        }
        Ok(())
    }
}

/// What a finding asks of the fail-safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Latch SHUTDOWN (a fail-safe trigger, with its CRITICAL alert).
    Shutdown,
    /// Restrict to OBSERVE_ONLY and raise an alert.
    ObserveOnly,
    /// Raise an alert only (resolved when the condition ends, see [`Watch::take_ended`]).
    Alert,
}

/// One condition that started.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub trigger: &'static str,
    pub reason: String,
    pub action: Action,
}

/// What the watch remembers between evaluations.
#[derive(Debug, Clone)]
pub struct Watch {
    config: TriggerConfig,
    health: HealthConfig,
    /// The baseline for ages: the run's start (or when the watch began).
    since: DateTime<Utc>,
    unhealthy_since: Option<DateTime<Utc>>,
    heartbeat_silent_since: Option<DateTime<Utc>>,
    /// Conditions currently holding (each fired once when it started).
    active: BTreeSet<&'static str>,
    /// Conditions that stopped holding at the last evaluation.
    ended: Vec<&'static str>,
}

/// The finding raised while the store's filesystem is below `[store] disk_free_floor`.
pub const DISK_LOW: &str = "disk_low";

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn age(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (now - at).to_std().unwrap_or_default()
}

fn secs(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// A condition that has lasted `lasted` against its `limit`: held once it is over the limit,
/// with the reason `describe` writes from both (formatted as whole seconds).
fn over(
    trigger: &'static str,
    action: Action,
    lasted: Duration,
    limit: Duration,
    describe: impl FnOnce(String, String) -> String,
) -> Option<Finding> {
    (lasted > limit).then(|| Finding {
        trigger,
        reason: describe(secs(lasted), secs(limit)),
        action,
    })
}

impl Watch {
    pub fn new(config: TriggerConfig, health: HealthConfig, since: DateTime<Utc>) -> Self {
        Self {
            config,
            health,
            since,
            unhealthy_since: None,
            heartbeat_silent_since: None,
            active: BTreeSet::new(),
            ended: Vec::new(),
        }
    }

    /// Moves the baseline (to the run's start, once the stored run marker is known).
    pub fn set_since(&mut self, since: DateTime<Utc>) {
        self.since = since;
    }

    /// The conditions that stopped holding at the last [`Watch::evaluate`] (taken once).
    pub fn take_ended(&mut self) -> Vec<&'static str> {
        std::mem::take(&mut self.ended)
    }

    /// The conditions holding now.
    pub fn active(&self) -> Vec<String> {
        self.active.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Evaluates every rule against `replies` at `now`; returns the conditions that started.
    pub fn evaluate(
        &mut self,
        replies: &Replies,
        now: DateTime<Utc>,
        uptime: Duration,
    ) -> Vec<Finding> {
        let mut holding: Vec<Finding> = Vec::new();
        let c = self.config.clone();
        let since = self.since;
        let from = |at: Option<DateTime<Utc>>| age(now, at.map_or(since, |t| t.max(since)));

        if let Some(b) = replies.broker.answered()
            && !b.subscriptions.is_empty()
        {
            holding.extend(over(
                "market_data_stalled",
                Action::Shutdown,
                from(b.last_market_data_at),
                c.market_data_stalled,
                |lasted, limit| format!("no market data for {lasted} (threshold {limit})"),
            ));
        }
        if let Some(p) = replies.persister.answered() {
            if let Some(failing) = p.failing_since {
                holding.extend(over(
                    "event_log_failing",
                    Action::Shutdown,
                    age(now, failing),
                    c.event_log_failing,
                    |lasted, limit| {
                        format!(
                            "event-log writes failing for {lasted} (threshold {limit}): {}",
                            p.last_error.as_deref().unwrap_or("unknown error")
                        )
                    },
                ));
            }
            // A snapshot without capital is a failed snapshot: only one with capital resets it.
            holding.extend(over(
                "snapshot_failing",
                Action::Shutdown,
                from(p.last_capital_snapshot_at),
                c.snapshot_failing,
                |lasted, limit| {
                    let failed = match p.last_snapshot_at {
                        Some(at) if p.last_capital_snapshot_at.is_none_or(|good| at > good) => {
                            format!(
                                "; the newest snapshot ({}) holds no capital (the exchange did \
                                 not answer)",
                                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                            )
                        }
                        _ => String::new(),
                    };
                    format!(
                        "no snapshot with capital written for {lasted} (threshold {limit}){failed}"
                    )
                },
            ));
        }
        if let Some(p) = replies.persister.answered()
            && let Some(free) = p.disk_free_bytes
        {
            let floor = p.disk_free_floor_bytes;
            // Once low, it clears only 10 % above the floor: no alert flapping at the line.
            let low = if self.active.contains(DISK_LOW) {
                free < floor.saturating_add(floor / 10)
            } else {
                free < floor
            };
            if low {
                holding.push(Finding {
                    trigger: DISK_LOW,
                    reason: format!(
                        "{} free on the data directory's filesystem, below the floor of {} \
                         ([store] disk_free_floor); writes fail when it is full",
                        mib(free),
                        mib(floor)
                    ),
                    action: Action::Alert,
                });
            }
        }
        if let Some(h) = replies.heartbeat.answered() {
            let rate = h.system.error_rate_per_minute;
            if rate > c.error_rate_per_minute {
                holding.push(Finding {
                    trigger: "error_rate",
                    reason: format!(
                        "{rate:.0} errors logged in the last minute (threshold {})",
                        c.error_rate_per_minute
                    ),
                    action: Action::Shutdown,
                });
            }
        }
        let last_beat = replies.heartbeat.answered().and_then(|h| h.last_beat_at);
        let silent = match last_beat {
            Some(t) => Some(t),
            // Not answering, or no round yet: silent since the first time we noticed.
            None => Some(*self.heartbeat_silent_since.get_or_insert(now)),
        };
        if last_beat.is_some() {
            self.heartbeat_silent_since = None;
        }
        holding.extend(over(
            "heartbeat_missing",
            Action::ObserveOnly,
            from(silent),
            c.heartbeat_missing,
            |lasted, limit| {
                format!(
                    "no heartbeat for {lasted} (threshold {limit}; heartbeat {})",
                    replies.heartbeat.describe()
                )
            },
        ));

        let ctx = health::Context {
            now,
            uptime,
            version: "",
        };
        let report = health::assess(replies, &self.health, &ctx);
        if report.status == Verdict::Unhealthy {
            let since = *self.unhealthy_since.get_or_insert(now);
            holding.extend(over(
                "unhealthy",
                Action::Shutdown,
                age(now, since),
                c.unhealthy_grace,
                |lasted, grace| {
                    format!(
                        "health unhealthy for {lasted} (grace {grace}): {}",
                        report.reasons.join("; ")
                    )
                },
            ));
        } else {
            self.unhealthy_since = None;
        }

        let now_active: BTreeSet<&'static str> = holding.iter().map(|f| f.trigger).collect();
        self.ended = self.active.difference(&now_active).copied().collect();
        let started = holding
            .into_iter()
            .filter(|f| !self.active.contains(f.trigger))
            .collect();
        self.active = now_active;
        started
    }
}

#[cfg(test)]
#[path = "triggers_tests.rs"]
mod tests;
