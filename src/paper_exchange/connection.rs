//! One client connection: the WebSocket handshake, the event loop that reads requests and writes
//! responses, ticks, account events, heartbeats and injected faults, and the clean-up
//! (cancel-on-disconnect) when it ends for any reason. The per-connection [`Session`] lives here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};
use tracing::{debug, info, warn};

use super::engine::ConnId;
use super::methods::{self, Handled};
use super::protocol::{RpcError, TEST_REQUEST_FRAME, Timing, parse_request, response_frame};
use super::shared::{Shared, TickFrame, UserFrame, now_ms, now_us};
use super::stats::bump;
use super::subscriptions::Subscriptions;

/// How long the WebSocket handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write may block before the reader counts as too slow and is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Ticks written per batch before flushing.
const TICK_BATCH: usize = 512;

/// What one connection knows about its client.
#[derive(Debug)]
pub(crate) struct Session {
    /// This connection.
    pub id: ConnId,
    /// The authenticated client, if any.
    pub client_id: Option<String>,
    /// The access token this connection authenticated with.
    pub access_token: Option<String>,
    /// Cancel-on-disconnect with scope `connection`.
    pub cod: bool,
    /// Subscribed channels.
    pub subs: Subscriptions,
    heartbeat: Option<Duration>,
    next_heartbeat: Option<Instant>,
    /// When the outstanding test request was sent, if one is outstanding.
    awaiting_test: Option<Instant>,
}

impl Session {
    fn new(id: ConnId, shared: Arc<Shared>) -> Self {
        Self {
            id,
            client_id: None,
            access_token: None,
            cod: false,
            subs: Subscriptions::new(shared),
            heartbeat: None,
            next_heartbeat: None,
            awaiting_test: None,
        }
    }

    /// Sets (or with `None` disables) the heartbeat interval; the first test request is due one
    /// interval from now.
    pub fn set_heartbeat(&mut self, interval: Option<Duration>) {
        self.heartbeat = interval;
        self.next_heartbeat = interval.map(|d| Instant::now() + d);
        self.awaiting_test = None;
    }

    /// `public/test` arrived: an outstanding test request is answered.
    pub fn heartbeat_answered(&mut self, shared: &Shared) {
        if self.awaiting_test.take().is_some() {
            bump(&shared.stats.test_requests_answered, 1);
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    ClientClosed,
    ReadError,
    WriteFailed,
    SlowReader,
    DropAll,
    MissedHeartbeat,
    DropAfterAccept,
    Logout,
    Shutdown,
}

impl CloseReason {
    fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::ReadError => "read_error",
            CloseReason::WriteFailed => "write_failed",
            CloseReason::SlowReader => "connection_too_slow",
            CloseReason::DropAll => "fault_drop_all",
            CloseReason::MissedHeartbeat => "missed_heartbeat",
            CloseReason::DropAfterAccept => "fault_drop_after_accept",
            CloseReason::Logout => "logout",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// Keeps `active_connections` right however the task ends.
struct ActiveGuard(Arc<Shared>);

impl ActiveGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared
            .stats
            .active_connections
            .fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(shared))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0
            .stats
            .active_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// A byte stream a client connected over: TCP, or an in-process pipe (`memory://`).
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// What a connection task reads and writes.
pub(crate) type Stream = Box<dyn Io>;

/// Serves one accepted connection until it closes.
pub(crate) async fn run(shared: Arc<Shared>, stream: Stream, peer: String, id: u64) {
    let _active = ActiveGuard::new(&shared);
    // Frames up to 64x the request limit are read whole so they can be answered with -32600;
    // anything larger is a protocol error that closes the connection.
    let read_limit = shared
        .config
        .max_frame_bytes
        .saturating_mul(64)
        .max(1 << 20);
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(read_limit))
        .max_frame_size(Some(read_limit));
    let mut drop_rx = shared.drop_generation.subscribe();
    let shutdown = shared.shutdown.clone();
    let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config));
    let ws = tokio::select! {
        result = timeout(HANDSHAKE_TIMEOUT, handshake) => match result {
            Ok(Ok(ws)) => ws,
            Ok(Err(err)) => {
                debug!(%peer, %err, "websocket handshake failed");
                return;
            }
            Err(_) => {
                debug!(%peer, "websocket handshake timed out");
                return;
            }
        },
        _ = shutdown.cancelled() => return,
        _ = drop_rx.changed() => return,
    };
    info!(%peer, "paper exchange connection opened");
    let mut connection = Connection {
        session: Session::new(ConnId(id), Arc::clone(&shared)),
        malformed_rx: shared.malformed.subscribe(),
        shared,
        ws,
        drop_rx,
        tick_rx: None,
        user_rx: None,
    };
    let reason = connection.serve().await;
    connection.finish(reason).await;
    info!(%peer, reason = reason.as_str(), "paper exchange connection closed");
}

