//! Health by message: [`gather`] asks the root supervisor and the six actors for their `Status`
//! concurrently, each with its own timeout, and [`assess`] turns the replies into a report with
//! pure rules. Nothing here reads shared state: an actor that does not answer in time is
//! `unresponsive`, one that is not registered is `not_running`.
//!
//! Rules (documented in `docs/ARCHITECTURE.md`, pinned by the tests below):
//! - **unhealthy** when the supervisor or any actor is unresponsive or not running, a child is
//!   escalated, the broker has been disconnected longer than `broker_grace` or its circuit
//!   breaker is open, market data is older than `market_data_stale`, errors are logged faster
//!   than `error_rate_unhealthy_per_minute`, the event log was last written longer than
//!   `event_log_stale` ago, or the execution queue is STALLED (a strategy job running longer
//!   than `queue_stalled_after`);
//! - **degraded** when memory or CPU is above its threshold, or the broker is reconnecting within
//!   its grace period (a figure the heartbeat could not read is `unknown`: it never counts as
//!   0 % and never makes the verdict degraded; `system.unknown` says why);
//! - **healthy** otherwise.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::names::ChildName;
use crate::protocol::broker::LinkState;
use crate::protocol::heartbeat::SystemStats;
use crate::protocol::strategy::StrategyStatus;
use crate::protocol::supervisor::ChildState;
use crate::protocol::supervisor::SupervisorStatus;

mod config;
mod gather;
pub use crate::client::Reply;
pub use config::HealthConfig;
pub use gather::{Replies, gather, supervisor_alive};

/// The overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Verdict {
    /// `healthy`, `degraded` or `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Degraded => "degraded",
            Verdict::Unhealthy => "unhealthy",
        }
    }
}

/// What the daemon knows about itself that no actor reports.
#[derive(Debug, Clone)]
pub struct Context {
    pub now: DateTime<Utc>,
    pub uptime: Duration,
    pub version: &'static str,
}

/// The execution queue: whether strategy jobs are running, and whether one runs too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QueueStatus {
    /// No job running.
    Idle,
    /// Jobs running, none longer than `queue_stalled_after`.
    Processing,
    /// A job has run longer than `queue_stalled_after`.
    Stalled,
    /// The strategy actor did not answer.
    Unknown,
}

/// The queue status from the strategy's reply: the oldest running job decides.
pub fn queue_status(
    strategy: &Reply<StrategyStatus>,
    now: DateTime<Utc>,
    stalled_after: Duration,
) -> QueueStatus {
    let Some(s) = strategy.answered() else {
        return QueueStatus::Unknown;
    };
    let running: Vec<Option<DateTime<Utc>>> = s
        .strategies
        .iter()
        .filter(|i| i.job.is_some())
        .map(|i| i.job_started_at)
        .collect();
    if running.is_empty() {
        return QueueStatus::Idle;
    }
    let limit = chrono::Duration::from_std(stalled_after).unwrap_or(chrono::Duration::MAX);
    if running
        .iter()
        .flatten()
        .any(|started| now - *started > limit)
    {
        QueueStatus::Stalled
    } else {
        QueueStatus::Processing
    }
}

/// The activity facts of the brief's system health, each from the actor that owns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemHealth {
    /// From the heartbeat's system sample.
    pub error_rate_per_minute: f64,
    /// From the broker.
    pub last_market_data_at: Option<DateTime<Utc>>,
    /// The persister's last successful write (`last_write_at`).
    pub last_event_log_write_at: Option<DateTime<Utc>>,
    /// The persister's newest snapshot.
    pub last_snapshot_at: Option<DateTime<Utc>>,
    /// The persister's newest snapshot with capital (a failed snapshot holds an error instead).
    pub last_capital_snapshot_at: Option<DateTime<Utc>>,
    pub queue_status: QueueStatus,
}

