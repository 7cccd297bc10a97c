//! The trading mode as stored: the state key and its value.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::mode::TradingMode;

/// The state key holding the mode.
pub const MODE_KEY: &str = "mode";

/// The `"mode"` state value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMode {
    pub mode: TradingMode,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub changed_at: Option<DateTime<Utc>>,
}
