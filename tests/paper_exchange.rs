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

#[path = "paper_exchange/connection.rs"]
mod connection;
#[path = "paper_exchange/orders.rs"]
mod orders;
#[path = "paper_exchange/protocol.rs"]
mod protocol;
