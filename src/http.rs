//! The read-only HTTP API: `/health`, `/ready`, `/live`, `/metrics`, the JSON API
//! `/api/health`, `/api/health/status`, `/api/health/uptime`, `/api/health/last_snapshot`,
//! `/api/alerts` (`?severity=CRITICAL|WARNING|INFO`, `?open=true|false`), and the status page
//! at `/` (with `/status.js` and `/status.css`, see [`crate::status_page`]).
//!
//! Every answer is assembled from the actors' replies to status requests (see
//! [`tradebaas_actors::health`]); the HTTP layer holds no status of its own and never calls the
//! exchange. Only GET and HEAD are served: any other method on any path is `405`, an unknown path
//! is a `404` with a JSON body, a bad filter a `400` naming it. Nothing here can change the
//! daemon's state.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{error, info};
use tradebaas_actors::alert::{AlertMsg, AlertRecord, AlertStatus, Severity};
use tradebaas_actors::client;
use tradebaas_actors::health::{self, Context, HealthConfig, Replies, Verdict};
use tradebaas_actors::metrics::Metrics;
use tradebaas_actors::names::Names;
use warp::Filter;
use warp::http::{HeaderValue, Method, Response, StatusCode, header};
use warp::hyper::body::Bytes;

use crate::status_page;

/// Every path served, for the 404 body and the startup log.
pub const ROUTES: [&str; 12] = [
    "/",
    "/status.js",
    "/status.css",
    "/health",
    "/ready",
    "/live",
    "/metrics",
    "/api/health",
    "/api/health/status",
    "/api/health/uptime",
    "/api/health/last_snapshot",
    "/api/alerts",
];

/// The Prometheus text exposition format the encoder writes.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the handlers need: how to reach the actors, and the few facts no actor owns.
#[derive(Clone)]
pub struct Api {
    pub names: Names,
    pub health: HealthConfig,
    pub metrics: Metrics,
    pub started: Instant,
    pub version: &'static str,
    /// `/ready` also waits for this run's start-up recovery report (the daemon; in-process test
    /// trees that run no recovery leave it off).
    pub require_recovery: bool,
}