/// How one system figure stands against its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reading {
    /// Read, at or below the threshold.
    Ok,
    /// Read, above the threshold.
    Degraded,
    /// Not readable (the percentage is `null`; `unknown` says why).
    Unknown,
}

impl Reading {
    fn of(value: Option<f64>, threshold: f64) -> Self {
        match value {
            Some(v) if v > threshold => Reading::Degraded,
            Some(_) => Reading::Ok,
            None => Reading::Unknown,
        }
    }
}

/// The `system` object of `/health`: the heartbeat's figures plus how memory and CPU stand.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemReport {
    #[serde(flatten)]
    pub stats: SystemStats,
    /// `ok`, `degraded` or `unknown` (then `memory_percent` is `null`).
    pub memory: Reading,
    /// `ok`, `degraded` or `unknown` (then `cpu_percent` is `null`).
    pub cpu: Reading,
}

/// One thing a health rule looked at and what it concluded: the per-component detail behind
/// the verdict (the `checks` of an `application/health+json` answer). Every reason in the
/// report is the `output` of one measurement, so the verdict is the worst measurement's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    /// The component: a child name, `supervisor`, or `memory`, `cpu`, `errors`, `event-log`,
    /// `execution-queue`.
    pub component: &'static str,
    /// What was measured: `status`, `connection`, `marketDataAge`, `utilization`, `rate`, `age`.
    pub measurement: &'static str,
    /// `component` (an actor or the queue), `system` (the process) or `datastore` (the store).
    pub component_type: &'static str,
    pub observed: Value,
    /// The unit of `observed`, when it is a number.
    pub unit: Option<&'static str>,
    pub status: Verdict,
    /// Why the status is not healthy (a reason of the report), or a fact worth showing.
    pub output: Option<String>,
}

impl Measurement {
    fn new(
        component: &'static str,
        measurement: &'static str,
        component_type: &'static str,
        observed: Value,
        unit: Option<&'static str>,
    ) -> Self {
        Self {
            component,
            measurement,
            component_type,
            observed,
            unit,
            status: Verdict::Healthy,
            output: None,
        }
    }

    /// Adds a fact worth showing without changing the status (e.g. why a figure is unknown).
    fn note(mut self, output: String) -> Self {
        self.output = Some(output);
        self
    }

    /// Marks it `status` with `reason`, and files the reason where [`assess`] collects them.
    fn fails(mut self, status: Verdict, reason: String, reasons: &mut Vec<String>) -> Self {
        self.status = status;
        self.output = Some(reason.clone());
        reasons.push(reason);
        self
    }
}

/// Why the sampler could not read `figure` (`memory` or `cpu`), from `system.unknown`.
fn unknown_reason(system: &SystemStats, figure: &str) -> String {
    let prefix = format!("{figure}: ");
    system
        .unknown
        .iter()
        .find_map(|u| u.strip_prefix(&prefix))
        .map_or_else(
            || "not readable".to_owned(),
            |why| format!("not readable: {why}"),
        )
}

/// A health report, serialized as the `/health` body.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub status: Verdict,
    pub timestamp: DateTime<Utc>,
    pub uptime_seconds: u64,
    pub version: &'static str,
    pub mode: String,
    /// Why the verdict is not `healthy` (empty when it is).
    pub reasons: Vec<String>,
    pub actors: BTreeMap<&'static str, Value>,
    pub system: SystemReport,
    /// Error rate, last market data, last event-log and snapshot writes, execution queue.
    pub system_health: SystemHealth,
    /// What each rule looked at (not in the `/health` JSON; `application/health+json` shows it).
    #[serde(skip)]
    pub measurements: Vec<Measurement>,
}

/// The media type of the `application/health+json` view (draft-inadarei-api-health-check).
pub const HEALTH_JSON: &str = "application/health+json";

impl Verdict {
    /// The draft's `pass`, `warn` or `fail`.
    pub fn health_json_status(self) -> &'static str {
        match self {
            Verdict::Healthy => "pass",
            Verdict::Degraded => "warn",
            Verdict::Unhealthy => "fail",
        }
    }
}

