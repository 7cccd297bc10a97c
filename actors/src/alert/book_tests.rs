//! The alert book on its own: plain tests, no runtime, no actor, both clocks and ids passed in.

use super::*;
use chrono::TimeZone;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// Both clocks, `secs` after the start.
struct Clock(Instant);

impl Clock {
    fn new() -> Self {
        Clock(Instant::now())
    }

    fn mono(&self, secs: u64) -> Instant {
        self.0 + Duration::from_secs(secs)
    }
}

fn wall(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

fn alert(key: &str) -> Alert {
    Alert {
        key: key.into(),
        severity: Severity::Critical,
        title: format!("{key} happened"),
        message: "m".into(),
        root_cause: "r".into(),
        recommended_action: "a".into(),
        metadata: json!({}),
    }
}

fn config() -> AlertConfig {
    AlertConfig {
        dedup_window: Duration::from_secs(60),
        max_recent: 3,
        ..AlertConfig::default()
    }
}

/// A book whose (empty) stored history is loaded.
fn loaded_book(clock: &Clock) -> AlertBook {
    let mut b = AlertBook::new(&config(), 5, 10);
    b.on(
        Event::Loaded {
            attempt: 1,
            result: Ok(None),
        },
        clock.mono(0),
        wall(0),
    );
    b
}

fn raise(b: &mut AlertBook, clock: &Clock, key: &str, id: &str, secs: u64) -> Vec<Effect> {
    b.on(
        Event::Raise {
            alert: alert(key),
            alert_id: id.into(),
        },
        clock.mono(secs),
        wall(secs as i64),
    )
}

fn stores(effects: &[Effect]) -> Vec<&Change> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Store(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn has_state(change: &Change) -> bool {
    change.state.iter().any(|w| w.key == ALERTS_STATE_KEY)
}

#[test]
fn a_repeat_inside_the_window_is_folded_and_after_it_is_a_new_record() {
    let clock = Clock::new();
    let mut b = loaded_book(&clock);
    let first = raise(&mut b, &clock, "failsafe:x", "id-1", 0);
    let stored = stores(&first);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event.kind, "alert_raised");
    assert!(has_state(stored[0]));
    assert!(matches!(first.last(), Some(Effect::Notify(r)) if r.alert_id == "id-1"));

    let repeat = raise(&mut b, &clock, "failsafe:x", "id-2", 59);
    assert!(stores(&repeat).is_empty(), "a repeat is not stored at once");
    assert!(repeat.contains(&Effect::SchedulePersistCounts));
    assert!(!repeat.iter().any(|e| matches!(e, Effect::Notify(_))));
    let s = b.status();
    assert_eq!((s.open, s.raised_total, s.deduplicated_total), (1, 1, 1));
    assert_eq!(s.open_alerts[0].count, 2);
    assert_eq!(s.open_alerts[0].last_raised_at, Some(wall(59)));
    assert_eq!(s.recent[0].count, 2, "the history's record counts too");

    // The window runs from the first raise, not the last repeat.
    let reminder = raise(&mut b, &clock, "failsafe:x", "id-3", 60);
    assert_eq!(stores(&reminder).len(), 1);
    let s = b.status();
    assert_eq!((s.open, s.raised_total), (1, 2));
    assert_eq!(s.open_alerts[0].alert_id, "id-3");
    assert_eq!(s.open_alerts[0].timestamp, wall(60));
}

#[test]
fn a_storm_of_repeats_is_one_scheduled_count_write() {
    let clock = Clock::new();
    let mut b = loaded_book(&clock);
    raise(&mut b, &clock, "heartbeat:missing", "id-1", 0);
    let mut scheduled = 0;
    for i in 0..1000 {
        let effects = raise(&mut b, &clock, "heartbeat:missing", &format!("x{i}"), 1);
        scheduled += effects
            .iter()
            .filter(|e| **e == Effect::SchedulePersistCounts)
            .count();
    }
    assert_eq!(scheduled, 1);
    let written = b.on(Event::PersistCounts, clock.mono(2), wall(2));
    let stored = stores(&written);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event.kind, "alert_repeated");
    assert_eq!(
        stored[0].event.payload["alerts"],
        json!([{ "alert_id": "id-1", "key": "heartbeat:missing", "count": 1001 }])
    );
    assert!(has_state(stored[0]));
    assert!(
        b.on(Event::PersistCounts, clock.mono(3), wall(3))
            .is_empty(),
        "nothing owed"
    );
    let again = raise(&mut b, &clock, "heartbeat:missing", "y", 4);
    assert!(
        again.contains(&Effect::SchedulePersistCounts),
        "rescheduled"
    );
}