type Reply = Response<warp::hyper::body::Bytes>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A JSON answer is never run as a script, whatever the page's policy allows.
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A status-page document with the headers that keep the page to itself.
fn page_reply(asset: status_page::Asset) -> Reply {
    let mut r = respond(StatusCode::OK, asset.content_type, asset.body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(status_page::CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

fn json_reply(status: StatusCode, value: &serde_json::Value) -> Reply {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    respond(status, "application/json", body)
}

impl Api {
    /// Sets the state gauges from the replies (they are read at scrape time, never stored).
    fn observe(&self, replies: &Replies, verdict: Verdict) {
        self.metrics
            .healthy
            .set(i64::from(verdict != Verdict::Unhealthy));
        if let Some(b) = replies.broker.answered() {
            self.metrics.broker_connected.set(i64::from(
                b.state == tradebaas_actors::broker::LinkState::Connected,
            ));
            self.metrics
                .circuit_breaker_open
                .set(i64::from(b.circuit_breaker == "open"));
            self.metrics
                .market_data_age_seconds
                .set(Duration::from_millis(b.market_data_age_ms).as_secs_f64());
        } else {
            self.metrics.broker_connected.set(0);
        }
        if let Some(f) = replies.fail_safe.answered() {
            self.metrics.set_trading_mode(f.mode);
        }
        if let Some(p) = replies.persister.answered() {
            // "Since start" when there is none yet, so a store that never backs up still ages.
            let age = |at: Option<chrono::DateTime<Utc>>| {
                at.map_or(self.started.elapsed().as_secs_f64(), |t| {
                    (tradebaas_actors::clock::now() - t)
                        .as_seconds_f64()
                        .max(0.0)
                })
            };
            self.metrics.backup_age_seconds.set(age(p.last_backup_at));
            self.metrics
                .snapshot_age_seconds
                .set(age(p.last_snapshot_at));
            if let Some(free) = p.disk_free_bytes {
                self.metrics
                    .store_disk_free_bytes
                    .set(i64::try_from(free).unwrap_or(i64::MAX));
            }
        }
        if let Some(s) = replies.strategy.answered() {
            self.metrics
                .strategies_active
                .set(i64::try_from(s.active).unwrap_or(i64::MAX));
            let open = s.strategies.iter().filter(|i| i.position.is_some()).count();
            self.metrics
                .positions_open
                .set(i64::try_from(open).unwrap_or(i64::MAX));
        }
    }

    /// Gathers and assesses, recording the duration.
    pub async fn health(&self) -> (health::HealthReport, Replies) {
        let started = Instant::now();
        let replies = health::gather(&self.names, self.health.actor_timeout).await;
        let ctx = Context {
            now: tradebaas_actors::clock::now(),
            uptime: self.started.elapsed(),
            version: self.version,
        };
        let report = health::assess(&replies, &self.health, &ctx);
        self.observe(&replies, report.status);
        self.metrics
            .health_check_duration
            .observe(started.elapsed().as_secs_f64());
        (report, replies)
    }

    /// 200, or 503 when the verdict is unhealthy (as `/health`).
    fn verdict_code(verdict: Verdict) -> StatusCode {
        if verdict == Verdict::Unhealthy {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }

    /// `/api/health/status`: the full report plus the facts an operator reads first.
    async fn api_status(&self) -> Reply {
        let (report, replies) = self.health().await;
        let mut body =
            serde_json::to_value(&report).unwrap_or_else(|e| json!({"error": e.to_string()}));
        // Checks are whatever an actor reports in a field named `checks` or `*_checks`
        // (start-up and integrity checks), by actor and field.
        let checks: serde_json::Map<String, Value> = report
            .actors
            .iter()
            .filter_map(|(name, a)| {
                let found: serde_json::Map<String, Value> = a
                    .as_object()?
                    .iter()
                    .filter(|(k, _)| *k == "checks" || k.ends_with("_checks"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (!found.is_empty()).then(|| ((*name).to_owned(), Value::Object(found)))
            })
            .collect();
        if let Some(obj) = body.as_object_mut() {
            obj.insert("checks".into(), Value::Object(checks));
            obj.insert(
                "recovery".into(),
                json!(
                    replies
                        .persister
                        .answered()
                        .and_then(|p| p.recovery.clone())
                ),
            );
            obj.insert(
                "queue_status".into(),
                json!(report.system_health.queue_status),
            );
        }
        json_reply(Self::verdict_code(report.status), &body)
    }

    /// `/api/health/last_snapshot`, from the persister alone.
    async fn api_last_snapshot(&self) -> Reply {
        let reply = client::ask(
            &self.names,
            tradebaas_actors::persister::PersisterMsg::Status,
            self.health.actor_timeout,
        )
        .await;
        match reply.answered() {
            Some(p) => {
                let now = tradebaas_actors::clock::now();
                json_reply(
                    StatusCode::OK,
                    &json!({
                        "last_snapshot_at": p.last_snapshot_at,
                        "age_seconds": p.last_snapshot_at.map(|t| (now - t).num_seconds().max(0)),
                        "last_capital_snapshot_at": p.last_capital_snapshot_at,
                        "last_backup_at": p.last_backup_at,
                        "timestamp": now,
                    }),
                )
            }
            None => json_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": format!("state-persister is {}", reply.describe())}),
            ),
        }
    }

    /// `/api/alerts`: open and recent alerts from the alert actor, newest first, filtered.
    async fn api_alerts(&self, query: &[(String, String)]) -> Reply {
        let filter = match AlertFilter::parse(query) {
            Ok(f) => f,
            Err(message) => {
                return json_reply(StatusCode::BAD_REQUEST, &json!({"error": message}));
            }
        };
        let reply = client::ask(&self.names, AlertMsg::Status, self.health.actor_timeout).await;
        match reply.answered() {
            Some(status) => json_reply(StatusCode::OK, &alerts_body(status, &filter)),
            None => json_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": format!("alert actor is {}", reply.describe())}),
            ),
        }
    }

    async fn route(
        &self,
        method: &Method,
        path: &str,
        query: &[(String, String)],
        accept: Option<&str>,
    ) -> Reply {
        if method != Method::GET && method != Method::HEAD {
            let mut r = json_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method not allowed", "allowed": ["GET", "HEAD"]}),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        if let Some(asset) = status_page::asset(path) {
            return page_reply(asset);
        }
        match path {
            "/health" => {
                let (report, _) = self.health().await;
                let status = if report.status == Verdict::Unhealthy {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                };
                let mut r = if wants_health_json(accept) {
                    let body = serde_json::to_vec(&report.health_json())
                        .unwrap_or_else(|_| b"{}".to_vec());
                    respond(status, health::HEALTH_JSON, body)
                } else {
                    json_reply(
                        status,
                        &serde_json::to_value(&report)
                            .unwrap_or_else(|e| json!({"error": e.to_string()})),
                    )
                };
                // Caches must key the answer on what was asked for.
                r.headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("Accept"));
                r
            }
            "/ready" => {
                let replies = health::gather(&self.names, self.health.actor_timeout).await;
                let ready = health::readiness(&replies).and_then(|()| {
                    if self.require_recovery {
                        let uptime = self.started.elapsed();
                        health::recovery_finished(&replies, uptime)
                    } else {
                        Ok(())
                    }
                });
                // Failed start-up/integrity checks are reported, not a reason to be unready:
                // the daemon serves (and manages positions) in OBSERVE_ONLY.
                let failed = health::failed_checks(&replies);
                match ready {
                    Ok(()) => json_reply(
                        StatusCode::OK,
                        &json!({"ready": true, "checks_failed": failed}),
                    ),
                    Err(reason) => json_reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({"ready": false, "reason": reason, "checks_failed": failed}),
                    ),
                }
            }
            "/live" => {
                if health::supervisor_alive(&self.names, self.health.actor_timeout).await {
                    json_reply(StatusCode::OK, &json!({"live": true}))
                } else {
                    json_reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({"live": false, "reason": "root supervisor does not answer"}),
                    )
                }
            }
            "/api/health" => {
                let (report, _) = self.health().await;
                json_reply(
                    Self::verdict_code(report.status),
                    &json!({
                        "status": report.status,
                        "mode": report.mode,
                        "uptime_seconds": report.uptime_seconds,
                        "reasons": report.reasons,
                        "timestamp": report.timestamp,
                        "version": report.version,
                    }),
                )
            }
            "/api/health/status" => self.api_status().await,
            "/api/health/uptime" => {
                let now = tradebaas_actors::clock::now();
                let uptime = self.started.elapsed();
                json_reply(
                    StatusCode::OK,
                    &json!({
                        "uptime_seconds": uptime.as_secs(),
                        "started_at": now - chrono::Duration::from_std(uptime).unwrap_or_default(),
                        "timestamp": now,
                    }),
                )
            }
            "/api/health/last_snapshot" => self.api_last_snapshot().await,
            "/api/alerts" => self.api_alerts(query).await,
            "/metrics" => {
                let (_, _) = self.health().await;
                match self.metrics.render() {
                    Ok(text) => respond(StatusCode::OK, METRICS_CONTENT_TYPE, text),
                    Err(e) => {
                        error!(error = %e, "metrics encoding failed");
                        json_reply(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &json!({"error": "metrics encoding failed"}),
                        )
                    }
                }
            }
            _ => json_reply(
                StatusCode::NOT_FOUND,
                &json!({"error": "not found", "path": path, "routes": ROUTES}),
            ),
        }
    }

    /// The single warp filter: every method, every path, dispatched in [`Api::route`].
    pub fn filter(
        self: Arc<Self>,
    ) -> impl Filter<Extract = (Reply,), Error = Infallible> + Clone + Send + Sync + 'static {
        // A query that does not decode is treated as none; `/api/alerts` rejects unknown keys.
        let query = warp::query::<Vec<(String, String)>>()
            .or(warp::any().map(Vec::new))
            .unify();
        warp::method()
            .and(warp::path::full())
            .and(query)
            .and(warp::header::headers_cloned())
            .and_then(
                move |method: Method,
                      path: warp::path::FullPath,
                      query: Vec<(String, String)>,
                      headers: warp::http::HeaderMap| {
                    let api = Arc::clone(&self);
                    // Every `Accept` header, as one list; a value that is not text is ignored.
                    let accept: Vec<&str> = headers
                        .get_all(header::ACCEPT)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect();
                    let accept = (!accept.is_empty()).then(|| accept.join(","));
                    async move {
                        let reply = api
                            .route(&method, path.as_str(), &query, accept.as_deref())
                            .await;
                        Ok::<_, Infallible>(reply)
                    }
                },
            )
    }
}

