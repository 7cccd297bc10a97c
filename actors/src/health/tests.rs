//! The health rules on hand-built replies: one test per rule.

use std::time::Duration;

use chrono::Utc;

use super::*;
use crate::alert::AlertStatus;
use crate::broker::BrokerStatus;
use crate::failsafe::FailSafeStatus;
use crate::heartbeat::HeartbeatStatus;
use crate::mode::TradingMode;
use crate::persister::PersisterStatus;
use crate::supervisor::ChildReport;
use crate::supervisor::policy::{RestartType, SupervisionStrategy};

fn supervisor(state_of: impl Fn(ChildName) -> ChildState) -> SupervisorStatus {
    SupervisorStatus {
        strategy: SupervisionStrategy::OneForOne,
        shutting_down: false,
        children: ChildName::START_ORDER
            .iter()
            .map(|c| ChildReport {
                name: *c,
                state: state_of(*c),
                restart_type: RestartType::Permanent,
                restarts: 0,
                last_failure: None,
                started_at: Some(Utc::now()),
                next_restart_in_ms: None,
            })
            .collect(),
    }
}

fn broker(state: LinkState, disconnected_ms: Option<u64>, age_ms: u64) -> BrokerStatus {
    BrokerStatus {
        state,
        url: "ws://127.0.0.1:1/ws/api/v2".into(),
        authenticated: true,
        connected_since: None,
        disconnected_for_ms: disconnected_ms,
        last_message_at: None,
        last_market_data_at: None,
        market_data_age_ms: age_ms,
        reconnect_attempts: 0,
        consecutive_failures: 0,
        circuit_breaker: if state == LinkState::CircuitOpen {
            "open"
        } else {
            "closed"
        },
        circuit_open_remaining_ms: None,
        next_attempt_in_ms: None,
        subscriptions: vec!["ticker.BTC-PERPETUAL.100ms".into()],
        missing_subscriptions: vec![],
        market_data_messages: 1,
        malformed_frames: 0,
        test_requests_answered: 0,
        last_error: None,
        cancel_on_disconnect: "off",
    }
}

pub(crate) fn healthy_replies() -> Replies {
    Replies {
        supervisor: Reply::Answered(supervisor(|_| ChildState::Running)),
        alert: Reply::Answered(AlertStatus {
            history_loaded: true,
            ..AlertStatus::default()
        }),
        persister: Reply::Answered(PersisterStatus {
            path: "x.db".into(),
            schema_version: 1,
            last_seq: 0,
            writes_ok: 0,
            writes_failed: 0,
            last_write_at: None,
            last_write_ms: None,
            failing_since: None,
            last_error: None,
            queue_depth: 0,
            backups_dir: "backups".into(),
            last_backup_at: None,
            last_backup_error: None,
            backups: None,
            recovery: None,
            last_snapshot_at: None,
            last_capital_snapshot_at: None,
            disk_free_bytes: None,
            disk_free_floor_bytes: 1 << 30,
        }),
        fail_safe: Reply::Answered(FailSafeStatus {
            mode: TradingMode::ObserveOnly,
            loaded: true,
            reason: "initial".into(),
            changed_at: None,
            initial_mode: TradingMode::ObserveOnly,
            initial_mode_reason: "test".into(),
            triggers: 0,
            last_trigger: None,
            recovered: true,
            conditions: vec![],
            checks: None,
        }),
        heartbeat: Reply::Answered(HeartbeatStatus {
            beats: 1,
            last_beat_at: None,
            round_trip_ms: Default::default(),
            unanswered: vec![],
            absent: vec![],
            escalated: vec![],
            system: SystemStats {
                memory_percent: Some(1.0),
                cpu_percent: Some(1.0),
                rss_bytes: Some(10 << 20),
                memory_limit_bytes: Some(1 << 30),
                memory_limit_source: Some(crate::heartbeat::LimitSource::Cgroup),
                total_memory_bytes: None,
                error_rate_per_minute: 0.0,
                unknown: vec![],
            },
            interval_ms: 5000,
        }),
        broker: Reply::Answered(broker(LinkState::Connected, None, 100)),
        strategy: Reply::Answered(StrategyStatus {
            active: 1,
            strategies: vec![],
            records_loaded: true,
            load_error: None,
            ticks_received: 1,
            last_tick_at: None,
            execution_enabled: true,
            instrument_specs: vec![],
            orphans_cancelled: 0,
            equity_age_ms: std::collections::BTreeMap::new(),
        }),
    }
}

