//! The `broker-connection` actor: one WebSocket session to Deribit (or the paper exchange).
//!
//! It connects, authenticates (when credentials are configured), sets the heartbeat, subscribes,
//! forwards ticker data to the `strategy` actor, and reconnects on close, error or silence with
//! the backoff and circuit breaker of [`reconnect`]. Connecting runs in a task that reports back
//! by message, so the actor answers `Status` while the network is slow. Other actors send
//! requests through [`BrokerMsg::Request`]; the answer comes from a task, never blocking the actor.
//!
//! The broker also knows whether cancel-on-disconnect is armed on the live session
//! ([`BrokerMsg::CancelOnDisconnect`]): armed only once the exchange confirmed it, unknown while a
//! change is in flight, off on every new session. [`BrokerMsg::RequestArmed`] sends a request only
//! on a session where it is armed, so an entry can never leave on a connection without it
//! (ADR 0004, ADR 0005).
//!
//! Credentials live in a [`Secret`] and are never logged or reported.

mod config;
mod establish;
pub mod protocol;
pub mod reconnect;
pub mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{debug, error, info, warn};

use crate::metrics::Metrics;
use crate::names::Names;
use crate::orders::rate::{Limits, RateLimiter, method_kind};
use crate::protocol::Internal;
pub use crate::protocol::broker::{BrokerMsg, BrokerStatus, LinkState};
use crate::protocol::dispatch;
use crate::protocol::strategy::StrategyMsg;
use crate::secret::Secret;
use crate::task::AbortOnDrop;

pub use config::{BrokerConfig, Credentials, PAPER_CONTROL_PREFIX, PAPER_URL};
use establish::{AuthResult, AuthTokens, Established, authenticate, establish};
use protocol::redact_url;
use reconnect::{Breaker, Next, Reconnector};
use session::{ConnectError, EventSink, RequestError, Session, SessionConfig, SessionEvent};

/// The exchange's answer to change `change` of cancel-on-disconnect on session `conn`.
pub(crate) struct CodChanged {
    conn: u64,
    change: u64,
    armed: bool,
    result: Result<(), RequestError>,
    reply: RpcReplyPort<Result<(), RequestError>>,
}

impl CodChanged {
    /// Records the switch if it is still this session's newest change, and answers the caller:
    /// a session that is gone took its switch with it (a new one starts off), so the caller
    /// hears `NotConnected` even if the exchange said yes.
    fn settle(self, link: &mut Link) {
        let result = match link {
            Link::Connected { session, cod, .. } if session.id() == self.conn => {
                if self.result.is_ok() && cod.change == self.change {
                    cod.state = if self.armed { Cod::Armed } else { Cod::Off };
                }
                self.result
            }
            _ => self.result.and(Err(RequestError::NotConnected)),
        };
        let _ = self.reply.send(result);
    }
}

/// What the Broker sends itself, wrapped in [`BrokerMsg::Internal`].
pub(crate) enum InternalMsg {
    /// A helper task panicked ([`crate::task::spawn_helper`]): fail, to be restarted.
    TaskPanicked(String),
    /// The exchange answered a change of cancel-on-disconnect.
    CodChanged(CodChanged),
    /// Time for connection attempt `generation`.
    Connect { generation: u64 },
    /// The outcome of connection attempt `conn`.
    Established {
        conn: u64,
        result: Result<Established, ConnectError>,
    },
    /// Periodic silence and burst check.
    Check,
    /// Refresh the access token of session `conn`.
    RefreshAuth { conn: u64 },
}

impl From<InternalMsg> for BrokerMsg {
    fn from(m: InternalMsg) -> Self {
        BrokerMsg::Internal(Internal::new(m))
    }
}

/// What the broker actor is spawned with.
#[derive(Clone)]
pub struct BrokerArgs {
    pub names: Names,
    pub config: BrokerConfig,
    /// The resolved URL (`paper` already replaced by the embedded exchange's address).
    pub url: String,
    pub credentials: Option<Credentials>,
    pub metrics: Metrics,
}

