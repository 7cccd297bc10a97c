//! The gathering client of `/health`: [`ask`] one actor for its status with a timeout, and
//! [`gather`] the supervisor's and the six actors' answers at once. No rules here (those are
//! [`super::assess`] and friends, pure); nothing reads shared state.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};

use crate::alert::{AlertMsg, AlertStatus};
use crate::broker::{BrokerMsg, BrokerStatus};
use crate::failsafe::{FailSafeMsg, FailSafeStatus};
use crate::heartbeat::{HeartbeatMsg, HeartbeatStatus};
use crate::names::{ChildName, Names};
use crate::persister::{PersisterMsg, PersisterStatus};
use crate::strategy::{StrategyMsg, StrategyStatus};
use crate::supervisor::{SupervisorMsg, SupervisorStatus};

/// One actor's answer to a status request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<T> {
    Answered(T),
    /// Registered, but no answer within the timeout.
    Unresponsive,
    /// Not registered (stopped, restarting or escalated).
    NotRunning,
}

impl<T> Reply<T> {
    /// The answer, if there was one.
    pub fn answered(&self) -> Option<&T> {
        match self {
            Reply::Answered(t) => Some(t),
            _ => None,
        }
    }

    /// How the actor answered, for error messages: `answered`, `unresponsive`, `not running`.
    pub fn describe(&self) -> &'static str {
        match self {
            Reply::Answered(_) => "answered",
            Reply::Unresponsive => "unresponsive",
            Reply::NotRunning => "not running",
        }
    }
}

/// Every reply a health report is built from.
#[derive(Debug, Clone)]
pub struct Replies {
    pub supervisor: Reply<SupervisorStatus>,
    pub alert: Reply<AlertStatus>,
    pub persister: Reply<PersisterStatus>,
    pub fail_safe: Reply<FailSafeStatus>,
    pub heartbeat: Reply<HeartbeatStatus>,
    pub broker: Reply<BrokerStatus>,
    pub strategy: Reply<StrategyStatus>,
}

/// Asks `actor` with `build` and waits at most `timeout`.
pub async fn ask<M, T>(
    actor: Option<ActorRef<M>>,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
    timeout: Duration,
) -> Reply<T>
where
    M: Message,
    T: Send + 'static,
{
    let Some(actor) = actor else {
        return Reply::NotRunning;
    };
    match actor.call(build, Some(timeout)).await {
        Ok(CallResult::Success(t)) => Reply::Answered(t),
        Ok(CallResult::Timeout) => Reply::Unresponsive,
        // The actor stopped between lookup and answer.
        Ok(CallResult::SenderError) | Err(_) => Reply::NotRunning,
    }
}

/// Asks the supervisor and all six actors at once; the whole gather takes at most `timeout`
/// (plus scheduling).
pub async fn gather(names: &Names, timeout: Duration) -> Replies {
    let supervisor =
        ractor::registry::where_is(names.supervisor()).map(ActorRef::<SupervisorMsg>::from);
    let (supervisor, alert, persister, fail_safe, heartbeat, broker, strategy) = tokio::join!(
        ask(supervisor, SupervisorMsg::Status, timeout),
        ask(names.lookup(ChildName::Alert), AlertMsg::Status, timeout),
        ask(
            names.lookup(ChildName::StatePersister),
            PersisterMsg::Status,
            timeout
        ),
        ask(
            names.lookup(ChildName::FailSafe),
            FailSafeMsg::Status,
            timeout
        ),
        ask(
            names.lookup(ChildName::Heartbeat),
            HeartbeatMsg::Status,
            timeout
        ),
        ask(
            names.lookup(ChildName::BrokerConnection),
            BrokerMsg::Status,
            timeout
        ),
        ask(
            names.lookup(ChildName::Strategy),
            StrategyMsg::Status,
            timeout
        ),
    );
    Replies {
        supervisor,
        alert,
        persister,
        fail_safe,
        heartbeat,
        broker,
        strategy,
    }
}

/// Liveness: whether the root supervisor answers a ping within `timeout`.
pub async fn supervisor_alive(names: &Names, timeout: Duration) -> bool {
    let supervisor =
        ractor::registry::where_is(names.supervisor()).map(ActorRef::<SupervisorMsg>::from);
    matches!(
        ask(supervisor, SupervisorMsg::Ping, timeout).await,
        Reply::Answered(())
    )
}
