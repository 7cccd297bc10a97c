//! Pure building blocks for order execution (issue 4 "Strategy execution"): deterministic order
//! labels, exchange error classification with a retry policy, and a client-side rate limiter for
//! Deribit's request credits. No actors here; the strategy / broker actors compose these.

pub mod errors;
pub mod labels;
pub mod rate;

pub use errors::{ErrorClass, RetryPolicy, classify, classify_request_error};
pub use labels::{
    LABEL_MAX_LEN, Leg, ParsedLabel, intent_label, leg_label, owned_by_us, parse_label,
};
pub use rate::{Limit, Limits, RateLimiter, RequestKind, method_kind};