/// The broker actor.
pub struct BrokerActor;

/// Cancel-on-disconnect on the live session, as far as the exchange has confirmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cod {
    /// Not armed: every new session starts so (connection scope).
    Off,
    /// A change was sent and has not been confirmed (or failed): neither armed nor off.
    Unknown,
    /// The exchange confirmed `enable_cancel_on_disconnect` on this session.
    Armed,
}

/// [`Cod`] with the number of the newest change sent, so that a late answer to an older change
/// cannot overwrite what a newer one made of the switch.
#[derive(Debug, Clone, Copy)]
struct CodState {
    state: Cod,
    change: u64,
}

enum Link {
    /// Attempt `conn` is under way.
    Connecting { conn: u64, _task: AbortOnDrop },
    /// A live session.
    Connected {
        session: Session,
        since: Instant,
        since_wall: DateTime<Utc>,
        cod: CodState,
    },
    /// Waiting for attempt `generation`.
    Waiting { until: Instant, generation: u64 },
    /// Stopping.
    Closed,
}

/// The broker's state (rebuilt from its arguments on every restart).
pub struct BrokerState {
    args: BrokerArgs,
    safe_url: String,
    reconnector: Reconnector,
    link: Link,
    ever_connected: bool,
    next_conn: u64,
    generation: u64,
    started: Instant,
    disconnected_since: Option<Instant>,
    last_market_data: Option<(Instant, DateTime<Utc>)>,
    auth: Option<AuthTokens>,
    subscriptions: Vec<String>,
    missing: Vec<String>,
    reconnect_attempts: u64,
    market_data_messages: u64,
    malformed_frames: u64,
    malformed_burst: Option<(Instant, u64)>,
    test_requests_before: u64,
    last_error: Option<String>,
    limiter: Arc<RateLimiter>,
    _check: AbortOnDrop,
}

const MALFORMED_QUIET: Duration = Duration::from_secs(10);

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn wall(at: Instant) -> DateTime<Utc> {
    let ago = chrono::Duration::from_std(at.elapsed()).unwrap_or_default();
    crate::clock::now() - ago
}

impl BrokerState {
    fn connected_session(&self) -> Option<&Session> {
        match &self.link {
            Link::Connected { session, .. } => Some(session),
            _ => None,
        }
    }

    fn current_conn(&self) -> Option<u64> {
        match &self.link {
            Link::Connected { session, .. } => Some(session.id()),
            Link::Connecting { conn, .. } => Some(*conn),
            _ => None,
        }
    }

    fn start_attempt(&mut self, myself: &ActorRef<BrokerMsg>) {
        let now = Instant::now();
        self.reconnector.on_attempt(now);
        if self.ever_connected || self.reconnector.consecutive_failures() > 0 {
            self.reconnect_attempts += 1;
            self.args.metrics.reconnect_attempts.inc();
        }
        self.next_conn += 1;
        let conn = self.next_conn;
        let sink: EventSink = {
            let me = myself.clone();
            Arc::new(move |event| me.send_message(BrokerMsg::Session { conn, event }).is_ok())
        };
        let me = myself.clone();
        let url = self.args.url.clone();
        let config = self.args.config.clone();
        let credentials = self.args.credentials.clone();
        let task = crate::task::spawn_helper(
            myself,
            "connect",
            |r| InternalMsg::TaskPanicked(r).into(),
            async move {
                let result = establish(conn, url, config, credentials, sink).await;
                let _ = me.send_message(InternalMsg::Established { conn, result }.into());
            },
        );
        debug!(conn, url = %self.safe_url, "connecting to the exchange");
        self.link = Link::Connecting {
            conn,
            _task: AbortOnDrop(task),
        };
    }

