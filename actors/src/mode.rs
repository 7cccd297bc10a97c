//! The trading mode the fail-safe owns.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What the strategies may do.
///
/// - `Aggressive`: normal trading.
/// - `ObserveOnly`: analyse and manage open positions (exits, protective orders); open nothing.
/// - `Shutdown`: latched after a fail-safe trigger; like `ObserveOnly`, and only an operator
///   clears it (to `ObserveOnly` first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradingMode {
    Aggressive,
    ObserveOnly,
    Shutdown,
}

impl TradingMode {
    /// Every mode, in the order the fail-safe escalates through them.
    pub const ALL: [TradingMode; 3] = [
        TradingMode::Aggressive,
        TradingMode::ObserveOnly,
        TradingMode::Shutdown,
    ];

    /// The stored and displayed name.
    pub const fn as_str(self) -> &'static str {
        match self {
            TradingMode::Aggressive => "AGGRESSIVE",
            TradingMode::ObserveOnly => "OBSERVE_ONLY",
            TradingMode::Shutdown => "SHUTDOWN",
        }
    }

    /// Whether new positions may be opened.
    pub const fn allows_entries(self) -> bool {
        matches!(self, TradingMode::Aggressive)
    }
}

impl fmt::Display for TradingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TradingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "AGGRESSIVE" => Ok(TradingMode::Aggressive),
            "OBSERVE_ONLY" => Ok(TradingMode::ObserveOnly),
            "SHUTDOWN" => Ok(TradingMode::Shutdown),
            other => Err(format!(
                "unknown trading mode {other:?} (expected AGGRESSIVE, OBSERVE_ONLY or SHUTDOWN)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_name() {
        for m in [
            TradingMode::Aggressive,
            TradingMode::ObserveOnly,
            TradingMode::Shutdown,
        ] {
            assert_eq!(m.as_str().parse::<TradingMode>().unwrap(), m);
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
        assert!("aggressive".parse::<TradingMode>().is_err());
    }

    #[test]
    fn only_aggressive_opens_positions() {
        assert!(TradingMode::Aggressive.allows_entries());
        assert!(!TradingMode::ObserveOnly.allows_entries());
        assert!(!TradingMode::Shutdown.allows_entries());
    }
}
