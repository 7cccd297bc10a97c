//! Connection life: heartbeats, drops, refusals, stalls, malformed input.

use super::*;

#[tokio::test]
async fn answered_test_requests_keep_the_connection() {
    let exchange = start(config()).await;
    let mut client = Client::connect(&exchange).await;
    assert_eq!(
        client
            .result("public/set_heartbeat", json!({"interval": 0.1}))
            .await,
        "ok"
    );
    let mut answered = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(700) {
        let Some(frame) = client.recv(Duration::from_millis(300)).await else {
            panic!("connection closed although every test_request was answered");
        };
        if frame["method"] == "heartbeat" {
            assert_eq!(frame["params"]["type"], "test_request");
            client.result("public/test", json!({})).await;
            answered += 1;
        }
    }
    assert!(answered >= 4, "only {answered} test requests in 700 ms");
    let stats = exchange.stats();
    assert!(stats.test_requests_answered >= 4);
    assert_eq!(stats.closed_for_missed_heartbeat, 0);
    assert_eq!(
        client.result("public/disable_heartbeat", json!({})).await,
        "ok"
    );
    exchange.shutdown().await;
}

#[tokio::test]
async fn unanswered_test_request_closes_connection() {
    let exchange = start(config()).await;
    let mut client = Client::connect(&exchange).await;
    client
        .result("public/set_heartbeat", json!({"interval": 0.1}))
        .await;
    let request = client.recv(Duration::from_secs(1)).await.unwrap();
    assert_eq!(request["params"]["type"], "test_request");
    assert!(client.closed_within(Duration::from_secs(1)).await);
    let stats = exchange.stats();
    assert_eq!(stats.closed_for_missed_heartbeat, 1);
    assert_eq!(stats.test_requests_sent, 1);
    exchange.shutdown().await;
}

#[tokio::test]
async fn stall_suspends_missed_heartbeat_closing() {
    let exchange = start(config()).await;
    let mut client = Client::connect(&exchange).await;
    client
        .result("public/set_heartbeat", json!({"interval": 0.1}))
        .await;
    let first = client.recv(Duration::from_secs(1)).await.unwrap();
    assert_eq!(first["params"]["type"], "test_request");
    // The answer is swallowed by a stall that ends before the next test_request is due: the
    // exchange must ask again rather than blame the client.
    exchange.faults().stall_for(Duration::from_millis(50));
    client.send_request("public/test", json!({})).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(900) {
        if let Some(frame) = client.recv(Duration::from_millis(50)).await
            && frame["method"] == "heartbeat"
        {
            client.send_request("public/test", json!({})).await;
        }
    }
    client.result("public/get_time", json!({})).await;
    let stats = exchange.stats();
    assert_eq!(stats.closed_for_missed_heartbeat, 0, "{stats:?}");
    assert!(stats.test_requests_sent >= 3);
    exchange.shutdown().await;
}

#[tokio::test]
async fn heartbeat_below_minimum_is_invalid_params() {
    let exchange = start(PaperConfig::default()).await;
    let mut client = Client::connect(&exchange).await;
    let response = client
        .call("public/set_heartbeat", json!({"interval": 5}))
        .await;
    assert_eq!(response["error"]["code"], -32602);
    assert_eq!(response["error"]["data"]["param"], "interval");
    assert_eq!(
        client
            .result("public/set_heartbeat", json!({"interval": 10}))
            .await,
        "ok"
    );
    exchange.shutdown().await;
}

#[tokio::test]
async fn drop_all_closes_every_connection() {
    let exchange = start(config()).await;
    let mut a = Client::connect(&exchange).await;
    let mut b = Client::authed(&exchange).await;
    a.result("public/get_time", json!({})).await;
    exchange.faults().drop_all();
    assert!(a.closed_within(WAIT).await);
    assert!(b.closed_within(WAIT).await);
    // New connections are served again.
    let mut c = Client::connect(&exchange).await;
    c.result("public/get_time", json!({})).await;
    exchange.shutdown().await;
}

