//! One WebSocket session to the exchange.
//!
//! A reader task decodes every frame, resolves pending requests by id, answers `test_request`
//! heartbeats with `public/test` at once, and hands everything else to the owner through a sink
//! callback. A writer task owns the socket's write half. Both tasks are aborted when the
//! [`Session`] is dropped, so an owner that dies (even by panic, which skips `post_stop`) never
//! leaves a second reader behind.
//!
//! Frames are never logged: an auth request carries the client secret.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::protocol::{self, Incoming, RpcError};
use crate::model::Ticker;
pub use crate::protocol::broker::{RequestError, SessionEvent};

/// Connection and request limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionConfig {
    /// TCP + TLS + WebSocket handshake.
    pub connect_timeout: Duration,
    /// Per request, from send to answer.
    pub request_timeout: Duration,
    /// Larger incoming messages close the session (and it reconnects).
    pub max_message_bytes: usize,
}

/// Where events go; returns `false` when the owner is gone, which ends the session.
pub type EventSink = Arc<dyn Fn(SessionEvent) -> bool + Send + Sync>;

/// Why a connection could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {url} timed out after {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("connecting to {url} failed: {reason}")]
    Failed { url: String, reason: String },
    #[error("{step} failed: {source}")]
    Handshake {
        step: &'static str,
        #[source]
        source: RequestError,
    },
}

/// At most this much is read from the socket at a time (tungstenite's default is 128 KiB). The
/// read buffer keeps the largest capacity it ever needed, and it grows by doubling whenever a read
/// finds more unparsed bytes than it has consumed, so under a ticker backlog a 128 KiB read chunk
/// ratchets it up to 512 KiB over hours (measured with dhat in the soak bench). 16 KiB is still
/// dozens of ticker frames per read, and it bounds the buffer near 64 KiB.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// The most ticker frames handed to the owner in one [`SessionEvent::Tickers`].
const MAX_TICKER_BATCH: usize = 64;

/// Hands the batched tickers (if any) to the owner; false when the owner is gone.
fn flush(sink: &EventSink, batch: &mut Vec<Ticker>) -> bool {
    batch.is_empty() || sink(SessionEvent::Tickers(std::mem::take(batch)))
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Box<RawValue>, RpcError>>>>>;

/// Counters the reader keeps; read by the owner for its status.
#[derive(Debug, Default)]
struct Counters {
    /// Nanoseconds after `base` of the last frame received.
    last_frame_nanos: AtomicU64,
    frames: AtomicU64,
    test_requests: AtomicU64,
}

/// A cloneable handle for sending requests on a session.
#[derive(Clone)]
pub struct SessionHandle {
    writer: mpsc::Sender<Message>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    request_timeout: Duration,
}

impl SessionHandle {
    /// Sends a request and waits for its answer (bounded by the request timeout).
    pub async fn request(
        &self,
        method: &str,
        params: Value,
    ) -> Result<Box<RawValue>, RequestError> {
        self.request_with_timeout(method, params, self.request_timeout)
            .await
    }

    /// Like [`Self::request`] with an explicit timeout.
    pub async fn request_with_timeout(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Box<RawValue>, RequestError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let frame = protocol::encode_request(id, method, &params);
        let closed = || RequestError::Closed {
            method: method.to_string(),
        };
        if self.writer.send(Message::text(frame)).await.is_err() {
            lock(&self.pending).remove(&id);
            return Err(closed());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result.map_err(RequestError::Rpc),
            Ok(Err(_)) => Err(closed()),
            Err(_) => {
                lock(&self.pending).remove(&id);
                Err(RequestError::Timeout {
                    method: method.to_string(),
                    after: timeout,
                })
            }
        }
    }

    /// Sends a request and decodes its result.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, RequestError> {
        let raw = self.request(method, params).await?;
        serde_json::from_str(raw.get()).map_err(|e| RequestError::Unexpected {
            method: method.to_string(),
            reason: e.to_string(),
        })
    }
}

