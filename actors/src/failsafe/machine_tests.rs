//! The mode machine on its own: plain tests, no runtime, no actor, time passed in.

use super::*;
use chrono::TimeZone;
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

fn machine(initial: TradingMode) -> ModeMachine {
    ModeMachine::new(
        InitialMode::explicit(initial),
        3,
        Duration::from_millis(500),
    )
}

/// A machine whose stored mode was `stored` (None: nothing stored) and whose recovery finished.
fn loaded(initial: TradingMode, stored: Option<TradingMode>) -> ModeMachine {
    let mut m = machine(initial);
    let value = stored.map(|mode| json!({ "mode": mode, "reason": "stored", "changed_at": t0() }));
    m.on(
        Event::Loaded {
            attempt: 1,
            result: Ok(value),
        },
        t0(),
    );
    m.on(Event::RecoveryFinished, t0());
    m
}

fn set(m: &mut ModeMachine, mode: TradingMode, now: DateTime<Utc>) -> Vec<Effect> {
    m.on(
        Event::SetMode {
            mode,
            reason: "operator".into(),
        },
        now,
    )
}

fn trigger(m: &mut ModeMachine, name: &str, now: DateTime<Utc>) -> Vec<Effect> {
    m.on(
        Event::Trigger {
            trigger: name.into(),
            reason: "test trigger".into(),
        },
        now,
    )
}

/// Feeds a [`Effect::PersistThenApply`] back as a successful commit, as the actor does.
fn confirm(m: &mut ModeMachine, effects: &[Effect], now: DateTime<Utc>) -> Vec<Effect> {
    let Some(Effect::PersistThenApply { pending, .. }) = effects
        .iter()
        .find(|e| matches!(e, Effect::PersistThenApply { .. }))
    else {
        panic!("no change to confirm in {effects:?}");
    };
    m.on(
        Event::Loosened {
            change: pending.clone(),
            result: Ok(()),
        },
        now,
    )
}

fn replies(effects: &[Effect]) -> Vec<Result<(), String>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// The stored `"mode"` values among the effects' changes.
fn stored_modes(effects: &[Effect]) -> Vec<Value> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist { change, .. } | Effect::PersistThenApply { change, .. } => {
                Some(change)
            }
            _ => None,
        })
        .flat_map(|c| c.state.iter())
        .filter(|w| w.key == MODE_KEY)
        .filter_map(|w| w.value.clone())
        .map(|v| v["mode"].clone())
        .collect()
}

fn raised(effects: &[Effect]) -> Vec<&Alert> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Raise(a) => Some(a),
            _ => None,
        })
        .collect()
}

#[test]
fn starts_fail_closed_until_loaded_and_recovered() {
    let mut m = machine(TradingMode::Aggressive);
    assert_eq!(m.mode(), TradingMode::ObserveOnly);
    assert!(m.allow_entry().unwrap_err().contains("not been loaded"));
    assert_eq!(
        m.on(Event::Load { attempt: 1 }, t0()),
        vec![Effect::ReadStore { attempt: 1 }]
    );
    let effects = m.on(
        Event::Loaded {
            attempt: 1,
            result: Ok(None),
        },
        t0(),
    );
    // Nothing stored, initial AGGRESSIVE: stored first, not applied yet.
    assert_eq!(stored_modes(&effects), vec![json!("AGGRESSIVE")]);
    assert_eq!(m.mode(), TradingMode::ObserveOnly);
    assert!(m.loaded());
    let applied = confirm(&mut m, &effects, at(1));
    assert_eq!(replies(&applied), vec![Ok(())]);
    assert_eq!(m.mode(), TradingMode::Aggressive);
    assert_eq!(
        m.changed_at(),
        Some(t0()),
        "stamped when the change was made"
    );
    assert!(m.allow_entry().unwrap_err().contains("recovery"));
    assert_eq!(
        m.on(Event::RecoveryFinished, at(2)),
        vec![Effect::Log(Note::Recovered)]
    );
    assert_eq!(m.allow_entry(), Ok(()));
    assert!(
        m.on(Event::RecoveryFinished, at(3)).is_empty(),
        "logged once"
    );
}

