//! Order execution: the jobs the strategy actor runs for its instances.
//!
//! A job is one async task per instance at a time (the actor marks the instance busy until the
//! job reports back). A job talks to the exchange through the `broker-connection` and changes the
//! instance's lifecycle only through [`StrategyMsg::Transition`], so every state change is
//! committed to the store before the actor's memory changes — the same path as everything else.
//!
//! **The idempotency rule.** An entry's intent (deterministic label, side, size, prices) is
//! committed (ENTERING_POSITION) *before* the order is sent. The request is sent again only
//! after an answer that says the exchange did not act on it ([`ErrorClass::Retryable`], within
//! `retry.max_attempts`; [`ErrorClass::Auth`] once after re-authenticating).
//! When its outcome is unknown (timeout, dropped connection, unreadable answer, a kill -9), the
//! order is looked up by its label with `private/get_order_state_by_label` and the instance
//! continues from what the exchange says; an entry that is not found (twice, `not_found_grace`
//! apart) never reached the exchange and the instance returns to IDLE. After an unknown outcome
//! an entry is never sent again. Only reduce-only orders (protective legs, closes) are ever
//! re-placed as new orders: they cannot open or enlarge a position.
//!
//! **Protection.** Entries are market orders with their stop-loss (stop-market on the mark price)
//! and take-profit (limit) attached as one OTOCO (`one_triggers_one_cancels_other`). After the
//! entry fills, both legs are checked by label. A leg the exchange cancelled on a disconnect is
//! placed again (reduce-only); a leg that was rejected, or cannot be placed again, means the
//! position is unprotected: it is closed at market (reduce-only) and a CRITICAL alert is raised.
//! See ADR 0004 for cancel-on-disconnect.
//!
//! **Latency (ADR 0005).** Nothing on an entry's way from the tick to the wire waits for the
//! exchange when the caches are warm: the equity for sizing comes from the strategy actor's
//! cache (refreshed in the background, used while younger than `equity_max_age`, asked for
//! otherwise); cancel-on-disconnect is armed ahead of the entry while no instance holds a
//! position (the order is sent only on a session where the broker knows it is armed, else it is
//! armed first); and the intent is committed once (ANALYZING → SIGNAL_DETECTED →
//! ENTERING_POSITION in one transaction) before the order is sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ractor::ActorRef;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{debug, error, info, warn};

use super::guards::{self, InstrumentSpec, Refusal, RiskConfig};
use super::{Intent, Lifecycle, PositionData, Side, StrategyMsg, StrategyRecord, TransitionData};
use crate::backoff::Backoff;
use crate::client;
use crate::client::Reply;
use crate::metrics::Metrics;
use crate::names::Names;
use crate::orders::errors::{ErrorClass, RetryPolicy, classify_request_error};
use crate::orders::labels::{Leg, leg_label};
use crate::protocol::alert::Alert;
use crate::protocol::alert::Severity;
use crate::protocol::broker::BrokerMsg;
use crate::protocol::broker::RequestError;
use crate::protocol::failsafe::FailSafeMsg;
use crate::recovery::ExOrder;
use crate::store::Change;

mod enter;
mod protect;
use enter::{enter, resolve};
use protect::{check, close};