#[test]
fn any_store_carries_the_counts_so_none_are_owed_after_it() {
    let clock = Clock::new();
    let mut b = loaded_book(&clock);
    raise(&mut b, &clock, "store:backup", "id-1", 0);
    raise(&mut b, &clock, "store:backup", "x", 1);
    raise(&mut b, &clock, "capital:drift", "id-2", 2);
    assert!(
        stores(&b.on(Event::PersistCounts, clock.mono(3), wall(3))).is_empty(),
        "the second raise's stored state held the count"
    );
}

#[test]
fn a_key_of_no_allowed_kind_is_refused_and_counted() {
    let clock = Clock::new();
    let mut b = loaded_book(&clock);
    let effects = raise(&mut b, &clock, "order_filled", "id-1", 0);
    assert_eq!(
        effects,
        vec![Effect::Log(Note::Refused {
            key: "order_filled".into(),
            title: "order_filled happened".into()
        })]
    );
    let s = b.status();
    assert_eq!((s.open, s.refused_total, s.raised_total), (0, 1, 0));
}

#[test]
fn resolve_closes_notifies_and_is_stored_once() {
    let clock = Clock::new();
    let mut b = loaded_book(&clock);
    raise(&mut b, &clock, "failsafe:x", "id-1", 0);
    let effects = b.on(
        Event::Resolve {
            key: "failsafe:x".into(),
        },
        clock.mono(5),
        wall(5),
    );
    let stored = stores(&effects);
    assert_eq!(stored[0].event.kind, "alert_resolved");
    assert_eq!(stored[0].event.payload["alert_id"], json!("id-1"));
    assert!(matches!(effects.last(), Some(Effect::Notify(r)) if r.resolved_at == Some(wall(5))));
    let s = b.status();
    assert_eq!(s.open, 0);
    assert_eq!(s.recent[0].resolved_at, Some(wall(5)));
    let again = b.on(
        Event::Resolve {
            key: "failsafe:x".into(),
        },
        clock.mono(6),
        wall(6),
    );
    assert_eq!(
        again,
        vec![Effect::Log(Note::NothingToResolve {
            key: "failsafe:x".into()
        })]
    );
    // A raise after the resolve opens a new record at once, inside the old window.
    assert_eq!(
        stores(&raise(&mut b, &clock, "failsafe:x", "id-2", 7)).len(),
        1
    );
}

#[test]
fn acknowledge_is_idempotent_and_unknown_ids_are_an_error() {
    let clock = Clock::new();
    let mut b = loaded_book(&clock);
    raise(&mut b, &clock, "failsafe:x", "id-1", 0);
    let ack = |b: &mut AlertBook, id: &str, secs| {
        b.on(
            Event::Acknowledge {
                alert_id: id.into(),
            },
            clock.mono(secs),
            wall(secs as i64),
        )
    };
    let first = ack(&mut b, "id-1", 3);
    assert_eq!(stores(&first)[0].event.kind, "alert_acknowledged");
    let second = ack(&mut b, "id-1", 9);
    let Some(Effect::Reply(Ok(record))) = second.last() else {
        panic!("{second:?}");
    };
    assert!(record.acknowledged);
    assert_eq!(
        record.acknowledged_at,
        Some(wall(3)),
        "the first time stays"
    );
    assert!(b.status().open_alerts[0].acknowledged);
    assert_eq!(
        ack(&mut b, "nope", 10).last(),
        Some(&Effect::Reply(Err(AlertError::UnknownAlert {
            alert_id: "nope".into()
        })))
    );
}

