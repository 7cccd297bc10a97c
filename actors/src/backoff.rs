//! The one delay schedule used for restarts and reconnects.
//!
//! `delay(n) = min(max, initial × multiplierⁿ) × (1 − jitter × r)`, `r` uniform in `[0, 1)`.
//! Jitter spreads each delay *downwards*, so the configured schedule is an upper bound: with the
//! broker defaults the first reconnect attempt comes within 1 s, and an operator never waits longer
//! than the numbers in the config say. (backon's jitter adds up to 100 % of the delay and
//! exponential-backoff's factor is an integer; neither matches a configured schedule, and the
//! formula is three lines.)

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An exponential backoff schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Delay before the first retry.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Upper bound of any delay.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    /// Growth factor per attempt (≥ 1).
    pub multiplier: f64,
    /// Fraction (0–1) by which a delay may be shortened at random.
    pub jitter: f64,
}

impl Backoff {
    /// A schedule without jitter (tests and deterministic configs).
    pub const fn fixed_ratio(initial: Duration, max: Duration, multiplier: f64) -> Self {
        Self {
            initial,
            max,
            multiplier,
            jitter: 0.0,
        }
    }

    /// Checks the values; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.initial.is_zero() {
            return Err("initial must be greater than 0".into());
        }
        if self.max < self.initial {
            return Err("max must be at least initial".into());
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err("multiplier must be a number ≥ 1".into());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err("jitter must be between 0 and 1".into());
        }
        Ok(())
    }

    /// The nominal delay before retry `attempt` (0-based), without jitter.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay before retry `attempt` with jitter drawn from `unit` (a value in `[0, 1)`).
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let nominal = self.nominal(attempt);
        let factor = 1.0 - self.jitter * unit.clamp(0.0, 1.0);
        nominal.mul_f64(factor)
    }

    /// The delay before retry `attempt`, with random jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn backoff_doubles_until_cap() {
        let b = Backoff::fixed_ratio(secs(1), secs(16), 2.0);
        let got: Vec<Duration> = (0..7).map(|n| b.delay(n)).collect();
        assert_eq!(
            got,
            [
                secs(1),
                secs(2),
                secs(4),
                secs(8),
                secs(16),
                secs(16),
                secs(16)
            ]
        );
    }

    #[test]
    fn jitter_only_shortens() {
        let b = Backoff {
            jitter: 0.2,
            ..Backoff::fixed_ratio(secs(10), secs(60), 2.0)
        };
        assert_eq!(b.delay_with(0, 0.0), secs(10));
        assert_eq!(b.delay_with(0, 0.5), secs(9));
        for _ in 0..1000 {
            let d = b.delay(1);
            assert!(d <= secs(20) && d >= secs(16), "{d:?}");
        }
    }

    #[test]
    fn huge_attempt_numbers_saturate_at_max() {
        let b = Backoff::fixed_ratio(secs(1), secs(30), 3.0);
        assert_eq!(b.delay(u32::MAX), secs(30));
    }

    #[test]
    fn validate_names_the_problem() {
        let mut b = Backoff::fixed_ratio(secs(1), secs(30), 2.0);
        b.jitter = 1.5;
        assert!(b.validate().unwrap_err().contains("jitter"));
        b.jitter = 0.0;
        b.multiplier = 0.5;
        assert!(b.validate().unwrap_err().contains("multiplier"));
    }
}
