//! Stored records and their keys, and what the exchange reports: the data that more than one
//! actor reads or writes. Plain data and pure functions; no actor, no I/O.
//!
//! Boundary: may import `crate::mode` and `crate::clock` (pure leaves) and nothing of the
//! actors, `protocol` or `client`.

pub mod exchange;
pub mod mode;
pub mod strategy;

pub use exchange::{ErrorClass, ExOrder, ExPosition, RpcError, Ticker};
pub use mode::{MODE_KEY, StoredMode};
pub use strategy::{
    Decision, Intent, Lifecycle, PositionData, RECORD_KEY_PREFIX, Side, StrategyRecord,
    TransitionData, record_key,
};

/// The state key the daemon stores the last recovery report under.
pub const RECOVERY_KEY: &str = "recovery.last";

/// The state key holding `{open: [AlertRecord], recent: [AlertRecord]}`, rewritten with every
/// stored alert change and reloaded at start.
pub const ALERTS_STATE_KEY: &str = "alerts";
