//! The strategy actor's stored records: restored at start (`restore`, `load`, retried), and
//! every lifecycle change committed through the persister before memory follows
//! (`transition`, `transition_path`: ANALYZING → SIGNAL_DETECTED → ENTERING_POSITION in one
//! transaction).

use super::*;

/// Logs one lifecycle hop of instance `$id` at `$level`, with the one field list every hop log
/// line has (`tracing`'s level belongs to the call site, so it is a macro, not a function).
macro_rules! log_hop {
    ($level:ident, $id:expr, $from:expr, $to:expr, $reason:expr, $msg:literal) => {
        tracing::$level!(
            actor = "strategy",
            id = $id,
            from = $from.as_str(),
            to = $to.as_str(),
            reason = $reason,
            $msg
        )
    };
}

impl StrategyState {
    /// Applies the stored records; returns how many were restored.
    pub(super) fn restore(&mut self, state: &BTreeMap<String, Value>) -> usize {
        let (records, bad) = StrategyRecord::all_from_state(state);
        for (key, error) in bad {
            warn!(
                actor = "strategy",
                key, error, "unreadable strategy record ignored; the instance starts IDLE"
            );
        }
        let mut restored = 0;
        for record in records {
            match self.instances.iter_mut().find(|i| i.entry.id == record.id) {
                Some(instance) => {
                    info!(
                        actor = "strategy",
                        id = %record.id,
                        lifecycle = record.lifecycle.as_str(),
                        position = record.position.is_some(),
                        intents_in_flight = record.intents_in_flight.len(),
                        "strategy state restored"
                    );
                    instance.record = record;
                    instance.stored = true;
                    instance.restored = true;
                    restored += 1;
                }
                None => warn!(
                    actor = "strategy",
                    id = %record.id,
                    lifecycle = record.lifecycle.as_str(),
                    "stored strategy is not configured; its record is ignored"
                ),
            }
        }
        restored
    }

    pub(super) async fn load(&mut self) {
        let mut last_error = String::new();
        for attempt in 1..=LOAD_ATTEMPTS {
            match client::load_state(&self.names, LOAD_TIMEOUT).await {
                Ok(state) => {
                    let restored = self.restore(&state);
                    self.records_loaded = true;
                    self.load_error = None;
                    info!(
                        actor = "strategy",
                        restored,
                        active = self.instances.len(),
                        "strategy records loaded"
                    );
                    return;
                }
                Err(e) => {
                    warn!(actor = "strategy", attempt, attempts = LOAD_ATTEMPTS, error = %e, "could not load the strategy records");
                    last_error = e;
                }
            }
            if attempt < LOAD_ATTEMPTS {
                tokio::time::sleep(LOAD_RETRY_DELAY).await;
            }
        }
        warn!(actor = "strategy", error = %last_error, "giving up loading the strategy records; every instance starts IDLE");
        self.load_error = Some(last_error);
    }

    pub(super) async fn transition(
        &mut self,
        id: &str,
        to: Lifecycle,
        reason: String,
        data: Option<TransitionData>,
    ) -> Result<(), String> {
        self.transition_path(id, vec![(to, reason)], data).await
    }

