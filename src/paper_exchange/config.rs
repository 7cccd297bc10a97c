//! `[paper_exchange]` configuration: what the simulated market looks like and which limits the
//! simulated server enforces. Owns the defaults and their validation; knows nothing of sockets.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::market::InstrumentSpec;

/// `[paper_exchange]` in the daemon's TOML config.
///
/// Every field has a default (see [`PaperConfig::default`]), so an empty table is a valid config.
/// Durations are human strings such as `"10s"` or `"100ms"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaperConfig {
    /// Instruments the exchange lists and simulates. Only built-in specs are known:
    /// `BTC-PERPETUAL` and `ETH-PERPETUAL`.
    pub instruments: Vec<String>,
    /// Ticker updates per second, per instrument.
    pub ticks_per_second: f64,
    /// Relative standard deviation of one random-walk step (per tick).
    pub volatility: f64,
    /// Seed for the random walk and everything else random, for reproducible runs.
    pub seed: Option<u64>,
    /// Smallest interval `public/set_heartbeat` accepts (Deribit: 10 s).
    #[serde(with = "humantime_serde")]
    pub min_heartbeat_interval: Duration,
    /// Largest request frame accepted; larger ones get `-32600 request entity too large`.
    pub max_frame_bytes: usize,
    /// Whether the `paper/*` control methods are served over the wire.
    pub allow_control: bool,
    /// Starting BTC balance of the simulated account.
    pub initial_balance_btc: f64,
    /// Starting ETH balance of the simulated account.
    pub initial_balance_eth: f64,
}

impl Default for PaperConfig {
    fn default() -> Self {
        Self {
            instruments: vec!["BTC-PERPETUAL".to_owned(), "ETH-PERPETUAL".to_owned()],
            ticks_per_second: 10.0,
            volatility: 0.0002,
            seed: None,
            min_heartbeat_interval: Duration::from_secs(10),
            max_frame_bytes: 32 * 1024,
            allow_control: true,
            initial_balance_btc: 10.0,
            initial_balance_eth: 100.0,
        }
    }
}

impl PaperConfig {
    /// Checks every field; the error names the offending field and what it must be.
    pub fn validate(&self) -> Result<(), String> {
        if self.instruments.is_empty() {
            return Err("instruments must list at least one instrument".to_owned());
        }
        for (i, name) in self.instruments.iter().enumerate() {
            if InstrumentSpec::builtin(name).is_none() {
                return Err(format!(
                    "instruments: unknown instrument {name:?} (known: {})",
                    InstrumentSpec::BUILTIN
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if self.instruments[..i].contains(name) {
                return Err(format!("instruments: {name:?} is listed twice"));
            }
        }
        if !(self.ticks_per_second.is_finite() && self.ticks_per_second > 0.0) {
            return Err("ticks_per_second must be > 0".to_owned());
        }
        if self.ticks_per_second > 1_000_000.0 {
            return Err("ticks_per_second must be <= 1000000".to_owned());
        }
        if !(self.volatility.is_finite() && (0.0..0.1).contains(&self.volatility)) {
            return Err("volatility must be >= 0 and < 0.1".to_owned());
        }
        if self.min_heartbeat_interval.is_zero() {
            return Err("min_heartbeat_interval must be > 0".to_owned());
        }
        if self.max_frame_bytes < 256 {
            return Err("max_frame_bytes must be >= 256".to_owned());
        }
        if !(self.initial_balance_btc.is_finite() && self.initial_balance_btc >= 0.0) {
            return Err("initial_balance_btc must be >= 0".to_owned());
        }
        if !(self.initial_balance_eth.is_finite() && self.initial_balance_eth >= 0.0) {
            return Err("initial_balance_eth must be >= 0".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(PaperConfig::default().validate(), Ok(()));
    }

    #[test]
    fn empty_toml_table_gives_defaults() {
        let parsed: PaperConfig = toml::from_str("").unwrap();
        assert_eq!(parsed, PaperConfig::default());
    }

    #[test]
    fn durations_parse_from_human_strings() {
        let parsed: PaperConfig =
            toml::from_str("min_heartbeat_interval = \"100ms\"\nseed = 7").unwrap();
        assert_eq!(parsed.min_heartbeat_interval, Duration::from_millis(100));
        assert_eq!(parsed.seed, Some(7));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<PaperConfig>("tick_rate = 5").is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let bad = PaperConfig {
            ticks_per_second: 0.0,
            ..PaperConfig::default()
        };
        assert_eq!(
            bad.validate(),
            Err("ticks_per_second must be > 0".to_owned())
        );
        let unknown = PaperConfig {
            instruments: vec!["DOGE-PERPETUAL".to_owned()],
            ..PaperConfig::default()
        };
        assert!(unknown.validate().unwrap_err().starts_with("instruments"));
        let tiny = PaperConfig {
            max_frame_bytes: 10,
            ..PaperConfig::default()
        };
        assert!(tiny.validate().unwrap_err().starts_with("max_frame_bytes"));
    }
}
