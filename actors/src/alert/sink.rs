//! External alert sinks: their configuration, the bounded queue in front of each, and the
//! background delivery task that posts, retries with [`Backoff`] and reports its status.
//!
//! The alert actor only ever *pushes* onto a sink's queue (never awaits the network). When the
//! queue is full the oldest pending delivery is dropped and counted. Each sink's task publishes a
//! [`SinkStatus`] on a `watch` channel that the actor reads when asked for its status.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::transport::{Endpoint, Poster};
use crate::backoff::Backoff;
pub use crate::protocol::alert::{SinkKind, SinkStatus};
use crate::secret::Secret;

/// `[alert.delivery]`: how every external sink delivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Pending deliveries per sink; when full, the oldest is dropped (and counted).
    pub queue_capacity: usize,
    /// Bound on one HTTP request (connect, TLS, answer).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Tries per delivery before it is given up (and counted).
    pub max_attempts: u32,
    /// Consecutive failed attempts after which the sink is reported `failing`.
    pub failing_after: u32,
    /// Delay between tries of one delivery.
    pub backoff: Backoff,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 256,
            timeout: Duration::from_secs(5),
            max_attempts: 5,
            failing_after: 3,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(30),
                multiplier: 2.0,
                jitter: 0.1,
            },
        }
    }
}

impl DeliveryConfig {
    /// Checks the values; the message starts with the field name.
    pub fn validate(&self) -> Result<(), String> {
        if self.queue_capacity == 0 {
            return Err("queue_capacity must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("timeout must be greater than 0".into());
        }
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.failing_after == 0 {
            return Err("failing_after must be at least 1".into());
        }
        self.backoff.validate().map_err(|e| format!("backoff.{e}"))
    }
}

/// `[alert.alertmanager]`: push alerts into Alertmanager's `POST /api/v2/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerConfig {
    pub enabled: bool,
    /// Alertmanager's base URL; alerts go to `<url>/api/v2/alerts`.
    pub url: String,
    /// Open alerts are re-sent this often (Alertmanager resolves an alert by itself
    /// `resolve_timeout`, 5 min by default, after its last send).
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
    /// Optional `generatorURL` on every alert (e.g. this daemon's `/health`).
    pub generator_url: Option<String>,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: "http://127.0.0.1:9093".into(),
            resend_interval: Duration::from_secs(60),
            generator_url: None,
        }
    }
}

/// `[alert.webhook]`: post the Alertmanager webhook-v4 body to any receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    pub enabled: bool,
    /// The full URL the body is posted to.
    pub url: String,
    /// The `receiver` field of the body.
    pub receiver: String,
    /// The `externalURL` field (and each alert's `generatorURL`).
    pub external_url: String,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: "http://127.0.0.1:9095/alerts".into(),
            receiver: "tradebaas".into(),
            external_url: String::new(),
        }
    }
}

/// `[alert.telegram]`: a `sendMessage` per raise and resolve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    pub enabled: bool,
    /// The Bot API base URL.
    pub base_url: String,
    /// The environment variable holding the bot token (the token itself is never in config).
    pub token_env: String,
    /// The chat to post to.
    pub chat_id: String,
    /// The bot token when the embedding program (or a test) supplies it; when `None` it is read
    /// from `token_env` at start. Never serialised, redacted in `Debug`.
    #[serde(skip)]
    pub token: Option<Secret>,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://api.telegram.org".into(),
            token_env: "TRADEBAAS_TELEGRAM_BOT_TOKEN".into(),
            chat_id: String::new(),
            token: None,
        }
    }
}

impl SinkStatus {
    fn new(sink: SinkKind, target: String) -> Self {
        Self {
            sink,
            target,
            delivered: 0,
            failed_attempts: 0,
            consecutive_failures: 0,
            last_error: None,
            last_error_at: None,
            last_delivered_at: None,
            failing: false,
            abandoned: 0,
            dropped: 0,
            queued: 0,
            restarts: 0,
        }
    }
}

/// One body waiting to be posted.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// What it is, for logs (`firing failsafe:heartbeat`).
    pub what: String,
    pub body: Bytes,
}

/// A bounded FIFO that drops its oldest entry when full; the consumer awaits [`Queue::pop`].
struct Queue {
    items: Mutex<VecDeque<Delivery>>,
    ready: Notify,
    capacity: usize,
}

impl Queue {
    /// Appends; returns the dropped oldest entry when the queue was full.
    fn push(&self, d: Delivery) -> Option<Delivery> {
        let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        let dropped = if items.len() >= self.capacity {
            items.pop_front()
        } else {
            None
        };
        items.push_back(d);
        drop(items);
        self.ready.notify_one();
        dropped
    }