fn ctx() -> Context {
    Context {
        now: Utc::now(),
        uptime: Duration::from_secs(3),
        version: "test",
    }
}

fn verdict(r: &Replies) -> (Verdict, Vec<String>) {
    let report = assess(r, &HealthConfig::default(), &ctx());
    (report.status, report.reasons)
}

#[test]
fn all_answering_and_connected_is_healthy() {
    let r = healthy_replies();
    let report = assess(&r, &HealthConfig::default(), &ctx());
    assert_eq!(report.status, Verdict::Healthy, "{:?}", report.reasons);
    assert_eq!(report.actors.len(), 6);
    assert_eq!(report.mode, "OBSERVE_ONLY");
    assert_eq!(report.actors["broker-connection"]["state"], "connected");
    assert_eq!(report.actors["broker-connection"]["status"], "running");
    assert_eq!(report.actors["strategy"]["restarts"], 0);
    assert_eq!(readiness(&r), Ok(()));
}

#[test]
fn an_unresponsive_actor_is_unhealthy() {
    let mut r = healthy_replies();
    r.strategy = Reply::Unresponsive;
    let (v, reasons) = verdict(&r);
    assert_eq!(v, Verdict::Unhealthy);
    assert_eq!(reasons, ["strategy is unresponsive"]);
    let report = assess(&r, &HealthConfig::default(), &ctx());
    assert_eq!(report.actors["strategy"]["status"], "unresponsive");
}

#[test]
fn a_stopped_or_escalated_child_is_unhealthy() {
    let mut r = healthy_replies();
    r.persister = Reply::NotRunning;
    assert_eq!(verdict(&r).0, Verdict::Unhealthy);

    let mut r = healthy_replies();
    r.supervisor = Reply::Answered(supervisor(|c| {
        if c == ChildName::Strategy {
            ChildState::Escalated
        } else {
            ChildState::Running
        }
    }));
    r.strategy = Reply::NotRunning;
    let (v, reasons) = verdict(&r);
    assert_eq!(v, Verdict::Unhealthy);
    assert_eq!(reasons, ["strategy is escalated"]);
    assert!(readiness(&r).is_err());
}

#[test]
fn an_unresponsive_supervisor_is_unhealthy() {
    let mut r = healthy_replies();
    r.supervisor = Reply::Unresponsive;
    assert_eq!(verdict(&r).0, Verdict::Unhealthy);
}

#[test]
fn a_broker_reconnecting_within_grace_is_degraded_beyond_it_unhealthy() {
    let mut r = healthy_replies();
    r.broker = Reply::Answered(broker(LinkState::Reconnecting, Some(4_000), 100));
    assert_eq!(verdict(&r).0, Verdict::Degraded);
    assert!(readiness(&r).is_err());
    r.broker = Reply::Answered(broker(LinkState::Reconnecting, Some(5_001), 100));
    let (v, reasons) = verdict(&r);
    assert_eq!(v, Verdict::Unhealthy);
    assert!(
        reasons[0].contains("disconnected for 5001 ms"),
        "{reasons:?}"
    );
}

#[test]
fn an_open_circuit_breaker_is_unhealthy() {
    let mut r = healthy_replies();
    r.broker = Reply::Answered(broker(LinkState::CircuitOpen, Some(1_000), 100));
    let (v, reasons) = verdict(&r);
    assert_eq!(v, Verdict::Unhealthy);
    assert_eq!(reasons, ["broker circuit breaker is open"]);
}

#[test]
fn stale_market_data_is_unhealthy() {
    let mut r = healthy_replies();
    r.broker = Reply::Answered(broker(LinkState::Connected, None, 300_001));
    let (v, reasons) = verdict(&r);
    assert_eq!(v, Verdict::Unhealthy);
    assert!(
        reasons[0].starts_with("market data is 300001 ms old"),
        "{reasons:?}"
    );
    r.broker = Reply::Answered(broker(LinkState::Connected, None, 300_000));
    assert_eq!(verdict(&r).0, Verdict::Healthy);
}

