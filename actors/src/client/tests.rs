//! The client against stand-in actors, on paused time.

use super::*;
use crate::names::ChildName;

/// A stand-in broker: answers `NotConnected` `refusals` times, then `Ok(1)`.
struct Flaky;

impl ractor::Actor for Flaky {
    type Msg = BrokerMsg;
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
        if let BrokerMsg::Request { reply, .. } = msg {
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

async fn flaky(prefix: &str, refusals: u32) -> (Names, ractor::ActorRef<BrokerMsg>) {
    let names = Names::with_prefix(prefix);
    let (actor, _) =
        ractor::Actor::spawn(Some(names.of(ChildName::BrokerConnection)), Flaky, refusals)
            .await
            .unwrap();
    (names, actor)
}

async fn get_time_within_10s(names: &Names) -> Option<Result<Value, RequestError>> {
    request_when_connected(
        names,
        "public/get_time",
        Value::Null,
        Duration::from_secs(10),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_is_waited_out() {
    let (names, actor) = flaky("connected-a", 3).await;
    let started = tokio::time::Instant::now();
    let r = get_time_within_10s(&names).await;
    assert!(matches!(&r, Some(Ok(v)) if *v == 1), "{r:?}");
    // 250 + 500 + 1000 ms of waiting, at most (jitter-free schedule).
    assert!(started.elapsed() <= Duration::from_millis(1750));
    actor.stop(None);
}

#[tokio::test(start_paused = true)]
async fn no_session_within_the_bound_is_not_connected() {
    let (names, actor) = flaky("connected-b", u32::MAX).await;
    let started = tokio::time::Instant::now();
    let r = get_time_within_10s(&names).await;
    assert!(matches!(r, Some(Err(RequestError::NotConnected))), "{r:?}");
    assert!(started.elapsed() >= Duration::from_secs(10));
    actor.stop(None);
}
