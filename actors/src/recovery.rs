//! Start-up recovery: restore the durable state and reconcile it with the exchange before any
//! strategy may trade again.
//!
//! The core is pure: [`reconcile`] compares the strategies' records with what the exchange reports
//! and lists every [`Difference`]. [`recover`] is the driver: it loads the state from the
//! `state-persister`, waits for the `broker-connection` to be connected, asks the exchange for
//! positions, open orders and the orders behind every in-flight intent, reconciles, and decides —
//! all within `[recovery] timeout`. Only a clean reconciliation with a stored AGGRESSIVE mode
//! resumes trading; anything else (differences, an exchange that does not answer, unreadable state)
//! sets the fail-safe to OBSERVE_ONLY (a SHUTDOWN stays) and raises one WARNING alert.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::protocol::alert::Alert;

use crate::client;
use crate::metrics::Metrics;
use crate::mode::TradingMode;
use crate::model::mode::MODE_KEY;
use crate::model::mode::StoredMode;
use crate::model::strategy::StrategyRecord;
pub use crate::model::{ExOrder, ExPosition, RECOVERY_KEY};
use crate::names::Names;
use crate::protocol::alert::Severity;
use crate::protocol::broker::BrokerMsg;
use crate::protocol::broker::LinkState;
use crate::protocol::failsafe::FailSafeMsg;

/// The alert key recovery raises.
pub const ALERT_KEY: &str = "capital:recovery_differences";

/// Sizes closer than this are equal.
const SIZE_EPSILON: f64 = 1e-9;
/// One persister load attempt.
const LOAD_TIMEOUT: Duration = Duration::from_secs(2);
const LOAD_ATTEMPTS: u32 = 30;
/// Pause between load attempts: the persister may still be starting (the supervisor starts its
/// children after the tree is spawned, and opening the store takes a few ms), so the first
/// retries come quickly, 5 ms doubling to at most 100 ms (about 2.5 s in all). A fixed 100 ms
/// pause made every start that lost this race 100 ms slower. The whole recovery stays bounded
/// by its timeout.
const LOAD_RETRY: crate::backoff::Backoff = crate::backoff::Backoff {
    initial: Duration::from_millis(5),
    max: Duration::from_millis(100),
    multiplier: 2.0,
    jitter: 0.0,
};
/// Broker status poll interval while waiting for the connection.
const POLL: Duration = Duration::from_millis(10);
/// One status question to an actor.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// `[recovery]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Bound on the whole recovery (load, broker wait, exchange queries, decision).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Labels of orders this daemon places are `<label_prefix>-<strategy>-<seq>[-leg]`; open
    /// orders with such a label that no strategy owns are orphans, every other order is left
    /// alone.
    pub label_prefix: String,
    /// Currencies whose positions and open orders are reconciled.
    pub currencies: Vec<String>,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            label_prefix: "tb".into(),
            currencies: vec!["BTC".into()],
        }
    }
}

impl RecoveryConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout < Duration::from_millis(100) {
            return Err("timeout must be at least 100ms".into());
        }
        crate::orders::labels::check_prefix(&self.label_prefix)
            .map_err(|e| format!("label_prefix: {e}"))?;
        if self.currencies.is_empty() {
            return Err("currencies must name at least one currency".into());
        }
        for (i, c) in self.currencies.iter().enumerate() {
            if c.is_empty()
                || !c
                    .chars()
                    .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit())
            {
                return Err(format!(
                    "currencies[{i}] must be an upper-case currency code such as \"BTC\", not {c:?}"
                ));
            }
        }
        Ok(())
    }
}

/// One disagreement between the stored state and the exchange.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// The exchange holds a position no strategy knows about (signed size).
    UnknownExchangePosition { instrument: String, size: f64 },
    /// A strategy holds a position the exchange no longer has.
    LocalPositionGone {
        strategy: String,
        instrument: String,
    },
    /// Both have the position, with different signed sizes.
    SizeMismatch {
        strategy: String,
        instrument: String,
        local: f64,
        exchange: f64,
    },
    /// An in-flight intent reached the exchange (in `order_state`); the strategy must adopt it.
    IntentReachedExchange {
        strategy: String,
        label: String,
        order_state: String,
    },
    /// An in-flight intent never reached the exchange.
    IntentNotOnExchange { strategy: String, label: String },
    /// An open order with our label prefix that no strategy owns.
    OrphanOrder {
        order_id: String,
        label: String,
        instrument: String,
    },
}