#[test]
fn memory_or_cpu_over_threshold_is_degraded() {
    for (mem, cpu) in [(85.0, 1.0), (1.0, 95.0)] {
        let mut r = healthy_replies();
        if let Reply::Answered(h) = &mut r.heartbeat {
            h.system.memory_percent = Some(mem);
            h.system.cpu_percent = Some(cpu);
        }
        assert_eq!(verdict(&r).0, Verdict::Degraded, "mem {mem} cpu {cpu}");
    }
}

#[test]
fn unknown_memory_or_cpu_is_reported_unknown_never_zero_and_never_degraded() {
    let mut r = healthy_replies();
    if let Reply::Answered(h) = &mut r.heartbeat {
        h.system.memory_percent = None;
        h.system.memory_limit_bytes = None;
        h.system.memory_limit_source = None;
        h.system.cpu_percent = None;
        h.system.unknown = vec![
            "memory: no memory limit to measure RSS against".into(),
            "cpu: /proc/self/stat not readable".into(),
        ];
    }
    let report = assess(&r, &HealthConfig::default(), &ctx());
    assert_eq!(report.status, Verdict::Healthy, "{:?}", report.reasons);
    let v = serde_json::to_value(&report).unwrap();
    let sys = &v["system"];
    assert!(sys["memory_percent"].is_null(), "{sys}");
    assert!(sys["cpu_percent"].is_null(), "{sys}");
    assert_eq!(sys["memory"], "unknown");
    assert_eq!(sys["cpu"], "unknown");
    assert_eq!(sys["rss_bytes"], 10 << 20);
    assert!(
        sys["unknown"][0]
            .as_str()
            .is_some_and(|u| u.starts_with("memory:")),
        "{sys}"
    );
    // Read and above the threshold: degraded, and the reason names the cgroup limit.
    if let Reply::Answered(h) = &mut r.heartbeat {
        h.system.memory_percent = Some(85.0);
        h.system.memory_limit_source = Some(crate::heartbeat::LimitSource::Cgroup);
    }
    let report = assess(&r, &HealthConfig::default(), &ctx());
    assert_eq!(report.status, Verdict::Degraded);
    assert_eq!(report.system.memory, Reading::Degraded);
    assert!(
        report.reasons[0].contains("cgroup limit"),
        "{:?}",
        report.reasons
    );
    // No heartbeat answer: every figure unknown, with the reason.
    r.heartbeat = Reply::Unresponsive;
    let report = assess(&r, &HealthConfig::default(), &ctx());
    assert_eq!(report.system.memory, Reading::Unknown);
    assert!(
        report.system.stats.unknown[0].contains("heartbeat unresponsive"),
        "{:?}",
        report.system.stats.unknown
    );
}

#[test]
fn readiness_needs_the_mode_loaded_and_every_channel_subscribed() {
    let mut r = healthy_replies();
    if let Reply::Answered(f) = &mut r.fail_safe {
        f.loaded = false;
    }
    assert!(readiness(&r).unwrap_err().contains("fail-safe"));
    let mut r = healthy_replies();
    if let Reply::Answered(b) = &mut r.broker {
        b.missing_subscriptions = vec!["ticker.X.100ms".into()];
    }
    assert!(readiness(&r).unwrap_err().contains("ticker.X.100ms"));
}

#[test]
fn the_report_serializes_in_the_documented_shape() {
    let report = assess(&healthy_replies(), &HealthConfig::default(), &ctx());
    let v = serde_json::to_value(&report).unwrap();
    for k in [
        "status",
        "timestamp",
        "uptime_seconds",
        "version",
        "mode",
        "actors",
        "system",
        "system_health",
    ] {
        assert!(!v[k].is_null(), "missing {k}");
    }
    assert_eq!(v["status"], "healthy");
    for k in [
        "memory_percent",
        "cpu_percent",
        "rss_bytes",
        "error_rate_per_minute",
    ] {
        assert!(v["system"][k].is_number(), "system.{k}");
    }
    assert_eq!(v["system"]["memory"], "ok");
    assert_eq!(v["system"]["cpu"], "ok");
    assert_eq!(v["system"]["memory_limit_source"], "cgroup");
    assert_eq!(v["system_health"]["queue_status"], "IDLE");
    for k in [
        "last_market_data_at",
        "last_event_log_write_at",
        "last_snapshot_at",
    ] {
        assert!(v["system_health"].get(k).is_some(), "system_health.{k}");
    }
}

