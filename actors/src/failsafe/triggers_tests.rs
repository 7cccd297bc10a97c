//! Each trigger rule on hand-built replies: it fires past its threshold, not before, once per
//! episode, and ages count from the run's start.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;
use crate::client::Reply;
use crate::health::tests::healthy_replies;

const MIN: Duration = Duration::from_secs(60);

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn at(offset: Duration) -> DateTime<Utc> {
    t0() + chrono::Duration::from_std(offset).unwrap()
}

fn watch() -> Watch {
    Watch::new(TriggerConfig::default(), HealthConfig::default(), t0())
}

/// Replies that trip nothing at `now`: fresh market data, a fresh snapshot and heartbeat.
fn fresh(now: DateTime<Utc>) -> Replies {
    let mut r = healthy_replies();
    if let Reply::Answered(b) = &mut r.broker {
        b.last_market_data_at = Some(now);
    }
    if let Reply::Answered(p) = &mut r.persister {
        p.last_snapshot_at = Some(now);
        p.last_capital_snapshot_at = Some(now);
        p.last_write_at = Some(now);
    }
    if let Reply::Answered(h) = &mut r.heartbeat {
        h.last_beat_at = Some(now);
    }
    r
}

fn fired(w: &mut Watch, r: &Replies, now: DateTime<Utc>) -> Vec<&'static str> {
    w.evaluate(r, now, Duration::from_secs(1))
        .into_iter()
        .map(|f| f.trigger)
        .collect()
}

#[test]
fn nothing_fires_on_fresh_replies() {
    let mut w = watch();
    let now = at(30 * MIN);
    assert!(fired(&mut w, &fresh(now), now).is_empty());
    assert!(w.active().is_empty());
}

#[test]
fn market_data_stalled_fires_after_its_threshold_and_once_per_episode() {
    let mut w = watch();
    let mut r = fresh(at(60 * MIN));
    if let Reply::Answered(b) = &mut r.broker {
        b.last_market_data_at = Some(at(50 * MIN));
    }
    // 9 minutes old: nothing yet.
    assert!(fired(&mut w, &r, at(59 * MIN)).is_empty());
    let found = w.evaluate(&r, at(60 * MIN) + Duration::from_secs(1), MIN);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].trigger, "market_data_stalled");
    assert_eq!(found[0].action, Action::Shutdown);
    assert!(
        found[0].reason.contains("no market data for 10m"),
        "{}",
        found[0].reason
    );
    // Still stalled: not fired again.
    assert!(!fired(&mut w, &r, at(61 * MIN)).contains(&"market_data_stalled"));
    assert_eq!(w.active(), vec!["market_data_stalled".to_string()]);
    // Cleared, then stalled again: fires again.
    assert!(fired(&mut w, &fresh(at(61 * MIN)), at(61 * MIN)).is_empty());
    assert!(w.active().is_empty());
    assert_eq!(fired(&mut w, &r, at(61 * MIN)), vec!["market_data_stalled"]);
}

#[test]
fn market_data_is_not_expected_without_subscriptions_and_counts_from_the_run_start() {
    let mut w = watch();
    let mut r = fresh(t0());
    if let Reply::Answered(b) = &mut r.broker {
        b.last_market_data_at = None;
        b.subscriptions.clear();
    }
    assert!(!fired(&mut w, &r, at(60 * MIN)).contains(&"market_data_stalled"));
    // Subscribed, never any data: the age counts from the run's start (t0), not from 1970.
    if let Reply::Answered(b) = &mut r.broker {
        b.subscriptions.push("ticker.BTC-PERPETUAL.100ms".into());
    }
    let mut w = watch();
    if let Reply::Answered(p) = &mut r.persister {
        p.last_snapshot_at = None;
        p.last_capital_snapshot_at = None;
    }
    assert!(!fired(&mut w, &r, at(9 * MIN)).contains(&"market_data_stalled"));
    // Data older than the run start counts from the run start too.
    if let Reply::Answered(b) = &mut r.broker {
        b.last_market_data_at = Some(t0() - chrono::Duration::days(3));
    }
    assert!(!fired(&mut w, &r, at(9 * MIN)).contains(&"market_data_stalled"));
    assert!(fired(&mut w, &r, at(11 * MIN)).contains(&"market_data_stalled"));
}