#[test]
fn the_history_keeps_at_most_max_recent_records() {
    let clock = Clock::new();
    let mut b = loaded_book(&clock);
    for i in 0..5 {
        raise(
            &mut b,
            &clock,
            &format!("store:k{i}"),
            &format!("id-{i}"),
            i,
        );
    }
    let ids: Vec<String> = b.status().recent.into_iter().map(|r| r.alert_id).collect();
    assert_eq!(ids, ["id-2", "id-3", "id-4"]);
    assert_eq!(b.status().open, 5, "open alerts are not trimmed");
}

#[test]
fn before_the_load_changes_are_stored_without_state_and_the_merge_pays_what_is_owed() {
    let clock = Clock::new();
    let mut b = AlertBook::new(&config(), 5, 10);
    let early = raise(&mut b, &clock, "escalation:broker", "id-1", 0);
    assert!(
        !has_state(stores(&early)[0]),
        "a partial history must not overwrite the stored one"
    );
    let merged = b.on(
        Event::Loaded {
            attempt: 1,
            result: Ok(None),
        },
        clock.mono(1),
        wall(1),
    );
    let stored = stores(&merged);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event.kind, "alert_history_merged");
    assert!(has_state(stored[0]));
}

#[test]
fn changes_held_for_the_persister_are_committed_with_the_merged_state() {
    let clock = Clock::new();
    let mut b = AlertBook::new(&config(), 5, 2);
    let early = raise(&mut b, &clock, "escalation:broker", "id-1", 0);
    let change = stores(&early)[0].clone();
    assert!(b.hold_until_loaded(change.clone()));
    assert!(b.hold_until_loaded(change.clone()));
    assert!(!b.hold_until_loaded(change.clone()), "at most pending_max");
    let flushed = b.on(
        Event::Loaded {
            attempt: 1,
            result: Ok(None),
        },
        clock.mono(1),
        wall(1),
    );
    let stored = stores(&flushed);
    assert_eq!(stored.len(), 2, "the held changes, no merge event");
    assert!(
        stored
            .iter()
            .all(|c| c.event.kind == "alert_raised" && has_state(c))
    );
    assert!(!b.hold_until_loaded(change), "nothing is held once loaded");
}

#[test]
fn the_stored_history_merges_under_this_runs_records() {
    let clock = Clock::new();
    let mut b = AlertBook::new(&config(), 5, 10);
    raise(&mut b, &clock, "failsafe:x", "ours", 100);
    let old = |id: &str, key: &str, secs: i64| {
        let mut b2 = AlertBook::new(&config(), 5, 10);
        b2.on(
            Event::Raise {
                alert: alert(key),
                alert_id: id.into(),
            },
            clock.mono(0),
            wall(secs),
        );
        b2.status().open_alerts.remove(0)
    };
    let stored = json!({
        "open": [old("old-x", "failsafe:x", 10), old("old-y", "store:backup", 70)],
        "recent": [old("old-x", "failsafe:x", 10), old("old-y", "store:backup", 70)],
    });
    let effects = b.on(
        Event::Loaded {
            attempt: 1,
            result: Ok(Some(stored)),
        },
        clock.mono(100),
        wall(100),
    );
    assert!(effects.contains(&Effect::Log(Note::HistoryLoaded {
        open: 2,
        restored_open: 2,
        superseded: 1,
        recent: 3
    })));
    let s = b.status();
    let ids: Vec<&str> = s.recent.iter().map(|r| r.alert_id.as_str()).collect();
    assert_eq!(ids, ["old-x", "old-y", "ours"], "stored first, ours after");
    let open: Vec<&str> = s.open_alerts.iter().map(|r| r.alert_id.as_str()).collect();
    assert_eq!(open, ["old-y", "ours"], "this run's raise wins the key");
    // The restored alert's window runs from its stored raise (70 s), across the restart.
    assert!(stores(&raise(&mut b, &clock, "store:backup", "n1", 129)).is_empty());
    assert_eq!(
        stores(&raise(&mut b, &clock, "store:backup", "n2", 131)).len(),
        1
    );
}

