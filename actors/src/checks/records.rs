//! `strategy_states` (every stored strategy record reads and is coherent) and `mode` (the stored
//! mode is valid). Pure.

use std::collections::BTreeMap;

use super::{Check, MODE, STRATEGY_STATES};
use crate::model::mode::MODE_KEY;
use crate::model::mode::StoredMode;
use crate::model::strategy::Lifecycle;
use crate::model::strategy::RECORD_KEY_PREFIX;
use crate::model::strategy::StrategyRecord;

/// What is wrong with one strategy record (empty: valid). IDLE, ANALYZING, SIGNAL_DETECTED and
/// ENTERING_POSITION hold no position (a position appears only with POSITION_OPEN), IDLE also no
/// intent in flight; POSITION_OPEN and CLOSING hold a position with an instrument, a positive
/// finite size and a positive finite entry price; intents have positive finite sizes.
pub fn record_problems(record: &StrategyRecord) -> Vec<String> {
    let mut problems = Vec::new();
    let id = &record.id;
    let lifecycle = record.lifecycle.as_str();
    match (record.lifecycle, &record.position) {
        (
            Lifecycle::Idle
            | Lifecycle::Analyzing
            | Lifecycle::SignalDetected
            | Lifecycle::EnteringPosition,
            Some(p),
        ) => problems.push(format!(
            "{id}: {lifecycle} but holds a position on {}",
            p.instrument
        )),
        (Lifecycle::PositionOpen | Lifecycle::Closing, None) => {
            problems.push(format!("{id}: {lifecycle} without a position"));
        }
        (Lifecycle::PositionOpen | Lifecycle::Closing, Some(p)) => {
            if p.instrument.is_empty() {
                problems.push(format!("{id}: position without an instrument"));
            }
            if !(p.size.is_finite() && p.size > 0.0) {
                problems.push(format!("{id}: position size {} is not positive", p.size));
            }
            if !(p.entry_price.is_finite() && p.entry_price > 0.0) {
                problems.push(format!(
                    "{id}: position entry price {} is not positive",
                    p.entry_price
                ));
            }
        }
        _ => {}
    }
    if record.lifecycle == Lifecycle::Idle && !record.intents_in_flight.is_empty() {
        problems.push(format!("{id}: IDLE with intents in flight"));
    }
    for intent in &record.intents_in_flight {
        if !(intent.size.is_finite() && intent.size > 0.0) {
            problems.push(format!(
                "{id}: intent {} has size {}",
                intent.label, intent.size
            ));
        }
    }
    problems
}

/// `strategy_states`: every `strategy.<id>` state value deserializes into a
/// [`StrategyRecord`] naming that id, and passes [`record_problems`].
pub fn strategy_states(state: &BTreeMap<String, String>) -> Check {
    let mut problems = Vec::new();
    let mut n = 0;
    for (key, raw) in state.range(RECORD_KEY_PREFIX.to_string()..) {
        let Some(id) = key.strip_prefix(RECORD_KEY_PREFIX) else {
            break;
        };
        n += 1;
        match serde_json::from_str::<StrategyRecord>(raw) {
            Ok(r) if r.id != id => problems.push(format!("{key}: record names id {:?}", r.id)),
            Ok(r) => problems.extend(record_problems(&r)),
            Err(e) => problems.push(format!("{key}: unreadable: {e}")),
        }
    }
    Check::from_problems(
        STRATEGY_STATES,
        format!("{n} strategy records valid"),
        &problems,
    )
}

/// `mode`: the stored `mode` value, if any, is a [`StoredMode`] (none stored yet passes: the
/// fail-safe then uses its resolved initial mode).
pub fn mode(state: &BTreeMap<String, String>) -> Check {
    match state.get(MODE_KEY) {
        None => Check::pass(MODE, "no mode stored yet (first start)"),
        Some(raw) => match serde_json::from_str::<StoredMode>(raw) {
            Ok(m) => Check::pass(MODE, format!("stored mode {} ({})", m.mode, m.reason)),
            Err(e) => Check::fail(MODE, format!("stored mode is unreadable: {e}")),
        },
    }
}
