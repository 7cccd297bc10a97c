//! The one client of the actors: how anything (another actor, a task, the HTTP layer, the
//! daemon's start-up) talks to a child of the tree. Every call finds the child by the name its
//! message type is tied to ([`Names::get`]), so a message sent after a restart reaches the new
//! instance, and every wait is bounded.
//!
//! - [`ask`] / [`ask_ref`]: one question with a timeout, answered as a [`Reply`];
//!   [`call`] is the same with the failure kept apart (for the heartbeat's pings).
//! - [`raise`] / [`resolve`]: alerts, fire and forget (logged when the alert actor is absent).
//! - [`restrict`]: tighten the trading mode through the fail-safe, confirmed.
//! - [`load_state`] / [`commit_change`]: the persister's state and durable commits.
//! - [`request`] / [`request_armed`] / [`set_cancel_on_disconnect`] / [`request_when_connected`]:
//!   JSON-RPC through the broker-connection.
//!
//! It owns no state and imports only `protocol`, `model`-level types and pure leaves: never an
//! actor module.

use std::collections::BTreeMap;
use std::time::Duration;

use ractor::concurrency::OneshotReceiver;
use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};
use serde_json::Value;
use tracing::{error, warn};

use crate::backoff::Backoff;
use crate::mode::TradingMode;
use crate::names::{Child, Names};
use crate::protocol::alert::{Alert, AlertMsg};
use crate::protocol::broker::{BrokerMsg, RequestError};
use crate::protocol::failsafe::FailSafeMsg;
use crate::protocol::persister::PersisterMsg;
use crate::store::{Change, Committed, StoreError};

/// One actor's answer to a question.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<T> {
    Answered(T),
    /// Registered, but no answer within the timeout.
    Unresponsive,
    /// Not registered (stopped, restarting or escalated), or it stopped before answering.
    NotRunning,
}

impl<T> Reply<T> {
    /// The answer, if there was one.
    pub fn answered(&self) -> Option<&T> {
        match self {
            Reply::Answered(t) => Some(t),
            _ => None,
        }
    }

    /// How the actor answered, for error messages: `answered`, `unresponsive`, `not running`.
    pub fn describe(&self) -> &'static str {
        match self {
            Reply::Answered(_) => "answered",
            Reply::Unresponsive => "unresponsive",
            Reply::NotRunning => "not running",
        }
    }
}

/// Why a [`call`] got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// Nothing registered under the name.
    NotRunning,
    /// Registered, but no answer within the timeout.
    TimedOut,
    /// Registered, but the question was not delivered or the actor stopped before answering.
    NotDelivered,
}

impl<T> From<Result<T, NoAnswer>> for Reply<T> {
    fn from(r: Result<T, NoAnswer>) -> Self {
        match r {
            Ok(t) => Reply::Answered(t),
            Err(NoAnswer::TimedOut) => Reply::Unresponsive,
            Err(NoAnswer::NotRunning | NoAnswer::NotDelivered) => Reply::NotRunning,
        }
    }
}

/// Asks `actor` with `build` and waits at most `timeout`, keeping apart why nothing came back.
pub async fn call<M, T>(
    actor: Option<ActorRef<M>>,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
    timeout: Duration,
) -> Result<T, NoAnswer>
where
    M: Message,
    T: Send + 'static,
{
    let Some(actor) = actor else {
        return Err(NoAnswer::NotRunning);
    };
    match actor.call(build, Some(timeout)).await {
        Ok(CallResult::Success(t)) => Ok(t),
        Ok(CallResult::Timeout) => Err(NoAnswer::TimedOut),
        // The actor stopped between lookup and answer.
        Ok(CallResult::SenderError) | Err(_) => Err(NoAnswer::NotDelivered),
    }
}

/// Asks `actor` (already found, e.g. the supervisor) with `build`; at most `timeout`.
pub async fn ask_ref<M, T>(
    actor: Option<ActorRef<M>>,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
    timeout: Duration,
) -> Reply<T>
where
    M: Message,
    T: Send + 'static,
{
    call(actor, build, timeout).await.into()
}

/// Asks the child whose message type is `C` with `build`; at most `timeout`:
/// `client::ask(&names, AlertMsg::Status, timeout)`.
pub async fn ask<C, T>(
    names: &Names,
    build: impl FnOnce(RpcReplyPort<T>) -> C,
    timeout: Duration,
) -> Reply<T>
where
    C: Child,
    T: Send + 'static,
{
    ask_ref(names.get::<C>(), build, timeout).await
}