#[tokio::test]
async fn drop_all_closes_a_connection_blocked_on_a_reader_that_does_not_read() {
    let exchange = start(PaperConfig {
        ticks_per_second: 10_000.0,
        ..config()
    })
    .await;
    let mut client = Client::connect_small_buffer(&exchange).await;
    client
        .result(
            "public/subscribe",
            json!({"channels": ["ticker.BTC-PERPETUAL.100ms"]}),
        )
        .await;
    // Stop reading until the server's writes to this client block.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(exchange.stats().active_connections, 1);
    exchange.faults().drop_all();
    let deadline = Instant::now() + Duration::from_secs(1);
    while exchange.stats().active_connections > 0 {
        assert!(
            Instant::now() < deadline,
            "a blocked connection ignored drop_all"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    exchange.shutdown().await;
}

#[tokio::test]
async fn refuse_for_closes_new_connections_before_the_handshake() {
    let exchange = start(config()).await;
    exchange.faults().refuse_for(Duration::from_millis(300));
    let before = Instant::now();
    assert!(
        tokio_tungstenite::connect_async(exchange.url())
            .await
            .is_err()
    );
    assert!(
        tokio_tungstenite::connect_async(exchange.url())
            .await
            .is_err()
    );
    let stats = exchange.stats();
    assert_eq!(stats.connections_refused, 2);
    assert_eq!(stats.refused_at.len(), 2);
    assert!(stats.refused_at[0] >= before && stats.refused_at[1] >= stats.refused_at[0]);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut client = Client::connect(&exchange).await;
    client.result("public/get_time", json!({})).await;
    assert_eq!(exchange.stats().connections_accepted, 1);
    exchange.shutdown().await;
}

#[tokio::test]
async fn stall_for_silences_ticks_and_responses() {
    let exchange = start(PaperConfig {
        ticks_per_second: 100.0,
        ..config()
    })
    .await;
    let mut client = Client::connect(&exchange).await;
    client
        .result(
            "public/subscribe",
            json!({"channels": ["ticker.BTC-PERPETUAL.100ms"]}),
        )
        .await;
    assert!(
        client
            .notification("ticker.BTC-PERPETUAL.100ms", WAIT)
            .await
            .is_some()
    );
    exchange.faults().stall_for(Duration::from_millis(500));
    // Frames already in flight may still arrive; after that, silence.
    tokio::time::sleep(Duration::from_millis(50)).await;
    while client.recv(Duration::from_millis(20)).await.is_some() {}
    let id = client.send_request("public/get_time", json!({})).await;
    assert!(
        client.recv(Duration::from_millis(300)).await.is_none(),
        "something arrived during the stall"
    );
    // After the stall ticks flow again, and the stalled request was never answered.
    let mut ticks = 0;
    while let Some(frame) = client.recv(Duration::from_millis(500)).await {
        assert_ne!(frame.get("id"), Some(&json!(id)));
        ticks += 1;
        if ticks == 3 {
            break;
        }
    }
    assert_eq!(ticks, 3);
    exchange.shutdown().await;
}

#[tokio::test]
async fn send_malformed_pushes_the_mix_to_clients() {
    let exchange = start(config()).await;
    let mut client = Client::connect(&exchange).await;
    client.result("public/get_time", json!({})).await;
    exchange.faults().send_malformed(5);
    let mut texts = Vec::new();
    let mut binary = 0;
    while texts.len() + binary < 5 {
        match tokio::time::timeout(WAIT, client.ws.next()).await.unwrap() {
            Some(Ok(Message::Text(text))) => texts.push(text.as_str().to_owned()),
            Some(Ok(Message::Binary(_))) => binary += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(binary, 1);
    let parsed: Vec<Option<Value>> = texts.iter().map(|t| serde_json::from_str(t).ok()).collect();
    assert!(parsed.iter().any(Option::is_none), "no invalid JSON");
    assert!(
        parsed.iter().flatten().any(Value::is_array),
        "no JSON array"
    );
    assert!(
        parsed
            .iter()
            .flatten()
            .any(|v| v["method"] == "subscription" && v.get("params").is_none()),
        "no notification without params"
    );
    assert!(
        parsed
            .iter()
            .flatten()
            .any(|v| v["params"]["data"]["instrument_name"].is_number()),
        "no ticker with wrong types"
    );
    // The connection still works.
    client.result("public/get_time", json!({})).await;
    exchange.shutdown().await;
}

#[tokio::test]
async fn malformed_client_input_gets_error_codes_and_never_kills_the_server() {
    let exchange = start(config()).await;
    let mut client = Client::connect(&exchange).await;

    client
        .ws
        .send(Message::text("{this is not json"))
        .await
        .unwrap();
    let response = client.recv(WAIT).await.unwrap();
    assert_eq!(response["error"]["code"], -32700);
    assert_eq!(response["id"], Value::Null);

    let huge = json!({"jsonrpc": "2.0", "id": 1, "method": "public/test", "params": {"pad": "x".repeat(40_000)}});
    client.send_json(huge).await;
    let response = client.recv(WAIT).await.unwrap();
    assert_eq!(response["error"]["code"], -32600);
    assert_eq!(response["error"]["message"], "request entity too large");

    let code = client.error_code("public/nonexistent", json!({})).await;
    assert_eq!(code, -32601);

    let response = client
        .call(
            "private/buy",
            json!({"instrument_name": "BTC-PERPETUAL", "amount": "ten"}),
        )
        .await;
    // Unauthenticated calls fail on auth first; wrong types are checked once authenticated.
    assert_eq!(response["error"]["code"], 13009);
    client
        .result(
            "public/auth",
            json!({"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"}),
        )
        .await;
    let response = client
        .call(
            "private/buy",
            json!({"instrument_name": "BTC-PERPETUAL", "amount": "ten"}),
        )
        .await;
    assert_eq!(response["error"]["code"], -32602);
    assert_eq!(response["error"]["message"], "Invalid params");
    assert_eq!(response["error"]["data"]["param"], "amount");
    let code = client
        .error_code(
            "public/subscribe",
            json!({"channels": "ticker.BTC-PERPETUAL.100ms"}),
        )
        .await;
    assert_eq!(code, -32602);

    client.ws.send(Message::text("[1,2,3]")).await.unwrap();
    assert_eq!(client.recv(WAIT).await.unwrap()["error"]["code"], -32600);
    client
        .ws
        .send(Message::Binary(Bytes::from_static(b"\x00\x01\x02")))
        .await
        .unwrap();
    assert_eq!(client.recv(WAIT).await.unwrap()["error"]["code"], -32700);

    let mut rng = fastrand::Rng::with_seed(99);
    for _ in 0..50 {
        let junk: String = (0..rng.usize(1..200)).map(|_| rng.char(..)).collect();
        client.ws.send(Message::text(junk)).await.unwrap();
        let response = client.recv(WAIT).await.expect("server closed on junk");
        assert!(response["error"]["code"].is_i64());
    }

    // Still serving, on this connection and on new ones.
    client.result("public/get_time", json!({})).await;
    let mut other = Client::connect(&exchange).await;
    other.result("public/get_time", json!({})).await;
    assert!(exchange.stats().malformed_requests >= 57);
    exchange.shutdown().await;
}
