//! `[heartbeat]` and the round interval that follows from it and the systemd watchdog.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[heartbeat]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// How often every actor is pinged and system stats are sampled (shortened to half the
    /// systemd watchdog interval when that is shorter).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long a ping may take before the actor counts as unanswered (at most one round).
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// How often a `heartbeat` event is written to the event log.
    #[serde(with = "humantime_serde")]
    pub event_interval: Duration,
    /// Consecutive unanswered rounds before a child counts as wedged: trading is restricted to
    /// OBSERVE_ONLY and an alert raised. 2 lets a supervisor restart that finishes within a
    /// round pass.
    pub unanswered_rounds: u32,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(1),
            event_interval: Duration::from_secs(30),
            unanswered_rounds: 2,
        }
    }
}

impl HeartbeatConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_millis(10) {
            return Err("interval must be at least 10ms".into());
        }
        if self.ping_timeout.is_zero() {
            return Err("ping_timeout must be greater than 0".into());
        }
        if self.ping_timeout > self.interval {
            return Err("ping_timeout must not be longer than interval".into());
        }
        if self.event_interval < Duration::from_millis(10) {
            return Err("event_interval must be at least 10ms".into());
        }
        if self.unanswered_rounds == 0 {
            return Err("unanswered_rounds must be at least 1".into());
        }
        Ok(())
    }
}

/// The shortest round the heartbeat runs, whatever the watchdog says.
pub(super) const MIN_ROUND: Duration = Duration::from_millis(10);

/// How often a round runs: `interval`, but at least every half `watchdog` (systemd's
/// `WATCHDOG_USEC`), so two rounds fit in one watchdog interval.
pub fn round_interval(config: &HeartbeatConfig, watchdog: Option<Duration>) -> Duration {
    match watchdog {
        Some(w) => config.interval.min(w / 2).max(MIN_ROUND),
        None => config.interval,
    }
}
