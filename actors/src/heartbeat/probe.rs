//! One heartbeat round, run in a task: every sibling pinged concurrently by name (the
//! fail-safe with `GetMode`, so the round learns the mode), the supervisor asked which children
//! are escalated, and a system sample; the result is a [`BeatReport`]. It owns no state; it
//! talks to actors only through their `Ping`/`GetMode`/`Status` questions, each with a timeout.

use std::collections::BTreeSet;
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};
use tokio::time::Instant;

use super::round::PingOutcome;
use super::sampler::{Sampler, SystemStats};
use crate::client::{self, NoAnswer};
use crate::mode::TradingMode;
use crate::names::{Child, ChildName, Names};
use crate::protocol::alert::AlertMsg;
use crate::protocol::broker::BrokerMsg;
use crate::protocol::failsafe::FailSafeMsg;
use crate::protocol::persister::PersisterMsg;
use crate::protocol::strategy::StrategyMsg;
use crate::protocol::supervisor::{ChildState, SupervisorMsg};

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

/// What a [`client::call`] that got no answer means for a ping.
fn outcome(failure: NoAnswer) -> PingOutcome {
    match failure {
        NoAnswer::NotRunning => PingOutcome::Absent,
        NoAnswer::TimedOut => PingOutcome::TimedOut,
        NoAnswer::NotDelivered => PingOutcome::Failed,
    }
}

async fn ping<C: Child>(
    names: &Names,
    make: fn(RpcReplyPort<()>) -> C,
    timeout: Duration,
) -> (ChildName, PingOutcome) {
    let started = Instant::now();
    let answer = client::call(names.get::<C>(), make, timeout).await;
    let outcome = match answer {
        Ok(()) => PingOutcome::Answered(started.elapsed()),
        Err(failure) => outcome(failure),
    };
    (C::NAME, outcome)
}

/// The fail-safe's ping: `GetMode`, so the round also learns the mode for the status line.
async fn ping_fail_safe(
    names: &Names,
    timeout: Duration,
) -> ((ChildName, PingOutcome), Option<TradingMode>) {
    let started = Instant::now();
    let answer = client::call(names.get::<FailSafeMsg>(), FailSafeMsg::GetMode, timeout).await;
    let child = FailSafeMsg::NAME;
    match answer {
        Ok(mode) => (
            (child, PingOutcome::Answered(started.elapsed())),
            Some(mode),
        ),
        Err(failure) => ((child, outcome(failure)), None),
    }
}

/// The children the supervisor reports escalated; empty when it does not answer in `timeout`.
async fn escalated_children(names: &Names, timeout: Duration) -> BTreeSet<ChildName> {
    let supervisor = ActorRef::<SupervisorMsg>::where_is(names.supervisor());
    match client::call(supervisor, SupervisorMsg::Status, timeout).await {
        Ok(status) => status
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
        ping(&names, AlertMsg::Ping, timeout),
        ping(&names, PersisterMsg::Ping, timeout),
        ping_fail_safe(&names, timeout),
        ping(&names, BrokerMsg::Ping, timeout),
        ping(&names, StrategyMsg::Ping, timeout),
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
