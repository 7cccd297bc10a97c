//! `[health]`: the thresholds of the health rules, with their defaults and validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[health]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How long each actor has to answer a status request.
    #[serde(with = "humantime_serde")]
    pub actor_timeout: Duration,
    /// How long the broker may be disconnected before health is unhealthy.
    #[serde(with = "humantime_serde")]
    pub broker_grace: Duration,
    /// Market data older than this is stale (unhealthy).
    #[serde(with = "humantime_serde")]
    pub market_data_stale: Duration,
    /// Process RSS above this share of its memory limit (the cgroup's `memory.max`, else the
    /// machine's memory) is degraded.
    pub memory_degraded_percent: f64,
    /// Process CPU above this (percent of one core) is degraded.
    pub cpu_degraded_percent: f64,
    /// More errors per minute than this is unhealthy.
    pub error_rate_unhealthy_per_minute: f64,
    /// An event log last written longer ago than this is unhealthy (the heartbeat writes one
    /// event per interval, so a healthy daemon writes far more often).
    #[serde(with = "humantime_serde")]
    pub event_log_stale: Duration,
    /// A strategy job running longer than this makes the execution queue STALLED (unhealthy).
    #[serde(with = "humantime_serde")]
    pub queue_stalled_after: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            actor_timeout: Duration::from_millis(250),
            broker_grace: Duration::from_secs(5),
            market_data_stale: Duration::from_secs(300),
            memory_degraded_percent: 80.0,
            cpu_degraded_percent: 90.0,
            error_rate_unhealthy_per_minute: 10.0,
            event_log_stale: Duration::from_secs(10 * 60),
            queue_stalled_after: Duration::from_secs(5 * 60),
        }
    }
}

impl HealthConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.actor_timeout.is_zero() {
            return Err("actor_timeout must be greater than 0".into());
        }
        if self.market_data_stale.is_zero() {
            return Err("market_data_stale must be greater than 0".into());
        }
        if self.event_log_stale.is_zero() {
            return Err("event_log_stale must be greater than 0".into());
        }
        if self.queue_stalled_after.is_zero() {
            return Err("queue_stalled_after must be greater than 0".into());
        }
        if !(self.error_rate_unhealthy_per_minute.is_finite()
            && self.error_rate_unhealthy_per_minute >= 0.0)
        {
            return Err("error_rate_unhealthy_per_minute must be a number of at least 0".into());
        }
        for (name, v) in [
            ("memory_degraded_percent", self.memory_degraded_percent),
            ("cpu_degraded_percent", self.cpu_degraded_percent),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a number greater than 0"));
            }
        }
        Ok(())
    }
}