    fn schedule(&mut self, myself: &ActorRef<BrokerMsg>, next: Next) {
        self.generation += 1;
        let generation = self.generation;
        let delay = next.delay();
        self.link = Link::Waiting {
            until: Instant::now() + delay,
            generation,
        };
        myself.send_after(delay, move || InternalMsg::Connect { generation }.into());
    }

    fn session_lost(&mut self, myself: &ActorRef<BrokerMsg>, reason: String) {
        let conn = self.current_conn().unwrap_or_default();
        let next = self.reconnector.on_session_lost(fastrand::f64());
        self.disconnected_since = Some(Instant::now());
        self.auth = None;
        warn!(
            actor = "broker-connection",
            conn,
            reason = %reason,
            next_attempt_ms = ms(next.delay()),
            "exchange session lost; reconnecting"
        );
        self.last_error = Some(reason);
        self.schedule(myself, next);
    }

    /// Sends `method` on the live session from a task (after the rate limiter's credit), the
    /// answer to `reply`; [`RequestError::NotConnected`] without a session.
    fn forward(
        &self,
        method: String,
        params: Value,
        reply: RpcReplyPort<Result<Value, RequestError>>,
    ) {
        let Some(session) = self.connected_session() else {
            let _ = reply.send(Err(RequestError::NotConnected));
            return;
        };
        let h = session.handle();
        let limiter = self.limiter.clone();
        tokio::spawn(async move {
            limiter.acquire(method_kind(&method)).await;
            let result = h.request(&method, params).await.and_then(|raw| {
                serde_json::from_str(raw.get()).map_err(|e| RequestError::Unexpected {
                    method: method.clone(),
                    reason: e.to_string(),
                })
            });
            let _ = reply.send(result);
        });
    }

    fn on_malformed(&mut self, reason: &str) {
        self.malformed_frames += 1;
        self.args.metrics.malformed_frames.inc();
        match &mut self.malformed_burst {
            Some((last, suppressed)) => {
                *last = Instant::now();
                *suppressed += 1;
            }
            None => {
                warn!(
                    actor = "broker-connection",
                    reason,
                    "malformed frame from the exchange (dropped; further ones in this burst are counted, not logged)"
                );
                self.malformed_burst = Some((Instant::now(), 0));
            }
        }
    }

    fn status(&self) -> BrokerStatus {
        let now = Instant::now();
        let (state, connected_since) = match &self.link {
            Link::Connected { since_wall, .. } => (LinkState::Connected, Some(*since_wall)),
            _ if matches!(self.reconnector.breaker(), Breaker::Open { .. }) => {
                (LinkState::CircuitOpen, None)
            }
            _ if self.ever_connected || self.reconnector.consecutive_failures() > 0 => {
                (LinkState::Reconnecting, None)
            }
            _ => (LinkState::Connecting, None),
        };
        let session = self.connected_session();
        let market_data_age = self
            .last_market_data
            .map_or(now - self.started, |(at, _)| now - at);
        BrokerStatus {
            state,
            url: self.safe_url.clone(),
            authenticated: self.auth.is_some() && session.is_some(),
            connected_since,
            disconnected_for_ms: match session {
                Some(_) => None,
                None => Some(ms(now - self.disconnected_since.unwrap_or(self.started))),
            },
            last_message_at: session.map(|s| wall(s.last_frame_at())),
            last_market_data_at: self.last_market_data.map(|(_, w)| w),
            market_data_age_ms: ms(market_data_age),
            reconnect_attempts: self.reconnect_attempts,
            consecutive_failures: self.reconnector.consecutive_failures(),
            circuit_breaker: self.reconnector.breaker().name(),
            circuit_open_remaining_ms: match self.reconnector.breaker() {
                Breaker::Open { until } => Some(ms(until.saturating_duration_since(now))),
                _ => None,
            },
            next_attempt_in_ms: match &self.link {
                Link::Waiting { until, .. } => Some(ms(until.saturating_duration_since(now))),
                _ => None,
            },
            subscriptions: self.subscriptions.clone(),
            missing_subscriptions: self.missing.clone(),
            market_data_messages: self.market_data_messages,
            malformed_frames: self.malformed_frames,
            test_requests_answered: self.test_requests_before
                + session.map_or(0, Session::test_requests_answered),
            last_error: self.last_error.clone(),
            cancel_on_disconnect: match &self.link {
                Link::Connected { cod, .. } => match cod.state {
                    Cod::Armed => "armed",
                    Cod::Off => "off",
                    Cod::Unknown => "unknown",
                },
                _ => "no_session",
            },
        }
    }
}