/// A pending-map lock that survives a poisoned mutex (a panicking holder cannot corrupt a map
/// of oneshot senders in a way that matters).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A live session. Dropping it ends both tasks.
pub struct Session {
    id: u64,
    handle: SessionHandle,
    counters: Arc<Counters>,
    base: Instant,
    opened: Instant,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl Session {
    /// Opens a WebSocket to `url` and starts the reader and writer tasks.
    pub async fn connect(
        id: u64,
        url: &str,
        config: SessionConfig,
        sink: EventSink,
    ) -> Result<Session, ConnectError> {
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_CHUNK_BYTES)
            .max_message_size(Some(config.max_message_bytes))
            .max_frame_size(Some(config.max_message_bytes));
        let safe_url = protocol::redact_url(url);
        let failed = |e: tokio_tungstenite::tungstenite::Error| ConnectError::Failed {
            url: safe_url.clone(),
            reason: e.to_string(),
        };
        let timed_out = || ConnectError::Timeout {
            url: safe_url.clone(),
            after: config.connect_timeout,
        };
        // `memory://<name>/…`: an in-process pipe to a paper exchange on this runtime (the
        // simulations on paused time); anything else is TCP (TLS for wss).
        if let Some(name) = crate::memory_net::name_of(url) {
            let path = url
                .strip_prefix(crate::memory_net::SCHEME)
                .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
                .unwrap_or("/");
            let stream = crate::memory_net::connect(name)
                .map_err(|e| failed(tokio_tungstenite::tungstenite::Error::Io(e)))?;
            let handshake = tokio_tungstenite::client_async_with_config(
                format!("ws://{name}{path}"),
                stream,
                Some(ws_config),
            );
            return match tokio::time::timeout(config.connect_timeout, handshake).await {
                Err(_) => Err(timed_out()),
                Ok(Err(e)) => Err(failed(e)),
                Ok(Ok((ws, _response))) => Ok(Session::start(id, ws, &config, sink)),
            };
        }
        let connecting = tokio_tungstenite::connect_async_with_config(url, Some(ws_config), true);
        match tokio::time::timeout(config.connect_timeout, connecting).await {
            Err(_) => Err(timed_out()),
            Ok(Err(e)) => Err(failed(e)),
            Ok(Ok((ws, _response))) => Ok(Session::start(id, ws, &config, sink)),
        }
    }