/// A strategy instance running `job` since `started_ago` (none when `started_ago` is None).
fn instance(started_ago: Option<Duration>) -> crate::strategy::StrategyInstanceStatus {
    crate::strategy::StrategyInstanceStatus {
        id: "s1".into(),
        instrument: "BTC-PERPETUAL".into(),
        lifecycle: crate::strategy::Lifecycle::Idle,
        position: None,
        intents_in_flight: 0,
        restored: false,
        updated_at: None,
        ticks: 0,
        last_mark_price: None,
        signals: 0,
        last_decision: None,
        last_decision_at: None,
        job: started_ago.map(|_| "check"),
        job_started_at: started_ago.map(|d| ctx().now - chrono::Duration::from_std(d).unwrap()),
        last_refusal: None,
        last_error: None,
        next_intent_seq: 0,
    }
}

#[test]
fn an_error_rate_above_the_limit_is_unhealthy() {
    let mut r = healthy_replies();
    if let Reply::Answered(h) = &mut r.heartbeat {
        h.system.error_rate_per_minute = 10.0;
    }
    assert_eq!(verdict(&r).0, Verdict::Healthy, "the limit itself is fine");
    if let Reply::Answered(h) = &mut r.heartbeat {
        h.system.error_rate_per_minute = 10.5;
    }
    let (v, reasons) = verdict(&r);
    assert_eq!(v, Verdict::Unhealthy);
    assert_eq!(reasons, ["error rate 10.5/min (limit 10.0/min)"]);
    let report = assess(&r, &HealthConfig::default(), &ctx());
    assert_eq!(report.system_health.error_rate_per_minute, 10.5);
}

#[test]
fn an_event_log_older_than_the_limit_is_unhealthy() {
    let c = ctx();
    let mut r = healthy_replies();
    if let Reply::Answered(p) = &mut r.persister {
        p.last_write_at = Some(c.now - chrono::Duration::seconds(599));
    }
    assert_eq!(verdict(&r).0, Verdict::Healthy);
    if let Reply::Answered(p) = &mut r.persister {
        p.last_write_at = Some(c.now - chrono::Duration::seconds(601));
    }
    let (v, reasons) = verdict(&r);
    assert_eq!(v, Verdict::Unhealthy);
    assert_eq!(reasons, ["event log last written 601 s ago (limit 600 s)"]);

    // Nothing written yet is fine while the process is younger than the limit, not after.
    let mut r = healthy_replies();
    let young = assess(&r, &HealthConfig::default(), &c);
    assert_eq!(young.status, Verdict::Healthy);
    let old = Context {
        uptime: Duration::from_secs(601),
        ..ctx()
    };
    let report = assess(&r, &HealthConfig::default(), &old);
    assert_eq!(report.status, Verdict::Unhealthy);
    assert!(
        report.reasons[0].starts_with("no event-log write"),
        "{:?}",
        report.reasons
    );
    if let Reply::Answered(p) = &mut r.persister {
        p.last_write_at = Some(old.now);
        p.last_snapshot_at = Some(old.now - chrono::Duration::hours(1));
    }
    let report = assess(&r, &HealthConfig::default(), &old);
    assert_eq!(report.status, Verdict::Healthy);
    assert_eq!(report.system_health.last_event_log_write_at, Some(old.now));
    assert!(report.system_health.last_snapshot_at.is_some());
}

