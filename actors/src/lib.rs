//! The TradeBaas supervision tree: the root supervisor and the six actors it supervises.
//!
//! ```text
//! supervisor ──┬── alert
//!              ├── state-persister
//!              ├── fail-safe
//!              ├── heartbeat
//!              ├── broker-connection
//!              └── strategy
//! ```
//! Actors talk only by messages and find each other by registry name ([`names::Names`]). Pure
//! logic (backoff, restart policy, protocol codec, reconnect state, health rules, lifecycle) lives
//! in plain modules without actors or I/O. Nothing here serves HTTP; the only HTTP is the alert
//! sinks' outbound POSTs (`alert::transport`).

pub mod alert;
pub mod backoff;
pub mod broker;
pub mod checks;
pub mod client;
pub mod clock;
pub mod failsafe;
pub mod health;
pub mod heartbeat;
#[cfg(any(test, feature = "test-hooks"))]
pub mod hooks;
pub mod memory_net;
pub mod metrics;
pub mod mode;
pub mod model;
pub mod names;
pub mod notify;
pub mod orders;
pub mod persister;
pub mod protocol;
pub mod recovery;
pub mod secret;
pub mod store;
pub mod strategy;
pub mod supervisor;
pub mod task;
pub mod test_points;
#[cfg(any(test, feature = "test-hooks"))]
pub mod testkit;
pub mod tree;