#[test]
fn a_trigger_latches_shutdown_with_a_critical_alert_and_answers_once_stored() {
    let mut m = loaded(TradingMode::Aggressive, Some(TradingMode::Aggressive));
    assert_eq!(m.allow_entry(), Ok(()));
    let effects = trigger(&mut m, "market_data_stalled", at(5));
    assert_eq!(m.mode(), TradingMode::Shutdown, "in memory at once");
    assert_eq!(m.changed_at(), Some(at(5)));
    assert_eq!(m.triggers(), 1);
    assert_eq!(m.last_trigger(), Some("market_data_stalled"));
    let alerts = raised(&effects);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].key, "failsafe:market_data_stalled");
    assert_eq!(alerts[0].severity, Severity::Critical);
    assert_eq!(alerts[0].metadata["previous_mode"], json!("AGGRESSIVE"));
    let persisted: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist { change, answer } => Some((change, *answer)),
            _ => None,
        })
        .collect();
    assert_eq!(persisted.len(), 1);
    let (change, answer) = persisted[0];
    assert!(answer, "the caller hears once it is stored");
    assert_eq!(change.event.kind, "mode_changed");
    assert_eq!(
        change.event.payload["trigger"],
        json!("market_data_stalled")
    );
    assert_eq!(stored_modes(&effects), vec![json!("SHUTDOWN")]);
    assert!(m.allow_entry().is_err());
}

#[test]
fn a_second_trigger_keeps_the_first_cause_and_is_put_on_record() {
    let mut m = loaded(TradingMode::Aggressive, Some(TradingMode::Aggressive));
    trigger(&mut m, "first", at(1));
    let reason = m.reason().to_owned();
    let effects = trigger(&mut m, "second", at(2));
    assert_eq!(m.mode(), TradingMode::Shutdown);
    assert_eq!(m.reason(), reason, "the first cause stays the reason");
    assert_eq!(m.changed_at(), Some(at(1)));
    assert_eq!(m.triggers(), 2);
    assert_eq!(m.last_trigger(), Some("second"));
    assert_eq!(raised(&effects)[0].key, "failsafe:second");
    assert!(
        stored_modes(&effects).is_empty(),
        "the mode is not rewritten"
    );
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Persist { change, answer: true } if change.event.kind == "failsafe_triggered"
    )));
}

#[test]
fn shutdown_is_left_only_through_observe_only_and_that_resolves_its_alerts() {
    let mut m = loaded(TradingMode::Aggressive, Some(TradingMode::Shutdown));
    assert_eq!(m.mode(), TradingMode::Shutdown, "the stored latch survives");
    assert_eq!(m.initial_mode(), TradingMode::Shutdown);
    let refused = set(&mut m, TradingMode::Aggressive, at(1));
    assert_eq!(
        replies(&refused),
        vec![Err(
            "SHUTDOWN is cleared to OBSERVE_ONLY first, then to AGGRESSIVE".into()
        )]
    );
    assert_eq!(m.mode(), TradingMode::Shutdown);
    // Neither a restriction nor the watch clears it.
    for event in [
        Event::Restrict {
            mode: TradingMode::ObserveOnly,
            reason: "recovery".into(),
        },
        Event::Finding(Finding {
            trigger: "heartbeat_missing",
            reason: "no round".into(),
            action: Action::ObserveOnly,
        }),
        Event::Ended("heartbeat_missing"),
    ] {
        m.on(event, at(2));
        assert_eq!(m.mode(), TradingMode::Shutdown);
    }
    let cleared = set(&mut m, TradingMode::ObserveOnly, at(3));
    assert_eq!(m.mode(), TradingMode::ObserveOnly);
    assert_eq!(stored_modes(&cleared), vec![json!("OBSERVE_ONLY")]);
    assert_eq!(cleared.last(), Some(&Effect::ResolveShutdownAlerts));
    let effects = set(&mut m, TradingMode::Aggressive, at(4));
    assert!(
        !effects.contains(&Effect::ResolveShutdownAlerts),
        "only clearing SHUTDOWN resolves them"
    );
    confirm(&mut m, &effects, at(5));
    assert_eq!(m.mode(), TradingMode::Aggressive);
}

#[test]
fn restrict_only_tightens_and_a_restatement_voids_a_pending_aggressive() {
    // Nothing stored, initial AGGRESSIVE being stored, when recovery restricts to OBSERVE_ONLY
    // (the mode already in memory): the restatement wins.
    let mut m = machine(TradingMode::Aggressive);
    let pending = m.on(
        Event::Loaded {
            attempt: 1,
            result: Ok(None),
        },
        t0(),
    );
    let restated = m.on(
        Event::Restrict {
            mode: TradingMode::ObserveOnly,
            reason: "recovery found trouble".into(),
        },
        at(1),
    );
    assert_eq!(stored_modes(&restated), vec![json!("OBSERVE_ONLY")]);
    let late = confirm(&mut m, &pending, at(2));
    assert_eq!(
        replies(&late),
        vec![Err(
            "the mode changed to OBSERVE_ONLY while AGGRESSIVE was being stored; not applied"
                .into()
        )]
    );
    assert_eq!(m.mode(), TradingMode::ObserveOnly);

    // A looser restriction changes nothing and is answered at once.
    let mut m = loaded(TradingMode::Aggressive, Some(TradingMode::Shutdown));
    let effects = m.on(
        Event::Restrict {
            mode: TradingMode::Aggressive,
            reason: "x".into(),
        },
        at(3),
    );
    assert_eq!(effects, vec![Effect::Reply(Ok(()))]);
    assert_eq!(m.mode(), TradingMode::Shutdown);
}