#[test]
fn the_queue_is_idle_processing_or_stalled_and_stalled_is_unhealthy() {
    let config = HealthConfig::default();
    let mut r = healthy_replies();
    let queue = |r: &Replies| assess(r, &config, &ctx()).system_health.queue_status;
    assert_eq!(queue(&r), QueueStatus::Idle);
    if let Reply::Answered(s) = &mut r.strategy {
        s.strategies = vec![instance(None), instance(Some(Duration::from_secs(10)))];
    }
    assert_eq!(queue(&r), QueueStatus::Processing);
    assert_eq!(verdict(&r).0, Verdict::Healthy);
    if let Reply::Answered(s) = &mut r.strategy {
        s.strategies.push(instance(Some(Duration::from_secs(301))));
    }
    assert_eq!(queue(&r), QueueStatus::Stalled);
    let (v, reasons) = verdict(&r);
    assert_eq!(v, Verdict::Unhealthy);
    assert_eq!(
        reasons,
        ["execution queue STALLED: a strategy job has run longer than 300 s"]
    );
    r.strategy = Reply::Unresponsive;
    assert_eq!(queue(&r), QueueStatus::Unknown);
    let v = serde_json::to_value(QueueStatus::Stalled).unwrap();
    assert_eq!(v, "STALLED");
}

#[test]
fn new_health_keys_are_validated_by_name() {
    let bad = HealthConfig {
        event_log_stale: Duration::ZERO,
        ..HealthConfig::default()
    };
    assert!(bad.validate().unwrap_err().contains("event_log_stale"));
    let bad = HealthConfig {
        queue_stalled_after: Duration::ZERO,
        ..HealthConfig::default()
    };
    assert!(bad.validate().unwrap_err().contains("queue_stalled_after"));
    let bad = HealthConfig {
        error_rate_unhealthy_per_minute: f64::NAN,
        ..HealthConfig::default()
    };
    assert!(
        bad.validate()
            .unwrap_err()
            .contains("error_rate_unhealthy_per_minute")
    );
    assert_eq!(HealthConfig::default().validate(), Ok(()));
}

/// One reply set per rule above, each with the context it needs.
fn every_rule() -> Vec<(&'static str, Replies, Context)> {
    let c = ctx();
    let with = |f: &dyn Fn(&mut Replies)| {
        let mut r = healthy_replies();
        f(&mut r);
        r
    };
    vec![
        ("healthy", healthy_replies(), ctx()),
        (
            "actor unresponsive",
            with(&|r| r.strategy = Reply::Unresponsive),
            ctx(),
        ),
        (
            "actor not running",
            with(&|r| r.persister = Reply::NotRunning),
            ctx(),
        ),
        (
            "supervisor unresponsive",
            with(&|r| r.supervisor = Reply::Unresponsive),
            ctx(),
        ),
        (
            "reconnecting within grace",
            with(&|r| {
                r.broker = Reply::Answered(broker(LinkState::Reconnecting, Some(4_000), 100))
            }),
            ctx(),
        ),
        (
            "disconnected beyond grace",
            with(&|r| {
                r.broker = Reply::Answered(broker(LinkState::Reconnecting, Some(9_000), 100))
            }),
            ctx(),
        ),
        (
            "circuit open",
            with(&|r| r.broker = Reply::Answered(broker(LinkState::CircuitOpen, Some(1_000), 100))),
            ctx(),
        ),
        (
            "stale market data",
            with(&|r| r.broker = Reply::Answered(broker(LinkState::Connected, None, 400_000))),
            ctx(),
        ),
        (
            "memory and cpu high, errors fast",
            with(&|r| {
                if let Reply::Answered(h) = &mut r.heartbeat {
                    h.system.memory_percent = Some(85.0);
                    h.system.cpu_percent = Some(95.0);
                    h.system.error_rate_per_minute = 11.0;
                }
            }),
            ctx(),
        ),
        (
            "event log stale",
            with(&|r| {
                if let Reply::Answered(p) = &mut r.persister {
                    p.last_write_at = Some(c.now - chrono::Duration::seconds(601));
                }
            }),
            c.clone(),
        ),
        (
            "queue stalled",
            with(&|r| {
                if let Reply::Answered(s) = &mut r.strategy {
                    s.strategies = vec![instance(Some(Duration::from_secs(301)))];
                }
            }),
            ctx(),
        ),
    ]
}