#[test]
fn event_log_failing_fires_after_fifteen_minutes_of_failed_writes() {
    let mut w = watch();
    let now = at(100 * MIN);
    let mut r = fresh(now);
    if let Reply::Answered(p) = &mut r.persister {
        p.failing_since = Some(at(86 * MIN));
        p.last_error = Some("disk I/O error".into());
    }
    assert!(fired(&mut w, &r, now).is_empty());
    let found = w.evaluate(&r, at(101 * MIN + Duration::from_secs(1)), MIN);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].trigger, "event_log_failing");
    assert!(
        found[0].reason.contains("disk I/O error"),
        "{}",
        found[0].reason
    );
}

#[test]
fn snapshot_failing_fires_after_twenty_five_hours_without_a_snapshot() {
    let mut w = watch();
    let hours = |h: u64| Duration::from_secs(h * 3600);
    let mut r = fresh(at(hours(30)));
    if let Reply::Answered(p) = &mut r.persister {
        p.last_snapshot_at = Some(at(hours(5)));
        p.last_capital_snapshot_at = Some(at(hours(5)));
    }
    assert!(!fired(&mut w, &r, at(hours(29))).contains(&"snapshot_failing"));
    assert!(fired(&mut w, &r, at(hours(31))).contains(&"snapshot_failing"));
    // A daemon that was down for two days does not trip on its downtime: the age counts from
    // the run's start.
    let mut w = Watch::new(
        TriggerConfig::default(),
        HealthConfig::default(),
        at(hours(30)),
    );
    assert!(!fired(&mut w, &r, at(hours(31))).contains(&"snapshot_failing"));
}

#[test]
fn error_rate_fires_above_ten_per_minute() {
    let mut w = watch();
    let now = at(5 * MIN);
    let mut r = fresh(now);
    if let Reply::Answered(h) = &mut r.heartbeat {
        h.system.error_rate_per_minute = 10.0;
    }
    assert!(
        fired(&mut w, &r, now).is_empty(),
        "10/min is the limit, not over it"
    );
    if let Reply::Answered(h) = &mut r.heartbeat {
        h.system.error_rate_per_minute = 11.0;
    }
    let found = w.evaluate(&r, now, MIN);
    assert_eq!(found[0].trigger, "error_rate");
    assert!(
        found[0].reason.starts_with("11 errors"),
        "{}",
        found[0].reason
    );
}

#[test]
fn unhealthy_fires_only_beyond_its_grace() {
    let mut w = watch();
    let mut r = fresh(t0());
    r.strategy = Reply::Unresponsive;
    let mut now = at(MIN);
    for _ in 0..10 {
        if let Reply::Answered(h) = &mut r.heartbeat {
            h.last_beat_at = Some(now);
        }
        if let Reply::Answered(b) = &mut r.broker {
            b.last_market_data_at = Some(now);
        }
        assert!(fired(&mut w, &r, now).is_empty(), "within the grace");
        now += chrono::Duration::minutes(1);
    }
    // Healthy for a moment resets the clock.
    let healthy = fresh(now);
    assert!(fired(&mut w, &healthy, now).is_empty());
    let start = now;
    let mut found = vec![];
    while found.is_empty() && now < start + chrono::Duration::minutes(20) {
        now += chrono::Duration::seconds(30);
        if let Reply::Answered(h) = &mut r.heartbeat {
            h.last_beat_at = Some(now);
        }
        if let Reply::Answered(b) = &mut r.broker {
            b.last_market_data_at = Some(now);
        }
        found = w.evaluate(&r, now, MIN);
    }
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].trigger, "unhealthy");
    assert_eq!(found[0].action, Action::Shutdown);
    assert!(
        found[0].reason.contains("strategy is unresponsive"),
        "{}",
        found[0].reason
    );
    assert_eq!(
        now - start,
        chrono::Duration::seconds(660),
        "unhealthy since start+30s, first evaluation past the 10 min grace"
    );
}

