//! The read-only HTTP API: `/health`, `/ready`, `/live`, `/metrics`.
//!
//! Every answer is assembled from the actors' replies to status requests (see
//! [`tradebaas_actors::health`]); the HTTP layer holds no status of its own. Only GET and HEAD
//! are served: any other method on any path is `405`, an unknown path is a `404` with a JSON body.
//! Nothing here can change the daemon's state.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{error, info};
use tradebaas_actors::health::{self, Context, HealthConfig, Replies, Verdict};
use tradebaas_actors::metrics::Metrics;
use tradebaas_actors::names::Names;
use warp::Filter;
use warp::http::{HeaderValue, Method, Response, StatusCode, header};
use warp::hyper::body::Bytes;

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
        } else {
            self.metrics.broker_connected.set(0);
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
            now: Utc::now(),
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

    async fn route(&self, method: &Method, path: &str) -> Reply {
        if method != Method::GET && method != Method::HEAD {
            let mut r = json_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method not allowed", "allowed": ["GET", "HEAD"]}),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match path {
            "/health" => {
                let (report, _) = self.health().await;
                let status = if report.status == Verdict::Unhealthy {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                };
                json_reply(
                    status,
                    &serde_json::to_value(&report)
                        .unwrap_or_else(|e| json!({"error": e.to_string()})),
                )
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
                &json!({"error": "not found", "path": path,
                        "routes": ["/health", "/ready", "/live", "/metrics"]}),
            ),
        }
    }

    /// The single warp filter: every method, every path, dispatched in [`Api::route`].
    pub fn filter(
        self: Arc<Self>,
    ) -> impl Filter<Extract = (Reply,), Error = Infallible> + Clone + Send + Sync + 'static {
        warp::method().and(warp::path::full()).and_then(
            move |method: Method, path: warp::path::FullPath| {
                let api = Arc::clone(&self);
                async move { Ok::<_, Infallible>(api.route(&method, path.as_str()).await) }
            },
        )
    }
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
        info!(listen = %local_addr, "http: serving /health /ready /live /metrics");
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