#[test]
fn every_reason_is_one_measurement_and_the_verdict_is_the_worst() {
    for (what, r, c) in every_rule() {
        let report = assess(&r, &HealthConfig::default(), &c);
        let mut outputs: Vec<String> = report
            .measurements
            .iter()
            .filter(|m| m.status != Verdict::Healthy)
            .map(|m| m.output.clone().unwrap_or_default())
            .collect();
        let mut reasons = report.reasons.clone();
        outputs.sort();
        reasons.sort();
        assert_eq!(outputs, reasons, "{what}");
        let worst = report.measurements.iter().map(|m| m.status).max();
        assert_eq!(worst, Some(report.status), "{what}");
        let mut keys: Vec<_> = report
            .measurements
            .iter()
            .map(|m| (m.component, m.measurement))
            .collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "{what}: a measurement twice");
    }
}

#[test]
fn measurements_name_what_was_looked_at() {
    let report = assess(&healthy_replies(), &HealthConfig::default(), &ctx());
    let keys: Vec<String> = report
        .measurements
        .iter()
        .map(|m| format!("{}:{}", m.component, m.measurement))
        .collect();
    assert_eq!(
        keys,
        [
            "supervisor:status",
            "alert:status",
            "broker-connection:status",
            "fail-safe:status",
            "heartbeat:status",
            "state-persister:status",
            "strategy:status",
            "broker-connection:connection",
            "broker-connection:marketDataAge",
            "memory:utilization",
            "cpu:utilization",
            "errors:rate",
            "event-log:age",
            "execution-queue:status",
        ]
    );
    let mut r = healthy_replies();
    r.broker = Reply::Answered(broker(LinkState::Reconnecting, Some(4_000), 100));
    r.heartbeat = Reply::Unresponsive;
    let report = assess(&r, &HealthConfig::default(), &ctx());
    let link = report
        .measurements
        .iter()
        .find(|m| m.component == "broker-connection" && m.measurement == "connection")
        .unwrap();
    assert_eq!(link.status, Verdict::Degraded);
    assert_eq!(link.observed, "reconnecting");
    assert_eq!(
        link.output.as_deref(),
        Some("broker reconnecting (4000 ms)")
    );
    // No sample, no system measurements (the heartbeat's own status fails instead).
    assert!(
        !report
            .measurements
            .iter()
            .any(|m| m.component_type == "system"),
        "{:?}",
        report.measurements
    );
}

#[test]
fn the_health_json_view_follows_the_draft() {
    let report = assess(&healthy_replies(), &HealthConfig::default(), &ctx());
    let body = report.health_json();
    assert_eq!(body["status"], "pass");
    assert_eq!(body["releaseId"], report.version);
    assert!(body.get("output").is_none(), "{body}");
    let checks = body["checks"].as_object().unwrap();
    for actor in ChildName::START_ORDER.map(ChildName::as_str) {
        let c = &checks[&format!("{actor}:status")][0];
        assert_eq!(c["status"], "pass", "{actor}: {c}");
        assert_eq!(c["observedValue"], "running");
        assert_eq!(c["componentType"], "component");
    }
    assert_eq!(
        checks["broker-connection:marketDataAge"][0]["observedUnit"],
        "ms"
    );

    // Reconnecting within grace: warn, the check says why; the overall output too.
    let mut r = healthy_replies();
    r.broker = Reply::Answered(broker(LinkState::Reconnecting, Some(4_000), 100));
    let body = assess(&r, &HealthConfig::default(), &ctx()).health_json();
    assert_eq!(body["status"], "warn");
    let link = &body["checks"]["broker-connection:connection"][0];
    assert_eq!(link["status"], "warn");
    assert_eq!(link["observedValue"], "reconnecting");
    assert_eq!(link["output"], "broker reconnecting (4000 ms)");
    assert_eq!(body["output"], "broker reconnecting (4000 ms)");

    // An unresponsive actor: fail, on that actor's check.
    let mut r = healthy_replies();
    r.strategy = Reply::Unresponsive;
    let body = assess(&r, &HealthConfig::default(), &ctx()).health_json();
    assert_eq!(body["status"], "fail");
    assert_eq!(body["checks"]["strategy:status"][0]["status"], "fail");
    assert_eq!(body["checks"]["alert:status"][0]["status"], "pass");
}
