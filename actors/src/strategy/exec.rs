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

/// Arms cancel-on-disconnect on the current session (no request when it is armed already).
async fn arm(ex: &Exec) -> Result<(), RequestError> {
    client::set_cancel_on_disconnect(&ex.names, true).await
}

async fn enter(
    ex: &Exec,
    snap: &Snapshot,
    side: Side,
    stop_price: f64,
    take_profit_price: f64,
    reason: String,
) -> Result<JobOutcome, String> {
    // Guards, in order; the first that says no is the reason.
    let refusal: Result<(f64, f64, f64, f64), String> = async {
        if snap.record.position.is_some() || snap.record.lifecycle != Lifecycle::Analyzing {
            return Err(Refusal::PositionAlreadyOpen.to_string());
        }
        allow_entry(ex).await?;
        let spec = snap
            .spec
            .as_ref()
            .ok_or("instrument spec not known yet (public/get_instruments)")?;
        let mark = snap.mark.ok_or("no market price yet")?;
        let (stop, tp) = guards::bracket_prices(side, mark, stop_price, take_profit_price, spec)
            .map_err(|r| r.to_string())?;
        let equity = equity_usd(ex, snap, mark).await?;
        let size = guards::size_entry(equity, mark, stop, spec, &ex.config.risk, false)
            .map_err(|r| r.to_string())?;
        Ok((mark, stop, tp, size))
    }
    .await;
    let (mark, stop, tp, size) = match refusal {
        Ok(v) => v,
        Err(reason) => {
            refuse(ex, snap, &reason).await;
            return Ok(JobOutcome {
                refusal: Some(reason),
                error: None,
            });
        }
    };

    let seq = snap.record.next_intent_seq;
    let labels = (|| {
        Ok::<_, String>((
            ex.label(snap, seq, Leg::Entry)?,
            ex.label(snap, seq, Leg::StopLoss)?,
            ex.label(snap, seq, Leg::TakeProfit)?,
        ))
    })();
    let (entry_label, sl_label, tp_label) = match labels {
        Ok(l) => l,
        Err(e) => {
            let why = format!("no order label: {e}");
            refuse(ex, snap, &why).await;
            return Ok(JobOutcome {
                refusal: Some(why),
                error: None,
            });
        }
    };

    let _one_entry_at_a_time = ex.entry_lock.lock().await;
    ex.entries.fetch_add(1, Ordering::Relaxed);
    // Usually armed ahead while every instance was flat: then this asks the broker, not the
    // exchange.
    if ex.config.cancel_on_disconnect
        && let Err(e) = arm(ex).await
    {
        let why = format!("cancel-on-disconnect could not be armed, entry not sent: {e}");
        refuse(ex, snap, &why).await;
        return Ok(JobOutcome {
            refusal: Some(why),
            error: None,
        });
    }

    let intent = Intent {
        label: entry_label.clone(),
        side,
        size,
        sent_at: crate::clock::now(),
        stop_price: Some(stop),
        take_profit_price: Some(tp),
    };
    // The intent is durable before anything is sent: ANALYZING → SIGNAL_DETECTED →
    // ENTERING_POSITION in one commit.
    let committed = ex
        .commit_entry(
            &snap.id,
            reason,
            format!(
                "entry {entry_label}: {} {size} {} at ~{mark}, stop {stop}, take-profit {tp}",
                side_str(side),
                snap.instrument
            ),
            intent.clone(),
        )
        .await;
    if let Err(e) = committed {
        disarm(ex).await;
        // Nothing was sent and nothing changed: the instance is still ANALYZING.
        return Err(e);
    }

    let exit = side_str(opposite(side));
    let params = json!({
        "instrument_name": snap.instrument,
        "amount": size,
        "type": "market",
        "label": entry_label,
        "linked_order_type": "one_triggers_one_cancels_other",
        "trigger_fill_condition": "first_hit",
        "otoco_config": [
            {
                "amount": size, "direction": exit, "type": "stop_market",
                "trigger_price": stop, "trigger": "mark_price",
                "reduce_only": true, "label": sl_label,
            },
            {
                "amount": size, "direction": exit, "type": "limit", "price": tp,
                "reduce_only": true, "post_only": false, "label": tp_label,
                "time_in_force": "good_til_cancelled",
            },
        ],
    });
    let armed = ex.config.cancel_on_disconnect;
    let mut sent = ex
        .send_order_as(order_method(side), params.clone(), armed)
        .await;
    // Not sent because the session is not armed (a reconnect since arming gives a session
    // without it): arm this one and send, a bounded number of times.
    for _ in 0..ENTRY_ARM_ATTEMPTS {
        if !matches!(sent, Err(RequestError::NotArmed { .. })) {
            break;
        }
        if let Err(e) = arm(ex).await {
            warn!(actor = "strategy", id = %snap.id, error = %e, "cancel-on-disconnect could not be armed again; the entry is not sent");
            break;
        }
        sent = ex
            .send_order_as(order_method(side), params.clone(), armed)
            .await;
    }
    disarm(ex).await;
    drop(_one_entry_at_a_time);

    let mut snap = snap.clone();
    snap.record.lifecycle = Lifecycle::EnteringPosition;
    snap.record.intents_in_flight = vec![intent.clone()];
    match sent {
        Ok(order) => on_entry_order(ex, &snap, &intent, order).await?,
        Err(err) => match classify_request_error(&err) {
            ErrorClass::Unknown => {
                ex.count("unknown");
                warn!(actor = "strategy", id = %snap.id, label = %entry_label, error = %err, "entry outcome unknown; looking it up by label (never re-sent)");
                resolve_intent(ex, &snap, &intent).await?;
            }
            class => {
                ex.count("rejected");
                let why = format!("entry {entry_label} refused by the exchange ({class:?}): {err}");
                warn!(actor = "strategy", id = %snap.id, reason = %why, "entry rejected");
                ex.go(&snap.id, Lifecycle::Idle, why, None).await?;
            }
        },
    }
    Ok(JobOutcome::default())
}

