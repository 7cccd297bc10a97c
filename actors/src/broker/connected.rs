//! [`request_when_connected`]: a request that waits out a reconnect. For the daemon's own
//! periodic questions (integrity checks, daily snapshots), which must not fail, restrict trading
//! or store a failed snapshot because they happened to run during the second a dropped session
//! takes to come back. Orders do not use it: the order path has its own retry policy
//! (`[execution.retry]`).

use std::time::Duration;

use serde_json::Value;

use super::request;
use super::session::RequestError;
use crate::backoff::Backoff;
use crate::names::Names;

/// How often the request is tried again while the broker is between sessions.
const RETRY: Backoff =
    Backoff::fixed_ratio(Duration::from_millis(250), Duration::from_secs(2), 2.0);

/// [`request`], tried again while the broker answers [`RequestError::NotConnected`] (nothing
/// was sent), for at most `within` in all. Any other answer (a result, an exchange error, a
/// timeout) is returned as it is. After `within` without a session: `NotConnected`, or, if the
/// last try was still in flight, `None`.
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
                    tokio::time::sleep(RETRY.delay(attempt)).await;
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
mod tests {
    use super::*;
    use crate::names::ChildName;

    /// A stand-in broker: answers `NotConnected` `refusals` times, then `Ok(1)`.
    struct Flaky;

    impl ractor::Actor for Flaky {
        type Msg = crate::broker::BrokerMsg;
        type State = u32;
        type Arguments = u32;

        async fn pre_start(
            &self,
            _: ractor::ActorRef<Self::Msg>,
            refusals: u32,
        ) -> Result<u32, ractor::ActorProcessingErr> {
            Ok(refusals)
        }

        async fn handle(
            &self,
            _: ractor::ActorRef<Self::Msg>,
            msg: Self::Msg,
            left: &mut u32,
        ) -> Result<(), ractor::ActorProcessingErr> {
            if let crate::broker::BrokerMsg::Request { reply, .. } = msg {
                if *left > 0 {
                    *left -= 1;
                    let _ = reply.send(Err(RequestError::NotConnected));
                } else {
                    let _ = reply.send(Ok(Value::from(1)));
                }
            }
            Ok(())
        }
    }

    async fn flaky(
        prefix: &str,
        refusals: u32,
    ) -> (Names, ractor::ActorRef<crate::broker::BrokerMsg>) {
        let names = Names::with_prefix(prefix);
        let (actor, _) =
            ractor::Actor::spawn(Some(names.of(ChildName::BrokerConnection)), Flaky, refusals)
                .await
                .unwrap();
        (names, actor)
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_is_waited_out() {
        let (names, actor) = flaky("connected-a", 3).await;
        let started = tokio::time::Instant::now();
        let r = request_when_connected(
            &names,
            "public/get_time",
            Value::Null,
            Duration::from_secs(10),
        )
        .await;
        assert!(matches!(&r, Some(Ok(v)) if *v == 1), "{r:?}");
        // 250 + 500 + 1000 ms of waiting, at most (jitter-free schedule).
        assert!(started.elapsed() <= Duration::from_millis(1750));
        actor.stop(None);
    }

    #[tokio::test(start_paused = true)]
    async fn no_session_within_the_bound_is_not_connected() {
        let (names, actor) = flaky("connected-b", u32::MAX).await;
        let started = tokio::time::Instant::now();
        let r = request_when_connected(
            &names,
            "public/get_time",
            Value::Null,
            Duration::from_secs(10),
        )
        .await;
        assert!(matches!(r, Some(Err(RequestError::NotConnected))), "{r:?}");
        assert!(started.elapsed() >= Duration::from_secs(10));
        actor.stop(None);
    }
}
