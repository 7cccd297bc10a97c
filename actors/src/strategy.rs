//! The `strategy` actor (placeholder until the lifecycle lands).
use ractor::RpcReplyPort;

use crate::broker::protocol::Ticker;

/// Messages of the strategy actor.
pub enum StrategyMsg {
    Ticker(Ticker),
    Ping(RpcReplyPort<()>),
}
