//! What to do about a failed exchange request, and how long to wait before retrying.
//!
//! Codes are from Deribit's error table (`/work/shared/reference/deribit-api-v2.md`, §9 Errors).
//! Codes not listed below are [`ErrorClass::Unknown`]: when we cannot tell, the safe answer is
//! "find out by label", never "place it again".

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::protocol::broker::RequestError;

/// How a failed request should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The exchange did not act on the request; send it again after a backoff delay.
    Retryable,
    /// The exchange refused this order; sending the same request again cannot succeed.
    FatalForOrder,
    /// The session's token is missing or expired: re-authenticate **once**, then retry once.
    Auth,
    /// The order may or may not exist on the exchange. The caller must ask
    /// `private/get_order_state_by_label` (our labels are deterministic) before doing anything
    /// else; blindly re-sending could double the position.
    Unknown,
}

/// Classifies a Deribit JSON-RPC error code.
///
/// - Retryable: 10028 `too_many_requests` (the exchange also terminates the session, so the retry
///   happens on the next session), 10040 `retry`, 10041 `settlement_in_progress` (settlement is
///   brief), 10047 `matching_engine_queue_full`, 10066 `too_many_concurrent_requests`,
///   11051 `system_maintenance`, 13028 `temporarily_unavailable`.
/// - Auth: 10000 `authorization_required`, 13009 `unauthorized` (bad/expired token).
/// - FatalForOrder: 10002 `qty_too_low`, 10004 `order_not_found`, 10009 `not_enough_funds`,
///   10010 `already_closed`, 10020 `invalid_or_unsupported_instrument`, 10043 `price_wrong_tick`,
///   11029 `invalid_arguments`, 11050 `bad_request`, 11054 `post_only_reject`,
///   13004 `invalid_credentials` (re-authenticating with the same key cannot help),
///   13021 `forbidden`, 13032 `non_unique_order_label`, 13042 `cod_not_enabled`,
///   -32602 Invalid params, -32601 Method not found, -32700 Parse error,
///   -32600 request entity too large.
/// - Unknown: 13888 `timed_out` (the engine may have acted), 10001 `error`, and every other code.
pub fn classify(code: i64) -> ErrorClass {
    match code {
        10028 | 10040 | 10041 | 10047 | 10066 | 11051 | 13028 => ErrorClass::Retryable,
        10000 | 13009 => ErrorClass::Auth,
        10002 | 10004 | 10009 | 10010 | 10020 | 10043 | 11029 | 11050 | 11054 | 13004 | 13021
        | 13032 | 13042 | -32602 | -32601 | -32700 | -32600 => ErrorClass::FatalForOrder,
        _ => ErrorClass::Unknown,
    }
}

/// Classifies a failed [`RequestError`].
///
/// - `NotConnected`: the broker had no session, so nothing was sent → `Retryable`.
/// - `Closed`, `Timeout`: the request may have reached the exchange before the connection went
///   away or the answer was late → `Unknown` (ask `get_order_state_by_label`).
/// - `Unexpected`: the exchange answered but we could not read the answer → `Unknown`.
/// - `Refused`: the broker would not send it on this exchange; sending it again cannot help →
///   `FatalForOrder`.
/// - `Rpc`: by its code, see [`classify`].
pub fn classify_request_error(error: &RequestError) -> ErrorClass {
    match error {
        RequestError::NotConnected => ErrorClass::Retryable,
        RequestError::Closed { .. }
        | RequestError::Timeout { .. }
        | RequestError::Unexpected { .. } => ErrorClass::Unknown,
        RequestError::Refused { .. } | RequestError::NotArmed { .. } => ErrorClass::FatalForOrder,
        RequestError::Rpc(e) => classify(e.code),
    }
}

/// How often and how patiently to retry a [`ErrorClass::Retryable`] request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// The delay schedule (the daemon's one backoff formula).
    pub backoff: Backoff,
    /// Total tries including the first (≥ 1).
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// Checks the values; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        self.backoff
            .validate()
            .map_err(|e| format!("backoff: {e}"))?;
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        Ok(())
    }

    /// After `attempt` tries have failed (1-based), the delay before the next try, or `None`
    /// when the tries are used up. `attempt` 0 is treated as 1.
    pub fn next_delay(&self, attempt: u32) -> Option<Duration> {
        let done = attempt.max(1);
        (done < self.max_attempts).then(|| self.backoff.delay(done - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::protocol::RpcError;

    #[test]
    fn codes_from_the_issue_are_classified() {
        for c in [10028, 10040, 10047, 10066, 11051, 13028] {
            assert_eq!(classify(c), ErrorClass::Retryable, "{c}");
        }
        assert_eq!(classify(13009), ErrorClass::Auth);
        for c in [10002, 10009, 10043, -32602, 10020, 11029] {
            assert_eq!(classify(c), ErrorClass::FatalForOrder, "{c}");
        }
        for c in [13888, 10001, 0, 99999, -1] {
            assert_eq!(classify(c), ErrorClass::Unknown, "{c}");
        }
    }

    #[test]
    fn transport_failures_are_unknown_except_never_sent() {
        let m = || "private/buy".to_string();
        assert_eq!(
            classify_request_error(&RequestError::NotConnected),
            ErrorClass::Retryable
        );
        for e in [
            RequestError::Closed { method: m() },
            RequestError::Timeout {
                method: m(),
                after: Duration::from_secs(5),
            },
            RequestError::Unexpected {
                method: m(),
                reason: "x".into(),
            },
        ] {
            assert_eq!(classify_request_error(&e), ErrorClass::Unknown, "{e}");
        }
        let rpc = |code| {
            RequestError::Rpc(RpcError {
                code,
                message: String::new(),
                data: None,
            })
        };
        assert_eq!(classify_request_error(&rpc(13009)), ErrorClass::Auth);
        assert_eq!(
            classify_request_error(&rpc(10009)),
            ErrorClass::FatalForOrder
        );
        assert_eq!(classify_request_error(&rpc(10028)), ErrorClass::Retryable);
    }

    #[test]
    fn retry_policy_uses_backoff_and_stops() {
        let secs = Duration::from_secs;
        let p = RetryPolicy {
            backoff: Backoff::fixed_ratio(secs(1), secs(4), 2.0),
            max_attempts: 4,
        };
        assert!(p.validate().is_ok());
        let got: Vec<_> = (0..6).map(|a| p.next_delay(a)).collect();
        assert_eq!(
            got,
            [
                Some(secs(1)),
                Some(secs(1)),
                Some(secs(2)),
                Some(secs(4)),
                None,
                None
            ]
        );
        let once = RetryPolicy {
            max_attempts: 1,
            ..p
        };
        assert_eq!(once.next_delay(1), None);
        let bad = RetryPolicy {
            max_attempts: 0,
            ..p
        };
        assert!(bad.validate().unwrap_err().contains("max_attempts"));
    }
}