    /// Puts `d` back at the head (the delivery a panicked task held); never drops it.
    fn push_front(&self, d: Delivery) {
        self.items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_front(d);
        self.ready.notify_one();
    }

    fn len(&self) -> usize {
        self.items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    async fn pop(&self) -> Delivery {
        loop {
            if let Some(d) = self
                .items
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front()
            {
                return d;
            }
            // `notify_one` stores a permit when nobody waits, so a push between the check
            // above and this await is not lost.
            self.ready.notified().await;
        }
    }
}

/// The actor's handle on one running sink: push deliveries, read status. Dropping it stops the
/// delivery task.
pub struct Sink {
    kind: SinkKind,
    queue: Arc<Queue>,
    status: watch::Receiver<SinkStatus>,
    dropped: u64,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Sink {
    /// Starts the delivery task posting to `url` + `path` (the path may hold a secret).
    /// A sink that cannot be set up (bad URL, missing token) still exists and reports
    /// `failing` with the reason, so the operator sees it in `/health`.
    pub fn start(
        kind: SinkKind,
        url: &str,
        path: Result<Secret, String>,
        delivery: &DeliveryConfig,
    ) -> Self {
        let queue = Arc::new(Queue {
            items: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            capacity: delivery.queue_capacity.max(1),
        });
        let cancel = CancellationToken::new();
        let setup = Endpoint::parse(url)
            .map_err(|e| format!("url {e}"))
            .and_then(|endpoint| {
                let target = endpoint.authority();
                let full = path?;
                let mut joined = format!("{}{}", endpoint.base_path, full.expose());
                if joined.is_empty() {
                    joined.push('/');
                }
                let full = Secret::new(joined);
                Poster::new(endpoint, full, delivery.timeout).map(|p| (target, p))
            });
        let (status, task) = match setup {
            Ok((target, poster)) => {
                let (tx, rx) = watch::channel(SinkStatus::new(kind, target.clone()));
                info!(
                    actor = "alert",
                    sink = kind.as_str(),
                    target,
                    "alert sink started"
                );
                let task = tokio::spawn(supervise(
                    kind,
                    Arc::new(poster),
                    queue.clone(),
                    delivery.clone(),
                    Arc::new(tx),
                    cancel.clone(),
                ));
                (rx, Some(task))
            }
            Err(reason) => {
                warn!(
                    actor = "alert",
                    sink = kind.as_str(),
                    reason,
                    "alert sink not started"
                );
                let mut s = SinkStatus::new(kind, String::new());
                s.last_error = Some(reason);
                s.last_error_at = Some(crate::clock::now());
                s.failing = true;
                (watch::channel(s).1, None)
            }
        };
        Self {
            kind,
            queue,
            status,
            dropped: 0,
            cancel,
            task,
        }
    }

    pub fn kind(&self) -> SinkKind {
        self.kind
    }

    /// Queues a delivery without waiting; a full queue loses its oldest entry.
    pub fn push(&mut self, d: Delivery) {
        if self.task.is_none() {
            return;
        }
        if let Some(old) = self.queue.push(d) {
            self.dropped += 1;
            warn!(
                actor = "alert",
                sink = self.kind.as_str(),
                dropped = %old.what,
                dropped_total = self.dropped,
                "alert sink queue full; oldest delivery dropped"
            );
        }
    }

    /// The task's latest report plus the queue counts.
    pub fn status(&self) -> SinkStatus {
        let mut s = self.status.borrow().clone();
        s.dropped = self.dropped;
        s.queued = self.queue.len();
        s
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Runs the delivery loop and starts it again when it panics: a bug in one sink must not
/// silence it for the rest of the process (nor stop trading: the alert history and the log
/// still have every alert). The delivery the loop held is queued again at the head, the panic is
/// logged at ERROR (counted in `tradebaas_errors_total`) and shown in the sink's status
/// (`restarts`, `last_error`); restarts are spaced by the delivery backoff.
async fn supervise(
    kind: SinkKind,
    poster: Arc<Poster>,
    queue: Arc<Queue>,
    config: DeliveryConfig,
    status: Arc<watch::Sender<SinkStatus>>,
    cancel: CancellationToken,
) {
    let sink = kind.as_str();
    let mut restarts: u32 = 0;
    loop {
        let holding = Arc::new(Mutex::new(None::<Delivery>));
        let run = tokio::spawn(run(
            kind,
            Arc::clone(&poster),
            Arc::clone(&queue),
            config.clone(),
            Arc::clone(&status),
            cancel.clone(),
            Arc::clone(&holding),
        ));
        let abort = run.abort_handle();
        let ended = tokio::select! {
            () = cancel.cancelled() => {
                abort.abort();
                return;
            }
            ended = run => ended,
        };
        let Err(e) = ended else { return };
        if !e.is_panic() {
            return;
        }
        let why = crate::task::panic_message(e.into_panic().as_ref());
        let held = holding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let requeued = held.as_ref().map(|d| d.what.clone());
        if let Some(d) = held {
            queue.push_front(d);
        }
        restarts = restarts.saturating_add(1);
        status.send_modify(|s| {
            s.restarts += 1;
            s.last_error = Some(format!("delivery task panicked: {why}"));
            s.last_error_at = Some(crate::clock::now());
        });
        error!(
            actor = "alert",
            sink,
            panic = %why,
            requeued = requeued.as_deref().unwrap_or("none"),
            restarts,
            "alert sink delivery task panicked; starting it again"
        );
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(config.backoff.delay(restarts - 1)) => {}
        }
    }
}

/// The delivery loop: one delivery at a time, each tried up to `max_attempts` times with backoff.
/// The delivery being worked on is kept in `holding` until it is delivered or given up.
async fn run(
    kind: SinkKind,
    poster: Arc<Poster>,
    queue: Arc<Queue>,
    config: DeliveryConfig,
    status: Arc<watch::Sender<SinkStatus>>,
    cancel: CancellationToken,
    holding: Arc<Mutex<Option<Delivery>>>,
) {
    let sink = kind.as_str();
    let hold = |d: Option<Delivery>| {
        *holding.lock().unwrap_or_else(PoisonError::into_inner) = d;
    };
    loop {
        let delivery = tokio::select! {
            () = cancel.cancelled() => return,
            d = queue.pop() => d,
        };
        hold(Some(delivery.clone()));
        let mut attempt: u32 = 0;
        loop {
            crate::test_points::point("alert_sink_delivery");
            let result = tokio::select! {
                () = cancel.cancelled() => return,
                r = poster.post(delivery.body.clone()) => r,
            };
            attempt += 1;
            match result {
                Ok(()) => {
                    status.send_modify(|s| {
                        s.delivered += 1;
                        s.last_delivered_at = Some(crate::clock::now());
                        s.consecutive_failures = 0;
                        s.failing = false;
                    });
                    debug!(actor = "alert", sink, what = %delivery.what, attempt, "alert delivered");
                    break;
                }
                Err(error) => {
                    let mut failing = false;
                    status.send_modify(|s| {
                        s.failed_attempts += 1;
                        s.consecutive_failures += 1;
                        s.failing = s.consecutive_failures >= u64::from(config.failing_after);
                        failing = s.failing;
                        s.last_error = Some(error.clone());
                        s.last_error_at = Some(crate::clock::now());
                    });
                    warn!(actor = "alert", sink, what = %delivery.what, attempt, failing, error, "alert delivery failed");
                    if attempt >= config.max_attempts {
                        status.send_modify(|s| s.abandoned += 1);
                        warn!(actor = "alert", sink, what = %delivery.what, attempts = attempt, "alert delivery given up");
                        break;
                    }
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(config.backoff.delay(attempt - 1)) => {}
                    }
                }
            }
        }
        hold(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(n: usize) -> Delivery {
        Delivery {
            what: format!("d{n}"),
            body: Bytes::from(n.to_string()),
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest() {
        let q = Queue {
            items: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            capacity: 2,
        };
        assert!(q.push(delivery(1)).is_none());
        assert!(q.push(delivery(2)).is_none());
        assert_eq!(q.push(delivery(3)).map(|d| d.what), Some("d1".into()));
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop().await.what, "d2");
        assert_eq!(q.pop().await.what, "d3");
    }

    #[test]
    fn default_delivery_config_is_valid_and_checks_name_the_field() {
        assert_eq!(DeliveryConfig::default().validate(), Ok(()));
        let bad = DeliveryConfig {
            queue_capacity: 0,
            ..DeliveryConfig::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("queue_capacity"));
    }

    #[tokio::test]
    async fn a_sink_with_a_bad_url_reports_failing_without_a_task() {
        let mut s = Sink::start(
            SinkKind::Webhook,
            "ftp://x",
            Ok(Secret::new("/")),
            &DeliveryConfig::default(),
        );
        s.push(delivery(1));
        let st = s.status();
        assert!(st.failing);
        assert!(st.last_error.unwrap().contains("http"));
        assert_eq!(st.queued, 0);
    }
}
