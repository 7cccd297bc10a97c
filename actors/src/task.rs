//! Task ownership helpers, and the one way a detached task may fail: loudly.
//!
//! A task spawned outside an actor (the daemon's recovery, its snapshots and periodic checks, the
//! escalation hook's messages) has no supervisor: a panic in it would only be logged, and the
//! work it does would silently stop. [`spawn_critical`] watches such a task; a panic goes through
//! [`unrecoverable_error`], the same path as a panic of the daemon's own future: the fail-safe
//! latches SHUTDOWN (stored, so it survives a restart) and raises the CRITICAL alert
//! `failsafe:unrecoverable_error`.

use std::future::Future;
use std::time::Duration;

use ractor::rpc::CallResult;
use tokio::task::{AbortHandle, JoinHandle};
use tracing::error;

use crate::names::Names;
use crate::protocol::failsafe::FailSafeMsg;

/// Owns a spawned task and aborts it when dropped, so a task never outlives the actor state
/// (or the attempt) it was spawned for.
pub(crate) struct AbortOnDrop(pub(crate) AbortHandle);

impl From<JoinHandle<()>> for AbortOnDrop {
    fn from(h: JoinHandle<()>) -> Self {
        Self(h.abort_handle())
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The fail-safe trigger of an unrecoverable error.
pub const UNRECOVERABLE_ERROR: &str = "unrecoverable_error";

/// How long a watched task's panic waits for the fail-safe to store SHUTDOWN.
const LATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Spawns `fut` as a detached task named `task`, watched for panics: a panic goes through
/// [`unrecoverable_error`]. Returns the handle to abort it (an abort is not a failure).
pub fn spawn_critical<F>(names: &Names, task: &'static str, fut: F) -> AbortHandle
where
    F: Future<Output = ()> + Send + 'static,
{
    let handle = tokio::spawn(fut);
    let abort = handle.abort_handle();
    let names = names.clone();
    tokio::spawn(async move {
        if let Err(e) = handle.await
            && e.is_panic()
        {
            // The panic hook has logged the payload, location and backtrace.
            let reason = format!(
                "the task `{task}` panicked: {}",
                panic_message(e.into_panic().as_ref())
            );
            unrecoverable_error(&names, &reason, LATCH_TIMEOUT).await;
        }
    });
    abort
}

/// Spawns `fut` as a helper task of `actor` (a request/reply helper that must never wait inside
/// the actor's handler). A panic in it is sent to the actor as `on_panic(reason)`, whose handler
/// fails with that reason: the supervisor then restarts the actor like any other failure
/// (counted, intensity, `last_failure`), instead of the actor waiting forever for the answer the
/// task would have sent (the fail-safe's watch would stop evaluating, silently).
pub fn spawn_helper<M, F>(
    actor: &ractor::ActorRef<M>,
    task: &'static str,
    on_panic: fn(String) -> M,
    fut: F,
) -> AbortHandle
where
    M: ractor::Message,
    F: Future<Output = ()> + Send + 'static,
{
    let handle = tokio::spawn(fut);
    let abort = handle.abort_handle();
    let actor = actor.clone();
    tokio::spawn(async move {
        if let Err(e) = handle.await
            && e.is_panic()
        {
            let reason = format!(
                "its task `{task}` panicked: {}",
                panic_message(e.into_panic().as_ref())
            );
            error!(actor = %actor.get_name().unwrap_or_default(), task, reason, "helper task panicked; failing the actor so it is restarted");
            let _ = actor.send_message(on_panic(reason));
        }
    });
    abort
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// An unrecoverable error outside the actors: latches the fail-safe into SHUTDOWN (stored, so
/// the next run does not trade until an operator has looked) and, through the fail-safe, raises
/// the CRITICAL alert `failsafe:unrecoverable_error`. Returns whether SHUTDOWN was confirmed
/// stored within `timeout`; every outcome is logged.
pub async fn unrecoverable_error(names: &Names, reason: &str, timeout: Duration) -> bool {
    error!(reason, "unrecoverable error: latching trading to SHUTDOWN");
    let Some(fail_safe) = names.get::<FailSafeMsg>() else {
        error!("fail-safe not running; SHUTDOWN not latched (entries stay refused: fail closed)");
        return false;
    };
    let latched = fail_safe
        .call(
            |reply| FailSafeMsg::Trigger {
                trigger: UNRECOVERABLE_ERROR.into(),
                reason: reason.to_owned(),
                reply: Some(reply),
            },
            Some(timeout),
        )
        .await;
    match latched {
        Ok(CallResult::Success(Ok(()))) => {
            error!("trading mode latched to SHUTDOWN");
            true
        }
        _ => {
            error!("SHUTDOWN could not be confirmed stored");
            false
        }
    }
}
