//! Start-up checks and periodic data integrity: one check runner used at start-up (before the
//! strategy may act), every `[checks] interval` while running, before an operator may set
//! AGGRESSIVE ([`run_online`]), and by `tradebaas check` ([`run_offline`]).
//!
//! The checks, each named in the report and in alerts:
//! - `event_log` — unique ids, continuous sequence, hash chain, timestamps not going backwards and
//!   not later than now + `clock_skew`;
//! - `snapshots` — unique, chronological, not in the future, each after the previous one's event,
//!   payloads JSON objects;
//! - `capital` — the newest snapshot *with capital* ([`capital_missing`]) has per-currency
//!   account summaries that are internally consistent (see [`capital()`]); online, its equity
//!   agrees with a fresh `private/get_account_summary` within `capital_tolerance`. A snapshot
//!   holding an error instead of an account summary is a failed snapshot: it is looked past,
//!   never passed on;
//! - `strategy_states` — every `strategy.<id>` record deserializes and its lifecycle and position
//!   agree ([`record_problems`]);
//! - `mode` — the stored `mode` value is a valid [`StoredMode`](crate::failsafe::StoredMode);
//! - `exchange` (online only) — `public/get_time` answers, with a clock within `clock_skew`.
//!
//! The evaluation is pure (functions over [`IntegrityFacts`] and exchange answers, unit-tested
//! here). The store is read on a blocking thread through its own read-only connection
//! ([`read_integrity_facts`](crate::store::read_integrity_facts)), never through the persister's database thread: walking a long
//! event log takes seconds and must not delay commits, and `tradebaas check` must work the same
//! way without a daemon. Exchange calls go through the broker ([`crate::broker::request`]).
//! Nothing here runs inside an actor handler.
//!
//! Files: `report.rs` (`Check`, `ChecksReport`, `RunKind`), one per check family
//! (`log.rs`: `event_log` and `snapshots`; `capital.rs`; `records.rs`: `strategy_states` and
//! `mode`; `exchange.rs`), `runner.rs` (the runs: start-up, periodic, on demand, offline) and
//! `act.rs` (what a run's outcome does: alerts, the fail-safe, the restriction).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::IntegrityFacts;

mod act;
mod capital;
mod exchange;
mod log;
mod records;

mod runner;
#[cfg(test)]
mod tests;

pub use crate::protocol::checks::{Check, ChecksReport, RunKind};
pub use act::{act_on_periodic, restrict, startup_alert};
pub use capital::{
    FreshSummary, LocalCapital, WithCapital, capital, capital_missing, local_capital,
    newest_with_capital, relative_difference,
};
pub use exchange::exchange;
pub use log::{event_log, snapshots};
pub use records::{mode, record_problems, strategy_states};
pub use runner::{ChecksArgs, on_demand, periodic, read_facts, run_offline, run_online, startup};

/// Check names, as they appear in reports and alert keys.
pub const EVENT_LOG: &str = "event_log";
pub const SNAPSHOTS: &str = "snapshots";
pub const CAPITAL: &str = "capital";
pub const STRATEGY_STATES: &str = "strategy_states";
pub const MODE: &str = "mode";
pub const EXCHANGE: &str = "exchange";

/// The alert key of failed start-up checks (one alert naming every failed check).
pub const STARTUP_ALERT_KEY: &str = "startup_checks:failed";
/// The fail-safe trigger fired when the periodic capital reconciliation fails.
pub const CAPITAL_TRIGGER: &str = "capital_inconsistent";

/// The alert key of a periodic violation of `check`: `integrity:<check>`.
pub fn integrity_alert_key(check: &str) -> String {
    format!("integrity:{check}")
}

/// `[checks]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChecksConfig {
    /// How often the integrity checks run while the daemon runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Event and snapshot timestamps may be this far ahead of the local clock, and the local
    /// clock this far from the exchange's.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Largest accepted relative difference between the newest snapshot's equity and the
    /// exchange's, per currency: |local − exchange| / max(|local|, |exchange|).
    pub capital_tolerance: f64,
    /// Events of the whole chain re-verified per periodic run, oldest first, in the background
    /// (`store::verify_slice`): an edited old row is found within
    /// `ceil(events / full_verify_slice) × interval`.
    pub full_verify_slice: u64,
}

impl Default for ChecksConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60 * 60),
            clock_skew: Duration::from_secs(5 * 60),
            capital_tolerance: 0.10,
            full_verify_slice: 250_000,
        }
    }
}

impl ChecksConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_millis(100) {
            return Err("interval must be at least 100ms".into());
        }
        if self.interval > Duration::from_secs(7 * 24 * 60 * 60) {
            return Err("interval must be at most 7d".into());
        }
        if self.full_verify_slice == 0 {
            return Err("full_verify_slice must be at least 1".into());
        }
        if self.clock_skew.is_zero() {
            return Err("clock_skew must be greater than 0".into());
        }
        if !(self.capital_tolerance.is_finite()
            && self.capital_tolerance > 0.0
            && self.capital_tolerance < 1.0)
        {
            return Err(
                "capital_tolerance must be a ratio above 0 and below 1 (0.10 = 10%)".into(),
            );
        }
        Ok(())
    }
}

/// The store checks over `facts` (`capital` compared with `fresh` when given).
pub fn evaluate_store(
    facts: &IntegrityFacts,
    fresh: Option<&BTreeMap<String, FreshSummary>>,
    config: &ChecksConfig,
    now: DateTime<Utc>,
) -> Vec<Check> {
    vec![
        event_log(facts, now, config.clock_skew),
        snapshots(
            &facts.snapshots,
            facts.chain.last_seq,
            now,
            config.clock_skew,
        ),
        capital(&facts.snapshots, fresh, config.capital_tolerance),
        strategy_states(&facts.state),
        mode(&facts.state),
    ]
}

/// Every store check failing with the same reason (the store could not be read).
fn unreadable_store(reason: &str) -> Vec<Check> {
    [EVENT_LOG, SNAPSHOTS, CAPITAL, STRATEGY_STATES, MODE]
        .iter()
        .map(|n| Check::fail(n, format!("cannot read the store: {reason}")))
        .collect()
}
