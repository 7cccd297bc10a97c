//! `exchange` (online only): the exchange answers, with a clock close to ours. Pure.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Check, EXCHANGE};

/// `exchange`: the answer to `public/get_time` (milliseconds since the epoch), asked at
/// `sent` and answered at `received`: it must come, and the exchange's clock must be within
/// `skew` of ours.
pub fn exchange(
    answer: Result<Value, String>,
    sent: DateTime<Utc>,
    received: DateTime<Utc>,
    skew: Duration,
) -> Check {
    let value = match answer {
        Ok(v) => v,
        Err(e) => return Check::fail(EXCHANGE, format!("public/get_time failed: {e}")),
    };
    let Some(ms) = value.as_i64() else {
        return Check::fail(EXCHANGE, format!("public/get_time answered {value}"));
    };
    let Some(theirs) = DateTime::<Utc>::from_timestamp_millis(ms) else {
        return Check::fail(EXCHANGE, format!("public/get_time answered {ms}"));
    };
    let rtt = received - sent;
    let ours = sent + rtt / 2;
    let offset = (theirs - ours).abs();
    let allowed = chrono::Duration::from_std(skew).unwrap_or(chrono::Duration::MAX) + rtt / 2;
    if offset > allowed {
        return Check::fail(
            EXCHANGE,
            format!(
                "clock differs from the exchange's by {} ms (clock_skew {})",
                offset.num_milliseconds(),
                format_args!("{skew:?}")
            ),
        );
    }
    Check::pass(
        EXCHANGE,
        format!(
            "public/get_time answered in {} ms, clock offset {} ms",
            rtt.num_milliseconds(),
            offset.num_milliseconds()
        ),
    )
}
