//! One strategy instance: its entry, its stored record and its signal logic, and the pure
//! decision of which job it needs next (`pending_job` after a transition or a restart,
//! `job_for` a signal). No actor, no I/O.

use super::*;

pub(super) struct Instance {
    pub(super) entry: StrategyEntry,
    pub(super) record: StrategyRecord,
    /// Whether a stored record exists (false: never transitioned, IDLE by default).
    pub(super) stored: bool,
    pub(super) restored: bool,
    pub(super) ticks: u64,
    pub(super) last_mark_price: Option<f64>,
    /// The strategy's pure decision logic (None when its config is invalid; logged at start).
    pub(super) logic: Option<signal::MaCross>,
    pub(super) signals: u64,
    pub(super) last_decision: Option<signal::Decision>,
    pub(super) last_decision_at: Option<DateTime<Utc>>,
    /// The job running for this instance, with when it started; aborted when the actor stops.
    pub(super) job: Option<(&'static str, DateTime<Utc>, AbortOnDrop)>,
    pub(super) last_refusal: Option<String>,
    pub(super) last_error: Option<String>,
}

impl Instance {
    /// Feeds the tick to the logic; returns a non-hold decision.
    pub(super) fn on_tick(&mut self, ticker: &Ticker) -> Option<signal::Decision> {
        self.ticks += 1;
        self.last_mark_price = Some(ticker.mark_price);
        let logic = self.logic.as_mut()?;
        let decision = logic.on_tick(&signal::MarketTick::from(ticker));
        if decision == signal::Decision::Hold {
            return None;
        }
        self.signals += 1;
        self.last_decision = Some(decision.clone());
        self.last_decision_at = Some(crate::clock::now());
        Some(decision)
    }

    /// The job a check should start for this instance, if any.
    pub(super) fn pending_job(&self) -> Option<exec::Job> {
        match self.record.lifecycle {
            Lifecycle::Idle if self.logic.is_some() => Some(exec::Job::StartAnalyzing),
            Lifecycle::Idle | Lifecycle::Analyzing => None,
            Lifecycle::SignalDetected => Some(exec::Job::DropSignal),
            Lifecycle::EnteringPosition => Some(exec::Job::Resolve),
            Lifecycle::PositionOpen => Some(exec::Job::Check),
            Lifecycle::Closing => Some(exec::Job::Close {
                reason: "finishing a close".into(),
            }),
        }
    }

    /// What a decision means in the current lifecycle.
    pub(super) fn job_for(&self, decision: signal::Decision) -> Option<exec::Job> {
        match (decision, self.record.lifecycle) {
            (signal::Decision::Hold, _) => None,
            (
                signal::Decision::Enter {
                    side,
                    stop_price,
                    take_profit_price,
                    reason,
                },
                Lifecycle::Analyzing,
            ) => Some(exec::Job::Enter {
                side,
                stop_price,
                take_profit_price,
                reason,
            }),
            (signal::Decision::Enter { .. }, Lifecycle::PositionOpen | Lifecycle::Closing) => {
                Some(exec::Job::Refuse {
                    reason: guards::Refusal::PositionAlreadyOpen.to_string(),
                })
            }
            (signal::Decision::Exit { reason }, Lifecycle::PositionOpen) => {
                Some(exec::Job::Close { reason })
            }
            // IDLE (not analyzing yet), or an entry under way: nothing to do.
            _ => None,
        }
    }
}