/// Whether an `Accept` header asks `/health` for `application/health+json`: it names that type
/// (exactly, not through a wildcard) with a quality above 0 and not below that of
/// `application/json`. Without a header, or with one that does not parse, the answer is the
/// plain JSON of today.
fn wants_health_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let mut health_json = None::<f32>;
    let mut json = 0.0_f32;
    for item in accept.split(',') {
        let Ok(m) = item.trim().parse::<mime::Mime>() else {
            continue;
        };
        let q = m
            .get_param("q")
            .and_then(|q| q.as_str().parse::<f32>().ok())
            .unwrap_or(1.0);
        match (m.type_().as_str(), m.subtype().as_str(), m.suffix()) {
            ("application", "health", Some(mime::JSON)) => {
                health_json = Some(health_json.map_or(q, |h| h.max(q)));
            }
            ("application", "json", None) => json = json.max(q),
            _ => {}
        }
    }
    health_json.is_some_and(|h| h > 0.0 && h >= json)
}

/// A running HTTP server.
pub struct HttpServer {
    pub local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Binds `listen` (the error says which address could not be bound) and serves.
    pub async fn start(listen: SocketAddr, api: Api) -> Result<HttpServer, String> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen} (key `server.listen`): {e}"))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address of {listen}: {e}"))?;
        let (tx, rx) = oneshot::channel::<()>();
        let filter = Arc::new(api).filter();
        let task = tokio::spawn(async move {
            warp::serve(filter)
                .incoming(listener)
                .graceful(async move {
                    let _ = rx.await;
                })
                .run()
                .await;
        });
        info!(listen = %local_addr, routes = ?ROUTES, "http: serving");
        Ok(HttpServer {
            local_addr,
            stop: Some(tx),
            task,
        })
    }

    /// Stops accepting connections and waits for the requests in flight.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}