/// Compares the local records with the exchange. `labelled` holds the answer to
/// `get_order_state_by_label` for intent labels (`None`: no such order); an intent label missing
/// from it counts as not on the exchange. Several strategies on one instrument are compared by
/// their summed signed size (and named joined by `,`).
pub fn reconcile(
    local: &[StrategyRecord],
    exchange_positions: &[ExPosition],
    open_orders: &[ExOrder],
    labelled: &[(String, Option<ExOrder>)],
    label_prefix: &str,
) -> Vec<Difference> {
    let mut out = Vec::new();

    // Positions, per instrument.
    let mut local_by_instrument: BTreeMap<&str, (Vec<&str>, f64)> = BTreeMap::new();
    for r in local {
        if let Some(p) = &r.position {
            let e = local_by_instrument
                .entry(p.instrument.as_str())
                .or_default();
            e.0.push(r.id.as_str());
            e.1 += p.direction.sign() * p.size;
        }
    }
    let mut exchange_by_instrument: BTreeMap<&str, f64> = BTreeMap::new();
    for p in exchange_positions {
        if p.size.abs() > SIZE_EPSILON {
            *exchange_by_instrument
                .entry(p.instrument_name.as_str())
                .or_default() += p.size;
        }
    }
    for (instrument, (ids, local_size)) in &local_by_instrument {
        let strategy = ids.join(",");
        match exchange_by_instrument.get(instrument) {
            None => out.push(Difference::LocalPositionGone {
                strategy,
                instrument: (*instrument).to_string(),
            }),
            Some(&exchange) if (exchange - local_size).abs() > SIZE_EPSILON => {
                out.push(Difference::SizeMismatch {
                    strategy,
                    instrument: (*instrument).to_string(),
                    local: *local_size,
                    exchange,
                });
            }
            Some(_) => {}
        }
    }
    for (instrument, size) in &exchange_by_instrument {
        if !local_by_instrument.contains_key(instrument) {
            out.push(Difference::UnknownExchangePosition {
                instrument: (*instrument).to_string(),
                size: *size,
            });
        }
    }

    // Intents in flight.
    for r in local {
        for intent in &r.intents_in_flight {
            let found = labelled
                .iter()
                .find(|(label, _)| *label == intent.label)
                .and_then(|(_, order)| order.as_ref());
            out.push(match found {
                Some(order) => Difference::IntentReachedExchange {
                    strategy: r.id.clone(),
                    label: intent.label.clone(),
                    order_state: order.order_state.clone(),
                },
                None => Difference::IntentNotOnExchange {
                    strategy: r.id.clone(),
                    label: intent.label.clone(),
                },
            });
        }
    }

    // Orphans: our prefix, owned by nobody (protective orders may be stored as label or id).
    let owned: HashSet<&str> = local
        .iter()
        .flat_map(|r| {
            r.intents_in_flight.iter().map(|i| i.label.as_str()).chain(
                r.position
                    .iter()
                    .flat_map(|p| p.protective_orders.iter().map(String::as_str)),
            )
        })
        .collect();
    for o in open_orders {
        if crate::orders::labels::owned_by_us(label_prefix, &o.label)
            && !owned.contains(o.label.as_str())
            && !owned.contains(o.order_id.as_str())
        {
            out.push(Difference::OrphanOrder {
                order_id: o.order_id.clone(),
                label: o.label.clone(),
                instrument: o.instrument_name.clone(),
            });
        }
    }
    out
}

/// What a recovery found and did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecoveryReport {
    /// The state was restored and the exchange reconciled (differences may still exist; they are
    /// handled by OBSERVE_ONLY and the alert).
    pub success: bool,
    pub recovery_time_ms: u64,
    /// The persister answered the load and the records were read.
    pub state_restored: bool,
    /// The exchange answered every query.
    pub broker_reconciled: bool,
    /// No differences and a stored AGGRESSIVE mode: trading continues as before.
    pub strategy_resumed: bool,
    pub differences: Vec<Difference>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
    pub finished_at: DateTime<Utc>,
}