/// `[execution]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutionConfig {
    /// false: the strategies analyze and record their decisions but place, check and cancel no
    /// orders at all (a dry run, or while positions are managed by hand).
    pub enabled: bool,
    /// Position sizing and caps.
    pub risk: RiskConfig,
    /// Retries of requests the exchange did not act on (10028, 10040, …, not connected).
    pub retry: RetryPolicy,
    /// How often open positions, entries in flight and closes are re-checked with the exchange.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// How long one lookup of an order by its label keeps trying before it gives up until the
    /// next check.
    #[serde(with = "humantime_serde")]
    pub resolve_timeout: Duration,
    /// An order not found by label is looked up once more after this long before it counts as
    /// never having reached the exchange (a request can still be in the exchange's queue).
    #[serde(with = "humantime_serde")]
    pub not_found_grace: Duration,
    /// Arm cancel-on-disconnect (connection scope) while an entry is in flight, and ahead of it
    /// while no instance holds a position (ADR 0004, ADR 0005).
    pub cancel_on_disconnect: bool,
    /// The account equity used for sizing is cached (refreshed in the background once it is
    /// half this old, and after every fill and close); an entry uses a cached value younger
    /// than this and asks the exchange itself otherwise. `0s`: always ask (ADR 0005).
    #[serde(with = "humantime_serde")]
    pub equity_max_age: Duration,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            risk: RiskConfig::default(),
            retry: RetryPolicy {
                backoff: Backoff {
                    initial: Duration::from_millis(200),
                    max: Duration::from_secs(5),
                    multiplier: 2.0,
                    jitter: 0.1,
                },
                max_attempts: 5,
            },
            check_interval: Duration::from_secs(1),
            resolve_timeout: Duration::from_secs(30),
            not_found_grace: Duration::from_secs(5),
            cancel_on_disconnect: true,
            equity_max_age: Duration::from_secs(5),
        }
    }
}

impl ExecutionConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        self.risk.validate().map_err(|e| format!("risk.{e}"))?;
        self.retry.validate().map_err(|e| format!("retry.{e}"))?;
        for (name, d) in [
            ("check_interval", self.check_interval),
            ("resolve_timeout", self.resolve_timeout),
        ] {
            if d < Duration::from_millis(10) {
                return Err(format!("{name} must be at least 10ms"));
            }
        }
        if self.equity_max_age > Duration::from_secs(60 * 60) {
            return Err("equity_max_age must be at most 1h".into());
        }
        Ok(())
    }
}

/// How many times an entry not sent for want of cancel-on-disconnect arms it again and retries.
const ENTRY_ARM_ATTEMPTS: u32 = 2;

/// What a job works on: a copy of the instance taken when the job was spawned.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub id: String,
    pub instrument: String,
    pub record: StrategyRecord,
    pub spec: Option<InstrumentSpec>,
    pub mark: Option<f64>,
    /// The instance's last refusal: the same refusal again is counted, not recorded again.
    pub last_refusal: Option<String>,
    /// The cached account equity of the instrument's currency, if any.
    pub equity: Option<EquityReading>,
}

/// An account equity (in the settlement currency) as `private/get_account_summary` gave it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EquityReading {
    pub equity: f64,
    /// When the answer arrived (tokio's clock).
    pub at: tokio::time::Instant,
}

/// Asks the exchange for the equity of `currency`.
pub(crate) async fn fetch_equity(names: &Names, currency: &str) -> Result<EquityReading, String> {
    let v = client::request(
        names,
        "private/get_account_summary",
        json!({ "currency": currency }),
    )
    .await
    .map_err(|e| format!("account equity unknown: {e}"))?;
    let equity = v
        .get("equity")
        .and_then(Value::as_f64)
        .ok_or("account equity unknown: no equity in get_account_summary")?;
    Ok(EquityReading {
        equity,
        at: tokio::time::Instant::now(),
    })
}

impl Snapshot {
    /// The settlement currency of the instrument (`BTC-PERPETUAL` → `BTC`).
    fn currency(&self) -> &str {
        currency_of(&self.instrument)
    }
}

/// The currency part of an instrument name.
pub(crate) fn currency_of(instrument: &str) -> &str {
    instrument.split('-').next().unwrap_or(instrument)
}

/// One piece of work for an instance.
#[derive(Debug, Clone)]
pub(crate) enum Job {
    /// IDLE → ANALYZING.
    StartAnalyzing,
    /// A `Decision::Enter` while ANALYZING.
    Enter {
        side: Side,
        stop_price: f64,
        take_profit_price: f64,
        reason: String,
    },
    /// A decision that cannot be acted on (recorded as an `entry.refused` event).
    Refuse { reason: String },
    /// Find out what became of the intents in flight (ENTERING_POSITION).
    Resolve,
    /// Check an open position: closed by a leg, closed elsewhere, legs in place.
    Check,
    /// Close the position at market (strategy exit, rollback, or a CLOSING to finish).
    Close { reason: String },
    /// A SIGNAL_DETECTED left from before a restart: drop it.
    DropSignal,
}