impl HealthReport {
    /// The report as an `application/health+json` body (draft-inadarei-api-health-check-06):
    /// `status` pass/warn/fail from the same verdict as `/health`, and one `checks` entry per
    /// measurement, keyed `<component>:<measurement>` (each actor's `status`, the broker's
    /// `connection` and `marketDataAge`, `memory`/`cpu:utilization`, `errors:rate`,
    /// `event-log:age`, `execution-queue:status`).
    pub fn health_json(&self) -> Value {
        let mut checks = serde_json::Map::new();
        for m in &self.measurements {
            let mut c = serde_json::Map::new();
            c.insert("componentType".into(), json!(m.component_type));
            c.insert("observedValue".into(), m.observed.clone());
            if let Some(unit) = m.unit {
                c.insert("observedUnit".into(), json!(unit));
            }
            c.insert("status".into(), json!(m.status.health_json_status()));
            c.insert("time".into(), json!(self.timestamp));
            if let Some(output) = &m.output {
                c.insert("output".into(), json!(output));
            }
            let key = format!("{}:{}", m.component, m.measurement);
            match checks.entry(key) {
                serde_json::map::Entry::Vacant(v) => {
                    v.insert(json!([Value::Object(c)]));
                }
                serde_json::map::Entry::Occupied(mut o) => {
                    if let Some(list) = o.get_mut().as_array_mut() {
                        list.push(Value::Object(c));
                    }
                }
            }
        }
        let mut body = json!({
            "status": self.status.health_json_status(),
            "version": self.version.split('.').next().unwrap_or(self.version),
            "releaseId": self.version,
            "serviceId": "tradebaas",
            "description": "TradeBaas trading runtime",
            "notes": [format!("trading mode {}", self.mode)],
            "checks": checks,
            "links": {"about": "/api/health/status"},
        });
        if !self.reasons.is_empty() {
            body["output"] = json!(self.reasons.join("; "));
        }
        body
    }
}