#[derive(Default)]
struct Progress {
    stage: &'static str,
    state_restored: bool,
    broker_reconciled: bool,
    records: Vec<StrategyRecord>,
    stored_mode: Option<TradingMode>,
    differences: Vec<Difference>,
    warnings: Vec<String>,
    errors: Vec<String>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Recovery's decision once the facts are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Trading continues as before (AGGRESSIVE).
    Resume,
    /// Would resume, but the fail-safe is already in SHUTDOWN: nothing is restricted, trading
    /// stays stopped.
    StaysShutdown,
    /// Restrict to OBSERVE_ONLY, with the CRITICAL alert when the state or the exchange
    /// disagreed (`alert`), and a warning saying why a clean start did not resume.
    Restrict {
        alert: bool,
        warning: Option<String>,
    },
}

/// The resume-or-restrict decision, pure. Only a clean recovery (state restored, exchange
/// reconciled, no difference) of a stored AGGRESSIVE mode resumes; on a first start (nothing
/// stored, no records) the fail-safe's current, configured initial mode stands in for the
/// stored one. Everything else is OBSERVE_ONLY; an unclean one also alerts.
pub fn resume_decision(
    clean: bool,
    stored_mode: Option<TradingMode>,
    has_records: bool,
    current: Option<TradingMode>,
) -> Resume {
    let mode_to_resume = stored_mode.or(if has_records { None } else { current });
    if clean && mode_to_resume == Some(TradingMode::Aggressive) {
        return if current == Some(TradingMode::Shutdown) {
            Resume::StaysShutdown
        } else {
            Resume::Resume
        };
    }
    let warning = clean.then(|| {
        let stored =
            stored_mode.map_or("no stored mode".to_string(), |m| format!("stored mode {m}"));
        format!("{stored}: trading is not resumed automatically")
    });
    Resume::Restrict {
        alert: !clean,
        warning,
    }
}

/// Runs the recovery: load, wait for the broker, query the exchange for `currencies` (the
/// daemon passes `config.currencies`), reconcile, decide. Never takes longer than
/// `config.timeout` (plus a few milliseconds); never panics on what the exchange or the store
/// return. Sets `last_recovery_duration_seconds` and `last_recovery_success` in `metrics`.
pub async fn recover(
    names: &Names,
    config: &RecoveryConfig,
    currencies: &[String],
    metrics: &Metrics,
) -> RecoveryReport {
    let started = Instant::now();
    let deadline = started + config.timeout;
    // Four fifths for gathering, the rest is kept for the decision (fail-safe, alert).
    let gather_budget = config.timeout.mul_f64(0.8);
    let mut p = Progress {
        stage: "starting",
        ..Progress::default()
    };
    let gathered =
        tokio::time::timeout(gather_budget, gather(names, config, currencies, &mut p)).await;
    if gathered.is_err() {
        p.errors.push(format!(
            "recovery gave up after {} ms while {}",
            ms(gather_budget),
            p.stage
        ));
    }

    let clean = p.state_restored && p.broker_reconciled && p.differences.is_empty();
    let current = fail_safe_mode(names, deadline).await;
    let decision = resume_decision(clean, p.stored_mode, !p.records.is_empty(), current);
    let strategy_resumed = decision == Resume::Resume;
    match decision {
        Resume::Resume => {}
        Resume::StaysShutdown => p
            .warnings
            .push("the fail-safe is in SHUTDOWN; trading stays stopped".into()),
        Resume::Restrict { alert, warning } => {
            p.warnings.extend(warning);
            if let Err(e) = observe_only(names, deadline).await {
                p.errors.push(e);
            }
            if alert {
                raise_alert(names, &p);
            }
        }
    }

    let took = started.elapsed();
    let report = RecoveryReport {
        success: p.state_restored && p.broker_reconciled,
        recovery_time_ms: ms(took),
        state_restored: p.state_restored,
        broker_reconciled: p.broker_reconciled,
        strategy_resumed,
        differences: p.differences,
        warnings: p.warnings,
        errors: p.errors,
        finished_at: crate::clock::now(),
    };
    metrics
        .last_recovery_duration_seconds
        .set(took.as_secs_f64());
    metrics.last_recovery_success.set(i64::from(report.success));
    let as_json = serde_json::to_string(&report).unwrap_or_default();
    if report.success && report.differences.is_empty() && report.errors.is_empty() {
        info!(
            recovery_time_ms = report.recovery_time_ms,
            strategy_resumed = report.strategy_resumed,
            report = %as_json,
            "recovery finished"
        );
    } else {
        warn!(
            recovery_time_ms = report.recovery_time_ms,
            success = report.success,
            differences = report.differences.len(),
            report = %as_json,
            "recovery finished with problems; trading restricted to OBSERVE_ONLY"
        );
    }
    report
}