impl Job {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Job::StartAnalyzing => "start_analyzing",
            Job::Enter { .. } => "enter",
            Job::Refuse { .. } => "refuse",
            Job::Resolve => "resolve",
            Job::Check => "check",
            Job::Close { .. } => "close",
            Job::DropSignal => "drop_signal",
        }
    }
}

/// What a job tells the actor when it ends.
#[derive(Debug, Clone, Default)]
pub struct JobOutcome {
    /// An entry was refused with this reason.
    pub refusal: Option<String>,
    /// Something went wrong that the next check retries.
    pub error: Option<String>,
}

/// Everything a job needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct Exec {
    pub names: Names,
    pub config: ExecutionConfig,
    pub prefix: String,
    pub metrics: Metrics,
    /// Entries are sent one at a time (cancel-on-disconnect is armed around each), and
    /// cancel-on-disconnect is changed only under it.
    pub entry_lock: Arc<tokio::sync::Mutex<()>>,
    /// Entries started (under `entry_lock`): arming ahead of an entry is skipped when one
    /// started since the actor saw every instance flat.
    pub entries: Arc<AtomicU64>,
    pub me: ActorRef<StrategyMsg>,
}

/// The newest order with exactly `label`.
fn newest(orders: Vec<ExOrder>, label: &str) -> Option<ExOrder> {
    orders
        .into_iter()
        .filter(|o| o.label == label)
        .max_by_key(|o| o.last_update_timestamp)
}

/// What a lookup by label found.
#[derive(Debug)]
enum Found {
    Order(ExOrder),
    NotFound,
}

fn is_resting(state: &str) -> bool {
    matches!(state, "open" | "untriggered")
}

fn opposite(side: Side) -> Side {
    match side {
        Side::Buy => Side::Sell,
        Side::Sell => Side::Buy,
    }
}

fn side_str(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

fn order_method(side: Side) -> &'static str {
    match side {
        Side::Buy => "private/buy",
        Side::Sell => "private/sell",
    }
}

/// The order object in a `private/buy|sell` answer.
fn order_of(answer: &Value) -> Result<ExOrder, String> {
    serde_json::from_value(answer.get("order").cloned().unwrap_or(Value::Null))
        .map_err(|e| format!("unreadable order in the answer: {e}"))
}

impl Exec {
    /// Sends one request; retries while the exchange did not act on it (bounded by the retry
    /// policy) and re-authenticates once on an auth error. Returns the first error that is not
    /// worth retrying, or the last retryable one.
    async fn call(&self, method: &str, params: Value) -> Result<Value, RequestError> {
        self.call_as(method, params, false).await
    }