impl Actor for BrokerActor {
    type Msg = BrokerMsg;
    type State = BrokerState;
    type Arguments = BrokerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let every = (args.config.heartbeat_interval / 4)
            .clamp(Duration::from_millis(25), Duration::from_secs(1));
        let check = myself.send_interval(every, || InternalMsg::Check.into());
        let safe_url = redact_url(&args.url);
        let limiter = Arc::new(
            RateLimiter::new(Limits::default())
                .map_err(|e| ActorProcessingErr::from(format!("rate limiter: {e}")))?,
        );
        Ok(BrokerState {
            limiter,
            reconnector: Reconnector::new(args.config.reconnect),
            safe_url,
            args,
            link: Link::Closed,
            ever_connected: false,
            next_conn: 0,
            generation: 0,
            started: Instant::now(),
            disconnected_since: None,
            last_market_data: None,
            auth: None,
            subscriptions: Vec::new(),
            missing: Vec::new(),
            reconnect_attempts: 0,
            market_data_messages: 0,
            malformed_frames: 0,
            malformed_burst: None,
            test_requests_before: 0,
            last_error: None,
            _check: AbortOnDrop::from(check),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.start_attempt(&myself);
        Ok(())
    }

    dispatch!(
        BrokerMsg,
        "broker-connection",
        |myself, msg, state| match msg {
            BrokerMsg::Session { conn, event } => {
                if state.current_conn() != Some(conn) {
                    return Ok(());
                }
                match event {
                    SessionEvent::Tickers(tickers) => {
                        let n = tickers.len() as u64;
                        state.last_market_data = Some((Instant::now(), crate::clock::now()));
                        state.market_data_messages += n;
                        state.args.metrics.market_data_messages.inc_by(n);
                        if let Some(strategy) = state.args.names.get::<StrategyMsg>() {
                            let _ = strategy.send_message(StrategyMsg::Tickers(tickers));
                        }
                    }
                    SessionEvent::Subscription { channel, .. } => {
                        debug!(channel, "notification without a consumer");
                    }
                    SessionEvent::Malformed { reason } => state.on_malformed(&reason),
                    SessionEvent::Closed { reason } => {
                        if let Some(s) = state.connected_session() {
                            state.test_requests_before += s.test_requests_answered();
                            state.session_lost(&myself, reason);
                        }
                        // A session still in its handshake fails through `Established`.
                    }
                }
            }
            BrokerMsg::Request {
                method,
                params,
                reply,
            } => {
                if let Err(e) = state.args.config.may_send(&method) {
                    warn!(actor = "broker-connection", error = %e, "request refused");
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                if let Link::Connected { cod, .. } = &mut state.link
                    && (method == "private/enable_cancel_on_disconnect"
                        || method == "private/disable_cancel_on_disconnect")
                {
                    // Changed behind the broker's back: no longer known to be armed.
                    cod.state = Cod::Unknown;
                    cod.change += 1;
                }
                state.forward(method, params, reply);
            }
            BrokerMsg::RequestArmed {
                method,
                params,
                reply,
            } => match &state.link {
                Link::Connected { cod, .. } if cod.state == Cod::Armed => {
                    state.forward(method, params, reply);
                }
                Link::Connected { .. } => {
                    let _ = reply.send(Err(RequestError::NotArmed { method }));
                }
                _ => {
                    let _ = reply.send(Err(RequestError::NotConnected));
                }
            },
            BrokerMsg::CancelOnDisconnect { armed, reply } => {
                let Link::Connected { session, cod, .. } = &mut state.link else {
                    let _ = reply.send(Err(RequestError::NotConnected));
                    return Ok(());
                };
                let wanted = if armed { Cod::Armed } else { Cod::Off };
                if cod.state == wanted {
                    let _ = reply.send(Ok(()));
                    return Ok(());
                }
                // Neither armed nor off until the exchange answers this change.
                cod.state = Cod::Unknown;
                cod.change += 1;
                let change = cod.change;
                let conn = session.id();
                let h = session.handle();
                let limiter = state.limiter.clone();
                let me = myself.clone();
                let method = if armed {
                    "private/enable_cancel_on_disconnect"
                } else {
                    "private/disable_cancel_on_disconnect"
                };
                tokio::spawn(async move {
                    limiter.acquire(method_kind(method)).await;
                    let result = h
                        .request(method, json!({ "scope": "connection" }))
                        .await
                        .map(|_| ());
                    let done = CodChanged {
                        conn,
                        change,
                        armed,
                        result,
                        reply,
                    };
                    let _ = me.send_message(InternalMsg::CodChanged(done).into());
                });
            }
            BrokerMsg::Reauthenticate(reply) => {
                let (Some(session), Some(credentials)) =
                    (state.connected_session(), state.args.credentials.clone())
                else {
                    let _ = reply.send(Err(
                        "no session, or no credentials configured to authenticate with".into(),
                    ));
                    return Ok(());
                };
                let h = session.handle();
                let limiter = state.limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire(method_kind("public/auth")).await;
                    let outcome = authenticate(&h, &credentials).await;
                    if let Err(e) = &outcome {
                        warn!(actor = "broker-connection", error = %e, "re-authentication failed");
                    } else {
                        info!(actor = "broker-connection", "session re-authenticated");
                    }
                    let _ = reply.send(outcome.map(|_| ()).map_err(|e| e.to_string()));
                });
            }
        }
    );

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Link::Connected { session, .. } = std::mem::replace(&mut state.link, Link::Closed) {
            session.close_gracefully(Duration::from_millis(500)).await;
            info!(actor = "broker-connection", "exchange session closed");
        }
        Ok(())
    }
}