async fn gather(names: &Names, config: &RecoveryConfig, currencies: &[String], p: &mut Progress) {
    p.stage = "loading the stored state";
    let state = match load(names).await {
        Ok(state) => state,
        Err(e) => {
            p.errors.push(format!("stored state not loaded: {e}"));
            p.errors
                .push("not reconciled with the exchange: no local state to compare".into());
            return;
        }
    };
    let (records, bad) = StrategyRecord::all_from_state(&state);
    for (key, e) in bad {
        p.warnings.push(format!("unreadable record {key}: {e}"));
    }
    p.records = records;
    match state
        .get(MODE_KEY)
        .cloned()
        .map(serde_json::from_value::<StoredMode>)
    {
        Some(Ok(s)) => p.stored_mode = Some(s.mode),
        Some(Err(e)) => p.warnings.push(format!("unreadable stored mode: {e}")),
        None => {}
    }
    p.state_restored = true;

    p.stage = "waiting for the broker connection";
    wait_connected(names).await;

    p.stage = "querying the exchange";
    let mut positions = Vec::new();
    let mut open_orders = Vec::new();
    for currency in currencies {
        match request::<Vec<ExPosition>>(
            names,
            "private/get_positions",
            json!({ "currency": currency }),
        )
        .await
        {
            Ok(v) => positions.extend(v),
            Err(e) => {
                p.errors.push(e);
                return;
            }
        }
        match request::<Vec<ExOrder>>(
            names,
            "private/get_open_orders_by_currency",
            json!({ "currency": currency }),
        )
        .await
        {
            Ok(v) => open_orders.extend(v),
            Err(e) => {
                p.errors.push(e);
                return;
            }
        }
    }
    let labels: Vec<String> = p
        .records
        .iter()
        .flat_map(|r| r.intents_in_flight.iter().map(|i| i.label.clone()))
        .collect();
    let mut labelled = Vec::with_capacity(labels.len());
    for label in labels {
        let mut found = None;
        for currency in currencies {
            match request::<Vec<ExOrder>>(
                names,
                "private/get_order_state_by_label",
                json!({ "currency": currency, "label": label }),
            )
            .await
            {
                Ok(v) => {
                    // The newest order with this label decides.
                    if let Some(newest) = v.into_iter().max_by_key(|o| o.last_update_timestamp) {
                        found = Some(newest);
                        break;
                    }
                }
                Err(e) => {
                    p.errors.push(e);
                    return;
                }
            }
        }
        labelled.push((label, found));
    }
    p.broker_reconciled = true;
    p.differences = reconcile(
        &p.records,
        &positions,
        &open_orders,
        &labelled,
        &config.label_prefix,
    );
}

async fn load(names: &Names) -> Result<BTreeMap<String, Value>, String> {
    let mut last = String::new();
    for attempt in 1..=LOAD_ATTEMPTS {
        let result = client::load_state(names, LOAD_TIMEOUT).await;
        match result {
            Ok(state) => return Ok(state),
            // Expected for the first few ms of a start: the persister is not registered yet.
            Err(e) if attempt <= 5 && e.contains("not running") => {
                debug!(attempt, error = %e, "recovery waits for the state-persister");
                last = e;
            }
            Err(e) => {
                warn!(attempt, attempts = LOAD_ATTEMPTS, error = %e, "recovery could not load the stored state");
                last = e;
            }
        }
        tokio::time::sleep(LOAD_RETRY.nominal(attempt - 1)).await;
    }
    Err(last)
}