    /// Starts the reader and writer tasks on an open WebSocket.
    fn start<S>(
        id: u64,
        ws: tokio_tungstenite::WebSocketStream<S>,
        config: &SessionConfig,
        sink: EventSink,
    ) -> Session
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut write, mut read) = ws.split();
        let (writer_tx, mut writer_rx) = mpsc::channel::<Message>(1024);
        let pending: Pending = Arc::default();
        let next_id = Arc::new(AtomicU64::new(1));
        let counters = Arc::new(Counters::default());
        let base = Instant::now();

        let writer = tokio::spawn(async move {
            while let Some(msg) = writer_rx.recv().await {
                let closing = matches!(msg, Message::Close(_));
                if write.send(msg).await.is_err() || closing {
                    break;
                }
            }
            let _ = write.close().await;
        });

        let reader = {
            let pending = Arc::clone(&pending);
            let counters = Arc::clone(&counters);
            let writer_tx = writer_tx.clone();
            let next_id = Arc::clone(&next_id);
            tokio::spawn(async move {
                // Consecutive ticker frames already read are handed over together (at most
                // `MAX_TICKER_BATCH`), so a backlog costs one message per batch instead of one
                // per tick; a batch goes as soon as nothing more is buffered, so a lone tick
                // waits for nothing, and before any other frame is handled, so everything else
                // keeps its order relative to the ticks.
                let mut batch: Vec<Ticker> = Vec::new();
                let reason = loop {
                    let next = match read.next().now_or_never() {
                        Some(next) => next,
                        // Nothing more is buffered: the tickers read so far go now.
                        None if !flush(&sink, &mut batch) => break None,
                        None => read.next().await,
                    };
                    let frame = match next {
                        None => break Some("connection closed by the exchange".to_string()),
                        Some(Err(e)) => break Some(format!("read error: {e}")),
                        Some(Ok(frame)) => frame,
                    };
                    let nanos = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    counters.last_frame_nanos.store(nanos, Ordering::Relaxed);
                    counters.frames.fetch_add(1, Ordering::Relaxed);
                    let decoded = match frame {
                        Message::Text(text) => protocol::decode(&text).map_err(|e| e.to_string()),
                        Message::Binary(b) => {
                            Err(format!("unexpected binary frame of {} bytes", b.len()))
                        }
                        // The tickers before it go with `Closed`, below.
                        Message::Close(frame) => {
                            break Some(match frame {
                                Some(f) => {
                                    format!("closed by the exchange: {} {}", f.code, f.reason)
                                }
                                None => "closed by the exchange".to_string(),
                            });
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                    };
                    let event = match decoded {
                        Ok(Incoming::Ticker(t)) => {
                            batch.push(t);
                            if batch.len() >= MAX_TICKER_BATCH && !flush(&sink, &mut batch) {
                                break None;
                            }
                            continue;
                        }
                        Ok(
                            Incoming::UnmatchedResponse
                            | Incoming::Heartbeat
                            | Incoming::Other { .. },
                        ) => continue,
                        // Any other frame: the tickers read before it go first.
                        _ if !flush(&sink, &mut batch) => break None,
                        Ok(Incoming::Response { id, result }) => {
                            if let Some(tx) = lock(&pending).remove(&id) {
                                let _ = tx.send(result);
                            }
                            continue;
                        }
                        Ok(Incoming::TestRequest) => {
                            let id = next_id.fetch_add(1, Ordering::Relaxed);
                            let answer = protocol::encode_request(
                                id,
                                "public/test",
                                &Value::Object(serde_json::Map::new()),
                            );
                            if writer_tx.try_send(Message::text(answer)).is_ok() {
                                counters.test_requests.fetch_add(1, Ordering::Relaxed);
                            }
                            continue;
                        }
                        Ok(Incoming::Subscription { channel, data }) => {
                            SessionEvent::Subscription { channel, data }
                        }
                        Err(reason) => SessionEvent::Malformed { reason },
                    };
                    if !sink(event) {
                        break None;
                    }
                };
                // Dropping the senders tells every waiting request the session is gone.
                lock(&pending).clear();
                // `None`: the owner is gone (a hand-over failed), so the session ends quietly.
                if let Some(reason) = reason
                    && flush(&sink, &mut batch)
                {
                    sink(SessionEvent::Closed { reason });
                }
            })
        };

        Session {
            id,
            handle: SessionHandle {
                writer: writer_tx,
                pending,
                next_id,
                request_timeout: config.request_timeout,
            },
            counters,
            base,
            opened: Instant::now(),
            reader,
            writer,
        }
    }

    /// The id the owner gave this session.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A handle for requests.
    pub fn handle(&self) -> SessionHandle {
        self.handle.clone()
    }

    /// When the last frame arrived (the open time if none has).
    pub fn last_frame_at(&self) -> Instant {
        match self.counters.last_frame_nanos.load(Ordering::Relaxed) {
            0 => self.opened,
            n => self.base + Duration::from_nanos(n),
        }
    }

    /// Frames received.
    pub fn frames(&self) -> u64 {
        self.counters.frames.load(Ordering::Relaxed)
    }

    /// `test_request`s answered.
    pub fn test_requests_answered(&self) -> u64 {
        self.counters.test_requests.load(Ordering::Relaxed)
    }

    /// Sends a close frame; the tasks end when the exchange closes its side or the session is
    /// dropped.
    pub fn close(&self) {
        let _ = self.handle.writer.try_send(Message::Close(None));
    }

    /// Sends a close frame and waits (at most `limit`) until it is written.
    pub async fn close_gracefully(mut self, limit: Duration) {
        if self.handle.writer.try_send(Message::Close(None)).is_ok() {
            let _ = tokio::time::timeout(limit, &mut self.writer).await;
        }
    }
}