/// The actor's messages to itself ([`InternalMsg`]).
async fn handle_internal(
    myself: ActorRef<BrokerMsg>,
    msg: InternalMsg,
    state: &mut BrokerState,
) -> Result<(), ActorProcessingErr> {
    match msg {
        InternalMsg::TaskPanicked(reason) => return Err(reason.into()),
        InternalMsg::Established { conn, result } => {
            if !matches!(&state.link, Link::Connecting { conn: c, .. } if *c == conn) {
                return Ok(()); // stale attempt; dropping it closes its session
            }
            match result {
                Ok(est) => {
                    state.reconnector.on_connected();
                    let reconnected = state.ever_connected;
                    state.ever_connected = true;
                    state.disconnected_since = None;
                    state.last_error = None;
                    if !est.missing.is_empty() {
                        warn!(
                            actor = "broker-connection",
                            missing = ?est.missing,
                            "the exchange did not subscribe every configured channel"
                        );
                    }
                    info!(
                        actor = "broker-connection",
                        conn,
                        url = %state.safe_url,
                        authenticated = est.auth.is_some(),
                        channels = ?est.subscribed,
                        handshake_ms = ms(est.took),
                        "{}",
                        if reconnected { "reconnected and resubscribed" } else { "connected and subscribed" }
                    );
                    if let Some(auth) = &est.auth
                        && !auth.expires_in.is_zero()
                        && !auth.refresh_token.expose().is_empty()
                    {
                        // Refresh at 80 % of the token's life.
                        myself.send_after(auth.expires_in.mul_f64(0.8), move || {
                            InternalMsg::RefreshAuth { conn }.into()
                        });
                    }
                    state.auth = est.auth;
                    state.subscriptions = est.subscribed;
                    state.missing = est.missing;
                    state.link = Link::Connected {
                        session: est.session,
                        since: Instant::now(),
                        since_wall: crate::clock::now(),
                        cod: CodState {
                            state: Cod::Off,
                            change: 0,
                        },
                    };
                    // Every (re)connect: the strategy re-checks intents, protection, orphans.
                    if let Some(strategy) = state.args.names.get::<StrategyMsg>() {
                        let _ = strategy.send_message(StrategyMsg::Connected { conn });
                    }
                }
                Err(err) => {
                    let next = state
                        .reconnector
                        .on_attempt_failed(Instant::now(), fastrand::f64());
                    let failures = state.reconnector.consecutive_failures();
                    match next {
                        Next::RetryIn(d) => warn!(
                            actor = "broker-connection",
                            conn,
                            error = %err,
                            consecutive_failures = failures,
                            next_attempt_ms = ms(d),
                            "connection attempt failed"
                        ),
                        Next::CircuitOpen(d) => error!(
                            actor = "broker-connection",
                            conn,
                            error = %err,
                            consecutive_failures = failures,
                            next_attempt_ms = ms(d),
                            "circuit breaker open: no connection attempts until it half-opens"
                        ),
                    }
                    if state.disconnected_since.is_none() {
                        state.disconnected_since = Some(state.started);
                    }
                    state.last_error = Some(err.to_string());
                    state.schedule(&myself, next);
                }
            }
        }
        InternalMsg::Connect { generation } => {
            if matches!(&state.link, Link::Waiting { generation: g, .. } if *g == generation) {
                state.start_attempt(&myself);
            }
        }
        InternalMsg::Check => {
            if let Link::Connected { session, since, .. } = &state.link {
                let silent = session.last_frame_at().elapsed();
                let limit = state.args.config.heartbeat_interval * 2;
                if silent > limit && since.elapsed() > limit {
                    state.test_requests_before += session.test_requests_answered();
                    session.close();
                    state.session_lost(
                        &myself,
                        format!("no message for {} ms (limit {} ms)", ms(silent), ms(limit)),
                    );
                }
            }
            if let Some((last, suppressed)) = state.malformed_burst
                && last.elapsed() > MALFORMED_QUIET
            {
                if suppressed > 0 {
                    warn!(
                        actor = "broker-connection",
                        suppressed, "malformed-frame burst ended"
                    );
                }
                state.malformed_burst = None;
            }
        }
        InternalMsg::RefreshAuth { conn } => {
            let Some(session) = state.connected_session() else {
                return Ok(());
            };
            let Some(auth) = &state.auth else {
                return Ok(());
            };
            if session.id() != conn {
                return Ok(());
            }
            let h = session.handle();
            let refresh = auth.refresh_token.clone();
            let me = myself.clone();
            tokio::spawn(async move {
                let outcome = h
                    .call::<AuthResult>(
                        "public/auth",
                        json!({"grant_type": "refresh_token", "refresh_token": refresh.expose()}),
                    )
                    .await;
                match outcome {
                    Ok(r) => {
                        let next = Duration::from_secs(r.expires_in.unwrap_or(0)).mul_f64(0.8);
                        if !next.is_zero() {
                            me.send_after(next, move || InternalMsg::RefreshAuth { conn }.into());
                        }
                    }
                    Err(e) => warn!(
                        actor = "broker-connection",
                        error = %e,
                        "token refresh failed; the session re-authenticates on its next reconnect"
                    ),
                }
            });
        }
        InternalMsg::CodChanged(done) => done.settle(&mut state.link),
    }
    Ok(())
}