async fn wait_connected(names: &Names) {
    loop {
        if let Some(broker) = names.get::<BrokerMsg>()
            && let Ok(ractor::rpc::CallResult::Success(s)) =
                broker.call(BrokerMsg::Status, Some(ASK_TIMEOUT)).await
            && s.state == LinkState::Connected
        {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn request<T: serde::de::DeserializeOwned>(
    names: &Names,
    method: &str,
    params: Value,
) -> Result<T, String> {
    let value = client::request(names, method, params)
        .await
        .map_err(|e| format!("{method}: {e}"))?;
    serde_json::from_value(value).map_err(|e| format!("{method}: unexpected answer: {e}"))
}

/// The fail-safe's mode, once it has loaded its stored mode (None if it never answers by
/// `deadline`).
async fn fail_safe_mode(names: &Names, deadline: Instant) -> Option<TradingMode> {
    loop {
        if let Some(fs) = names.get::<FailSafeMsg>()
            && let Ok(ractor::rpc::CallResult::Success(s)) =
                fs.call(FailSafeMsg::Status, Some(ASK_TIMEOUT)).await
            && s.loaded
        {
            return Some(s.mode);
        }
        if Instant::now() + POLL >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sets OBSERVE_ONLY unless the fail-safe is already there or in SHUTDOWN (which stays).
/// Waits for the fail-safe to have loaded its stored mode, so a stored AGGRESSIVE cannot
/// overwrite the restriction afterwards.
async fn observe_only(names: &Names, deadline: Instant) -> Result<(), String> {
    let mut last = "the fail-safe did not answer".to_string();
    loop {
        match fail_safe_mode(names, deadline).await {
            Some(TradingMode::Shutdown | TradingMode::ObserveOnly) => return Ok(()),
            Some(TradingMode::Aggressive) => {
                if let Some(fs) = names.get::<FailSafeMsg>() {
                    match fs
                        .call(
                            |reply| FailSafeMsg::Restrict {
                                mode: TradingMode::ObserveOnly,
                                reason: "recovery found differences with the exchange or could \
                                         not reconcile"
                                    .into(),
                                reply,
                            },
                            Some(ASK_TIMEOUT.max(Duration::from_secs(2))),
                        )
                        .await
                    {
                        Ok(ractor::rpc::CallResult::Success(Ok(()))) => return Ok(()),
                        Ok(ractor::rpc::CallResult::Success(Err(e))) => last = e,
                        Ok(_) => last = "the fail-safe did not answer Restrict".into(),
                        Err(e) => last = e.to_string(),
                    }
                }
            }
            None => {}
        }
        if Instant::now() + POLL >= deadline {
            return Err(format!(
                "could not set the fail-safe to OBSERVE_ONLY: {last}"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn raise_alert(names: &Names, p: &Progress) {
    let mut causes = Vec::new();
    if !p.state_restored {
        causes.push("the stored state could not be loaded".to_string());
    } else if !p.broker_reconciled {
        causes.push("the exchange did not answer the reconciliation queries".to_string());
    }
    if !p.differences.is_empty() {
        let list: Vec<String> = p
            .differences
            .iter()
            .map(|d| serde_json::to_string(d).unwrap_or_default())
            .collect();
        causes.push(format!(
            "{} difference(s) with the exchange: {}",
            p.differences.len(),
            list.join("; ")
        ));
    }
    let alert = Alert {
        key: ALERT_KEY.into(),
        severity: Severity::Warning,
        title: "Recovery: state and exchange disagree; trading is OBSERVE_ONLY".into(),
        message: causes.join(". "),
        root_cause: "the daemon restarted (crash or restart) and could not confirm that its \
                     stored state matches the exchange"
            .into(),
        recommended_action: "check the listed positions and orders on the exchange, fix or \
                             adopt them, then set the mode to AGGRESSIVE"
            .into(),
        metadata: json!({
            "differences": p.differences,
            "state_restored": p.state_restored,
            "broker_reconciled": p.broker_reconciled,
            "errors": p.errors,
        }),
    };
    client::raise(names, alert);
}

#[cfg(test)]
mod tests;
