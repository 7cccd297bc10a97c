//! The gathering side of `/health`: [`gather`] the supervisor's and the six actors' answers at
//! once, each asked through [`crate::client`] with a timeout. No rules here (those are
//! [`super::assess`] and friends, pure); nothing reads shared state.

use std::time::Duration;

use ractor::ActorRef;

use crate::client::{Reply, ask, ask_ref};
use crate::names::Names;
use crate::protocol::alert::{AlertMsg, AlertStatus};
use crate::protocol::broker::{BrokerMsg, BrokerStatus};
use crate::protocol::failsafe::{FailSafeMsg, FailSafeStatus};
use crate::protocol::heartbeat::{HeartbeatMsg, HeartbeatStatus};
use crate::protocol::persister::{PersisterMsg, PersisterStatus};
use crate::protocol::strategy::{StrategyMsg, StrategyStatus};
use crate::protocol::supervisor::{SupervisorMsg, SupervisorStatus};

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

/// Asks the supervisor and all six actors at once; the whole gather takes at most `timeout`
/// (plus scheduling).
pub async fn gather(names: &Names, timeout: Duration) -> Replies {
    let supervisor =
        ractor::registry::where_is(names.supervisor()).map(ActorRef::<SupervisorMsg>::from);
    let (supervisor, alert, persister, fail_safe, heartbeat, broker, strategy) = tokio::join!(
        ask_ref(supervisor, SupervisorMsg::Status, timeout),
        ask(names, AlertMsg::Status, timeout),
        ask(names, PersisterMsg::Status, timeout),
        ask(names, FailSafeMsg::Status, timeout),
        ask(names, HeartbeatMsg::Status, timeout),
        ask(names, BrokerMsg::Status, timeout),
        ask(names, StrategyMsg::Status, timeout),
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
        ask_ref(supervisor, SupervisorMsg::Ping, timeout).await,
        Reply::Answered(())
    )
}