#[test]
fn heartbeat_missing_restricts_to_observe_only_after_two_minutes() {
    let mut w = watch();
    let mut r = fresh(at(10 * MIN));
    if let Reply::Answered(h) = &mut r.heartbeat {
        h.last_beat_at = Some(at(9 * MIN));
    }
    assert!(fired(&mut w, &r, at(10 * MIN)).is_empty());
    let found = w.evaluate(&r, at(11 * MIN + Duration::from_secs(1)), MIN);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].trigger, "heartbeat_missing");
    assert_eq!(found[0].action, Action::ObserveOnly);

    // A heartbeat that does not answer at all is silent from when that was first seen.
    let mut w = watch();
    let mut r = fresh(at(10 * MIN));
    r.heartbeat = Reply::Unresponsive;
    assert!(!fired(&mut w, &r, at(10 * MIN)).contains(&"heartbeat_missing"));
    assert!(!fired(&mut w, &r, at(11 * MIN)).contains(&"heartbeat_missing"));
    let found = fired(&mut w, &r, at(12 * MIN + Duration::from_secs(1)));
    assert!(found.contains(&"heartbeat_missing"), "{found:?}");
}

#[test]
fn trigger_config_validation_names_the_key() {
    assert_eq!(TriggerConfig::default().validate(), Ok(()));
    let bad = TriggerConfig {
        market_data_stalled: Duration::ZERO,
        ..TriggerConfig::default()
    };
    assert!(
        bad.validate()
            .unwrap_err()
            .contains("triggers.market_data_stalled")
    );
    let bad = TriggerConfig {
        error_rate_per_minute: f64::NAN,
        ..TriggerConfig::default()
    };
    assert!(
        bad.validate()
            .unwrap_err()
            .contains("triggers.error_rate_per_minute")
    );
}

#[test]
fn a_snapshot_without_capital_does_not_reset_snapshot_failing() {
    let mut w = watch();
    let hours = |h: u64| Duration::from_secs(h * 3600);
    let mut r = fresh(at(hours(30)));
    // The last snapshot with capital was 26 h before; every one since held an error.
    if let Reply::Answered(p) = &mut r.persister {
        p.last_capital_snapshot_at = Some(at(hours(4)));
        p.last_snapshot_at = Some(at(hours(29)));
    }
    let found = w.evaluate(&r, at(hours(30)), hours(30));
    let f = found
        .iter()
        .find(|f| f.trigger == "snapshot_failing")
        .unwrap_or_else(|| panic!("snapshot_failing did not fire: {found:?}"));
    assert!(f.reason.contains("holds no capital"), "{}", f.reason);
    assert_eq!(f.action, Action::Shutdown);
    // Only failed snapshots since the run's start: counted from the start.
    let mut w = watch();
    if let Reply::Answered(p) = &mut r.persister {
        p.last_capital_snapshot_at = None;
    }
    assert!(!fired(&mut w, &r, at(hours(24))).contains(&"snapshot_failing"));
    assert!(fired(&mut w, &r, at(hours(26))).contains(&"snapshot_failing"));
}

#[test]
fn disk_below_the_floor_alerts_once_and_ends_only_ten_percent_above_it() {
    let mut w = watch();
    let now = at(30 * MIN);
    let with_free = |free: Option<u64>| {
        let mut r = fresh(now);
        if let Reply::Answered(p) = &mut r.persister {
            p.disk_free_floor_bytes = 1000;
            p.disk_free_bytes = free;
        }
        r
    };
    assert!(
        fired(&mut w, &with_free(Some(1000)), now).is_empty(),
        "at the floor: fine"
    );
    // Unknown free space is not "low".
    assert!(fired(&mut w, &with_free(None), now).is_empty());
    let findings = w.evaluate(&with_free(Some(999)), now, Duration::from_secs(1));
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].trigger, DISK_LOW);
    assert_eq!(findings[0].action, Action::Alert);
    assert!(
        findings[0].reason.contains("below the floor"),
        "{}",
        findings[0].reason
    );
    assert!(w.take_ended().is_empty());
    // Once per episode; back at the floor it still holds (hysteresis).
    assert!(fired(&mut w, &with_free(Some(500)), now).is_empty());
    assert!(fired(&mut w, &with_free(Some(1050)), now).is_empty());
    assert_eq!(w.active(), [DISK_LOW]);
    assert!(w.take_ended().is_empty());
    // 10 % above: it ends, once.
    assert!(fired(&mut w, &with_free(Some(1100)), now).is_empty());
    assert_eq!(w.take_ended(), [DISK_LOW]);
    assert!(w.take_ended().is_empty());
    assert!(w.active().is_empty());
    // A new episode fires again.
    assert_eq!(fired(&mut w, &with_free(Some(10)), now), [DISK_LOW]);
}