/// Sends `msg` to the child whose message type is `C`; whether it was delivered.
pub fn tell<C: Child>(names: &Names, msg: C) -> bool {
    names
        .get::<C>()
        .is_some_and(|actor| actor.send_message(msg).is_ok())
}

/// Raises `alert` (fire and forget). When the alert actor is not running or does not take it,
/// the alert is logged as an error in its place, so it is never lost silently.
pub fn raise(names: &Names, alert: Alert) {
    match names.get::<AlertMsg>() {
        Some(a) => {
            if let Err(e) = a.send_message(AlertMsg::Raise(alert)) {
                warn!(error = %e, "alert not delivered to the alert actor");
            }
        }
        None => error!(key = %alert.key, severity = ?alert.severity, title = %alert.title,
            message = %alert.message, "alert actor not running; alert only logged"),
    }
}

/// Resolves the open alert under `key`, if the alert actor is running (an alert it does not
/// hold is nothing to resolve).
pub fn resolve(names: &Names, key: impl Into<String>) {
    if let Some(a) = names.get::<AlertMsg>() {
        let _ = a.send_message(AlertMsg::Resolve { key: key.into() });
    }
}

/// How many times [`restrict`] asks while the fail-safe loads, and how long it waits between.
const RESTRICT_ATTEMPTS: u32 = 50;
const RESTRICT_PAUSE: Duration = Duration::from_millis(100);

/// One request to the fail-safe to tighten the mode to `mode` (never loosened by this; a
/// SHUTDOWN stays), waiting at most `timeout`: `Ok(Ok(()))` once stored, `Ok(Err(why))` when
/// the fail-safe answered that it could not store it, `Err` when it did not answer.
pub async fn restrict_once(
    names: &Names,
    mode: TradingMode,
    reason: String,
    timeout: Duration,
) -> Result<Result<(), String>, NoAnswer> {
    call(
        names.get::<FailSafeMsg>(),
        |reply| FailSafeMsg::Restrict {
            mode,
            reason,
            reply,
        },
        timeout,
    )
    .await
}

/// Restricts trading to OBSERVE_ONLY (a SHUTDOWN stays), retrying while the fail-safe loads
/// (about five seconds). Whether the restriction was confirmed (stored).
pub async fn restrict(names: &Names, reason: &str) -> bool {
    for _ in 0..RESTRICT_ATTEMPTS {
        let asked = restrict_once(
            names,
            TradingMode::ObserveOnly,
            reason.to_owned(),
            Duration::from_secs(2),
        )
        .await;
        if asked == Ok(Ok(())) {
            return true;
        }
        tokio::time::sleep(RESTRICT_PAUSE).await;
    }
    error!(reason, "could not restrict trading to OBSERVE_ONLY");
    false
}

/// One `Load` from the persister, bounded by `timeout`. What actors re-read when they start;
/// the error says why nothing came back.
pub async fn load_state(
    names: &Names,
    timeout: Duration,
) -> Result<BTreeMap<String, Value>, String> {
    let persister = names
        .get::<PersisterMsg>()
        .ok_or("the state-persister is not running")?;
    let (tx, rx) = ractor::concurrency::oneshot();
    persister
        .send_message(PersisterMsg::Load(tx.into()))
        .map_err(|e| format!("could not reach the state-persister: {e}"))?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Ok(state))) => Ok(state),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(_)) => Err("the state-persister dropped the load".into()),
        Err(_) => Err(format!(
            "the state-persister did not answer within {} ms",
            timeout.as_millis()
        )),
    }
}

/// What a commit handed to the persister answers on.
pub type CommitReceiver = OneshotReceiver<Result<Committed, StoreError>>;

/// Hands `change` to the persister now, in mailbox order (so a caller's commits land in the
/// order it sent them), without waiting; [`committed`] waits for the answer.
pub fn send_commit(names: &Names, change: Change) -> Result<CommitReceiver, String> {
    let persister = names
        .get::<PersisterMsg>()
        .ok_or("the state-persister is not running")?;
    let (tx, rx) = ractor::concurrency::oneshot();
    persister
        .send_message(PersisterMsg::Commit {
            change,
            reply: Some(tx.into()),
        })
        .map_err(|e| format!("could not reach the state-persister: {e}"))?;
    Ok(rx)
}