    /// [`Exec::call`]; with `armed`, each try is sent only on a session with cancel-on-disconnect
    /// armed ([`broker::request_armed`]).
    async fn call_as(
        &self,
        method: &str,
        params: Value,
        armed: bool,
    ) -> Result<Value, RequestError> {
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let sent = if armed {
                client::request_armed(&self.names, method, params.clone()).await
            } else {
                client::request(&self.names, method, params.clone()).await
            };
            let err = match sent {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match classify_request_error(&err) {
                ErrorClass::Retryable => match self.config.retry.next_delay(attempt) {
                    Some(delay) => {
                        if method == "private/buy" || method == "private/sell" {
                            self.metrics.orders.with_label_values(&["retried"]).inc();
                        }
                        info!(actor = "strategy", method, attempt, error = %err, retry_in_ms = delay.as_millis() as u64, "exchange did not act on the request; retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(err),
                },
                ErrorClass::Auth if !reauthenticated => {
                    reauthenticated = true;
                    warn!(actor = "strategy", method, error = %err, "authorization refused; re-authenticating once");
                    if let Err(e) = self.reauthenticate().await {
                        warn!(actor = "strategy", method, error = %e, "re-authentication failed");
                        return Err(err);
                    }
                }
                _ => return Err(err),
            }
        }
    }

    async fn reauthenticate(&self) -> Result<(), String> {
        match client::ask(
            &self.names,
            BrokerMsg::Reauthenticate,
            Duration::from_secs(10),
        )
        .await
        {
            Reply::Answered(r) => r,
            other => Err(format!("the broker-connection is {}", other.describe())),
        }
    }

    /// Moves the instance through the actor (committed before it takes effect).
    async fn go(
        &self,
        id: &str,
        to: Lifecycle,
        reason: impl Into<String>,
        data: Option<TransitionData>,
    ) -> Result<(), String> {
        let reason = reason.into();
        match self
            .me
            .call(
                |reply| StrategyMsg::Transition {
                    id: id.to_string(),
                    to,
                    reason,
                    data,
                    reply,
                },
                Some(Duration::from_secs(10)),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            Ok(_) => Err("the strategy actor did not answer the transition".into()),
            Err(e) => Err(format!("the strategy actor is gone: {e}")),
        }
    }

    /// Commits an entry's intent: ANALYZING → SIGNAL_DETECTED → ENTERING_POSITION as one
    /// transaction through the actor ([`StrategyMsg::CommitEntry`]).
    async fn commit_entry(
        &self,
        id: &str,
        signal: String,
        reason: String,
        intent: Intent,
    ) -> Result<(), String> {
        match self
            .me
            .call(
                |reply| StrategyMsg::CommitEntry {
                    id: id.to_string(),
                    signal,
                    reason,
                    intent,
                    reply,
                },
                Some(Duration::from_secs(10)),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            Ok(_) => Err("the strategy actor did not answer the entry commit".into()),
            Err(e) => Err(format!("the strategy actor is gone: {e}")),
        }
    }

    fn alert(&self, alert: Alert) {
        client::raise(&self.names, alert);
    }

    async fn event(&self, kind: &str, payload: Value) {
        if let Err(e) = client::commit_change(
            &self.names,
            Change::event(kind, payload),
            Duration::from_secs(5),
        )
        .await
        {
            warn!(actor = "strategy", kind, error = %e, "event not stored");
        }
    }

    /// Looks `label` up until the exchange answers or `resolve_timeout` passes. "Not found" is
    /// only believed when it is said twice, `not_found_grace` apart.
    async fn find(&self, currency: &str, label: &str) -> Result<Found, String> {
        let deadline = Instant::now() + self.config.resolve_timeout;
        let mut not_found_once = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self
                .call(
                    "private/get_order_state_by_label",
                    json!({ "currency": currency, "label": label }),
                )
                .await
            {
                Ok(v) => {
                    let orders: Vec<ExOrder> = serde_json::from_value(v).map_err(|e| {
                        format!("get_order_state_by_label {label}: unexpected answer: {e}")
                    })?;
                    match newest(orders, label) {
                        Some(o) => return Ok(Found::Order(o)),
                        None if not_found_once || self.config.not_found_grace.is_zero() => {
                            return Ok(Found::NotFound);
                        }
                        None => {
                            not_found_once = true;
                            tokio::time::sleep(self.config.not_found_grace).await;
                            continue;
                        }
                    }
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("looking up {label}: {e}"));
                }
                Err(_) => {
                    let delay = self.config.retry.backoff.delay(attempt.min(16) - 1);
                    tokio::time::sleep(
                        delay.min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                }
            }
        }
    }

    fn label(&self, snap: &Snapshot, seq: u64, leg: Leg) -> Result<String, String> {
        leg_label(&self.prefix, &snap.id, seq, leg)
    }

    /// Sends an order once and measures it. Returns the order object, or the error.
    async fn send_order(&self, method: &str, params: Value) -> Result<ExOrder, RequestError> {
        self.send_order_as(method, params, false).await
    }

    /// [`Exec::send_order`]; with `armed`, only on a session with cancel-on-disconnect armed.
    async fn send_order_as(
        &self,
        method: &str,
        params: Value,
        armed: bool,
    ) -> Result<ExOrder, RequestError> {
        let started = Instant::now();
        let result = self.call_as(method, params, armed).await;
        self.metrics
            .order_latency
            .observe(started.elapsed().as_secs_f64());
        let answer = result?;
        order_of(&answer).map_err(|reason| RequestError::Unexpected {
            method: method.to_string(),
            reason,
        })
    }

    fn count(&self, result: &str) {
        self.metrics.orders.with_label_values(&[result]).inc();
    }
}

/// Runs one job to its end. Never panics; every failure is logged and reported in the outcome.
pub(crate) async fn run(ex: Exec, snap: Snapshot, job: Job) -> JobOutcome {
    let name = job.name();
    let result = match job {
        Job::StartAnalyzing => ex
            .go(&snap.id, Lifecycle::Analyzing, "watching the market", None)
            .await
            .map(|_| JobOutcome::default()),
        Job::DropSignal => ex
            .go(
                &snap.id,
                Lifecycle::Idle,
                "signal detected before a restart dropped; no order was committed",
                None,
            )
            .await
            .map(|_| JobOutcome::default()),
        Job::Refuse { reason } => {
            refuse(&ex, &snap, &reason).await;
            Ok(JobOutcome {
                refusal: Some(reason),
                error: None,
            })
        }
        Job::Enter {
            side,
            stop_price,
            take_profit_price,
            reason,
        } => enter(&ex, &snap, side, stop_price, take_profit_price, reason).await,
        Job::Resolve => resolve(&ex, &snap).await.map(|_| JobOutcome::default()),
        Job::Check => check(&ex, &snap).await.map(|_| JobOutcome::default()),
        Job::Close { reason } => close(&ex, &snap, &reason)
            .await
            .map(|_| JobOutcome::default()),
    };
    result.unwrap_or_else(|e| {
        warn!(actor = "strategy", id = %snap.id, job = name, error = %e, "strategy job did not finish; the next check retries");
        JobOutcome {
            refusal: None,
            error: Some(e),
        }
    })
}

async fn refuse(ex: &Exec, snap: &Snapshot, reason: &str) {
    ex.count("refused");
    if snap.last_refusal.as_deref() == Some(reason) {
        // In OBSERVE_ONLY every crossing is refused for the same reason: one event per change
        // of reason, the rest only in `tradebaas_orders_total{result="refused"}`.
        debug!(actor = "strategy", id = %snap.id, reason, "entry refused again");
        return;
    }
    info!(actor = "strategy", id = %snap.id, reason, "entry refused");
    ex.event(
        "entry.refused",
        json!({ "id": snap.id, "instrument": snap.instrument, "reason": reason }),
    )
    .await;
}

async fn allow_entry(ex: &Exec) -> Result<(), String> {
    match client::ask(&ex.names, FailSafeMsg::AllowEntry, Duration::from_secs(2)).await {
        Reply::Answered(r) => r,
        other => Err(format!(
            "fail-safe {}: entries are refused",
            other.describe()
        )),
    }
}

/// Account equity in USD: `get_account_summary.equity` (in the currency) × the mark price.
/// The cached reading when it is younger than `equity_max_age`; otherwise the exchange is asked
/// (and the cache told).
async fn equity_usd(ex: &Exec, snap: &Snapshot, mark: f64) -> Result<f64, String> {
    let max_age = ex.config.equity_max_age;
    if let Some(r) = snap.equity
        && !max_age.is_zero()
        && r.at.elapsed() <= max_age
    {
        return Ok(r.equity * mark);
    }
    let r = fetch_equity(&ex.names, snap.currency()).await?;
    let _ = ex.me.send_message(
        super::InternalMsg::Equity {
            currency: snap.currency().to_string(),
            reading: Ok(r),
        }
        .into(),
    );
    Ok(r.equity * mark)
}