#[test]
fn a_failing_load_retries_then_starts_empty_with_the_error_shown() {
    let clock = Clock::new();
    let mut b = AlertBook::new(&config(), 3, 10);
    let failed = |attempt| Event::Loaded {
        attempt,
        result: Err("persister not running".into()),
    };
    let retry = b.on(failed(1), clock.mono(0), wall(0));
    assert!(retry.contains(&Effect::ScheduleLoad { attempt: 2 }));
    assert!(!b.loaded());
    let gave_up = b.on(failed(3), clock.mono(1), wall(1));
    assert!(
        !gave_up
            .iter()
            .any(|e| matches!(e, Effect::ScheduleLoad { .. }))
    );
    assert!(b.loaded());
    assert!(
        b.status()
            .history_load_error
            .unwrap()
            .contains("persister not running")
    );
    let unreadable = {
        let mut b = AlertBook::new(&config(), 3, 10);
        b.on(
            Event::Loaded {
                attempt: 1,
                result: Ok(Some(json!("garbage"))),
            },
            clock.mono(0),
            wall(0),
        );
        b.status()
    };
    assert!(unreadable.history_loaded);
    assert!(
        unreadable
            .history_load_error
            .unwrap()
            .contains("unreadable")
    );
}

#[test]
fn a_stored_record_of_the_flat_shape_reads_back_unchanged() {
    // What a store written before `AlertRecord` held an `Alert` contains: one flat object with
    // `key` last, and (older still) no `last_raised_at`/`acknowledged_at`.
    let stored = r#"{"alert_id":"0190-a","timestamp":"2026-01-02T03:04:05Z",
        "severity":"CRITICAL","title":"t","message":"m","root_cause":"r",
        "recommended_action":"a","metadata":{"trigger":"heartbeat"},"acknowledged":true,
        "count":3,"last_raised_at":null,"acknowledged_at":"2026-01-02T04:00:00Z",
        "resolved_at":null,"key":"failsafe:heartbeat"}"#;
    let record: AlertRecord = serde_json::from_str(stored).unwrap();
    assert_eq!(record.alert.key, "failsafe:heartbeat");
    assert_eq!(record.alert.severity, Severity::Critical);
    assert_eq!(record.alert.metadata, json!({"trigger": "heartbeat"}));
    assert_eq!(record.count, 3);
    assert!(record.acknowledged_at.is_some());
    // Written again it is the same flat object: the stored format did not change.
    let again = serde_json::to_value(&record).unwrap();
    assert_eq!(again, serde_json::from_str::<Value>(stored).unwrap());

    let oldest = r#"{"alert_id":"0190-b","timestamp":"2026-01-02T03:04:05Z",
        "severity":"INFO","title":"t","message":"m","root_cause":"r",
        "recommended_action":"a","metadata":null,"acknowledged":false,"count":1,
        "resolved_at":null,"key":"store:unclean_stop"}"#;
    let record: AlertRecord = serde_json::from_str(oldest).unwrap();
    assert_eq!(record.last_raised_at, None);
    assert_eq!(record.alert.severity, Severity::Info);
    // A record missing one of the alert's fields is refused, not filled in.
    let broken = oldest.replace(r#""title":"t","#, "");
    assert!(serde_json::from_str::<AlertRecord>(&broken).is_err());
}
