//! Fault injection: what the exchange is told to do wrong, and the [`FaultControl`] handle tests
//! (and the `paper/*` control methods) use to tell it. The state here is consulted by the accept
//! loop and the connection tasks; it performs no I/O itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::protocol::RpcError;
use super::shared::Shared;

/// Pending faults. Every field is "until"/"times" bookkeeping; [`FaultState::default`] is a
/// healthy exchange.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    refuse_until: Option<Instant>,
    stall_until: Option<Instant>,
    injected: HashMap<String, (RpcError, u32)>,
    drop_after_accept: HashMap<String, u32>,
    hold_after_accept: HashMap<String, (u32, Duration)>,
    reject_linked_legs: u32,
}

impl FaultState {
    /// Whether new TCP connections are being refused at `now`.
    pub fn refusing(&self, now: Instant) -> bool {
        self.refuse_until.is_some_and(|until| now < until)
    }

    /// The end of the current stall, if the exchange is stalled at `now`.
    pub fn stalled_until(&self, now: Instant) -> Option<Instant> {
        self.stall_until.filter(|until| now < *until)
    }

    /// Whether a stall was in force at some point after `since` (it may have ended already).
    pub fn stalled_since(&self, since: Instant) -> bool {
        self.stall_until.is_some_and(|until| until > since)
    }

    /// Consumes one injected error for `method`, if any is pending.
    pub fn take_injected(&mut self, method: &str) -> Option<RpcError> {
        let (error, times) = self.injected.get_mut(method)?;
        let error = error.clone();
        *times = times.saturating_sub(1);
        if *times == 0 {
            self.injected.remove(method);
        }
        Some(error)
    }

    /// Consumes one pending drop-after-accept for `method`.
    pub fn take_drop_after_accept(&mut self, method: &str) -> bool {
        take_one(&mut self.drop_after_accept, method)
    }

    /// Consumes one pending hold-after-accept for `method`: how long to sit on the answer.
    pub fn take_hold_after_accept(&mut self, method: &str) -> Option<Duration> {
        let (times, hold) = self.hold_after_accept.get_mut(method)?;
        let hold = *hold;
        *times = times.saturating_sub(1);
        if *times == 0 {
            self.hold_after_accept.remove(method);
        }
        Some(hold)
    }

    /// Whether a linked-leg rejection is pending (consumed only once an entry was accepted).
    pub fn reject_linked_legs_pending(&self) -> bool {
        self.reject_linked_legs > 0
    }

    /// Consumes one pending linked-leg rejection.
    pub fn take_reject_linked_legs(&mut self) -> bool {
        if self.reject_linked_legs > 0 {
            self.reject_linked_legs -= 1;
            true
        } else {
            false
        }
    }
}

fn take_one(counts: &mut HashMap<String, u32>, method: &str) -> bool {
    let Some(times) = counts.get_mut(method) else {
        return false;
    };
    *times = times.saturating_sub(1);
    if *times == 0 {
        counts.remove(method);
    }
    true
}

/// A cloneable handle that injects faults into a running [`super::PaperExchange`].
#[derive(Clone)]
pub struct FaultControl {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for FaultControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultControl").finish_non_exhaustive()
    }
}

impl FaultControl {
    /// Closes every connection now (TCP close without a close frame); cancel-on-disconnect fires.
    pub fn drop_all(&self) {
        self.shared.drop_all_connections();
    }

    /// For `d`, new TCP connections are accepted and closed at once, before the WebSocket
    /// handshake; each refused attempt is counted with its time in [`super::PaperStats`].
    pub fn refuse_for(&self, d: Duration) {
        self.shared.lock_faults().refuse_until = Some(Instant::now() + d);
    }

    /// For `d`, every connection goes silent: no ticks, no heartbeats or test requests, no
    /// responses. Requests received meanwhile are dropped unexecuted and never answered; the
    /// missed-heartbeat check is suspended and restarts when the stall ends.
    pub fn stall_for(&self, d: Duration) {
        self.shared.lock_faults().stall_until = Some(Instant::now() + d);
    }

    /// Pushes `count` malformed frames to every connection: in turn invalid JSON, a JSON array,
    /// a notification without params, a binary frame, and a ticker with wrongly typed fields.
    pub fn send_malformed(&self, count: usize) {
        self.shared.send_malformed(count);
    }

    /// The next `times` calls of `method` answer this JSON-RPC error and have no effect.
    pub fn inject_error(&self, method: &str, code: i64, message: &str, times: u32) {
        let mut faults = self.shared.lock_faults();
        if times == 0 {
            faults.injected.remove(method);
        } else {
            faults
                .injected
                .insert(method.to_owned(), (RpcError::new(code, message), times));
        }
    }

    /// The next `times` calls of `method` are executed and then the connection is closed without
    /// sending the answer (cancel-on-disconnect fires as for any close).
    pub fn drop_after_accept(&self, method: &str, times: u32) {
        let mut faults = self.shared.lock_faults();
        if times == 0 {
            faults.drop_after_accept.remove(method);
        } else {
            faults.drop_after_accept.insert(method.to_owned(), times);
        }
    }

    /// The next `times` calls of `method` are executed at once, but their answer is held back for
    /// `hold` (the connection reads nothing meanwhile): a client can be killed between the
    /// exchange accepting an order and hearing about it.
    pub fn hold_after_accept(&self, method: &str, times: u32, hold: Duration) {
        let mut faults = self.shared.lock_faults();
        if times == 0 {
            faults.hold_after_accept.remove(method);
        } else {
            faults
                .hold_after_accept
                .insert(method.to_owned(), (times, hold));
        }
    }

    /// The next `times` OTOCO entries have their primary accepted and filled as usual, but their
    /// linked legs end `rejected` instead of going live.
    pub fn reject_linked_legs(&self, times: u32) {
        self.shared.lock_faults().reject_linked_legs = times;
    }

    /// Cancels every pending fault (refusal, stall, injected errors, drops, leg rejections).
    pub fn clear(&self) {
        *self.shared.lock_faults() = FaultState::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_error_is_consumed_times_then_gone() {
        let mut faults = FaultState::default();
        faults.injected.insert(
            "private/buy".into(),
            (RpcError::new(10028, "too_many_requests"), 2),
        );
        assert_eq!(faults.take_injected("private/buy").unwrap().code, 10028);
        assert!(faults.take_injected("private/sell").is_none());
        assert!(faults.take_injected("private/buy").is_some());
        assert!(faults.take_injected("private/buy").is_none());
    }

    #[test]
    fn drop_after_accept_counts_down() {
        let mut faults = FaultState::default();
        faults.drop_after_accept.insert("private/buy".into(), 1);
        assert!(faults.take_drop_after_accept("private/buy"));
        assert!(!faults.take_drop_after_accept("private/buy"));
    }

    #[test]
    fn refusal_and_stall_expire() {
        let now = Instant::now();
        let faults = FaultState {
            refuse_until: Some(now + Duration::from_secs(1)),
            stall_until: Some(now + Duration::from_secs(1)),
            ..FaultState::default()
        };
        assert!(faults.refusing(now));
        assert!(!faults.refusing(now + Duration::from_secs(2)));
        assert!(faults.stalled_until(now).is_some());
        assert!(faults.stalled_until(now + Duration::from_secs(2)).is_none());
    }

    #[test]
    fn leg_rejections_count_down() {
        let mut faults = FaultState {
            reject_linked_legs: 1,
            ..FaultState::default()
        };
        assert!(faults.take_reject_linked_legs());
        assert!(!faults.take_reject_linked_legs());
    }
}
