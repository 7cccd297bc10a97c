//! The root supervisor.
pub mod policy;
