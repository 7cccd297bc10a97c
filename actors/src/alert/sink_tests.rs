//! The external sinks end to end: the alert actor delivering to a loopback HTTP receiver that
//! records each request and answers from a script.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{ActorRef, call_t};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::sink::{DeliveryConfig, SinkKind};
use super::*;
use crate::backoff::Backoff;
use crate::names::Names;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

/// A loopback HTTP/1.1 receiver; `status(n)` is the answer to the n-th request (0-based);
/// `None` means never answer.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    async fn start(status: fn(usize) -> Option<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_len, content_length) = loop {
                        let n = conn.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return; // the client gave up (a timeout test)
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                            break (end + 4, len);
                        }
                    };
                    while buf.len() < head_len + content_length {
                        let n = conn.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_len]).to_string();
                    let mut request_line = head.lines().next().unwrap().split(' ');
                    let method = request_line.next().unwrap().to_owned();
                    let path = request_line.next().unwrap().to_owned();
                    let body = serde_json::from_slice(&buf[head_len..]).unwrap();
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(Seen { method, path, body });
                        log.len() - 1
                    };
                    match status(n) {
                        Some(code) => {
                            let answer = format!(
                                "HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                            );
                            let _ = conn.write_all(answer.as_bytes()).await;
                            let _ = conn.shutdown().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (polling, bounded) until at least `n` requests arrived.
    async fn wait_for(&self, n: usize) -> Vec<Seen> {
        until(|| self.seen().len() >= n).await;
        self.seen()
    }
}

/// Polls `cond` every 5 ms for at most 5 s.
async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not met within 5 s");
}

fn fast_delivery() -> DeliveryConfig {
    DeliveryConfig {
        queue_capacity: 16,
        timeout: Duration::from_secs(2),
        max_attempts: 5,
        failing_after: 3,
        backoff: Backoff::fixed_ratio(Duration::from_millis(10), Duration::from_millis(40), 2.0),
    }
}

fn alert(key: &str) -> Alert {
    Alert {
        key: key.into(),
        severity: Severity::Critical,
        title: "Trading stopped".into(),
        message: "fail-safe entered SHUTDOWN".into(),
        root_cause: "heartbeat lost for 3m".into(),
        recommended_action: "check the host, then `tradebaas mode observe`".into(),
        metadata: json!({ "trigger": "heartbeat" }),
    }
}

async fn spawn(prefix: &str, config: AlertConfig) -> ActorRef<AlertMsg> {
    crate::testkit::spawn_alert_with(&Names::with_prefix(prefix), config).await
}

fn raise(actor: &ActorRef<AlertMsg>, key: &str) {
    actor.send_message(AlertMsg::Raise(alert(key))).unwrap();
}

/// The default config with only the webhook sink on, to `url`.
fn webhook_to(url: &str, delivery: DeliveryConfig) -> AlertConfig {
    let mut config = AlertConfig {
        delivery,
        ..AlertConfig::default()
    };
    config.webhook.enabled = true;
    config.webhook.url = url.to_owned();
    config
}

/// An Alertmanager at `url`, delivered with [`fast_delivery`].
fn alertmanager_to(url: &str) -> AlertConfig {
    let mut config = AlertConfig {
        delivery: fast_delivery(),
        ..AlertConfig::default()
    };
    config.alertmanager.enabled = true;
    config.alertmanager.url = url.to_owned();
    config
}

/// A webhook to `url` that gives a delivery up after `max_attempts`, failing after
/// `failing_after`: the actor and the sink's status once one raise was given up.
async fn given_up(
    url: &str,
    prefix: &str,
    max_attempts: u32,
    failing_after: u32,
) -> (ActorRef<AlertMsg>, SinkStatus) {
    let delivery = DeliveryConfig {
        max_attempts,
        failing_after,
        ..fast_delivery()
    };
    let actor = spawn(prefix, webhook_to(url, delivery)).await;
    raise(&actor, "failsafe:k");
    let s = abandoned(&actor).await;
    (actor, s)
}

/// The webhook sink's status once it gave its first delivery up.
async fn abandoned(actor: &ActorRef<AlertMsg>) -> SinkStatus {
    crate::testkit::eventually(
        "the delivery given up after max_attempts",
        Duration::from_secs(5),
        async || Some(sink_status(actor, SinkKind::Webhook).await).filter(|s| s.abandoned == 1),
    )
    .await
}

async fn status(actor: &ActorRef<AlertMsg>) -> AlertStatus {
    call_t!(actor, AlertMsg::Status, 1000).unwrap()
}

async fn sink_status(actor: &ActorRef<AlertMsg>, kind: SinkKind) -> SinkStatus {
    status(actor)
        .await
        .sinks
        .into_iter()
        .find(|s| s.sink == kind)
        .unwrap()
}

#[tokio::test]
async fn alertmanager_gets_the_documented_alert_and_endsat_on_resolve() {
    let rx = Receiver::start(|_| Some(200)).await;
    let mut config = alertmanager_to(&rx.url);
    config.alertmanager.generator_url = Some("http://127.0.0.1:3000/health".into());
    let actor = spawn("alert-am-", config).await;

    raise(&actor, "failsafe:heartbeat");
    let seen = rx.wait_for(1).await;
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/api/v2/alerts");
    let alerts = seen[0].body.as_array().expect("a JSON array");
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    // Exactly the documented alert of the open record (its fields: `payload`'s tests).
    let record = status(&actor).await.recent.remove(0);
    let documented =
        super::payload::alertmanager_alert(&record, Some("http://127.0.0.1:3000/health"));
    assert_eq!(a, &documented);
    assert_eq!(a["labels"]["alertname"], "failsafe:heartbeat");
    assert_eq!(a["annotations"]["root_cause"], "heartbeat lost for 3m");
    assert!(
        a["annotations"]["recommended_action"]
            .as_str()
            .unwrap()
            .contains("mode observe")
    );
    assert_eq!(a["generatorURL"], "http://127.0.0.1:3000/health");
    let starts: DateTime<Utc> = a["startsAt"].as_str().unwrap().parse().unwrap();
    assert!(a.get("endsAt").is_none(), "an open alert has no endsAt");

    actor
        .send_message(AlertMsg::Resolve {
            key: "failsafe:heartbeat".into(),
        })
        .unwrap();
    let seen = rx.wait_for(2).await;
    let resolved = &seen[1].body[0];
    assert_eq!(resolved["labels"], a["labels"]);
    let ends: DateTime<Utc> = resolved["endsAt"].as_str().unwrap().parse().unwrap();
    assert!(ends >= starts);

    until_delivered(&actor, SinkKind::Alertmanager, 2).await;
    let s = sink_status(&actor, SinkKind::Alertmanager).await;
    assert!(!s.failing);
    assert_eq!(s.failed_attempts, 0);
    actor.stop_and_wait(None, None).await.unwrap();
}

async fn until_delivered(actor: &ActorRef<AlertMsg>, kind: SinkKind, n: u64) {
    for _ in 0..1000 {
        if sink_status(actor, kind).await.delivered >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{kind:?} did not deliver {n} within 5 s");
}

#[tokio::test]
async fn alertmanager_re_sends_open_alerts_and_stops_after_the_resolve() {
    let rx = Receiver::start(|_| Some(200)).await;
    let mut config = alertmanager_to(&rx.url);
    config.alertmanager.resend_interval = Duration::from_millis(30);
    let actor = spawn("alert-am-resend-", config).await;
    raise(&actor, "failsafe:a");
    raise(&actor, "failsafe:b");
    // The raises, then at least two re-sends carrying both open alerts.
    let seen = rx.wait_for(4).await;
    assert!(
        seen[2..]
            .iter()
            .all(|r| r.body.as_array().unwrap().len() == 2 && r.body[0].get("endsAt").is_none())
    );

    actor
        .send_message(AlertMsg::Resolve {
            key: "failsafe:a".into(),
        })
        .unwrap();
    actor
        .send_message(AlertMsg::Resolve {
            key: "failsafe:b".into(),
        })
        .unwrap();
    until(|| {
        rx.seen()
            .iter()
            .filter(|r| r.body[0].get("endsAt").is_some())
            .count()
            == 2
    })
    .await;
    let before = rx.seen().len();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let after = rx.seen();
    assert_eq!(after.len(), before, "nothing is re-sent once resolved");
    assert!(after.last().unwrap().body[0].get("endsAt").is_some());
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn webhook_retries_after_a_500_and_delivers_the_v4_payload() {
    let rx = Receiver::start(|n| Some(if n == 0 { 500 } else { 200 })).await;
    let mut config = webhook_to(&format!("{}/hooks/alerts", rx.url), fast_delivery());
    config.webhook.receiver = "ops-chat".into();
    config.webhook.external_url = "http://127.0.0.1:3000".into();
    let actor = spawn("alert-webhook-", config).await;

    raise(&actor, "store:backup");
    let seen = rx.wait_for(2).await;
    assert_eq!(seen[0].body, seen[1].body, "the retry sends the same body");
    assert_eq!(seen[1].path, "/hooks/alerts");
    let w = &seen[1].body;
    assert_eq!(w["version"], "4");
    assert_eq!(w["status"], "firing");
    assert_eq!(w["receiver"], "ops-chat");
    assert_eq!(w["groupKey"], "{}:{alertname=\"store:backup\"}");
    assert_eq!(w["groupLabels"], json!({ "alertname": "store:backup" }));
    assert_eq!(w["commonLabels"]["severity"], "critical");
    assert_eq!(w["commonAnnotations"]["summary"], "Trading stopped");
    assert_eq!(w["externalURL"], "http://127.0.0.1:3000");
    let a = &w["alerts"][0];
    assert_eq!(a["status"], "firing");
    assert_eq!(a["labels"], w["commonLabels"]);
    assert_eq!(a["annotations"], w["commonAnnotations"]);
    assert!(
        a["startsAt"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .is_ok()
    );
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);

    until_delivered(&actor, SinkKind::Webhook, 1).await;
    let s = sink_status(&actor, SinkKind::Webhook).await;
    assert_eq!(s.failed_attempts, 1);
    assert_eq!(s.consecutive_failures, 0);
    assert!(!s.failing);
    assert!(s.last_error.unwrap().contains("500"));

    actor
        .send_message(AlertMsg::Resolve {
            key: "store:backup".into(),
        })
        .unwrap();
    let seen = rx.wait_for(3).await;
    assert_eq!(seen[2].body["status"], "resolved");
    assert_eq!(seen[2].body["alerts"][0]["status"], "resolved");
    assert_ne!(seen[2].body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn a_thousand_repeats_reach_the_webhook_once() {
    let rx = Receiver::start(|_| Some(200)).await;
    let config = webhook_to(&rx.url, fast_delivery());
    let actor = spawn("alert-webhook-dedup-", config).await;
    for _ in 0..1000 {
        raise(&actor, "failsafe:heartbeat");
    }
    let s = status(&actor).await;
    assert_eq!((s.open, s.recent[0].count), (1, 1000));
    until_delivered(&actor, SinkKind::Webhook, 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(rx.seen().len(), 1);
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn a_permanently_failing_sink_is_reported_failing() {
    let rx = Receiver::start(|_| Some(503)).await;
    let (actor, s) = given_up(&rx.url, "alert-failing-", 3, 2).await;
    assert!(s.failing);
    assert_eq!(s.delivered, 0);
    assert_eq!(s.failed_attempts, 3);
    assert_eq!(s.consecutive_failures, 3);
    assert!(s.last_error.as_deref().unwrap().contains("503"));
    let whole = status(&actor).await;
    assert_eq!(whole.sinks_failing, 1);
    let health_view = serde_json::to_value(&whole).unwrap();
    assert_eq!(health_view["sinks"][0]["failing"], true);
    assert_eq!(health_view["sinks"][0]["sink"], "webhook");
    assert_eq!(rx.seen().len(), 3);
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn a_hanging_receiver_never_blocks_the_actor_and_a_full_queue_drops_the_oldest() {
    let rx = Receiver::start(|_| None).await;
    let config = webhook_to(
        &rx.url,
        DeliveryConfig {
            queue_capacity: 2,
            timeout: Duration::from_secs(30),
            ..fast_delivery()
        },
    );
    let actor = spawn("alert-hang-", config).await;
    raise(&actor, "failsafe:k0");
    rx.wait_for(1).await; // k0 is in flight and will never be answered
    for i in 1..=5 {
        raise(&actor, &format!("failsafe:k{i}"));
    }
    let started = std::time::Instant::now();
    let s = sink_status(&actor, SinkKind::Webhook).await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(status(&actor).await.open, 6);
    assert_eq!(s.queued, 2);
    assert_eq!(s.dropped, 3);
    assert_eq!(s.delivered, 0);
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn telegram_posts_to_the_bot_path_and_never_shows_the_token() {
    const TOKEN: &str = "123456:TOPSECRET-bot-token";
    let rx = Receiver::start(|n| Some(if n == 0 { 500 } else { 200 })).await;
    let mut config = AlertConfig {
        delivery: fast_delivery(),
        ..AlertConfig::default()
    };
    config.telegram.enabled = true;
    config.telegram.base_url = rx.url.clone();
    config.telegram.chat_id = "-1001234".into();
    config.telegram.token = Some(Secret::new(TOKEN));
    assert!(!format!("{config:?}").contains("TOPSECRET"));
    assert!(
        !serde_json::to_string(&config)
            .unwrap()
            .contains("TOPSECRET")
    );
    let actor = spawn("alert-telegram-", config).await;
    raise(&actor, "failsafe:heartbeat");
    let seen = rx.wait_for(2).await;
    assert_eq!(seen[1].path, format!("/bot{TOKEN}/sendMessage"));
    assert_eq!(seen[1].body["chat_id"], "-1001234");
    assert!(
        seen[1].body["text"]
            .as_str()
            .unwrap()
            .starts_with("CRITICAL [failsafe:heartbeat]")
    );
    until_delivered(&actor, SinkKind::Telegram, 1).await;
    let s = status(&actor).await;
    assert!(s.sinks[0].last_error.is_some(), "the 500 was recorded");
    let shown = format!("{s:?} {}", serde_json::to_string(&s).unwrap());
    assert!(!shown.contains("TOPSECRET"), "{shown}");
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn telegram_without_a_token_is_failing_and_names_the_variable() {
    let mut config = AlertConfig::default();
    config.telegram.enabled = true;
    config.telegram.chat_id = "1".into();
    config.telegram.token_env = "TRADEBAAS_TEST_TOKEN_THAT_IS_NEVER_SET".into();
    let actor = spawn("alert-telegram-notoken-", config).await;
    raise(&actor, "failsafe:k");
    let s = sink_status(&actor, SinkKind::Telegram).await;
    assert!(s.failing);
    assert!(
        s.last_error
            .unwrap()
            .contains("TRADEBAAS_TEST_TOKEN_THAT_IS_NEVER_SET")
    );
    // Alerts themselves still work.
    assert_eq!(status(&actor).await.open, 1);
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn an_https_sink_speaks_tls_and_reports_a_failed_handshake() {
    // A plain-HTTP server behind an https:// URL: the TLS path runs and fails cleanly.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = conn
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
            let _ = conn.shutdown().await;
        }
    });
    let (actor, s) = given_up(&url, "alert-tls-", 1, 1).await;
    assert!(s.failing);
    assert!(s.last_error_at.is_some());
    let error = s.last_error.unwrap();
    assert!(error.contains("TLS"), "{error}");
    assert_eq!(s.delivered, 0);
    actor.stop_and_wait(None, None).await.unwrap();
}

#[test]
fn enabled_sinks_are_validated_and_name_the_key() {
    let mut c = AlertConfig::default();
    c.webhook.enabled = true;
    c.webhook.url = "ftp://x".into();
    assert!(c.validate().unwrap_err().starts_with("webhook.url"));
    let mut c = AlertConfig::default();
    c.telegram.enabled = true;
    assert!(c.validate().unwrap_err().starts_with("telegram.chat_id"));
    let mut c = AlertConfig::default();
    c.alertmanager.resend_interval = Duration::from_secs(600);
    assert!(
        c.validate()
            .unwrap_err()
            .starts_with("alertmanager.resend_interval")
    );
    let mut c = AlertConfig::default();
    c.delivery.max_attempts = 0;
    assert!(
        c.validate()
            .unwrap_err()
            .starts_with("delivery.max_attempts")
    );
}