/// The readiness verdict: ready, or the reason why not.
pub fn readiness(replies: &Replies) -> Result<(), String> {
    let Some(sup) = replies.supervisor.answered() else {
        return Err("root supervisor does not answer".into());
    };
    for child in &sup.children {
        if child.state != ChildState::Running {
            return Err(format!("{} is {:?}", child.name, child.state).to_lowercase());
        }
    }
    match replies.fail_safe.answered() {
        Some(f) if f.loaded => {}
        Some(_) => return Err("fail-safe has not loaded the stored trading mode yet".into()),
        None => return Err("fail-safe does not answer".into()),
    }
    match replies.broker.answered() {
        Some(b) if b.state == LinkState::Connected && b.missing_subscriptions.is_empty() => Ok(()),
        Some(b) if b.state == LinkState::Connected => Err(format!(
            "broker connected but not subscribed to {}",
            b.missing_subscriptions.join(", ")
        )),
        Some(b) => Err(format!(
            "broker is {}",
            serde_json::to_value(b.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        )),
        None => Err("broker-connection does not answer".into()),
    }
}

/// The checks that failed in the fail-safe's newest checks report (empty when none failed, no
/// report yet, or the fail-safe does not answer), with their details: what `/ready` adds to its
/// body. Failed checks do not make the daemon unready: it runs, observing, in OBSERVE_ONLY.
pub fn failed_checks(replies: &Replies) -> Vec<crate::checks::Check> {
    replies
        .fail_safe
        .answered()
        .and_then(|f| f.checks.as_ref())
        .map(|r| r.checks.iter().filter(|c| !c.passed).cloned().collect())
        .unwrap_or_default()
}

/// Whether this run's start-up recovery has finished: the persister reports a stored recovery
/// report whose `finished_at` is not older than the process start (`uptime` ago).
pub fn recovery_finished(replies: &Replies, uptime: Duration) -> Result<(), String> {
    let since = crate::clock::now() - chrono::Duration::from_std(uptime).unwrap_or_default();
    let Some(p) = replies.persister.answered() else {
        return Err("state-persister does not answer".into());
    };
    let finished = p
        .recovery
        .as_ref()
        .and_then(|r| r.get("finished_at"))
        .and_then(|v| v.as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    match finished {
        Some(t) if t >= since => Ok(()),
        _ => Err("start-up recovery has not finished".into()),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One actor's entry: supervisor facts, reachability, then the actor's own status fields.
fn entry<T: Serialize>(
    child: ChildName,
    reply: &Reply<T>,
    sup: Option<&SupervisorStatus>,
    reasons: &mut Vec<String>,
) -> Value {
    let report = sup.and_then(|s| s.child(child));
    let mut status = match reply {
        Reply::Answered(_) => "running",
        Reply::Unresponsive => "unresponsive",
        Reply::NotRunning => "not_running",
    };
    if let Some(r) = report {
        match r.state {
            ChildState::Escalated => status = "escalated",
            ChildState::Restarting | ChildState::WaitingForSibling
                if !matches!(reply, Reply::Answered(_)) =>
            {
                status = "restarting"
            }
            _ => {}
        }
    }
    if status != "running" {
        reasons.push(format!("{child} is {status}"));
    }
    let mut obj = Map::new();
    obj.insert("status".into(), json!(status));
    obj.insert("restarts".into(), json!(report.map(|r| r.restarts)));
    obj.insert(
        "last_failure".into(),
        json!(report.and_then(|r| r.last_failure.clone())),
    );
    obj.insert(
        "started_at".into(),
        json!(report.and_then(|r| r.started_at)),
    );
    if let Some(next) = report.and_then(|r| r.next_restart_in_ms) {
        obj.insert("next_restart_in_ms".into(), json!(next));
    }
    if let Reply::Answered(t) = reply
        && let Ok(Value::Object(facts)) = serde_json::to_value(t)
    {
        for (k, v) in facts {
            // The actor's own `status` field (if any) must not hide reachability.
            let key = if k == "status" || obj.contains_key(&k) {
                format!("actor_{k}")
            } else {
                k
            };
            obj.insert(key, v);
        }
    }
    Value::Object(obj)
}

/// The verdict and report from the replies (pure: same replies, same report).
pub fn assess(replies: &Replies, config: &HealthConfig, ctx: &Context) -> HealthReport {
    let mut unhealthy = Vec::new();
    let mut degraded = Vec::new();
    let mut measurements = Vec::new();
    let sup = replies.supervisor.answered();
    let sup_status = match &replies.supervisor {
        Reply::Answered(_) => "running",
        Reply::Unresponsive => "unresponsive",
        Reply::NotRunning => "not_running",
    };
    let m = Measurement::new("supervisor", "status", "component", json!(sup_status), None);
    measurements.push(match &replies.supervisor {
        Reply::Answered(_) => m,
        Reply::Unresponsive => m.fails(
            Verdict::Unhealthy,
            "root supervisor is unresponsive".to_owned(),
            &mut unhealthy,
        ),
        Reply::NotRunning => m.fails(
            Verdict::Unhealthy,
            "root supervisor is not running".to_owned(),
            &mut unhealthy,
        ),
    });

    let mut actors = BTreeMap::new();
    actors.insert(
        ChildName::Alert.as_str(),
        entry(ChildName::Alert, &replies.alert, sup, &mut unhealthy),
    );
    actors.insert(
        ChildName::StatePersister.as_str(),
        entry(
            ChildName::StatePersister,
            &replies.persister,
            sup,
            &mut unhealthy,
        ),
    );
    actors.insert(
        ChildName::FailSafe.as_str(),
        entry(ChildName::FailSafe, &replies.fail_safe, sup, &mut unhealthy),
    );
    actors.insert(
        ChildName::Heartbeat.as_str(),
        entry(
            ChildName::Heartbeat,
            &replies.heartbeat,
            sup,
            &mut unhealthy,
        ),
    );
    actors.insert(
        ChildName::BrokerConnection.as_str(),
        entry(
            ChildName::BrokerConnection,
            &replies.broker,
            sup,
            &mut unhealthy,
        ),
    );
    actors.insert(
        ChildName::Strategy.as_str(),
        entry(ChildName::Strategy, &replies.strategy, sup, &mut unhealthy),
    );

    // The reasons `entry` filed, one per child that is not running, in the same order.
    for (&name, a) in &actors {
        let status = a["status"].as_str().unwrap_or("unknown");
        let mut m = Measurement::new(name, "status", "component", json!(status), None);
        if status != "running" {
            m.status = Verdict::Unhealthy;
            m.output = Some(format!("{name} is {status}"));
        }
        measurements.push(m);
    }

    if let Some(b) = replies.broker.answered() {
        let grace = ms(config.broker_grace);
        let m = Measurement::new(
            ChildName::BrokerConnection.as_str(),
            "connection",
            "component",
            serde_json::to_value(b.state).unwrap_or(Value::Null),
            None,
        );
        measurements.push(if b.state == LinkState::CircuitOpen {
            m.fails(
                Verdict::Unhealthy,
                "broker circuit breaker is open".into(),
                &mut unhealthy,
            )
        } else if b.state != LinkState::Connected {
            let down = b.disconnected_for_ms.unwrap_or(0);
            if down > grace {
                m.fails(
                    Verdict::Unhealthy,
                    format!("broker disconnected for {down} ms (grace {grace} ms)"),
                    &mut unhealthy,
                )
            } else {
                m.fails(
                    Verdict::Degraded,
                    format!("broker reconnecting ({down} ms)"),
                    &mut degraded,
                )
            }
        } else {
            m
        });
        let stale = ms(config.market_data_stale);
        let m = Measurement::new(
            ChildName::BrokerConnection.as_str(),
            "marketDataAge",
            "component",
            json!(b.market_data_age_ms),
            Some("ms"),
        );
        measurements.push(if b.market_data_age_ms > stale {
            m.fails(
                Verdict::Unhealthy,
                format!(
                    "market data is {} ms old (limit {stale} ms)",
                    b.market_data_age_ms
                ),
                &mut unhealthy,
            )
        } else {
            m
        });
    }

    let system = replies.heartbeat.answered().map_or_else(
        || SystemStats::unavailable(&format!("heartbeat {}", replies.heartbeat.describe())),
        |h| h.system.clone(),
    );
    // Without the heartbeat's sample there is nothing to show (its own status check fails).
    let sampled = replies.heartbeat.answered().is_some();
    let memory = Reading::of(system.memory_percent, config.memory_degraded_percent);
    let cpu = Reading::of(system.cpu_percent, config.cpu_degraded_percent);
    let m = Measurement::new(
        "memory",
        "utilization",
        "system",
        json!(system.memory_percent),
        Some("percent"),
    );
    let m = match (memory, system.memory_percent) {
        (Reading::Degraded, Some(p)) => m.fails(
            Verdict::Degraded,
            format!(
                "memory at {p:.1}% of {} (threshold {:.1}%)",
                match system.memory_limit_source {
                    Some(crate::protocol::heartbeat::LimitSource::Cgroup) => "the cgroup limit",
                    _ => "the machine's memory",
                },
                config.memory_degraded_percent
            ),
            &mut degraded,
        ),
        (Reading::Unknown, _) => m.note(unknown_reason(&system, "memory")),
        _ => m,
    };
    if sampled {
        measurements.push(m);
    }
    let m = Measurement::new(
        "cpu",
        "utilization",
        "system",
        json!(system.cpu_percent),
        Some("percent"),
    );
    let m = match (cpu, system.cpu_percent) {
        (Reading::Degraded, Some(c)) => m.fails(
            Verdict::Degraded,
            format!(
                "cpu at {c:.1}% (threshold {:.1}%)",
                config.cpu_degraded_percent
            ),
            &mut degraded,
        ),
        (Reading::Unknown, _) => m.note(unknown_reason(&system, "cpu")),
        _ => m,
    };
    if sampled {
        measurements.push(m);
    }

    let m = Measurement::new(
        "errors",
        "rate",
        "system",
        json!(system.error_rate_per_minute),
        Some("per_minute"),
    );
    let m = if system.error_rate_per_minute > config.error_rate_unhealthy_per_minute {
        m.fails(
            Verdict::Unhealthy,
            format!(
                "error rate {:.1}/min (limit {:.1}/min)",
                system.error_rate_per_minute, config.error_rate_unhealthy_per_minute
            ),
            &mut unhealthy,
        )
    } else {
        m
    };
    if sampled {
        measurements.push(m);
    }

    let persister = replies.persister.answered();
    if let Some(p) = persister {
        let stale = config.event_log_stale;
        let limit = chrono::Duration::from_std(stale).unwrap_or(chrono::Duration::MAX);
        let m = Measurement::new(
            "event-log",
            "age",
            "datastore",
            json!(
                p.last_write_at
                    .map(|at| (ctx.now - at).num_seconds().max(0))
            ),
            Some("s"),
        );
        measurements.push(match p.last_write_at {
            Some(at) if ctx.now - at > limit => m.fails(
                Verdict::Unhealthy,
                format!(
                    "event log last written {} s ago (limit {} s)",
                    (ctx.now - at).num_seconds(),
                    stale.as_secs()
                ),
                &mut unhealthy,
            ),
            Some(_) => m,
            // Nothing written this run: stale once the process is older than the limit.
            None if ctx.uptime > stale => m.fails(
                Verdict::Unhealthy,
                format!(
                    "no event-log write in {} s since start (limit {} s)",
                    ctx.uptime.as_secs(),
                    stale.as_secs()
                ),
                &mut unhealthy,
            ),
            None => m,
        });
    }

    let queue = queue_status(&replies.strategy, ctx.now, config.queue_stalled_after);
    let m = Measurement::new("execution-queue", "status", "component", json!(queue), None);
    match queue {
        QueueStatus::Stalled => measurements.push(m.fails(
            Verdict::Unhealthy,
            format!(
                "execution queue STALLED: a strategy job has run longer than {} s",
                config.queue_stalled_after.as_secs()
            ),
            &mut unhealthy,
        )),
        // The strategy did not answer: its status check already fails.
        QueueStatus::Unknown => {}
        _ => measurements.push(m),
    }
    let system_health = SystemHealth {
        error_rate_per_minute: system.error_rate_per_minute,
        last_market_data_at: replies
            .broker
            .answered()
            .and_then(|b| b.last_market_data_at),
        last_event_log_write_at: persister.and_then(|p| p.last_write_at),
        last_snapshot_at: persister.and_then(|p| p.last_snapshot_at),
        last_capital_snapshot_at: persister.and_then(|p| p.last_capital_snapshot_at),
        queue_status: queue,
    };

    let status = if !unhealthy.is_empty() {
        Verdict::Unhealthy
    } else if !degraded.is_empty() {
        Verdict::Degraded
    } else {
        Verdict::Healthy
    };
    let mode = replies
        .fail_safe
        .answered()
        .map(|f| f.mode.as_str().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    unhealthy.extend(degraded);
    HealthReport {
        status,
        timestamp: ctx.now,
        uptime_seconds: ctx.uptime.as_secs(),
        version: ctx.version,
        mode,
        reasons: unhealthy,
        actors,
        system: SystemReport {
            stats: system,
            memory,
            cpu,
        },
        system_health,
        measurements,
    }
}

#[cfg(test)]
pub(crate) mod tests;