#[test]
fn a_trigger_before_the_load_is_kept_over_the_stored_mode() {
    let mut m = machine(TradingMode::Aggressive);
    trigger(&mut m, "restart_intensity", at(1));
    assert_eq!(m.mode(), TradingMode::Shutdown);
    assert!(!m.loaded());
    let effects = m.on(
        Event::Loaded {
            attempt: 1,
            result: Ok(Some(json!({ "mode": "AGGRESSIVE", "reason": "old" }))),
        },
        at(2),
    );
    assert_eq!(m.mode(), TradingMode::Shutdown);
    assert_eq!(m.initial_mode(), TradingMode::Shutdown);
    assert!(
        m.initial_mode_reason()
            .contains("before the stored mode was read")
    );
    assert!(stored_modes(&effects).is_empty());
}

#[test]
fn an_unreadable_stored_mode_latches_shutdown() {
    let mut m = machine(TradingMode::Aggressive);
    let effects = m.on(
        Event::Loaded {
            attempt: 1,
            result: Ok(Some(json!({ "mode": "TURBO" }))),
        },
        at(1),
    );
    assert_eq!(m.mode(), TradingMode::Shutdown);
    assert_eq!(raised(&effects)[0].key, "failsafe:unreadable_mode");
    assert_eq!(stored_modes(&effects), vec![json!("SHUTDOWN")]);
    assert!(m.initial_mode_reason().contains("is not applied"));
}

#[test]
fn a_failing_load_retries_then_gives_up_and_a_set_mode_reads_again() {
    let mut m = machine(TradingMode::Aggressive);
    let failed = |attempt| Event::Loaded {
        attempt,
        result: Err("disk on fire".into()),
    };
    let effects = m.on(failed(1), at(1));
    assert!(effects.contains(&Effect::ScheduleLoad {
        attempt: 2,
        delay: Some(Duration::from_millis(500))
    }));
    let effects = m.on(failed(3), at(2));
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::ScheduleLoad { .. })),
        "the last attempt gives up"
    );
    assert_eq!(m.mode(), TradingMode::ObserveOnly);
    assert!(m.reason().contains("disk on fire"));
    let effects = set(&mut m, TradingMode::Aggressive, at(3));
    assert_eq!(
        effects[0],
        Effect::ScheduleLoad {
            attempt: 1,
            delay: None
        }
    );
    assert!(
        replies(&effects)[0]
            .as_ref()
            .unwrap_err()
            .contains("loading it again now")
    );
    let again = set(&mut m, TradingMode::Aggressive, at(4));
    assert_eq!(again.len(), 1, "one reload at a time: {again:?}");
}

#[test]
fn a_change_to_aggressive_not_stored_is_refused() {
    let mut m = loaded(TradingMode::ObserveOnly, None);
    let effects = set(&mut m, TradingMode::Aggressive, at(1));
    let Some(Effect::PersistThenApply { pending, .. }) = effects.first().cloned() else {
        panic!("{effects:?}");
    };
    assert_eq!(pending.to, TradingMode::Aggressive);
    let refused = m.on(
        Event::Loosened {
            change: pending,
            result: Err("store is read-only".into()),
        },
        at(2),
    );
    assert_eq!(
        replies(&refused),
        vec![Err(
            "AGGRESSIVE not stored, mode stays OBSERVE_ONLY: store is read-only".into()
        )]
    );
    assert_eq!(m.mode(), TradingMode::ObserveOnly);
}

#[test]
fn a_lost_heartbeat_restricts_to_observe_only_and_its_end_resolves_only_the_alert() {
    let mut m = loaded(TradingMode::Aggressive, Some(TradingMode::Aggressive));
    let finding = Finding {
        trigger: "heartbeat_missing",
        reason: "no round for 120 s".into(),
        action: Action::ObserveOnly,
    };
    let effects = m.on(Event::Finding(finding), at(1));
    assert_eq!(m.mode(), TradingMode::ObserveOnly);
    assert_eq!(raised(&effects)[0].key, "heartbeat:missing");
    assert_eq!(stored_modes(&effects), vec![json!("OBSERVE_ONLY")]);
    assert_eq!(m.triggers(), 1);
    let ended = m.on(Event::Ended("heartbeat_missing"), at(2));
    assert!(ended.contains(&Effect::Resolve("heartbeat:missing".into())));
    assert_eq!(
        m.mode(),
        TradingMode::ObserveOnly,
        "the operator sets it back"
    );
}

