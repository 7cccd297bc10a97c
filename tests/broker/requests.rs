//! Requests through the broker actor: what reaches the exchange and what is refused.

use super::*;

/// Sends one request through the broker actor.
async fn request(
    broker: &ActorRef<BrokerMsg>,
    method: &str,
    params: serde_json::Value,
) -> Result<serde_json::Value, tradebaas_actors::broker::session::RequestError> {
    call_t!(
        broker,
        |reply| BrokerMsg::Request {
            method: method.to_owned(),
            params,
            reply,
        },
        5000
    )
    .unwrap()
}

/// The paper exchange's `paper/*` control methods (fault injection, price and account seeding)
/// go only to the embedded paper exchange (`broker.url = "paper"`). Against any other URL, even
/// when a paper exchange answers there, the broker refuses them without sending anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paper_control_methods_are_sent_only_to_the_embedded_paper_exchange() {
    use tradebaas_actors::broker::session::RequestError;
    let _shared = TIMING.read().await;
    let set_price = || serde_json::json!({"instrument_name": "BTC-PERPETUAL", "price": 12345.0});

    // A ws:// URL is a real exchange as far as the daemon knows.
    let exchange = start_exchange().await;
    let url = exchange.url();
    let h = harness(exchange, broker_config(&url), None).await;
    h.wait_for("connected", connected, WAIT).await;
    let refused = request(&h.broker, "paper/set_price", set_price()).await;
    assert!(
        matches!(&refused, Err(RequestError::Refused { method, .. }) if method == "paper/set_price"),
        "{refused:?}"
    );
    assert!(
        request(&h.broker, "public/get_time", serde_json::json!({}))
            .await
            .is_ok()
    );
    let stats = h.exchange.stats();
    assert!(
        !stats
            .requests_by_method
            .keys()
            .any(|m| m.starts_with("paper/")),
        "a paper/* request reached the exchange: {stats:?}"
    );
    h.stop().await;

    // The embedded paper exchange (`url = "paper"`, resolved to its loopback address): served.
    let exchange = start_exchange().await;
    let url = exchange.url();
    let h = harness(
        exchange,
        BrokerConfig {
            url: "paper".into(),
            ..broker_config(&url)
        },
        None,
    )
    .await;
    h.wait_for("connected", connected, WAIT).await;
    assert_eq!(
        request(&h.broker, "paper/set_price", set_price()).await,
        Ok(serde_json::json!("ok"))
    );
    assert_eq!(subscribes(&h.exchange.stats(), "paper/set_price"), 1);
    h.stop().await;
}
