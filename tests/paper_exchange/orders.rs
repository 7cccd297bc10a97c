//! Orders: validation, fills, linked legs, cancel-on-disconnect, injected faults and control methods.

use super::*;

#[tokio::test]
async fn order_validation_answers_deribit_error_codes() {
    let exchange = start(config()).await;
    let mut client = Client::authed(&exchange).await;
    let response = client
        .call(
            "private/buy",
            json!({"instrument_name": "BTC-PERPETUAL", "amount": 15, "type": "market"}),
        )
        .await;
    assert_eq!(response["error"]["code"], -32602);
    assert_eq!(
        response["error"]["data"]["reason"],
        "must be a multiple of contract size"
    );
    assert_eq!(
        client
            .error_code(
                "private/buy",
                json!({"instrument_name": "BTC-PERPETUAL", "amount": 0, "type": "market"}),
            )
            .await,
        10002
    );
    assert_eq!(
        client
            .error_code(
                "private/buy",
                json!({"instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "limit", "price": 50000.3}),
            )
            .await,
        10043
    );
    assert_eq!(
        client
            .error_code(
                "private/buy",
                json!({"instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "market", "label": "x".repeat(65)}),
            )
            .await,
        -32602
    );
    assert_eq!(
        client
            .error_code(
                "private/buy",
                json!({"instrument_name": "BTC-PERPETUAL", "amount": 100_000_000, "type": "market"}),
            )
            .await,
        10009
    );
    assert_eq!(
        client
            .error_code(
                "private/sell",
                json!({"instrument_name": "XRP-PERPETUAL", "amount": 10, "type": "market"}),
            )
            .await,
        10020
    );
    assert!(exchange.open_orders().is_empty());
    assert!(exchange.positions().is_empty());
    exchange.shutdown().await;
}

#[tokio::test]
async fn market_order_fills_and_position_appears() {
    let exchange = start(config()).await;
    exchange.pause_market(true);
    exchange.set_price("BTC-PERPETUAL", 60_000.0);
    let mut client = Client::authed(&exchange).await;
    let result = buy(
        &mut client,
        json!({"instrument_name": "BTC-PERPETUAL", "amount": 1000, "type": "market", "label": "m-1"}),
    )
    .await;
    assert_eq!(result["order"]["order_state"], "filled");
    assert_eq!(result["order"]["label"], "m-1");
    assert_eq!(result["trades"][0]["price"], json!(60_000.5));
    assert_eq!(result["trades"][0]["amount"], json!(1000));

    let positions = client
        .result(
            "private/get_positions",
            json!({"currency": "BTC", "kind": "future"}),
        )
        .await;
    let position = btc_position(&positions);
    assert_eq!(position["direction"], "buy");
    assert_eq!(position["size"], json!(1000));
    assert_eq!(position["average_price"], json!(60_000.5));
    assert_eq!(position["kind"], "future");

    let summary = client
        .result("private/get_account_summary", json!({"currency": "BTC"}))
        .await;
    for field in [
        "balance",
        "equity",
        "margin_balance",
        "available_funds",
        "initial_margin",
        "maintenance_margin",
        "session_upl",
        "session_rpl",
        "total_pl",
    ] {
        assert!(summary[field].is_number(), "summary misses {field}");
    }
    assert_eq!(summary["currency"], "BTC");
    assert!(
        summary["balance"].as_f64().unwrap() < 10.0,
        "taker fee charged"
    );

    let closed = client
        .result(
            "private/close_position",
            json!({"instrument_name": "BTC-PERPETUAL", "type": "market"}),
        )
        .await;
    assert_eq!(closed["order"]["order_state"], "filled");
    assert_eq!(closed["order"]["direction"], "sell");
    let positions = client
        .result("private/get_positions", json!({"currency": "BTC"}))
        .await;
    assert_eq!(btc_position(&positions)["direction"], "zero");
    exchange.shutdown().await;
}

#[tokio::test]
async fn otoco_take_profit_fill_cancels_stop_and_flattens_position() {
    let exchange = start(config()).await;
    exchange.pause_market(true);
    exchange.set_price("BTC-PERPETUAL", 60_000.0);
    let mut client = Client::authed(&exchange).await;
    client
        .result(
            "private/subscribe",
            json!({"channels": ["user.orders.BTC-PERPETUAL.raw"]}),
        )
        .await;
    let result = buy(
        &mut client,
        json!({
            "instrument_name": "BTC-PERPETUAL", "amount": 1000, "type": "limit", "price": 59_000,
            "label": "entry-7",
            "linked_order_type": "one_triggers_one_cancels_other",
            "trigger_fill_condition": "first_hit",
            "otoco_config": [
                {"amount": 1000, "direction": "sell", "type": "stop_market", "trigger_price": 57_000, "trigger": "mark_price", "reduce_only": true},
                {"amount": 1000, "direction": "sell", "type": "limit", "price": 62_000, "reduce_only": true}
            ]
        }),
    )
    .await;
    let order = &result["order"];
    assert_eq!(order["order_state"], "open");
    assert_eq!(order["is_primary_otoco"], true);
    let legs: Vec<String> = order["oto_order_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(legs.len(), 2);
    let open = client
        .result(
            "private/get_open_orders_by_currency",
            json!({"currency": "BTC"}),
        )
        .await;
    let state_of = |orders: &Value, id: &str| -> Value {
        orders
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["order_id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    for leg in &legs {
        let leg = state_of(&open, leg);
        assert_eq!(leg["order_state"], "untriggered");
        assert_eq!(leg["primary_order_id"], order["order_id"]);
        assert!(leg["oco_ref"].is_string());
    }

    // Entry fills: legs go live.
    exchange.set_price("BTC-PERPETUAL", 59_000.0);
    let open = client
        .result(
            "private/get_open_orders_by_instrument",
            json!({"instrument_name": "BTC-PERPETUAL"}),
        )
        .await;
    assert_eq!(state_of(&open, &legs[0])["order_state"], "untriggered");
    assert_eq!(state_of(&open, &legs[1])["order_state"], "open");
    let positions = client
        .result("private/get_positions", json!({"currency": "BTC"}))
        .await;
    assert_eq!(btc_position(&positions)["size"], json!(1000));

    // Take-profit hit: stop cancelled with oco_other_closed, flat.
    exchange.set_price("BTC-PERPETUAL", 62_000.0);
    let all = exchange.all_orders();
    let stop = state_of(&json!(all), &legs[0]);
    let take = state_of(&json!(all), &legs[1]);
    assert_eq!(take["order_state"], "filled");
    assert_eq!(stop["order_state"], "cancelled");
    assert_eq!(stop["cancel_reason"], "oco_other_closed");
    let positions = client
        .result("private/get_positions", json!({"currency": "BTC"}))
        .await;
    assert_eq!(btc_position(&positions)["direction"], "zero");
    assert!(exchange.open_orders().is_empty());

    // The stop's cancellation was published on user.orders.
    let mut saw_cancel = false;
    while let Some(note) = client
        .notification("user.orders.BTC-PERPETUAL.raw", Duration::from_millis(500))
        .await
    {
        let data = &note["params"]["data"];
        if data["order_id"] == legs[0].as_str() && data["order_state"] == "cancelled" {
            saw_cancel = true;
            break;
        }
    }
    assert!(
        saw_cancel,
        "no user.orders notification for the cancelled stop"
    );
    exchange.shutdown().await;
}

#[tokio::test]
async fn reject_linked_legs_fills_primary_and_rejects_legs() {
    let exchange = start(config()).await;
    exchange.pause_market(true);
    exchange.faults().reject_linked_legs(1);
    let mut client = Client::authed(&exchange).await;
    let result = buy(
        &mut client,
        json!({
            "instrument_name": "ETH-PERPETUAL", "amount": 10, "type": "market",
            "linked_order_type": "one_triggers_one_cancels_other",
            "otoco_config": [
                {"amount": 10, "direction": "sell", "type": "stop_market", "trigger_price": 2000},
                {"amount": 10, "direction": "sell", "type": "limit", "price": 4000}
            ]
        }),
    )
    .await;
    assert_eq!(result["order"]["order_state"], "filled");
    for leg in result["order"]["oto_order_ids"].as_array().unwrap() {
        let state = client
            .result("private/get_order_state", json!({"order_id": leg}))
            .await;
        assert_eq!(state["order_state"], "rejected");
    }
    exchange.shutdown().await;
}

#[tokio::test]
async fn order_state_by_label_finds_a_filled_order() {
    let exchange = start(config()).await;
    let mut client = Client::authed(&exchange).await;
    buy(
        &mut client,
        json!({"instrument_name": "ETH-PERPETUAL", "amount": 5, "type": "market", "label": "idem-42"}),
    )
    .await;
    let found = client
        .result(
            "private/get_order_state_by_label",
            json!({"currency": "ETH", "label": "idem-42"}),
        )
        .await;
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["order_state"], "filled");
    let none = client
        .result(
            "private/get_order_state_by_label",
            json!({"currency": "BTC", "label": "idem-42"}),
        )
        .await;
    assert_eq!(none, json!([]));
    exchange.shutdown().await;
}

async fn rest_limit(client: &mut Client, label: &str) -> String {
    let result = buy(
        client,
        json!({"instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "limit", "price": 30_000, "label": label}),
    )
    .await;
    assert_eq!(result["order"]["order_state"], "open");
    result["order"]["order_id"].as_str().unwrap().to_owned()
}

fn order_by_id(exchange: &PaperExchange, id: &str) -> Value {
    exchange
        .all_orders()
        .into_iter()
        .find(|o| o["order_id"] == id)
        .unwrap()
}

async fn wait_for_state(exchange: &PaperExchange, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let order = order_by_id(exchange, id);
        if order["order_state"] == state || Instant::now() > deadline {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn cancel_on_disconnect_cancels_only_that_connections_orders() {
    let exchange = start(config()).await;
    exchange.pause_market(true);
    let mut with_cod = Client::authed(&exchange).await;
    let mut without = Client::authed(&exchange).await;
    assert_eq!(
        with_cod
            .result(
                "private/enable_cancel_on_disconnect",
                json!({"scope": "connection"})
            )
            .await,
        "ok"
    );
    assert_eq!(
        with_cod
            .result("private/get_cancel_on_disconnect", json!({}))
            .await,
        json!({"scope": "connection", "enabled": true})
    );
    let doomed = rest_limit(&mut with_cod, "cod-1").await;
    let kept = rest_limit(&mut without, "cod-2").await;
    let seeded = exchange.seed_order(OrderSeed {
        instrument: "BTC-PERPETUAL".into(),
        direction: Direction::Buy,
        amount: 10.0,
        order_type: "limit".into(),
        price: Some(30_000.0),
        trigger_price: None,
        label: "seeded".into(),
        reduce_only: false,
    });
    assert!(!seeded.is_empty());

    drop(with_cod);
    let cancelled = wait_for_state(&exchange, &doomed, "cancelled").await;
    assert_eq!(cancelled["order_state"], "cancelled");
    assert_eq!(cancelled["cancel_reason"], "cancel_on_disconnect");
    assert_eq!(order_by_id(&exchange, &kept)["order_state"], "open");
    assert_eq!(order_by_id(&exchange, &seeded)["order_state"], "open");

    // A drop_all closes the other connection too, but it has no cancel-on-disconnect.
    exchange.faults().drop_all();
    assert!(without.closed_within(WAIT).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(order_by_id(&exchange, &kept)["order_state"], "open");
    exchange.shutdown().await;
}

#[tokio::test]
async fn cancel_on_disconnect_fires_on_missed_heartbeat_but_not_on_logout() {
    let exchange = start(config()).await;
    exchange.pause_market(true);

    let mut logging_out = Client::authed(&exchange).await;
    logging_out
        .result("private/enable_cancel_on_disconnect", json!({}))
        .await;
    let survives = rest_limit(&mut logging_out, "logout").await;
    logging_out.send_request("private/logout", json!({})).await;
    assert!(logging_out.closed_within(WAIT).await);

    let mut silent = Client::authed(&exchange).await;
    silent
        .result("private/enable_cancel_on_disconnect", json!({}))
        .await;
    let doomed = rest_limit(&mut silent, "silent").await;
    silent
        .result("public/set_heartbeat", json!({"interval": 0.1}))
        .await;
    assert!(silent.closed_within(WAIT).await);
    let cancelled = wait_for_state(&exchange, &doomed, "cancelled").await;
    assert_eq!(cancelled["cancel_reason"], "cancel_on_disconnect");
    assert_eq!(order_by_id(&exchange, &survives)["order_state"], "open");
    exchange.shutdown().await;
}

#[tokio::test]
async fn drop_after_accept_places_the_order_and_closes_without_an_answer() {
    let exchange = start(config()).await;
    exchange.faults().drop_after_accept("private/buy", 1);
    let mut client = Client::authed(&exchange).await;
    let id = client
        .send_request(
            "private/buy",
            json!({"instrument_name": "BTC-PERPETUAL", "amount": 100, "type": "market", "label": "lost-answer"}),
        )
        .await;
    loop {
        match client.recv(WAIT).await {
            None => break,
            Some(frame) => assert_ne!(frame.get("id"), Some(&json!(id)), "answer was sent"),
        }
    }
    let orders = exchange.all_orders();
    assert!(
        orders
            .iter()
            .any(|o| o["label"] == "lost-answer" && o["order_state"] == "filled")
    );
    // The next call is answered normally.
    let mut again = Client::authed(&exchange).await;
    buy(
        &mut again,
        json!({"instrument_name": "BTC-PERPETUAL", "amount": 100, "type": "market"}),
    )
    .await;
    // The unanswered order still counts as sent once with its label; unlabelled ones not at all.
    let by_label = exchange.stats().order_requests_by_label;
    assert_eq!(by_label.get("lost-answer"), Some(&1), "{by_label:?}");
    assert_eq!(by_label.len(), 1, "{by_label:?}");
    exchange.shutdown().await;
}

#[tokio::test]
async fn inject_error_answers_the_code_without_effect() {
    let exchange = start(config()).await;
    exchange
        .faults()
        .inject_error("private/buy", 10028, "too_many_requests", 1);
    let mut client = Client::authed(&exchange).await;
    let params = json!({"instrument_name": "BTC-PERPETUAL", "amount": 100, "type": "market"});
    let response = client.call("private/buy", params.clone()).await;
    assert_eq!(response["error"]["code"], 10028);
    assert_eq!(response["error"]["message"], "too_many_requests");
    assert!(exchange.all_orders().is_empty());
    buy(&mut client, params).await;
    assert_eq!(exchange.all_orders().len(), 1);
    assert_eq!(exchange.stats().requests_by_method["private/buy"], 2);
    exchange.shutdown().await;
}

#[tokio::test]
async fn cancel_and_cancel_by_label_remove_open_orders() {
    let exchange = start(config()).await;
    exchange.pause_market(true);
    let mut client = Client::authed(&exchange).await;
    let first = rest_limit(&mut client, "grid").await;
    rest_limit(&mut client, "grid").await;
    rest_limit(&mut client, "other").await;
    let cancelled = client
        .result("private/cancel", json!({"order_id": first}))
        .await;
    assert_eq!(cancelled["order_state"], "cancelled");
    assert_eq!(cancelled["cancel_reason"], "user_request");
    assert_eq!(
        client
            .error_code("private/cancel", json!({"order_id": "BTC-999999"}))
            .await,
        10004
    );
    assert_eq!(
        client
            .result(
                "private/cancel_by_label",
                json!({"label": "grid", "currency": "BTC"})
            )
            .await,
        1
    );
    assert_eq!(client.result("private/cancel_all", json!({})).await, 1);
    assert!(exchange.open_orders().is_empty());
    exchange.shutdown().await;
}

#[tokio::test]
async fn user_orders_channel_notifies_fills_of_resting_orders() {
    let exchange = start(config()).await;
    exchange.pause_market(true);
    exchange.set_price("BTC-PERPETUAL", 60_000.0);
    let mut client = Client::authed(&exchange).await;
    client
        .result(
            "private/subscribe",
            json!({"channels": ["user.orders.BTC-PERPETUAL.raw", "user.portfolio.btc"]}),
        )
        .await;
    let id = rest_limit(&mut client, "watch").await;
    exchange.set_price("BTC-PERPETUAL", 29_000.0);
    let mut filled = false;
    while let Some(note) = client
        .notification("user.orders.BTC-PERPETUAL.raw", Duration::from_secs(1))
        .await
    {
        if note["params"]["data"]["order_id"] == id.as_str()
            && note["params"]["data"]["order_state"] == "filled"
        {
            filled = true;
            break;
        }
    }
    assert!(filled);
    let portfolio = client
        .notification("user.portfolio.btc", Duration::from_secs(1))
        .await
        .expect("no portfolio notification");
    assert_eq!(portfolio["params"]["data"]["currency"], "BTC");
    exchange.shutdown().await;
}

#[tokio::test]
async fn seeded_position_is_reported_and_closable() {
    let exchange = start(config()).await;
    exchange.pause_market(true);
    exchange.seed_position("ETH-PERPETUAL", Direction::Sell, 300.0, 3_100.0);
    let positions = exchange.positions();
    assert_eq!(positions.len(), 1);
    assert_eq!(positions[0]["direction"], "sell");
    assert_eq!(positions[0]["size"], json!(-300));
    let mut client = Client::authed(&exchange).await;
    let closed = client
        .result(
            "private/close_position",
            json!({"instrument_name": "ETH-PERPETUAL", "type": "market"}),
        )
        .await;
    assert_eq!(closed["order"]["direction"], "buy");
    assert_eq!(closed["order"]["order_state"], "filled");
    assert_eq!(exchange.positions()[0]["direction"], "zero");
    exchange.shutdown().await;
}

#[tokio::test]
async fn control_methods_drive_the_exchange_over_the_wire() {
    let exchange = start(config()).await;
    let mut client = Client::connect(&exchange).await;
    assert_eq!(
        client
            .result("paper/pause_market", json!({"paused": true}))
            .await,
        "ok"
    );
    client
        .result(
            "paper/set_price",
            json!({"instrument_name": "BTC-PERPETUAL", "price": 70_000}),
        )
        .await;
    let ticker = client
        .result("public/ticker", json!({"instrument_name": "BTC-PERPETUAL"}))
        .await;
    assert_eq!(ticker["mark_price"], 70_000.0);
    client
        .result(
            "paper/seed_position",
            json!({"instrument_name": "BTC-PERPETUAL", "direction": "buy", "size": 500, "average_price": 69_000}),
        )
        .await;
    let order = client
        .result(
            "paper/seed_order",
            json!({"instrument_name": "BTC-PERPETUAL", "direction": "sell", "amount": 500, "type": "stop_market", "trigger_price": 65_000, "label": "sl"}),
        )
        .await;
    assert_eq!(order["order_state"], "untriggered");
    client
        .result(
            "paper/inject_error",
            json!({"method": "public/get_time", "code": 11051, "message": "system_maintenance", "times": 1}),
        )
        .await;
    assert_eq!(client.error_code("public/get_time", json!({})).await, 11051);
    client.result("paper/refuse", json!({"seconds": 0.2})).await;
    assert!(
        tokio_tungstenite::connect_async(exchange.url())
            .await
            .is_err()
    );
    let stats = client.result("paper/stats", json!({})).await;
    assert_eq!(stats["connections_refused"], 1);
    assert!(stats["refused_at"][0].is_number());
    assert_eq!(stats["active_connections"], 1);
    assert!(stats["requests_by_method"]["paper/set_price"].as_u64() == Some(1));
    assert_eq!(client.result("paper/drop_all", json!({})).await, "ok");
    assert!(client.closed_within(WAIT).await);
    exchange.shutdown().await;
}

#[tokio::test]
async fn control_methods_are_refused_when_disabled() {
    let exchange = start(PaperConfig {
        allow_control: false,
        ..config()
    })
    .await;
    let mut client = Client::connect(&exchange).await;
    for method in ["paper/drop_all", "paper/stats", "paper/set_price"] {
        assert_eq!(client.error_code(method, json!({})).await, -32601);
    }
    client.result("public/get_time", json!({})).await;
    exchange.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_connections_and_returns() {
    let exchange = start(config()).await;
    let mut client = Client::connect(&exchange).await;
    client.result("public/get_time", json!({})).await;
    let url = exchange.url();
    tokio::time::timeout(WAIT, exchange.shutdown())
        .await
        .expect("shutdown hung");
    assert!(client.closed_within(WAIT).await);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[tokio::test]
async fn invalid_config_is_refused_at_start() {
    let err = PaperExchange::start(
        PaperConfig {
            ticks_per_second: -1.0,
            ..PaperConfig::default()
        },
        loopback(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("ticks_per_second"));
}
