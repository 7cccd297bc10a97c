//! When to try connecting again: exponential backoff and a circuit breaker. Pure logic.
//!
//! After a live session is lost the first attempt comes after `backoff(0)` (1 s by default);
//! each failed attempt waits `backoff(n)` for the `n`-th consecutive failure (2, 4, 8, 16 s).
//! After `failures_before_open` consecutive failures the breaker opens for `open_for` (5 min);
//! then exactly one half-open attempt is made: success closes the breaker, failure opens it again.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;

/// `[broker.reconnect]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectPolicy {
    /// Delays between attempts.
    pub backoff: Backoff,
    /// Consecutive failed attempts that open the circuit breaker.
    pub failures_before_open: u32,
    /// How long the breaker stays open before one half-open attempt.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(16),
                multiplier: 2.0,
                jitter: 0.1,
            },
            failures_before_open: 5,
            open_for: Duration::from_secs(300),
        }
    }
}

impl ReconnectPolicy {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.failures_before_open == 0 {
            return Err("failures_before_open must be at least 1".into());
        }
        if self.open_for.is_zero() {
            return Err("open_for must be greater than 0".into());
        }
        self.backoff.validate().map_err(|e| format!("backoff.{e}"))
    }
}

/// The circuit breaker's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Attempts follow the backoff.
    Closed,
    /// No attempts until the instant given.
    Open { until: Instant },
    /// The single attempt after an open period is under way.
    HalfOpen,
}

impl Breaker {
    /// `closed`, `open` or `half_open`.
    pub fn name(&self) -> &'static str {
        match self {
            Breaker::Closed => "closed",
            Breaker::Open { .. } => "open",
            Breaker::HalfOpen => "half_open",
        }
    }
}

/// What to do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Attempt again after this delay.
    RetryIn(Duration),
    /// The breaker opened (or re-opened): attempt once more after this long.
    CircuitOpen(Duration),
}

impl Next {
    /// The wait, whichever it is.
    pub fn delay(self) -> Duration {
        match self {
            Next::RetryIn(d) | Next::CircuitOpen(d) => d,
        }
    }
}

/// Failure counting and the breaker.
#[derive(Debug, Clone)]
pub struct Reconnector {
    policy: ReconnectPolicy,
    consecutive_failures: u32,
    breaker: Breaker,
}

impl Reconnector {
    /// A closed breaker with no failures.
    pub fn new(policy: ReconnectPolicy) -> Self {
        Self {
            policy,
            consecutive_failures: 0,
            breaker: Breaker::Closed,
        }
    }

    /// Failed attempts since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The breaker's position.
    pub fn breaker(&self) -> Breaker {
        self.breaker
    }

    /// A session was established: reset.
    pub fn on_connected(&mut self) {
        self.consecutive_failures = 0;
        self.breaker = Breaker::Closed;
    }

    /// A live session was lost: the first attempt comes after the initial delay.
    pub fn on_session_lost(&mut self, unit: f64) -> Next {
        self.consecutive_failures = 0;
        self.breaker = Breaker::Closed;
        Next::RetryIn(self.policy.backoff.delay_with(0, unit))
    }

    /// An attempt is starting at `now`; marks the half-open attempt.
    pub fn on_attempt(&mut self, now: Instant) {
        if let Breaker::Open { until } = self.breaker
            && now >= until
        {
            self.breaker = Breaker::HalfOpen;
        }
    }

    /// An attempt failed at `now`.
    pub fn on_attempt_failed(&mut self, now: Instant, unit: f64) -> Next {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if self.breaker == Breaker::HalfOpen
            || self.consecutive_failures >= self.policy.failures_before_open
        {
            self.breaker = Breaker::Open {
                until: now + self.policy.open_for,
            };
            return Next::CircuitOpen(self.policy.open_for);
        }
        Next::RetryIn(
            self.policy
                .backoff
                .delay_with(self.consecutive_failures, unit),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> ReconnectPolicy {
        let mut p = ReconnectPolicy::default();
        p.backoff.jitter = 0.0;
        p
    }

    #[test]
    fn refused_five_times_opens_breaker() {
        let mut r = Reconnector::new(no_jitter());
        let t0 = Instant::now();
        let mut delays = vec![r.on_session_lost(0.0)];
        for _ in 0..5 {
            r.on_attempt(t0);
            delays.push(r.on_attempt_failed(t0, 0.0));
        }
        let secs = Duration::from_secs;
        assert_eq!(
            delays,
            [
                Next::RetryIn(secs(1)),
                Next::RetryIn(secs(2)),
                Next::RetryIn(secs(4)),
                Next::RetryIn(secs(8)),
                Next::RetryIn(secs(16)),
                Next::CircuitOpen(secs(300)),
            ]
        );
        assert_eq!(r.breaker().name(), "open");
        assert_eq!(r.consecutive_failures(), 5);
    }

    #[test]
    fn half_open_attempt_reopens_on_failure_and_closes_on_success() {
        let mut r = Reconnector::new(no_jitter());
        let t0 = Instant::now();
        for _ in 0..5 {
            r.on_attempt_failed(t0, 0.0);
        }
        let after_open = t0 + Duration::from_secs(300);
        r.on_attempt(after_open);
        assert_eq!(r.breaker(), Breaker::HalfOpen);
        assert_eq!(
            r.on_attempt_failed(after_open, 0.0),
            Next::CircuitOpen(Duration::from_secs(300))
        );
        assert_eq!(r.breaker().name(), "open");
        let later = after_open + Duration::from_secs(300);
        r.on_attempt(later);
        r.on_connected();
        assert_eq!(r.breaker(), Breaker::Closed);
        assert_eq!(r.consecutive_failures(), 0);
    }

    #[test]
    fn an_attempt_before_the_open_period_ends_stays_open() {
        let mut r = Reconnector::new(no_jitter());
        let t0 = Instant::now();
        for _ in 0..5 {
            r.on_attempt_failed(t0, 0.0);
        }
        r.on_attempt(t0 + Duration::from_secs(10));
        assert_eq!(r.breaker().name(), "open");
    }

    #[test]
    fn first_attempt_after_a_drop_is_within_one_second() {
        let mut r = Reconnector::new(ReconnectPolicy::default());
        for _ in 0..1000 {
            assert!(r.on_session_lost(fastrand::f64()).delay() <= Duration::from_secs(1));
        }
    }
}
