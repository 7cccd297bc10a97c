//! Client-side request pacing so the daemon stays inside Deribit's credit buckets and never sees
//! 10028 `too_many_requests` (which also terminates the session) in normal operation.
//!
//! Deribit keeps two buckets per subaccount (reference §10): matching-engine requests (orders,
//! edits, cancels; burst 20–100, 5–30 req/s by volume tier) and everything else (burst 100,
//! ~20 req/s). The current numbers are in `get_account_summary.limits`. Each bucket here is a
//! `governor` GCRA limiter with that burst and rate, on a clock that follows tokio's (so paused
//! time in tests drives it).
//!
//! Not modelled: the separate `public/get_instruments` (1/s) and subscribe (~3.3/s, burst 10)
//! limits; both are sent rarely (at start and after reconnect).

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::Quota;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use serde::Deserialize;
use serde_json::Value;

/// Which Deribit credit bucket a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// Orders, edits and cancels.
    MatchingEngine,
    /// Everything else.
    NonMatching,
}

/// The bucket a JSON-RPC method draws from: `buy`, `sell`, `edit*`, `cancel*`, `close_position`
/// and `mass_quote` (any scope prefix) are matching-engine; everything else is not.
pub fn method_kind(method: &str) -> RequestKind {
    let name = method.rsplit('/').next().unwrap_or(method);
    let matching = matches!(name, "buy" | "sell" | "close_position" | "mass_quote")
        || name.starts_with("edit")
        || name.starts_with("cancel");
    if matching {
        RequestKind::MatchingEngine
    } else {
        RequestKind::NonMatching
    }
}

/// One bucket: `burst` requests at once, refilled at `rate` requests per second.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Limit {
    pub burst: u32,
    pub rate: f64,
}

impl Limit {
    fn quota(&self) -> Result<Quota, String> {
        let burst = NonZeroU32::new(self.burst).ok_or("burst must be at least 1")?;
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(format!("rate must be a positive number, got {}", self.rate));
        }
        let period = Duration::try_from_secs_f64(1.0 / self.rate)
            .map_err(|e| format!("rate {}: {e}", self.rate))?;
        Quota::with_period(period)
            .map(|q| q.allow_burst(burst))
            .ok_or_else(|| format!("rate {} is too high", self.rate))
    }
}

/// Both buckets, as in `get_account_summary.limits`:
/// `{"matching_engine":{"burst":20,"rate":5},"non_matching_engine":{"burst":100,"rate":20}}`.
/// Other fields of that object are ignored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub matching_engine: Limit,
    pub non_matching_engine: Limit,
}

impl Default for Limits {
    /// The lowest tier in the reference: used until the account's own limits are known.
    fn default() -> Self {
        Self {
            matching_engine: Limit {
                burst: 20,
                rate: 5.0,
            },
            non_matching_engine: Limit {
                burst: 100,
                rate: 20.0,
            },
        }
    }
}

impl Limits {
    /// Reads the `limits` object of a `get_account_summary` result. `matching_engine` may be
    /// flat (`{burst, rate}`) or nested per product as `{"trading":{"total":{burst, rate}}, …}`
    /// (seen in other clients' fixtures; then the `trading.total` bucket is the one orders use).
    pub fn from_json(limits: &Value) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Trading {
            total: Limit,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Matching {
            Flat(Limit),
            Nested { trading: Trading },
        }
        #[derive(Deserialize)]
        struct Raw {
            matching_engine: Matching,
            non_matching_engine: Limit,
        }
        let raw = Raw::deserialize(limits).map_err(|e| format!("account limits: {e}"))?;
        Ok(Self {
            matching_engine: match raw.matching_engine {
                Matching::Flat(l) => l,
                Matching::Nested { trading } => trading.total,
            },
            non_matching_engine: raw.non_matching_engine,
        })
    }

    /// Both buckets shrunk to `fraction` (0–1] of burst and rate, leaving headroom for other
    /// clients of the subaccount and for network jitter bunching requests. Burst stays ≥ 1.
    pub fn scaled(&self, fraction: f64) -> Self {
        let f = if fraction.is_finite() {
            fraction.clamp(f64::MIN_POSITIVE, 1.0)
        } else {
            1.0
        };
        let scale = |l: Limit| Limit {
            // Truncation intended: a fraction of a request is no request.
            burst: ((f64::from(l.burst) * f) as u32).max(1),
            rate: l.rate * f,
        };
        Self {
            matching_engine: scale(self.matching_engine),
            non_matching_engine: scale(self.non_matching_engine),
        }
    }
}

/// A governor clock that reads tokio's clock, so `tokio::time::pause()` controls it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = Instant;

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

type Bucket = governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Instant>>;

/// Paces requests per [`RequestKind`]. Share it (e.g. in an `Arc`) between all senders of one
/// subaccount. A new limiter starts with full buckets; build it once per subaccount, not per
/// session.
#[derive(Debug)]
pub struct RateLimiter {
    matching: Bucket,
    non_matching: Bucket,
    limits: Limits,
}