#[test]
fn low_disk_alerts_without_changing_the_mode() {
    let mut m = loaded(TradingMode::Aggressive, Some(TradingMode::Aggressive));
    let effects = m.on(
        Event::Finding(Finding {
            trigger: triggers::DISK_LOW,
            reason: "1% free".into(),
            action: Action::Alert,
        }),
        at(1),
    );
    assert_eq!(raised(&effects)[0].key, DISK_ALERT_KEY);
    assert_eq!(raised(&effects)[0].severity, Severity::Warning);
    assert_eq!(m.mode(), TradingMode::Aggressive);
    assert_eq!(m.triggers(), 0);
    let ended = m.on(Event::Ended(triggers::DISK_LOW), at(2));
    assert!(ended.contains(&Effect::Resolve(DISK_ALERT_KEY.into())));
    assert!(m.on(Event::Ended("market_data_stalled"), at(3)).is_empty());
}

fn any_mode() -> impl Strategy<Value = TradingMode> {
    prop_oneof![
        Just(TradingMode::Aggressive),
        Just(TradingMode::ObserveOnly),
        Just(TradingMode::Shutdown),
    ]
}

/// Events the actor can feed in any order (a `Loosened` is made from the newest pending change).
#[derive(Debug, Clone)]
enum Step {
    Load(Option<TradingMode>),
    LoadFailed(u32),
    Recovered,
    Trigger,
    Set(TradingMode),
    Restrict(TradingMode),
    Heartbeat,
    Confirm(bool),
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        proptest::option::of(any_mode()).prop_map(Step::Load),
        (1u32..4).prop_map(Step::LoadFailed),
        Just(Step::Recovered),
        Just(Step::Trigger),
        any_mode().prop_map(Step::Set),
        any_mode().prop_map(Step::Restrict),
        Just(Step::Heartbeat),
        any::<bool>().prop_map(Step::Confirm),
    ]
}

proptest! {
    /// Whatever happens, SHUTDOWN is left only by an operator's change to OBSERVE_ONLY, entries
    /// are allowed only when loaded, recovered and AGGRESSIVE, and every in-memory change of
    /// mode is stored (or, to AGGRESSIVE, was stored first).
    #[test]
    fn any_sequence_keeps_the_latches(
        initial in prop_oneof![Just(TradingMode::Aggressive), Just(TradingMode::ObserveOnly)],
        steps in proptest::collection::vec(any_step(), 0..40),
    ) {
        let mut m = machine(initial);
        let mut pending: Option<Effect> = None;
        for (i, step) in steps.into_iter().enumerate() {
            let now = at(i as i64);
            let before = m.mode();
            let event = match step.clone() {
                Step::Load(stored) => Event::Loaded {
                    attempt: 1,
                    result: Ok(stored.map(|mode| json!({ "mode": mode }))),
                },
                Step::LoadFailed(attempt) => Event::Loaded { attempt, result: Err("no".into()) },
                Step::Recovered => Event::RecoveryFinished,
                Step::Trigger => Event::Trigger { trigger: "t".into(), reason: "r".into() },
                Step::Set(mode) => Event::SetMode { mode, reason: "op".into() },
                Step::Restrict(mode) => Event::Restrict { mode, reason: "rec".into() },
                Step::Heartbeat => Event::Finding(Finding {
                    trigger: "heartbeat_missing",
                    reason: "silent".into(),
                    action: Action::ObserveOnly,
                }),
                Step::Confirm(ok) => match pending.take() {
                    Some(Effect::PersistThenApply { pending, .. }) => Event::Loosened {
                        change: pending,
                        result: if ok { Ok(()) } else { Err("no".into()) },
                    },
                    _ => continue,
                },
            };
            let effects = m.on(event, now);
            if let Some(p) = effects.iter().find(|e| matches!(e, Effect::PersistThenApply { .. })) {
                pending = Some(p.clone());
            }
            let after = m.mode();
            if before == TradingMode::Shutdown && after != TradingMode::Shutdown {
                prop_assert!(matches!(step, Step::Set(TradingMode::ObserveOnly)),
                    "SHUTDOWN left by {:?}", step);
            }
            if after != before && !matches!(step, Step::Confirm(_) | Step::Load(_)) {
                prop_assert_eq!(stored_modes(&effects), vec![json!(after)], "{:?}", step);
            }
            if m.allow_entry().is_ok() {
                prop_assert!(m.loaded() && m.recovered() && after == TradingMode::Aggressive);
            }
        }
    }
}