/// The filters of `/api/alerts`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertFilter {
    pub severity: Option<Severity>,
    /// `Some(true)`: open alerts only; `Some(false)`: closed ones only.
    pub open: Option<bool>,
}

impl AlertFilter {
    /// Parses the query; the error names the parameter and the values it takes.
    pub fn parse(query: &[(String, String)]) -> Result<Self, String> {
        let mut f = AlertFilter::default();
        for (key, value) in query {
            match key.as_str() {
                "severity" => {
                    f.severity = Some(match value.to_ascii_uppercase().as_str() {
                        "CRITICAL" => Severity::Critical,
                        "WARNING" => Severity::Warning,
                        "INFO" => Severity::Info,
                        _ => {
                            return Err(format!(
                                "invalid severity {value:?}: use CRITICAL, WARNING or INFO"
                            ));
                        }
                    });
                }
                "open" => {
                    f.open = Some(match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(format!("invalid open {value:?}: use true or false")),
                    });
                }
                _ => {
                    return Err(format!(
                        "unknown filter {key:?}: /api/alerts takes severity and open"
                    ));
                }
            }
        }
        Ok(f)
    }
}

/// The `/api/alerts` body: every open and recent record (each once, newest first) that passes
/// `filter`, each with an `open` flag.
pub fn alerts_body(status: &AlertStatus, filter: &AlertFilter) -> Value {
    let open_ids: std::collections::HashSet<&str> = status
        .open_alerts
        .iter()
        .map(|r| r.alert_id.as_str())
        .collect();
    let mut all: Vec<&AlertRecord> = status.recent.iter().collect();
    // Open alerts older than the recent window are still shown.
    for r in &status.open_alerts {
        if !status.recent.iter().any(|x| x.alert_id == r.alert_id) {
            all.push(r);
        }
    }
    // An open record's copy in `open_alerts` is the authoritative one.
    let current = |r: &'_ AlertRecord| -> AlertRecord {
        status
            .open_alerts
            .iter()
            .find(|o| o.alert_id == r.alert_id)
            .unwrap_or(r)
            .clone()
    };
    all.sort_by(|a, b| {
        b.timestamp
            .cmp(&a.timestamp)
            .then(b.alert_id.cmp(&a.alert_id))
    });
    let alerts: Vec<Value> = all
        .into_iter()
        .map(current)
        .filter(|r| filter.severity.is_none_or(|s| r.alert.severity == s))
        .filter(|r| {
            filter
                .open
                .is_none_or(|o| o == open_ids.contains(r.alert_id.as_str()))
        })
        .map(|r| {
            let open = open_ids.contains(r.alert_id.as_str());
            let mut v =
                serde_json::to_value(&r).unwrap_or_else(|e| json!({"error": e.to_string()}));
            if let Some(obj) = v.as_object_mut() {
                obj.insert("open".into(), json!(open));
            }
            v
        })
        .collect();
    json!({
        "count": alerts.len(),
        "open": status.open,
        "open_critical": status.open_critical,
        "filters": {
            "severity": filter.severity.map(Severity::as_str),
            "open": filter.open,
        },
        "alerts": alerts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tradebaas_actors::alert::Alert;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn record(id: &str, key: &str, severity: Severity, resolved: bool) -> AlertRecord {
        AlertRecord {
            alert_id: id.into(),
            timestamp: format!("2026-01-01T00:00:0{}Z", &id[1..]).parse().unwrap(),
            alert: Alert {
                key: key.into(),
                severity,
                title: key.into(),
                message: String::new(),
                root_cause: String::new(),
                recommended_action: String::new(),
                metadata: json!({}),
            },
            acknowledged: false,
            count: 1,
            last_raised_at: None,
            acknowledged_at: None,
            resolved_at: resolved.then(Utc::now),
        }
    }

    #[test]
    fn health_json_is_chosen_only_when_accept_asks_for_it() {
        for (accept, wanted) in [
            (None, false),
            (Some("*/*"), false),
            (Some("application/json"), false),
            (Some("application/health+json"), true),
            (Some("Application/Health+JSON"), true),
            (
                Some("application/health+json, application/json;q=0.5"),
                true,
            ),
            (
                Some("application/json, application/health+json;q=0.9"),
                false,
            ),
            (Some("application/health+json;q=0"), false),
            (
                Some("text/html, application/health+json;q=0.8, */*;q=0.1"),
                true,
            ),
            (Some("garbage;;;, application/health+json"), true),
            (Some("garbage"), false),
        ] {
            assert_eq!(wants_health_json(accept), wanted, "{accept:?}");
        }
    }

    #[test]
    fn alert_filters_parse_and_name_what_is_wrong() {
        assert_eq!(AlertFilter::parse(&[]), Ok(AlertFilter::default()));
        assert_eq!(
            AlertFilter::parse(&q(&[("severity", "warning"), ("open", "true")])),
            Ok(AlertFilter {
                severity: Some(Severity::Warning),
                open: Some(true)
            })
        );
        let e = AlertFilter::parse(&q(&[("severity", "LOUD")])).unwrap_err();
        assert!(
            e.contains("severity") && e.contains("CRITICAL, WARNING or INFO"),
            "{e}"
        );
        let e = AlertFilter::parse(&q(&[("open", "1")])).unwrap_err();
        assert!(e.contains("open") && e.contains("true or false"), "{e}");
        let e = AlertFilter::parse(&q(&[("limit", "5")])).unwrap_err();
        assert!(e.contains("limit"), "{e}");
    }

    #[test]
    fn an_open_alert_older_than_the_recent_window_is_still_listed() {
        let old_open = record("a1", "failsafe:old", Severity::Critical, false);
        let status = AlertStatus {
            open: 1,
            open_critical: 1,
            raised_total: 2,
            recent: vec![record("a2", "store:backup", Severity::Warning, true)],
            open_alerts: vec![old_open],
            history_loaded: true,
            ..AlertStatus::default()
        };
        let all = alerts_body(&status, &AlertFilter::default());
        assert_eq!(all["count"], 2);
        assert_eq!(all["alerts"][0]["alert_id"], "a2");
        assert_eq!(all["alerts"][0]["open"], false);
        assert_eq!(all["alerts"][1]["alert_id"], "a1");
        assert_eq!(all["alerts"][1]["open"], true);
        let open = alerts_body(
            &status,
            &AlertFilter {
                severity: None,
                open: Some(true),
            },
        );
        assert_eq!(open["count"], 1);
        assert_eq!(open["alerts"][0]["key"], "failsafe:old");
        let info = alerts_body(
            &status,
            &AlertFilter {
                severity: Some(Severity::Info),
                open: None,
            },
        );
        assert_eq!(info["count"], 0);
    }
}
