//! The record update without an actor: `plan_transition` on fixed records and a fixed clock.

use super::*;
use chrono::TimeZone;

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap()
}

fn step(to: Lifecycle, why: &str) -> (Lifecycle, String) {
    (to, why.to_string())
}

fn intent(label: &str) -> Intent {
    Intent {
        label: label.into(),
        side: Side::Buy,
        size: 10.0,
        sent_at: at(),
        stop_price: Some(99.0),
        take_profit_price: Some(101.0),
    }
}

#[test]
fn an_entry_path_moves_in_one_plan_and_advances_the_intent_seq() {
    let mut record = StrategyRecord::idle("a");
    record.lifecycle = Lifecycle::Analyzing;
    let steps = [
        step(Lifecycle::SignalDetected, "crossed above"),
        step(Lifecycle::EnteringPosition, "entry sent"),
    ];
    let data = TransitionData {
        position: None,
        intents_in_flight: vec![intent("tb-a-0")],
    };
    let p = plan_transition("a", &record, &steps, Some(data), at()).unwrap();
    assert_eq!(p.record.lifecycle, Lifecycle::EnteringPosition);
    assert_eq!(p.record.next_intent_seq, record.next_intent_seq + 1);
    assert_eq!(p.record.updated_at, at());
    assert_eq!(p.record.intents_in_flight, vec![intent("tb-a-0")]);
    assert_eq!(
        p.payload,
        json!({
            "id": "a", "from": "ANALYZING", "to": "ENTERING_POSITION", "reason": "entry sent",
            "via": ["SIGNAL_DETECTED"], "via_reasons": ["crossed above"],
        })
    );
}

#[test]
fn a_single_step_has_no_via_and_keeps_the_seq() {
    let record = StrategyRecord::idle("a");
    let steps = [step(Lifecycle::Analyzing, "tick")];
    let p = plan_transition("a", &record, &steps, None, at()).unwrap();
    assert_eq!(p.record.lifecycle, Lifecycle::Analyzing);
    assert_eq!(p.record.next_intent_seq, record.next_intent_seq);
    assert!(p.payload.get("via").is_none(), "{}", p.payload);
}

#[test]
fn idle_without_data_clears_position_and_intents_other_states_keep_them() {
    let mut record = StrategyRecord::idle("a");
    record.lifecycle = Lifecycle::EnteringPosition;
    record.intents_in_flight = vec![intent("tb-a-0")];
    let kept = plan_transition(
        "a",
        &record,
        &[step(Lifecycle::PositionOpen, "filled")],
        None,
        at(),
    )
    .unwrap();
    assert_eq!(kept.record.intents_in_flight, record.intents_in_flight);
    let cleared = plan_transition(
        "a",
        &record,
        &[step(Lifecycle::Idle, "entry rejected")],
        None,
        at(),
    )
    .unwrap();
    assert!(cleared.record.intents_in_flight.is_empty());
    assert_eq!(cleared.record.position, None);
}

#[test]
fn the_first_illegal_step_is_named_and_nothing_is_planned() {
    let record = StrategyRecord::idle("a");
    let steps = [
        step(Lifecycle::Analyzing, "tick"),
        step(Lifecycle::PositionOpen, "skipped the entry"),
        step(Lifecycle::Closing, "never reached"),
    ];
    assert_eq!(
        plan_transition("a", &record, &steps, None, at()),
        Err(Illegal {
            from: Lifecycle::Analyzing,
            to: Lifecycle::PositionOpen,
            reason: "skipped the entry",
        })
    );
}

#[test]
fn every_single_step_is_planned_exactly_when_the_lifecycle_allows_it() {
    for from in Lifecycle::ALL {
        for to in Lifecycle::ALL {
            let mut record = StrategyRecord::idle("a");
            record.lifecycle = from;
            let steps = [step(to, "r")];
            let planned = plan_transition("a", &record, &steps, None, at());
            assert_eq!(
                planned.is_ok(),
                from.can_transition_to(to),
                "{from:?} -> {to:?}"
            );
        }
    }
}

#[test]
fn hops_pair_each_step_with_the_state_it_leaves() {
    let steps = [
        step(Lifecycle::SignalDetected, "s"),
        step(Lifecycle::EnteringPosition, "e"),
    ];
    assert_eq!(
        hops(Lifecycle::Analyzing, &steps).collect::<Vec<_>>(),
        vec![
            (Lifecycle::Analyzing, Lifecycle::SignalDetected, "s"),
            (Lifecycle::SignalDetected, Lifecycle::EnteringPosition, "e"),
        ]
    );
}