    /// Moves instance `id` through `steps` (each checked against `can_transition_to`) in one
    /// commit: one `lifecycle.transition` event (from the first state to the last, the states
    /// passed in `via`) and the record. `data` is applied as by the last step.
    pub(super) async fn transition_path(
        &mut self,
        id: &str,
        steps: Vec<(Lifecycle, String)>,
        data: Option<TransitionData>,
    ) -> Result<(), String> {
        let Some(&(to, _)) = steps.last() else {
            return Err(format!("no transition given for {id:?}"));
        };
        let Some(instance) = self.instances.iter_mut().find(|i| i.entry.id == id) else {
            warn!(
                actor = "strategy",
                id,
                to = to.as_str(),
                "transition refused: unknown strategy"
            );
            return Err(format!("unknown strategy {id:?}"));
        };
        let from = instance.record.lifecycle;
        let planned = plan_transition(id, &instance.record, &steps, data, crate::clock::now());
        let Planned {
            record: next,
            payload,
        } = match planned {
            Ok(p) => p,
            Err(Illegal {
                from: at,
                to: step,
                reason,
            }) => {
                log_hop!(
                    warn,
                    id,
                    at,
                    step,
                    reason,
                    "illegal lifecycle transition refused"
                );
                return Err(format!(
                    "illegal transition {} -> {} for {id:?}",
                    at.as_str(),
                    step.as_str()
                ));
            }
        };
        let value = serde_json::to_value(&next).map_err(|e| e.to_string())?;
        let change = Change::event("lifecycle.transition", payload).set(record_key(id), value);
        client::commit_change(&self.names, change, COMMIT_TIMEOUT)
            .await
            .map_err(|e| {
            warn!(actor = "strategy", id, from = from.as_str(), to = to.as_str(), error = %e, "lifecycle transition not stored; state unchanged");
            format!("transition {} -> {} not stored: {e}", from.as_str(), to.as_str())
        })?;
        for (at, step, reason) in hops(from, &steps) {
            log_hop!(info, id, at, step, reason, "lifecycle transition");
        }
        instance.record = next;
        instance.stored = true;
        Ok(())
    }
}

/// A checked lifecycle move: the record as it is to be stored, and the `lifecycle.transition`
/// event payload that says so.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Planned {
    pub record: StrategyRecord,
    pub payload: Value,
}

/// The first step of a path that its state may not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Illegal<'a> {
    pub from: Lifecycle,
    pub to: Lifecycle,
    pub reason: &'a str,
}

/// Each step of `steps` with the state it leaves: `(from, to, reason)`.
fn hops(
    from: Lifecycle,
    steps: &[(Lifecycle, String)],
) -> impl Iterator<Item = (Lifecycle, Lifecycle, &str)> {
    steps.iter().scan(from, |at, (step, reason)| {
        let hop = (*at, *step, reason.as_str());
        *at = *step;
        Some(hop)
    })
}

/// The strategy's record update, pure (no store, no clock: `now` is given). Every step is
/// checked against `can_transition_to` from the state before it; the next record takes the
/// last step's lifecycle and `now`, advances `next_intent_seq` when the path enters a position
/// (so a label is never reused), and takes position and intents from `data`, or clears them
/// on a return to IDLE without data. The payload names the first and last state, and the
/// states passed on the way (`via`, `via_reasons`) when there are several steps.
pub(super) fn plan_transition<'a>(
    id: &str,
    record: &StrategyRecord,
    steps: &'a [(Lifecycle, String)],
    data: Option<TransitionData>,
    now: DateTime<Utc>,
) -> Result<Planned, Illegal<'a>> {
    let from = record.lifecycle;
    if let Some((from, to, reason)) =
        hops(from, steps).find(|(at, step, _)| !at.can_transition_to(*step))
    {
        return Err(Illegal { from, to, reason });
    }
    let to = steps.last().map_or(from, |(to, _)| *to);
    let mut next = record.clone();
    next.lifecycle = to;
    next.updated_at = now;
    if steps.iter().any(|(s, _)| *s == Lifecycle::EnteringPosition) {
        next.next_intent_seq += 1;
    }
    match data {
        Some(d) => {
            next.position = d.position;
            next.intents_in_flight = d.intents_in_flight;
        }
        None if to == Lifecycle::Idle => {
            next.position = None;
            next.intents_in_flight.clear();
        }
        None => {}
    }
    let reason = steps.last().map(|(_, r)| r.as_str()).unwrap_or_default();
    let mut payload = json!({ "id": id, "from": from, "to": to, "reason": reason });
    if let [passed @ .., _] = steps
        && !passed.is_empty()
    {
        payload["via"] = json!(passed.iter().map(|(s, _)| *s).collect::<Vec<_>>());
        payload["via_reasons"] = json!(passed.iter().map(|(_, r)| r).collect::<Vec<_>>());
    }
    Ok(Planned {
        record: next,
        payload,
    })
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
