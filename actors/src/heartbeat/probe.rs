//! One heartbeat round, run in a task: every sibling pinged concurrently by name (the
//! fail-safe with `GetMode`, so the round learns the mode), the supervisor asked which children
//! are escalated, and a system sample; the result is a [`BeatReport`]. It owns no state; it
//! talks to actors only through their `Ping`/`GetMode`/`Status` questions, each with a timeout.

use std::collections::BTreeSet;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};
use tokio::time::Instant;

use super::round::PingOutcome;
use super::sampler::{Sampler, SystemStats};
use crate::alert::AlertMsg;
use crate::broker::BrokerMsg;
use crate::failsafe::FailSafeMsg;
use crate::mode::TradingMode;
use crate::names::{ChildName, Names};
use crate::persister::PersisterMsg;
use crate::strategy::StrategyMsg;
use crate::supervisor::{ChildState, SupervisorMsg};

/// The outcome of one round (internal; sent from the round's task).
pub struct BeatReport {
    pub(super) pings: Vec<(ChildName, PingOutcome)>,
    /// The trading mode, from the fail-safe's answer (its liveness ping).
    pub(super) mode: Option<TradingMode>,
    /// Children the supervisor reported escalated (empty when it did not answer).
    pub(super) escalated: BTreeSet<ChildName>,
    pub(super) system: Option<SystemStats>,
    pub(super) sampler: Option<Sampler>,
}

async fn ping<M: Message>(
    names: &Names,
    child: ChildName,
    make: fn(RpcReplyPort<()>) -> M,
    timeout: Duration,
) -> (ChildName, PingOutcome) {
    let Some(actor) = names.lookup::<M>(child) else {
        return (child, PingOutcome::Absent);
    };
    let started = Instant::now();
    let outcome = match actor.call(make, Some(timeout)).await {
        Ok(CallResult::Success(())) => PingOutcome::Answered(started.elapsed()),
        Ok(CallResult::Timeout) => PingOutcome::TimedOut,
        Ok(CallResult::SenderError) | Err(_) => PingOutcome::Failed,
    };
    (child, outcome)
}

/// The fail-safe's ping: `GetMode`, so the round also learns the mode for the status line.
async fn ping_fail_safe(
    names: &Names,
    timeout: Duration,
) -> ((ChildName, PingOutcome), Option<TradingMode>) {
    let child = ChildName::FailSafe;
    let Some(actor) = names.lookup::<FailSafeMsg>(child) else {
        return ((child, PingOutcome::Absent), None);
    };
    let started = Instant::now();
    match actor.call(FailSafeMsg::GetMode, Some(timeout)).await {
        Ok(CallResult::Success(mode)) => (
            (child, PingOutcome::Answered(started.elapsed())),
            Some(mode),
        ),
        Ok(CallResult::Timeout) => ((child, PingOutcome::TimedOut), None),
        Ok(CallResult::SenderError) | Err(_) => ((child, PingOutcome::Failed), None),
    }
}

/// The children the supervisor reports escalated; empty when it does not answer in `timeout`.
async fn escalated_children(names: &Names, timeout: Duration) -> BTreeSet<ChildName> {
    let Some(supervisor) = ActorRef::<SupervisorMsg>::where_is(names.supervisor()) else {
        return BTreeSet::new();
    };
    match supervisor.call(SupervisorMsg::Status, Some(timeout)).await {
        Ok(CallResult::Success(status)) => status
            .children
            .iter()
            .filter(|c| c.state == ChildState::Escalated)
            .map(|c| c.name)
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// One round: every sibling pinged concurrently (and the supervisor asked which children are
/// escalated), then a system sample.
pub(super) async fn round(
    names: Names,
    timeout: Duration,
    mut sampler: Option<Sampler>,
) -> BeatReport {
    let (a, p, (f, mode), b, s, escalated) = tokio::join!(
        ping(&names, ChildName::Alert, AlertMsg::Ping, timeout),
        ping(
            &names,
            ChildName::StatePersister,
            PersisterMsg::Ping,
            timeout
        ),
        ping_fail_safe(&names, timeout),
        ping(
            &names,
            ChildName::BrokerConnection,
            BrokerMsg::Ping,
            timeout
        ),
        ping(&names, ChildName::Strategy, StrategyMsg::Ping, timeout),
        escalated_children(&names, timeout),
    );
    let system = sampler
        .as_mut()
        .map(|s| s.sample(std::time::Instant::now()));
    BeatReport {
        pings: vec![a, p, f, b, s],
        mode,
        escalated,
        system,
        sampler,
    }
}