/// Waits at most `timeout` for a commit sent with [`send_commit`] to be durable (after the
/// timeout the commit may still land).
pub async fn committed(rx: CommitReceiver, timeout: Duration) -> Result<Committed, String> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Ok(committed))) => Ok(committed),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(_)) => Err("the state-persister dropped the commit".into()),
        Err(_) => Err(format!(
            "the state-persister did not confirm the commit within {} ms",
            timeout.as_millis()
        )),
    }
}

/// One durable commit through the persister; returns once the change is durable, or an error
/// after `timeout` (the commit may still land).
pub async fn commit_change(
    names: &Names,
    change: Change,
    timeout: Duration,
) -> Result<Committed, String> {
    committed(send_commit(names, change)?, timeout).await
}

/// Sends `method` through the `broker-connection` and waits for the answer. The wait is bounded
/// by the rate limiter and the broker's `request_timeout`; a broker that is not running, or that
/// drops the request, is [`RequestError::NotConnected`] (nothing was sent by us).
pub async fn request(names: &Names, method: &str, params: Value) -> Result<Value, RequestError> {
    ask_broker(names, method, |reply| BrokerMsg::Request {
        method: method.to_string(),
        params,
        reply,
    })
    .await
}

/// [`request`], sent only on a session with cancel-on-disconnect armed
/// ([`BrokerMsg::RequestArmed`]); [`RequestError::NotArmed`] otherwise, and nothing was sent.
pub async fn request_armed(
    names: &Names,
    method: &str,
    params: Value,
) -> Result<Value, RequestError> {
    ask_broker(names, method, |reply| BrokerMsg::RequestArmed {
        method: method.to_string(),
        params,
        reply,
    })
    .await
}

/// Arms or disarms cancel-on-disconnect on the current session
/// ([`BrokerMsg::CancelOnDisconnect`]): no request at all when it is in that state already.
pub async fn set_cancel_on_disconnect(names: &Names, armed: bool) -> Result<(), RequestError> {
    let method = if armed {
        "private/enable_cancel_on_disconnect"
    } else {
        "private/disable_cancel_on_disconnect"
    };
    ask_broker(names, method, |reply| BrokerMsg::CancelOnDisconnect {
        armed,
        reply,
    })
    .await
}

async fn ask_broker<T>(
    names: &Names,
    method: &str,
    msg: impl FnOnce(RpcReplyPort<Result<T, RequestError>>) -> BrokerMsg,
) -> Result<T, RequestError> {
    let broker = names.get::<BrokerMsg>().ok_or(RequestError::NotConnected)?;
    let (tx, rx) = ractor::concurrency::oneshot();
    broker
        .send_message(msg(tx.into()))
        .map_err(|_| RequestError::NotConnected)?;
    rx.await.map_err(|_| RequestError::Closed {
        method: method.to_string(),
    })?
}

/// How often [`request_when_connected`] tries again while the broker is between sessions.
const RECONNECT_RETRY: Backoff =
    Backoff::fixed_ratio(Duration::from_millis(250), Duration::from_secs(2), 2.0);

/// [`request`], tried again while the broker answers [`RequestError::NotConnected`] (nothing
/// was sent), for at most `within` in all. For the daemon's own periodic questions (integrity
/// checks, daily snapshots), which must not fail because they ran during the second a dropped
/// session takes to come back; orders do not use it (the order path has `[execution.retry]`).
/// Any other answer (a result, an exchange error, a timeout) is returned as it is. After
/// `within` without a session: `NotConnected`, or, if the last try was still in flight, `None`.
pub async fn request_when_connected(
    names: &Names,
    method: &str,
    params: Value,
    within: Duration,
) -> Option<Result<Value, RequestError>> {
    let mut last = None;
    let attempts = async {
        let mut attempt = 0;
        loop {
            match request(names, method, params.clone()).await {
                Err(RequestError::NotConnected) => {
                    last = Some(Err(RequestError::NotConnected));
                    tokio::time::sleep(RECONNECT_RETRY.delay(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
                r => return r,
            }
        }
    };
    match tokio::time::timeout(within, attempts).await {
        Ok(r) => Some(r),
        Err(_) => last,
    }
}

#[cfg(test)]
mod tests;