async fn disarm(ex: &Exec) {
    if !ex.config.cancel_on_disconnect {
        return;
    }
    if let Err(e) = client::set_cancel_on_disconnect(&ex.names, false).await {
        // A new connection starts with it disabled; on this one protective legs are re-checked
        // after any disconnect anyway.
        warn!(actor = "strategy", error = %e, "cancel-on-disconnect could not be disarmed");
    }
}

/// ENTERING_POSITION after a restart, a reconnect or an unknown answer: continue from what the
/// exchange knows about each intent.
async fn resolve(ex: &Exec, snap: &Snapshot) -> Result<(), String> {
    match snap.record.intents_in_flight.first() {
        Some(intent) => resolve_intent(ex, snap, intent).await,
        None => {
            ex.go(
                &snap.id,
                Lifecycle::Idle,
                "entering without an intent: nothing was sent",
                None,
            )
            .await
        }
    }
}

async fn resolve_intent(ex: &Exec, snap: &Snapshot, intent: &Intent) -> Result<(), String> {
    match ex.find(snap.currency(), &intent.label).await? {
        Found::Order(order) => {
            info!(actor = "strategy", id = %snap.id, label = %intent.label, state = %order.order_state, "entry found on the exchange by its label");
            on_entry_order(ex, snap, intent, order).await
        }
        Found::NotFound => {
            ex.go(
                &snap.id,
                Lifecycle::Idle,
                format!(
                    "entry {} never reached the exchange; it is not sent again",
                    intent.label
                ),
                None,
            )
            .await
        }
    }
}