impl RateLimiter {
    /// A limiter for these limits; errors name the bad bucket.
    pub fn new(limits: Limits) -> Result<Self, String> {
        let m = limits
            .matching_engine
            .quota()
            .map_err(|e| format!("matching_engine: {e}"))?;
        let n = limits
            .non_matching_engine
            .quota()
            .map_err(|e| format!("non_matching_engine: {e}"))?;
        Ok(Self {
            matching: Bucket::direct_with_clock(m, TokioClock),
            non_matching: Bucket::direct_with_clock(n, TokioClock),
            limits,
        })
    }

    /// The limits this limiter enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn bucket(&self, kind: RequestKind) -> &Bucket {
        match kind {
            RequestKind::MatchingEngine => &self.matching,
            RequestKind::NonMatching => &self.non_matching,
        }
    }

    /// Takes one request's credit now, or says how long until one is available.
    pub fn try_acquire(&self, kind: RequestKind) -> Result<(), Duration> {
        self.bucket(kind)
            .check()
            .map_err(|not_until| not_until.wait_time_from(TokioClock.now()))
    }

    /// Waits until one request's credit is available and takes it. Cancel-safe: dropping the
    /// future takes nothing.
    pub async fn acquire(&self, kind: RequestKind) {
        while let Err(wait) = self.try_acquire(kind) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn order_methods_are_matching_engine() {
        for m in [
            "private/buy",
            "private/sell",
            "private/edit",
            "private/edit_by_label",
            "private/cancel",
            "private/cancel_all",
            "private/cancel_all_by_instrument",
            "private/cancel_by_label",
            "private/close_position",
        ] {
            assert_eq!(method_kind(m), RequestKind::MatchingEngine, "{m}");
        }
        for m in [
            "private/get_order_state_by_label",
            "private/get_open_orders_by_currency",
            "private/enable_cancel_on_disconnect",
            "private/get_cancel_on_disconnect",
            "private/get_account_summary",
            "public/auth",
            "public/test",
            "private/subscribe",
        ] {
            assert_eq!(method_kind(m), RequestKind::NonMatching, "{m}");
        }
    }

    #[test]
    fn limits_parse_from_account_summary() {
        let v = json!({"matching_engine":{"burst":20,"rate":5},
                       "non_matching_engine":{"burst":100,"rate":20},
                       "limits_per_currency":false});
        assert_eq!(Limits::from_json(&v).unwrap(), Limits::default());
        let nested = json!({"matching_engine":{"trading":{"total":{"burst":30,"rate":10}},
                                               "cancel_all":{"burst":20,"rate":5}},
                            "non_matching_engine":{"burst":100,"rate":20}});
        let l = Limits::from_json(&nested).unwrap();
        assert_eq!(
            l.matching_engine,
            Limit {
                burst: 30,
                rate: 10.0
            }
        );
        assert!(Limits::from_json(&json!({"matching_engine":{"burst":1}})).is_err());
        assert!(Limits::from_json(&json!({"matching_engine":{"burst":1,"rate":1}})).is_err());
        let bad = Limits {
            matching_engine: Limit {
                burst: 0,
                rate: 5.0,
            },
            ..Limits::default()
        };
        assert!(
            RateLimiter::new(bad)
                .unwrap_err()
                .contains("matching_engine")
        );
    }

    #[test]
    fn scaled_limits_keep_at_least_one() {
        let s = Limits::default().scaled(0.5);
        assert_eq!(
            s.matching_engine,
            Limit {
                burst: 10,
                rate: 2.5
            }
        );
        assert_eq!(Limits::default().scaled(0.0).matching_engine.burst, 1);
        assert_eq!(Limits::default().scaled(f64::NAN), Limits::default());
    }

    #[tokio::test(start_paused = true)]
    async fn burst_passes_then_next_waits_one_over_rate() {
        let rl = RateLimiter::new(Limits::default()).unwrap();
        let start = tokio::time::Instant::now();
        for i in 0..20 {
            assert_eq!(rl.try_acquire(RequestKind::MatchingEngine), Ok(()), "{i}");
        }
        let wait = rl.try_acquire(RequestKind::MatchingEngine).unwrap_err();
        assert!(
            wait <= Duration::from_millis(200) && wait > Duration::from_millis(199),
            "{wait:?}"
        );
        // The other bucket is independent.
        assert_eq!(rl.try_acquire(RequestKind::NonMatching), Ok(()));
        rl.acquire(RequestKind::MatchingEngine).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(199) && waited <= Duration::from_millis(201),
            "{waited:?}"
        );
        // Sustained: the next one comes another 1/rate later.
        rl.acquire(RequestKind::MatchingEngine).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(399) && waited <= Duration::from_millis(401),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_refill_over_time() {
        let rl = RateLimiter::new(Limits::default()).unwrap();
        for _ in 0..100 {
            rl.acquire(RequestKind::NonMatching).await;
        }
        assert!(rl.try_acquire(RequestKind::NonMatching).is_err());
        tokio::time::sleep(Duration::from_secs(5)).await;
        for i in 0..100 {
            assert_eq!(rl.try_acquire(RequestKind::NonMatching), Ok(()), "{i}");
        }
        assert!(rl.try_acquire(RequestKind::NonMatching).is_err());
    }
}