struct Connection {
    shared: Arc<Shared>,
    ws: WebSocketStream<Stream>,
    session: Session,
    drop_rx: watch::Receiver<u64>,
    malformed_rx: broadcast::Receiver<usize>,
    tick_rx: Option<broadcast::Receiver<Arc<TickFrame>>>,
    user_rx: Option<broadcast::Receiver<Arc<UserFrame>>>,
}

enum Event {
    Shutdown,
    Drop,
    Incoming(Option<Result<Message, WsError>>),
    Malformed(Result<usize, RecvError>),
    HeartbeatDue,
    Tick(Result<Arc<TickFrame>, RecvError>),
    User(Result<Arc<UserFrame>, RecvError>),
}

async fn recv_opt<T: Clone>(rx: &mut Option<broadcast::Receiver<T>>) -> Result<T, RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Connection {
    async fn serve(&mut self) -> CloseReason {
        loop {
            self.sync_receivers();
            let event = tokio::select! {
                biased;
                _ = self.shared.shutdown.cancelled() => Event::Shutdown,
                _ = self.drop_rx.changed() => Event::Drop,
                incoming = self.ws.next() => Event::Incoming(incoming),
                count = self.malformed_rx.recv() => Event::Malformed(count),
                _ = sleep_until_opt(self.session.next_heartbeat) => Event::HeartbeatDue,
                user = recv_opt(&mut self.user_rx) => Event::User(user),
                tick = recv_opt(&mut self.tick_rx) => Event::Tick(tick),
            };
            let outcome = match event {
                Event::Shutdown => Err(CloseReason::Shutdown),
                Event::Drop => Err(CloseReason::DropAll),
                Event::Incoming(incoming) => self.on_incoming(incoming).await,
                Event::Malformed(Ok(count)) => self.send_malformed(count).await,
                Event::Malformed(Err(_)) => Ok(()),
                Event::HeartbeatDue => self.on_heartbeat_due().await,
                Event::User(user) => self.on_user_event(user).await,
                Event::Tick(tick) => self.on_tick(tick).await,
            };
            if let Err(reason) = outcome {
                return reason;
            }
        }
    }

    /// Holds a tick / account receiver only while something is subscribed, so an idle
    /// connection never lags.
    fn sync_receivers(&mut self) {
        match (self.session.subs.wants_ticks(), self.tick_rx.is_some()) {
            (true, false) => self.tick_rx = Some(self.shared.ticks.subscribe()),
            (false, true) => self.tick_rx = None,
            _ => {}
        }
        match (
            self.session.subs.wants_user_events(),
            self.user_rx.is_some(),
        ) {
            (true, false) => self.user_rx = Some(self.shared.user_events.subscribe()),
            (false, true) => self.user_rx = None,
            _ => {}
        }
    }

    fn stalled_until(&self) -> Option<Instant> {
        self.shared.lock_faults().stalled_until(Instant::now())
    }

    async fn write(&mut self, message: Message, flush: bool) -> Result<(), CloseReason> {
        let shutdown = self.shared.shutdown.clone();
        let ws = &mut self.ws;
        let drop_rx = &mut self.drop_rx;
        let io = async move {
            if flush {
                ws.send(message).await
            } else {
                ws.feed(message).await
            }
        };
        // A write blocked by a slow reader must still obey drop_all and shutdown; a write that
        // can complete does (so `paper/drop_all` is answered before the drop).
        tokio::select! {
            biased;
            result = timeout(WRITE_TIMEOUT, io) => match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => {
                    debug!(%err, "write failed");
                    Err(CloseReason::WriteFailed)
                }
                Err(_) => {
                    warn!("client reads too slowly; disconnecting");
                    Err(CloseReason::SlowReader)
                }
            },
            _ = shutdown.cancelled() => Err(CloseReason::Shutdown),
            _ = drop_rx.changed() => Err(CloseReason::DropAll),
        }
    }

    async fn flush(&mut self) -> Result<(), CloseReason> {
        let shutdown = self.shared.shutdown.clone();
        tokio::select! {
            biased;
            result = timeout(WRITE_TIMEOUT, self.ws.flush()) => match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(CloseReason::WriteFailed),
                Err(_) => {
                    warn!("client reads too slowly; disconnecting");
                    Err(CloseReason::SlowReader)
                }
            },
            _ = shutdown.cancelled() => Err(CloseReason::Shutdown),
            _ = self.drop_rx.changed() => Err(CloseReason::DropAll),
        }
    }

    async fn send_text(&mut self, text: String) -> Result<(), CloseReason> {
        self.write(Message::Text(Utf8Bytes::from(text)), true).await
    }

    async fn reply(
        &mut self,
        id: &Value,
        result: Result<Value, RpcError>,
        us_in: i64,
    ) -> Result<(), CloseReason> {
        let timing = Timing {
            us_in,
            us_out: now_us(),
        };
        self.send_text(response_frame(id, &result, timing)).await
    }

    fn count_malformed(&self) {
        bump(&self.shared.stats.malformed_requests, 1);
    }

    async fn on_incoming(
        &mut self,
        incoming: Option<Result<Message, WsError>>,
    ) -> Result<(), CloseReason> {
        match incoming {
            None => Err(CloseReason::ClientClosed),
            Some(Err(err)) => {
                if matches!(
                    err,
                    WsError::Capacity(_) | WsError::Utf8(_) | WsError::Protocol(_)
                ) {
                    self.count_malformed();
                }
                debug!(%err, "read failed");
                Err(match err {
                    WsError::ConnectionClosed | WsError::AlreadyClosed => CloseReason::ClientClosed,
                    _ => CloseReason::ReadError,
                })
            }
            Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
            Some(Ok(Message::Binary(_))) => {
                // Deribit speaks text frames only.
                self.count_malformed();
                let us_in = now_us();
                self.reply(&Value::Null, Err(RpcError::parse_error()), us_in)
                    .await
            }
            // tungstenite queued the pong; push it out now.
            Some(Ok(Message::Ping(_))) => self.flush().await,
            Some(Ok(Message::Close(_))) => Err(CloseReason::ClientClosed),
            Some(Ok(Message::Pong(_) | Message::Frame(_))) => Ok(()),
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), CloseReason> {
        let us_in = now_us();
        if text.len() > self.shared.config.max_frame_bytes {
            self.count_malformed();
            return self
                .reply(&Value::Null, Err(RpcError::too_large()), us_in)
                .await;
        }
        let request = match parse_request(text) {
            Ok(request) => request,
            Err(bad) => {
                self.count_malformed();
                return self.reply(&bad.id, Err(bad.error), us_in).await;
            }
        };
        self.shared.stats.request(&request.method);
        if matches!(request.method.as_str(), "private/buy" | "private/sell")
            && let Some(label) = request.params.get("label").and_then(Value::as_str)
        {
            self.shared.stats.order_request(label);
        }
        if self.stalled_until().is_some() {
            debug!(method = %request.method, "stalled: request dropped unanswered");
            return Ok(());
        }
        debug!(method = %request.method, id = %request.id, "request");
        let (injected, drop_after, hold) = {
            let mut faults = self.shared.lock_faults();
            let injected = faults.take_injected(&request.method);
            let drop_after = injected.is_none() && faults.take_drop_after_accept(&request.method);
            let hold = if injected.is_none() && !drop_after {
                faults.take_hold_after_accept(&request.method)
            } else {
                None
            };
            (injected, drop_after, hold)
        };
        if let Some(error) = injected {
            debug!(method = %request.method, code = error.code, "answering injected error");
            return self.reply(&request.id, Err(error), us_in).await;
        }
        let handled = methods::dispatch(
            &self.shared,
            &mut self.session,
            &request.method,
            &request.params,
        );
        match handled {
            Handled::Logout => Err(CloseReason::Logout),
            Handled::Reply(result) => {
                if let Err(error) = &result {
                    if error.is_malformed() {
                        self.count_malformed();
                    }
                    debug!(method = %request.method, code = error.code, "request failed");
                }
                if drop_after {
                    info!(method = %request.method, "fault: closing after executing, without answer");
                    return Err(CloseReason::DropAfterAccept);
                }
                if let Some(hold) = hold {
                    info!(method = %request.method, hold_ms = hold.as_millis() as u64, "fault: holding the answer after executing");
                    tokio::time::sleep(hold).await;
                }
                self.reply(&request.id, result, us_in).await
            }
        }
    }

    async fn on_heartbeat_due(&mut self) -> Result<(), CloseReason> {
        let Some(interval) = self.session.heartbeat else {
            self.session.next_heartbeat = None;
            return Ok(());
        };
        if let Some(until) = self.stalled_until() {
            // Silent during a stall, and the client cannot be blamed for not answering.
            self.session.awaiting_test = None;
            self.session.next_heartbeat = Some(until + interval);
            return Ok(());
        }
        if let Some(sent) = self.session.awaiting_test {
            // An answer that arrived during a stall was swallowed: ask again instead.
            if !self.shared.lock_faults().stalled_since(sent) {
                bump(&self.shared.stats.closed_for_missed_heartbeat, 1);
                info!("test_request unanswered; closing connection");
                return Err(CloseReason::MissedHeartbeat);
            }
        }
        self.session.awaiting_test = Some(Instant::now());
        self.session.next_heartbeat = Some(Instant::now() + interval);
        bump(&self.shared.stats.test_requests_sent, 1);
        self.send_text(TEST_REQUEST_FRAME.to_owned()).await
    }

    async fn on_tick(
        &mut self,
        tick: Result<Arc<TickFrame>, RecvError>,
    ) -> Result<(), CloseReason> {
        let first = match tick {
            Ok(frame) => frame,
            Err(RecvError::Lagged(skipped)) => {
                bump(&self.shared.stats.ticks_dropped_lagging, skipped);
                return Ok(());
            }
            Err(RecvError::Closed) => {
                self.tick_rx = None;
                return Ok(());
            }
        };
        let stalled = self.stalled_until().is_some();
        let mut pending = Some(first);
        let mut written = 0usize;
        // Write what is already queued as one batch, then flush once.
        while let Some(frame) = pending.take() {
            if !stalled {
                let mask = self.session.subs.ticker_mask(frame.instrument);
                for (interval, text) in frame.frames.iter().enumerate() {
                    if let Some(text) = text
                        && mask & (1 << interval) != 0
                    {
                        self.write(Message::Text(text.clone()), false).await?;
                        written += 1;
                    }
                }
            }
            if written >= TICK_BATCH {
                break;
            }
            if let Some(rx) = &mut self.tick_rx {
                match rx.try_recv() {
                    Ok(next) => pending = Some(next),
                    Err(broadcast::error::TryRecvError::Lagged(skipped)) => {
                        bump(&self.shared.stats.ticks_dropped_lagging, skipped);
                    }
                    Err(_) => {}
                }
            }
        }
        if written > 0 {
            bump(&self.shared.stats.ticks_sent, written as u64);
            self.flush().await?;
        }
        Ok(())
    }

    async fn on_user_event(
        &mut self,
        event: Result<Arc<UserFrame>, RecvError>,
    ) -> Result<(), CloseReason> {
        let event = match event {
            Ok(event) => event,
            Err(RecvError::Lagged(skipped)) => {
                warn!(skipped, "account notifications skipped: client lagging");
                return Ok(());
            }
            Err(RecvError::Closed) => {
                self.user_rx = None;
                return Ok(());
            }
        };
        if self.session.client_id.is_none()
            || !self.session.subs.has_user_channel(&event.channel)
            || self.stalled_until().is_some()
        {
            return Ok(());
        }
        self.write(Message::Text(event.frame.clone()), true).await
    }

    async fn send_malformed(&mut self, count: usize) -> Result<(), CloseReason> {
        if self.stalled_until().is_some() {
            return Ok(());
        }
        let instrument = self
            .shared
            .instruments
            .first()
            .map_or("BTC-PERPETUAL", |spec| spec.name);
        for i in 0..count {
            self.write(malformed_frame(i, instrument), false).await?;
        }
        self.flush().await
    }

    /// Clean-up once the loop ended: cancel-on-disconnect (never on logout), then a close frame
    /// where the close is orderly. Fault closes just drop the TCP connection.
    async fn finish(&mut self, reason: CloseReason) {
        if reason != CloseReason::Logout {
            let connection = self.session.id;
            let own_scope = self.session.cod;
            let now = now_ms();
            let cancelled = self.shared.with_engine(|engine| {
                if own_scope || engine.cod_account {
                    engine.cancel_created_by(connection, now)
                } else {
                    0
                }
            });
            if cancelled > 0 {
                info!(cancelled, "cancel-on-disconnect cancelled orders");
            }
        }
        if matches!(
            reason,
            CloseReason::ClientClosed | CloseReason::Shutdown | CloseReason::Logout
        ) {
            let _ = timeout(Duration::from_millis(500), self.ws.close(None)).await;
        }
    }
}