/// Continues from the entry order as the exchange reports it.
async fn on_entry_order(
    ex: &Exec,
    snap: &Snapshot,
    intent: &Intent,
    mut order: ExOrder,
) -> Result<(), String> {
    if is_resting(&order.order_state) {
        // A market entry should not rest; take what filled and cancel the rest.
        warn!(actor = "strategy", id = %snap.id, label = %intent.label, "entry still resting; cancelling the remainder");
        ex.call("private/cancel", json!({ "order_id": order.order_id }))
            .await
            .map_err(|e| format!("cancelling the resting entry: {e}"))?;
        order = match ex.find(snap.currency(), &intent.label).await? {
            Found::Order(o) => o,
            Found::NotFound => order,
        };
    }
    if order.filled_amount <= 0.0 {
        ex.count("rejected");
        let why = format!(
            "entry {} {} without a fill{}",
            intent.label,
            order.order_state,
            order
                .cancel_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        return ex.go(&snap.id, Lifecycle::Idle, why, None).await;
    }
    ex.count("filled");
    let seq = seq_of(ex, snap, &intent.label);
    let seq_labels = (
        ex.label(snap, seq, Leg::StopLoss)?,
        ex.label(snap, seq, Leg::TakeProfit)?,
    );
    let position = PositionData {
        instrument: snap.instrument.clone(),
        direction: intent.side,
        size: order.filled_amount,
        entry_price: order.average_price,
        protective_orders: vec![seq_labels.0, seq_labels.1],
        entry_label: Some(intent.label.clone()),
        stop_price: intent.stop_price,
        take_profit_price: intent.take_profit_price,
    };
    ex.go(
        &snap.id,
        Lifecycle::PositionOpen,
        format!(
            "entry {} filled: {} {} at {}",
            intent.label,
            side_str(intent.side),
            order.filled_amount,
            order.average_price
        ),
        Some(TransitionData {
            position: Some(position.clone()),
            intents_in_flight: Vec::new(),
        }),
    )
    .await?;
    let mut snap = snap.clone();
    snap.record.lifecycle = Lifecycle::PositionOpen;
    snap.record.position = Some(position);
    snap.record.intents_in_flight.clear();
    check(ex, &snap).await
}

fn seq_of(ex: &Exec, snap: &Snapshot, label: &str) -> u64 {
    crate::orders::labels::parse_label(&ex.prefix, label)
        .map(|p| p.intent_seq)
        .unwrap_or(snap.record.next_intent_seq)
}

/// The state of one protective leg.
enum LegState {
    Resting,
    Filled(ExOrder),
    /// Gone, but placing it again is right (cancelled on a disconnect, or not found).
    Replace,
    /// Rejected or cancelled for another reason: the position is not protected.
    Broken(String),
}

async fn leg_state(ex: &Exec, currency: &str, label: &str) -> Result<LegState, String> {
    Ok(match ex.find(currency, label).await? {
        Found::NotFound => LegState::Replace,
        Found::Order(o) if is_resting(&o.order_state) => LegState::Resting,
        Found::Order(o) if o.order_state == "filled" || o.filled_amount > 0.0 => {
            LegState::Filled(o)
        }
        Found::Order(o) if o.cancel_reason.as_deref() == Some("cancel_on_disconnect") => {
            LegState::Replace
        }
        Found::Order(o) => LegState::Broken(format!(
            "{label} {}{}",
            o.order_state,
            o.cancel_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )),
    })
}

/// POSITION_OPEN: has a leg closed the position, was it closed elsewhere, are both legs in
/// place? Re-places legs a disconnect took; rolls back when protection cannot be had.
async fn check(ex: &Exec, snap: &Snapshot) -> Result<(), String> {
    let Some(position) = snap.record.position.clone() else {
        return Ok(());
    };
    let [sl, tp] = match position.protective_orders.as_slice() {
        [sl, tp] => [sl.clone(), tp.clone()],
        _ => {
            return close(ex, snap, "position without its two protective legs").await;
        }
    };
    // The cheap path: both legs still resting.
    let open: Vec<ExOrder> = ex
        .call(
            "private/get_open_orders_by_instrument",
            json!({ "instrument_name": position.instrument }),
        )
        .await
        .map_err(|e| format!("open orders: {e}"))
        .and_then(|v| serde_json::from_value(v).map_err(|e| format!("open orders: {e}")))?;
    let resting = |label: &str| open.iter().any(|o| o.label == label);
    if resting(&sl) && resting(&tp) {
        return Ok(());
    }

    let currency = snap.currency();
    let sl_state = leg_state(ex, currency, &sl).await?;
    let tp_state = leg_state(ex, currency, &tp).await?;
    for (filled, other, what) in [
        (&sl_state, &tp, "stop-loss"),
        (&tp_state, &sl, "take-profit"),
    ] {
        if let LegState::Filled(o) = filled {
            let _ = ex
                .call(
                    "private/cancel_by_label",
                    json!({ "label": other, "currency": currency }),
                )
                .await;
            let exit = if o.average_price > 0.0 {
                o.average_price
            } else {
                position.entry_price
            };
            return finish(
                ex,
                snap,
                &position,
                exit,
                &format!("{what} {} filled at {exit}", o.label),
            )
            .await;
        }
    }

    // No leg filled: is the position still there?
    let exchange_size = position_size(ex, &position.instrument).await?;
    if exchange_size.abs() < 1e-9 {
        for label in [&sl, &tp] {
            let _ = ex
                .call(
                    "private/cancel_by_label",
                    json!({ "label": label, "currency": currency }),
                )
                .await;
        }
        return finish(
            ex,
            snap,
            &position,
            position.entry_price,
            "position closed outside TradeBaas; its protective orders were cancelled",
        )
        .await;
    }

    let mut broken = Vec::new();
    for (state, label, leg) in [
        (&sl_state, &sl, Leg::StopLoss),
        (&tp_state, &tp, Leg::TakeProfit),
    ] {
        match state {
            LegState::Resting | LegState::Filled(_) => {}
            LegState::Broken(why) => broken.push(why.clone()),
            LegState::Replace => {
                if let Err(e) = replace_leg(ex, &position, label, leg).await {
                    broken.push(format!("{label} could not be placed again: {e}"));
                }
            }
        }
    }
    if broken.is_empty() {
        return Ok(());
    }
    let why = broken.join("; ");
    error!(actor = "strategy", id = %snap.id, reason = %why, "position unprotected; closing it at market");
    ex.alert(Alert {
        key: format!("strategy:{}:unprotected", snap.id),
        severity: Severity::Critical,
        title: format!("Unprotected position of {} closed", snap.id),
        message: format!(
            "{} {} {} had no working protective order ({why}); it is being closed at market (reduce-only).",
            snap.id,
            side_str(position.direction),
            position.instrument
        ),
        root_cause: why.clone(),
        recommended_action: "Check the position and open orders on the exchange; check why the protective order was refused (price, size, funds).".into(),
        metadata: json!({ "strategy": snap.id, "instrument": position.instrument, "labels": [sl, tp] }),
    });
    close(ex, snap, &format!("rollback: {why}")).await
}

async fn replace_leg(
    ex: &Exec,
    position: &PositionData,
    label: &str,
    leg: Leg,
) -> Result<(), String> {
    let exit = opposite(position.direction);
    let mut params = json!({
        "instrument_name": position.instrument,
        "amount": position.size,
        "reduce_only": true,
        "label": label,
    });
    match leg {
        Leg::StopLoss => {
            let stop = position.stop_price.ok_or("no stop price recorded")?;
            params["type"] = json!("stop_market");
            params["trigger_price"] = json!(stop);
            params["trigger"] = json!("mark_price");
        }
        _ => {
            let tp = position
                .take_profit_price
                .ok_or("no take-profit price recorded")?;
            params["type"] = json!("limit");
            params["price"] = json!(tp);
            params["post_only"] = json!(false);
        }
    }
    let order = ex
        .send_order(order_method(exit), params)
        .await
        .map_err(|e| e.to_string())?;
    info!(actor = "strategy", label, state = %order.order_state, "protective order placed again");
    Ok(())
}

async fn position_size(ex: &Exec, instrument: &str) -> Result<f64, String> {
    let v = ex
        .call(
            "private/get_position",
            json!({ "instrument_name": instrument }),
        )
        .await
        .map_err(|e| format!("position of {instrument}: {e}"))?;
    Ok(v.get("size").and_then(Value::as_f64).unwrap_or(0.0))
}

/// CLOSING → IDLE with the trade counted.
async fn finish(
    ex: &Exec,
    snap: &Snapshot,
    position: &PositionData,
    exit_price: f64,
    reason: &str,
) -> Result<(), String> {
    if snap.record.lifecycle == Lifecycle::PositionOpen {
        ex.go(&snap.id, Lifecycle::Closing, reason, None).await?;
    }
    ex.go(&snap.id, Lifecycle::Idle, reason, None).await?;
    let pnl = (exit_price - position.entry_price) * position.direction.sign();
    ex.metrics.trades.inc();
    if pnl > 0.0 {
        ex.metrics.trades_success.inc();
    } else {
        ex.metrics.trades_failed.inc();
    }
    info!(actor = "strategy", id = %snap.id, entry = position.entry_price, exit = exit_price, reason, "trade finished");
    Ok(())
}

/// Closes the position at market, reduce-only, after cancelling its legs. Safe to repeat: a
/// reduce-only close can never open or flip a position.
async fn close(ex: &Exec, snap: &Snapshot, reason: &str) -> Result<(), String> {
    let Some(position) = snap.record.position.clone() else {
        if snap.record.lifecycle == Lifecycle::Closing {
            return ex
                .go(
                    &snap.id,
                    Lifecycle::Idle,
                    "closing without a position",
                    None,
                )
                .await;
        }
        return Ok(());
    };
    let mut snap = snap.clone();
    if snap.record.lifecycle == Lifecycle::PositionOpen {
        ex.go(&snap.id, Lifecycle::Closing, reason, None).await?;
        snap.record.lifecycle = Lifecycle::Closing;
    }
    let currency = snap.currency().to_string();
    for label in &position.protective_orders {
        ex.call(
            "private/cancel_by_label",
            json!({ "label": label, "currency": currency }),
        )
        .await
        .map_err(|e| format!("cancelling {label}: {e}"))?;
    }
    let size = position_size(ex, &position.instrument).await?;
    let held = size.abs().min(position.size);
    if held < 1e-9 {
        return finish(ex, &snap, &position, position.entry_price, reason).await;
    }
    let seq = position
        .entry_label
        .as_deref()
        .map(|l| seq_of(ex, &snap, l))
        .unwrap_or(snap.record.next_intent_seq);
    let label = ex.label(&snap, seq, Leg::Close)?;
    let params = json!({
        "instrument_name": position.instrument,
        "amount": held,
        "type": "market",
        "reduce_only": true,
        "label": label,
    });
    let order = match ex
        .send_order(order_method(opposite(position.direction)), params)
        .await
    {
        Ok(o) => o,
        Err(e) if classify_request_error(&e) == ErrorClass::Unknown => {
            ex.count("unknown");
            match ex.find(&currency, &label).await? {
                Found::Order(o) => o,
                // Reduce-only: sending it again on the next check is safe.
                Found::NotFound => return Err(format!("close {label} not found after: {e}")),
            }
        }
        Err(e) => {
            ex.count("rejected");
            return Err(format!("close {label} refused: {e}"));
        }
    };
    ex.count(if order.filled_amount > 0.0 {
        "filled"
    } else {
        "rejected"
    });
    if order.filled_amount <= 0.0 {
        return Err(format!(
            "close {label} {} without a fill",
            order.order_state
        ));
    }
    finish(ex, &snap, &position, order.average_price, reason).await
}
