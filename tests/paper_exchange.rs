//! The paper exchange driven over a real loopback WebSocket, as the daemon's broker client would.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tradebaas::paper_exchange::{Direction, OrderSeed, PaperConfig, PaperExchange};

const WAIT: Duration = Duration::from_secs(5);

/// Throughput tests measure the machine; running two at once would measure each other.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config() -> PaperConfig {
    PaperConfig {
        seed: Some(7),
        min_heartbeat_interval: Duration::from_millis(100),
        ..PaperConfig::default()
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn start(config: PaperConfig) -> PaperExchange {
    PaperExchange::start(config, loopback()).await.unwrap()
}

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Notifications received while waiting for a response.
    pending: VecDeque<Value>,
}

impl Client {
    async fn connect(exchange: &PaperExchange) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(exchange.url())
            .await
            .unwrap();
        Client {
            ws,
            next_id: 1,
            pending: VecDeque::new(),
        }
    }

    /// A client with a small receive buffer (which also turns off autotuning), so the server
    /// feels a slow reader within milliseconds instead of after megabytes of kernel buffers.
    async fn connect_small_buffer(exchange: &PaperExchange) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        let stream = socket.connect(exchange.local_addr()).await.unwrap();
        let (ws, _) =
            tokio_tungstenite::client_async(exchange.url(), MaybeTlsStream::Plain(stream))
                .await
                .unwrap();
        Client {
            ws,
            next_id: 1,
            pending: VecDeque::new(),
        }
    }

    async fn authed(exchange: &PaperExchange) -> Client {
        let mut client = Client::connect(exchange).await;
        let response = client
            .call(
                "public/auth",
                json!({"grant_type": "client_credentials", "client_id": "bot", "client_secret": "secret"}),
            )
            .await;
        assert!(response.get("result").is_some(), "{response}");
        client
    }

    async fn send_json(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .unwrap();
    }

    async fn send_request(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_json(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        id
    }

    /// The next JSON text frame, or None on close / timeout.
    async fn recv(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match message {
                Message::Text(text) => return Some(serde_json::from_str(text.as_str()).unwrap()),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Calls `method` and returns the whole response (result or error).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send_request(method, params).await;
        self.response_to(json!(id)).await
    }

    async fn response_to(&mut self, id: Value) -> Value {
        loop {
            let frame = self
                .recv(WAIT)
                .await
                .unwrap_or_else(|| panic!("no response to id {id}"));
            if frame.get("id") == Some(&id) {
                return frame;
            }
            self.pending.push_back(frame);
        }
    }

    async fn result(&mut self, method: &str, params: Value) -> Value {
        let response = self.call(method, params).await;
        match response.get("result") {
            Some(result) => result.clone(),
            None => panic!("{method} failed: {response}"),
        }
    }

    async fn error_code(&mut self, method: &str, params: Value) -> i64 {
        let response = self.call(method, params).await;
        response["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("{method} did not fail: {response}"))
    }

    /// The next notification on `channel` (buffered ones first).
    async fn notification(&mut self, channel: &str, within: Duration) -> Option<Value> {
        if let Some(index) = self
            .pending
            .iter()
            .position(|n| n["params"]["channel"] == channel)
        {
            return self.pending.remove(index);
        }
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let frame = self.recv(left).await?;
            if frame["params"]["channel"] == channel {
                return Some(frame);
            }
        }
        None
    }

    /// Whether the server closes the connection within `within` (reading and discarding).
    async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

async fn buy(client: &mut Client, params: Value) -> Value {
    client.result("private/buy", params).await
}

fn btc_position(positions: &Value) -> Value {
    positions
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["instrument_name"] == "BTC-PERPETUAL")
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn auth_accepts_registered_credentials_and_rejects_bad_ones() {
    let exchange = start(config()).await;
    exchange.add_credentials("bot", "secret");
    let mut client = Client::connect(&exchange).await;
    let code = client
        .error_code(
            "public/auth",
            json!({"grant_type": "client_credentials", "client_id": "bot", "client_secret": "nope"}),
        )
        .await;
    assert_eq!(code, 13004);

    let result = client
        .result(
            "public/auth",
            json!({"grant_type": "client_credentials", "client_id": "bot", "client_secret": "secret"}),
        )
        .await;
    assert_eq!(result["expires_in"], 31_536_000);
    assert_eq!(result["token_type"], "bearer");
    assert_eq!(result["scope"], "connection mainaccount");
    assert_eq!(result["enabled_features"], json!([]));
    assert!(result["access_token"].as_str().unwrap().len() > 10);

    let refreshed = client
        .result(
            "public/auth",
            json!({"grant_type": "refresh_token", "refresh_token": result["refresh_token"]}),
        )
        .await;
    assert_ne!(refreshed["access_token"], result["access_token"]);
    exchange.shutdown().await;
}

#[tokio::test]
async fn private_methods_need_auth_or_a_valid_access_token() {
    let exchange = start(config()).await;
    let mut first = Client::authed(&exchange).await;
    let token = first
        .result(
            "public/auth",
            json!({"grant_type": "client_credentials", "client_id": "bot", "client_secret": "x"}),
        )
        .await["access_token"]
        .clone();

    let mut second = Client::connect(&exchange).await;
    let code = second
        .error_code("private/get_positions", json!({"currency": "BTC"}))
        .await;
    assert_eq!(code, 13009);
    let code = second
        .error_code(
            "private/get_positions",
            json!({"currency": "BTC", "access_token": "forged"}),
        )
        .await;
    assert_eq!(code, 13009);
    let positions = second
        .result(
            "private/get_positions",
            json!({"currency": "BTC", "access_token": token}),
        )
        .await;
    assert_eq!(positions, json!([]));
    // The connection is now authenticated without the param.
    second
        .result("private/get_account_summary", json!({"currency": "BTC"}))
        .await;
    exchange.shutdown().await;
}

#[tokio::test]
async fn responses_echo_ids_and_carry_timing_fields() {
    let exchange = start(config()).await;
    let mut client = Client::connect(&exchange).await;
    client
        .send_json(
            json!({"jsonrpc": "2.0", "id": "abc-1", "method": "public/get_time", "params": {}}),
        )
        .await;
    let response = client.response_to(json!("abc-1")).await;
    assert_eq!(response["jsonrpc"], "2.0");
    assert!(response["result"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(response["testnet"], false);
    for field in ["usIn", "usOut", "usDiff"] {
        assert!(response[field].is_i64(), "missing {field}: {response}");
    }
    let test = client.result("public/test", json!({})).await;
    assert_eq!(test, json!({"version": "1.2.26"}));
    let code = client
        .error_code("public/test", json!({"expected_result": "exception"}))
        .await;
    assert_ne!(code, 0);
    exchange.shutdown().await;
}

#[tokio::test]
async fn get_instruments_and_ticker_have_deribit_shapes() {
    let exchange = start(config()).await;
    let mut client = Client::connect(&exchange).await;
    let instruments = client
        .result(
            "public/get_instruments",
            json!({"currency": "BTC", "kind": "future"}),
        )
        .await;
    let btc = &instruments[0];
    assert_eq!(instruments.as_array().unwrap().len(), 1);
    assert_eq!(btc["instrument_name"], "BTC-PERPETUAL");
    assert_eq!(btc["settlement_period"], "perpetual");
    assert_eq!(btc["instrument_type"], "reversed");
    assert_eq!(btc["contract_size"], 10.0);
    assert_eq!(btc["tick_size"], 0.5);
    assert_eq!(btc["is_active"], true);
    let eth = client
        .result("public/get_instruments", json!({"currency": "ETH"}))
        .await;
    assert_eq!(eth[0]["min_trade_amount"], 1.0);
    assert_eq!(eth[0]["tick_size"], 0.05);

    let ticker = client
        .result("public/ticker", json!({"instrument_name": "BTC-PERPETUAL"}))
        .await;
    assert_eq!(ticker["state"], "open");
    let spread =
        ticker["best_ask_price"].as_f64().unwrap() - ticker["best_bid_price"].as_f64().unwrap();
    assert_eq!(spread, 1.0);
    exchange.shutdown().await;
}

#[tokio::test]
async fn subscribe_result_lists_only_valid_channels() {
    let exchange = start(config()).await;
    let mut client = Client::connect(&exchange).await;
    let result = client
        .result(
            "public/subscribe",
            json!({"channels": [
                "ticker.BTC-PERPETUAL.100ms",
                "ticker.DOGE-PERPETUAL.100ms",
                "book.BTC-PERPETUAL.100ms",
                "ticker.ETH-PERPETUAL.agg2",
                "user.orders.BTC-PERPETUAL.raw",
                "nonsense"
            ]}),
        )
        .await;
    assert_eq!(
        result,
        json!(["ticker.BTC-PERPETUAL.100ms", "ticker.ETH-PERPETUAL.agg2"])
    );
    let remaining = client
        .result(
            "public/unsubscribe",
            json!({"channels": ["ticker.BTC-PERPETUAL.100ms"]}),
        )
        .await;
    assert_eq!(remaining, json!(["ticker.ETH-PERPETUAL.agg2"]));
    assert_eq!(
        client.result("public/unsubscribe_all", json!({})).await,
        "ok"
    );
    exchange.shutdown().await;
}

#[tokio::test]
async fn raw_ticker_needs_auth() {
    let exchange = start(config()).await;
    let mut client = Client::connect(&exchange).await;
    let code = client
        .error_code(
            "public/subscribe",
            json!({"channels": ["ticker.BTC-PERPETUAL.raw"]}),
        )
        .await;
    assert_eq!(code, 13778);
    let mut authed = Client::authed(&exchange).await;
    let result = authed
        .result(
            "private/subscribe",
            json!({"channels": ["ticker.BTC-PERPETUAL.raw", "user.orders.BTC-PERPETUAL.raw", "user.portfolio.btc"]}),
        )
        .await;
    assert_eq!(result.as_array().unwrap().len(), 3);
    exchange.shutdown().await;
}

#[tokio::test]
async fn ticks_arrive_at_roughly_the_configured_rate_with_required_fields() {
    let exchange = start(PaperConfig {
        ticks_per_second: 50.0,
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
    let started = Instant::now();
    let mut ticks = Vec::new();
    while started.elapsed() < Duration::from_secs(1) {
        if let Some(tick) = client
            .notification("ticker.BTC-PERPETUAL.100ms", Duration::from_millis(200))
            .await
        {
            ticks.push(tick);
        }
    }
    assert!(
        (30..=75).contains(&ticks.len()),
        "expected about 50 ticks in a second, got {}",
        ticks.len()
    );
    let tick = &ticks[0];
    assert_eq!(tick["jsonrpc"], "2.0");
    assert_eq!(tick["method"], "subscription");
    let data = &tick["params"]["data"];
    for field in [
        "instrument_name",
        "timestamp",
        "state",
        "stats",
        "open_interest",
        "index_price",
        "best_bid_price",
        "best_bid_amount",
        "best_ask_price",
        "best_ask_amount",
        "min_price",
        "max_price",
        "mark_price",
        "last_price",
        "estimated_delivery_price",
    ] {
        assert!(data.get(field).is_some(), "tick misses {field}: {data}");
    }
    assert_eq!(data["instrument_name"], "BTC-PERPETUAL");
    assert_eq!(data["state"], "open");
    assert!(data["timestamp"].is_i64());
    assert!(data["mark_price"].is_f64());
    for key in ["volume_usd", "volume", "price_change", "low", "high"] {
        assert!(data["stats"].get(key).is_some(), "stats misses {key}");
    }
    let mark = data["mark_price"].as_f64().unwrap();
    assert_eq!(data["best_bid_price"].as_f64().unwrap(), mark - 0.5);
    assert_eq!(data["best_ask_price"].as_f64().unwrap(), mark + 0.5);
    assert!(exchange.stats().ticks_sent >= ticks.len() as u64);
    exchange.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tens_of_thousands_of_ticks_per_second_are_reachable() {
    let _heavy = HEAVY.lock().await;
    let exchange = start(PaperConfig {
        ticks_per_second: 15_000.0,
        ..config()
    })
    .await;
    let mut client = Client::connect(&exchange).await;
    client
        .result(
            "public/subscribe",
            json!({"channels": ["ticker.BTC-PERPETUAL.100ms", "ticker.ETH-PERPETUAL.100ms"]}),
        )
        .await;
    let started = Instant::now();
    let mut received = 0u64;
    // Count frames without parsing them: the client must not be the bottleneck being measured.
    while started.elapsed() < Duration::from_secs(1) {
        match tokio::time::timeout(Duration::from_millis(200), client.ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => received += 1,
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(None | Some(Err(_))) => panic!("connection lost"),
        }
    }
    let stats = exchange.stats();
    eprintln!(
        "received {received} ticks in {:?}; stats {stats:?}",
        started.elapsed()
    );
    // 30,000 ticks/s configured (a release build delivers all of them, and 50,000/s at 25,000
    // per instrument); an unoptimized build on a busy machine gets a lower bar.
    let floor = if cfg!(debug_assertions) {
        5_000
    } else {
        25_000
    };
    assert!(
        received >= floor,
        "received {received} ticks in a second; stats {stats:?}"
    );
    exchange.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_connection_skips_ticks_without_slowing_others() {
    let _heavy = HEAVY.lock().await;
    let exchange = start(PaperConfig {
        ticks_per_second: 10_000.0,
        ..config()
    })
    .await;
    let channels =
        json!({"channels": ["ticker.BTC-PERPETUAL.100ms", "ticker.ETH-PERPETUAL.100ms"]});
    let mut slow = Client::connect_small_buffer(&exchange).await;
    slow.result("public/subscribe", channels.clone()).await;
    let mut fast = Client::connect(&exchange).await;
    fast.result("public/subscribe", channels).await;

    let slow_reader = tokio::spawn(async move {
        // Reads about 5,000 frames a second out of 20,000: the server's socket buffer fills, its
        // writes to this client block, and the connection task finds ticks it missed.
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            for _ in 0..50 {
                let _ = tokio::time::timeout(Duration::from_millis(100), slow.ws.next()).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let started = Instant::now();
    let mut received = 0u64;
    while started.elapsed() < Duration::from_secs(4) && exchange.stats().ticks_dropped_lagging == 0
    {
        if let Ok(Some(Ok(Message::Text(_)))) =
            tokio::time::timeout(Duration::from_millis(200), fast.ws.next()).await
        {
            received += 1;
        }
    }
    let stats = exchange.stats();
    assert!(
        stats.ticks_dropped_lagging > 0,
        "the slow reader never lagged: {stats:?}"
    );
    assert!(
        received > 1_000,
        "the fast reader was held back: {received}"
    );
    slow_reader.abort();
    exchange.shutdown().await;
}

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