/// The `i`-th frame of the malformed mix pushed by `send_malformed`.
fn malformed_frame(i: usize, instrument: &str) -> Message {
    match i % 5 {
        0 => Message::text(r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"#),
        1 => Message::text(r#"[{"jsonrpc":"2.0"},42,"subscription"]"#),
        2 => Message::text(r#"{"jsonrpc":"2.0","method":"subscription"}"#),
        3 => Message::Binary(Bytes::from_static(b"\x00\xffnot json\x01")),
        _ => Message::text(format!(
            concat!(
                r#"{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":"ticker.{0}.100ms","#,
                r#""data":{{"instrument_name":42,"timestamp":"soon","state":7,"stats":[],"#,
                r#""mark_price":"high","last_price":null,"best_bid_price":true,"best_ask_price":{{}},"#,
                r#""best_bid_amount":"many","best_ask_amount":[],"index_price":"x","open_interest":false}}}}}}"#
            ),
            instrument
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_mix_cycles_through_five_kinds() {
        let frames: Vec<Message> = (0..5)
            .map(|i| malformed_frame(i, "BTC-PERPETUAL"))
            .collect();
        let text = |m: &Message| match m {
            Message::Text(t) => Some(t.as_str().to_owned()),
            _ => None,
        };
        assert!(serde_json::from_str::<Value>(&text(&frames[0]).unwrap()).is_err());
        assert!(
            serde_json::from_str::<Value>(&text(&frames[1]).unwrap())
                .unwrap()
                .is_array()
        );
        let missing: Value = serde_json::from_str(&text(&frames[2]).unwrap()).unwrap();
        assert!(missing.get("params").is_none());
        assert!(matches!(frames[3], Message::Binary(_)));
        let wrong: Value = serde_json::from_str(&text(&frames[4]).unwrap()).unwrap();
        assert_eq!(wrong["params"]["channel"], "ticker.BTC-PERPETUAL.100ms");
        assert!(wrong["params"]["data"]["mark_price"].is_string());
    }
}
