//! Start-up checks and periodic data integrity: one check runner used at start-up (before the
//! strategy may act), every `[checks] interval` while running, before an operator may set
//! AGGRESSIVE ([`run_online`]), and by `tradebaas check` ([`run_offline`]).
//!
//! The checks, each named in the report and in alerts:
//! - `event_log` — unique ids, continuous sequence, hash chain, timestamps not going backwards and
//!   not later than now + `clock_skew`;
//! - `snapshots` — unique, chronological, not in the future, each after the previous one's event,
//!   payloads JSON objects;
//! - `capital` — the newest snapshot *with capital* ([`capital_missing`]) has per-currency
//!   account summaries that are internally consistent (see [`capital`]); online, its equity
//!   agrees with a fresh `private/get_account_summary` within `capital_tolerance`. A snapshot
//!   holding an error instead of an account summary is a failed snapshot: it is looked past,
//!   never passed on;
//! - `strategy_states` — every `strategy.<id>` record deserializes and its lifecycle and position
//!   agree ([`record_problems`]);
//! - `mode` — the stored `mode` value is a valid [`StoredMode`];
//! - `exchange` (online only) — `public/get_time` answers, with a clock within `clock_skew`.
//!
//! The evaluation is pure (functions over [`IntegrityFacts`] and exchange answers, unit-tested
//! here). The store is read on a blocking thread through its own read-only connection
//! ([`read_integrity_facts`]), never through the persister's database thread: walking a long
//! event log takes seconds and must not delay commits, and `tradebaas check` must work the same
//! way without a daemon. Exchange calls go through the broker ([`crate::broker::request`]).
//! Nothing here runs inside an actor handler.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ractor::rpc::CallResult;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{error, info, warn};

use crate::alert::{Alert, AlertMsg, Severity};
use crate::failsafe::{FailSafeMsg, MODE_KEY, StoredMode};
use crate::mode::TradingMode;
use crate::names::{ChildName, Names};
use crate::store::{
    CHECKPOINT_KEY, Change, Checkpoint, IntegrityFacts, Scope, SnapshotRow, read_integrity_facts,
    verify_slice,
};
use crate::strategy::{Lifecycle, RECORD_KEY_PREFIX, StrategyRecord};

/// Check names, as they appear in reports and alert keys.
pub const EVENT_LOG: &str = "event_log";
pub const SNAPSHOTS: &str = "snapshots";
pub const CAPITAL: &str = "capital";
pub const STRATEGY_STATES: &str = "strategy_states";
pub const MODE: &str = "mode";
pub const EXCHANGE: &str = "exchange";

/// The alert key of failed start-up checks (one alert naming every failed check).
pub const STARTUP_ALERT_KEY: &str = "startup_checks:failed";
/// The fail-safe trigger fired when the periodic capital reconciliation fails.
pub const CAPITAL_TRIGGER: &str = "capital_inconsistent";

/// The alert key of a periodic violation of `check`: `integrity:<check>`.
pub fn integrity_alert_key(check: &str) -> String {
    format!("integrity:{check}")
}

/// Sums that must match exactly are compared with this relative slack (rounding of the
/// exchange's decimals), and never tighter than [`SUM_ABSOLUTE`].
const SUM_RELATIVE: f64 = 1e-6;
const SUM_ABSOLUTE: f64 = 1e-8;
/// Bound on the exchange questions of one run, whatever the broker's own timeouts.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a restriction to OBSERVE_ONLY keeps trying while the fail-safe loads.
const RESTRICT_ATTEMPTS: u32 = 50;

/// `[checks]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChecksConfig {
    /// How often the integrity checks run while the daemon runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Event and snapshot timestamps may be this far ahead of the local clock, and the local
    /// clock this far from the exchange's.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Largest accepted relative difference between the newest snapshot's equity and the
    /// exchange's, per currency: |local − exchange| / max(|local|, |exchange|).
    pub capital_tolerance: f64,
    /// Events of the whole chain re-verified per periodic run, oldest first, in the background
    /// (`store::verify_slice`): an edited old row is found within
    /// `ceil(events / full_verify_slice) × interval`.
    pub full_verify_slice: u64,
}

impl Default for ChecksConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60 * 60),
            clock_skew: Duration::from_secs(5 * 60),
            capital_tolerance: 0.10,
            full_verify_slice: 250_000,
        }
    }
}

impl ChecksConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_millis(100) {
            return Err("interval must be at least 100ms".into());
        }
        if self.interval > Duration::from_secs(7 * 24 * 60 * 60) {
            return Err("interval must be at most 7d".into());
        }
        if self.full_verify_slice == 0 {
            return Err("full_verify_slice must be at least 1".into());
        }
        if self.clock_skew.is_zero() {
            return Err("clock_skew must be greater than 0".into());
        }
        if !(self.capital_tolerance.is_finite()
            && self.capital_tolerance > 0.0
            && self.capital_tolerance < 1.0)
        {
            return Err(
                "capital_tolerance must be a ratio above 0 and below 1 (0.10 = 10%)".into(),
            );
        }
        Ok(())
    }
}

/// Why a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// At start-up, before the strategy may act.
    Startup,
    /// Every `[checks] interval`.
    Periodic,
    /// Asked for (e.g. before an operator sets AGGRESSIVE).
    OnDemand,
    /// `tradebaas check`: the store only, no exchange.
    Offline,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    /// What was checked, or what is wrong.
    pub detail: String,
}

impl Check {
    fn pass(name: &str, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed: true,
            detail: detail.into(),
        }
    }

    fn fail(name: &str, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed: false,
            detail: detail.into(),
        }
    }

    fn from_problems(name: &str, ok: impl Into<String>, problems: &[String]) -> Self {
        if problems.is_empty() {
            Self::pass(name, ok)
        } else {
            Self::fail(name, problems.join("; "))
        }
    }
}

/// A run of the checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChecksReport {
    pub kind: RunKind,
    pub at: DateTime<Utc>,
    /// Every check passed.
    pub passed: bool,
    pub took_ms: u64,
    pub checks: Vec<Check>,
}

impl ChecksReport {
    fn new(kind: RunKind, at: DateTime<Utc>, checks: Vec<Check>, took: Duration) -> Self {
        Self {
            kind,
            at,
            passed: checks.iter().all(|c| c.passed),
            took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            checks,
        }
    }

    /// The names of the failed checks, in report order.
    pub fn failed(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The check called `name`, if it ran.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The human report `tradebaas check` prints: one line per check, then the verdict.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let verdict = if c.passed { "PASS" } else { "FAIL" };
            out.push_str(&format!("{verdict}  {:<16} {}\n", c.name, c.detail));
        }
        if self.passed {
            out.push_str(&format!("all {} checks passed\n", self.checks.len()));
        } else {
            out.push_str(&format!("FAILED: {}\n", self.failed().join(", ")));
        }
        out
    }
}

// ----- pure evaluation -----

/// `event_log`: the chain verification plus timestamps not later than `now + skew`.
pub fn event_log(facts: &IntegrityFacts, now: DateTime<Utc>, skew: Duration) -> Check {
    let chain = &facts.chain;
    let mut problems = chain.problems.clone();
    let limit = now + chrono::Duration::from_std(skew).unwrap_or(chrono::Duration::MAX);
    if let Some(newest) = chain.newest_ts
        && newest > limit
    {
        problems.push(format!(
            "newest event timestamp {} is in the future (now {}, clock_skew {})",
            newest.to_rfc3339(),
            now.to_rfc3339(),
            format_args!("{skew:?}")
        ));
    }
    let walked = match (facts.scope, facts.checkpoint_seq) {
        (Scope::Tail, Some(cp)) => {
            format!("{} events after the checkpoint at seq {cp}", chain.events)
        }
        _ => format!("{} events", chain.events),
    };
    Check::from_problems(
        EVENT_LOG,
        format!("{walked}, last seq {}, hash chain intact", chain.last_seq),
        &problems,
    )
}

/// `snapshots`: unique ids and times, strictly chronological, not in the future beyond `skew`,
/// each recorded after the previous one's event and not after the last event, payloads JSON
/// objects.
pub fn snapshots(rows: &[SnapshotRow], last_seq: u64, now: DateTime<Utc>, skew: Duration) -> Check {
    let limit = now + chrono::Duration::from_std(skew).unwrap_or(chrono::Duration::MAX);
    let mut problems = Vec::new();
    let mut prev: Option<(i64, DateTime<Utc>, u64)> = None;
    for row in rows {
        let id = row.id;
        let taken_at = match DateTime::parse_from_rfc3339(&row.taken_at) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => {
                problems.push(format!(
                    "snapshot {id}: bad taken_at {:?}: {e}",
                    row.taken_at
                ));
                continue;
            }
        };
        if let Some((pid, pt, pseq)) = prev {
            if id <= pid {
                problems.push(format!("snapshot {id}: id not after the previous {pid}"));
            }
            if taken_at <= pt {
                problems.push(format!(
                    "snapshot {id}: taken_at {} is not after the previous one ({})",
                    row.taken_at,
                    pt.to_rfc3339()
                ));
            }
            if row.event_seq <= pseq {
                problems.push(format!(
                    "snapshot {id}: event seq {} is not after the previous snapshot's {pseq}",
                    row.event_seq
                ));
            }
        }
        if taken_at > limit {
            problems.push(format!(
                "snapshot {id}: taken_at {} is in the future",
                row.taken_at
            ));
        }
        if row.event_seq > last_seq {
            problems.push(format!(
                "snapshot {id}: event seq {} is past the last event ({last_seq})",
                row.event_seq
            ));
        }
        if !serde_json::from_str::<Value>(&row.payload).is_ok_and(|v| v.is_object()) {
            problems.push(format!("snapshot {id}: payload is not a JSON object"));
        }
        prev = Some((id, taken_at, row.event_seq));
    }
    let ok = match rows.last() {
        Some(r) => format!("{} snapshots, newest {}", rows.len(), r.taken_at),
        None => "no snapshots yet".into(),
    };
    Check::from_problems(SNAPSHOTS, ok, &problems)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= SUM_ABSOLUTE.max(SUM_RELATIVE * a.abs().max(b.abs()))
}

/// The local capital of one snapshot: equity per currency, and currencies it holds no
/// account summary for (the exchange did not answer when it was taken) with the reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalCapital {
    pub equity: BTreeMap<String, f64>,
    pub unknown: Vec<(String, String)>,
}

/// Reads and checks the `capital` object of a snapshot payload (`{currency: account summary}`,
/// as `daily_snapshots` writes it). Per currency, the accounts must add up:
/// - `equity` and `balance` are present; every amount present (`equity`, `balance`,
///   `margin_balance`, `available_funds`, `initial_margin`, `maintenance_margin`, `session_upl`,
///   `session_rpl`, `total_pl`) is a finite number;
/// - `equity`, `balance`, `initial_margin`, `maintenance_margin` are not negative, and
///   `maintenance_margin ≤ initial_margin`;
/// - `equity = balance + session_upl` (futures accounts: TradeBaas trades no options);
/// - `available_funds = margin_balance − initial_margin`;
/// - a `currency` field, when present, names the currency it is filed under.
///
/// An entry with an `error` (the exchange did not answer when the snapshot was taken) is not a
/// fault of the store: it is listed in [`LocalCapital::unknown`].
pub fn local_capital(payload: &Value) -> Result<LocalCapital, Vec<String>> {
    let Some(capital) = payload.get("capital").and_then(Value::as_object) else {
        return Err(vec!["the snapshot has no `capital` object".into()]);
    };
    let mut out = LocalCapital::default();
    let mut problems = Vec::new();
    for (currency, summary) in capital {
        let Some(summary) = summary.as_object() else {
            problems.push(format!("{currency}: account summary is not an object"));
            continue;
        };
        if let Some(e) = summary.get("error") {
            let reason = e.as_str().map_or_else(|| e.to_string(), str::to_owned);
            out.unknown.push((currency.clone(), reason));
            continue;
        }
        if let Some(c) = summary.get("currency")
            && !c.as_str().is_some_and(|c| c.eq_ignore_ascii_case(currency))
        {
            problems.push(format!("{currency}: account summary is for currency {c}"));
        }
        let mut amounts = BTreeMap::new();
        for field in [
            "equity",
            "balance",
            "margin_balance",
            "available_funds",
            "initial_margin",
            "maintenance_margin",
            "session_upl",
            "session_rpl",
            "total_pl",
        ] {
            match summary.get(field) {
                None | Some(Value::Null) => {}
                Some(v) => match v.as_f64().filter(|x| x.is_finite()) {
                    Some(x) => {
                        amounts.insert(field, x);
                    }
                    None => problems.push(format!("{currency}: {field} is not a finite number")),
                },
            }
        }
        let get = |f: &str| amounts.get(f).copied();
        let (Some(equity), Some(balance)) = (get("equity"), get("balance")) else {
            problems.push(format!("{currency}: equity and balance are required"));
            continue;
        };
        for field in ["equity", "balance", "initial_margin", "maintenance_margin"] {
            if let Some(x) = get(field)
                && x < 0.0
            {
                problems.push(format!("{currency}: {field} {x} is negative"));
            }
        }
        if let (Some(im), Some(mm)) = (get("initial_margin"), get("maintenance_margin"))
            && mm > im
            && !close(mm, im)
        {
            problems.push(format!(
                "{currency}: maintenance_margin {mm} exceeds initial_margin {im}"
            ));
        }
        if let Some(upl) = get("session_upl")
            && !close(equity, balance + upl)
        {
            problems.push(format!(
                "{currency}: equity {equity} ≠ balance {balance} + session_upl {upl}"
            ));
        }
        if let (Some(af), Some(mb), Some(im)) = (
            get("available_funds"),
            get("margin_balance"),
            get("initial_margin"),
        ) && !close(af, mb - im)
        {
            problems.push(format!(
                "{currency}: available_funds {af} ≠ margin_balance {mb} − initial_margin {im}"
            ));
        }
        out.equity.insert(currency.clone(), equity);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Why a snapshot payload holds no capital, or `None` when it does: a `capital` object with at
/// least one currency, each an account summary object without an `error`. A snapshot without
/// capital (the exchange did not answer when it was taken, for any one currency) is a failed
/// snapshot: the `snapshot_failing` trigger's clock is not reset by it (the persister tracks
/// `last_capital_snapshot_at` with this rule) and the `capital` check looks past it.
pub fn capital_missing(payload: &Value) -> Option<String> {
    let Some(capital) = payload.get("capital").and_then(Value::as_object) else {
        return Some("no `capital` object".into());
    };
    if capital.is_empty() {
        return Some("`capital` names no currency".into());
    }
    let missing: Vec<String> = capital
        .iter()
        .filter_map(|(currency, summary)| match summary.as_object() {
            None => Some(format!("{currency}: not an account summary")),
            Some(o) => o.get("error").map(|e| {
                let reason = e.as_str().map_or_else(|| e.to_string(), str::to_owned);
                format!("{currency}: {reason}")
            }),
        })
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(missing.join("; "))
    }
}

/// The relative difference |a − b| / max(|a|, |b|) (0 when both are 0).
pub fn relative_difference(a: f64, b: f64) -> f64 {
    let scale = a.abs().max(b.abs());
    if scale == 0.0 {
        0.0
    } else {
        (a - b).abs() / scale
    }
}

/// What the exchange said about one currency's account: its summary, or why there is none.
pub type FreshSummary = Result<Value, String>;

/// What [`newest_with_capital`] found.
#[derive(Debug)]
pub struct WithCapital<'a> {
    /// The newest snapshot holding capital, with its parsed payload.
    pub found: Option<(&'a SnapshotRow, Value)>,
    /// The newer snapshots looked past, newest first: (id, why they hold no capital).
    pub skipped: Vec<(i64, String)>,
}

/// The newest of `rows` (oldest first) that holds capital ([`capital_missing`]) and the newer
/// ones looked past. A payload that is not JSON stops the walk: `Err((id, parse error))`.
pub fn newest_with_capital(rows: &[SnapshotRow]) -> Result<WithCapital<'_>, (i64, String)> {
    let mut skipped = Vec::new();
    for row in rows.iter().rev() {
        let payload: Value =
            serde_json::from_str(&row.payload).map_err(|e| (row.id, e.to_string()))?;
        match capital_missing(&payload) {
            None => {
                return Ok(WithCapital {
                    found: Some((row, payload)),
                    skipped,
                });
            }
            Some(why) => skipped.push((row.id, why)),
        }
    }
    Ok(WithCapital {
        found: None,
        skipped,
    })
}

/// `capital`: the newest snapshot with capital ([`newest_with_capital`]) is consistent
/// ([`local_capital`]); when `fresh` holds exchange answers, each currency's equity agrees with
/// the exchange's within `tolerance`. Newer snapshots without capital (failed snapshots) are
/// looked past and named in the detail, never passed on. No snapshot with capital yet passes
/// with a note, as no snapshot at all does (nothing to reconcile; the `snapshot_failing`
/// trigger watches how long that lasts); a currency the exchange did not answer for now is not
/// compared (noted; reachability is the `exchange` check's job).
pub fn capital(
    rows: &[SnapshotRow],
    fresh: Option<&BTreeMap<String, FreshSummary>>,
    tolerance: f64,
) -> Check {
    let WithCapital { found, skipped } = match newest_with_capital(rows) {
        Ok(f) => f,
        Err((id, e)) => return Check::fail(CAPITAL, format!("snapshot {id}: not JSON: {e}")),
    };
    let skipped_note = |skipped: &[(i64, String)]| {
        let newest = skipped
            .first()
            .map(|(id, why)| format!("newest, snapshot {id}: {why}"))
            .unwrap_or_default();
        format!(
            "{} newer snapshot(s) without capital looked past ({newest})",
            skipped.len()
        )
    };
    let Some((row, payload)) = found else {
        let note = if skipped.is_empty() {
            "no snapshot yet: nothing to reconcile (the first daily snapshot is taken after \
             start-up)"
                .to_string()
        } else {
            format!(
                "no snapshot with capital: nothing to reconcile; {}",
                skipped_note(&skipped)
            )
        };
        return Check::pass(CAPITAL, note);
    };
    let local = match local_capital(&payload) {
        Ok(l) => l,
        Err(problems) => {
            return Check::fail(
                CAPITAL,
                format!(
                    "snapshot {} ({}): {}",
                    row.id,
                    row.taken_at,
                    problems.join("; ")
                ),
            );
        }
    };
    let mut notes = vec![format!(
        "snapshot {} ({}) consistent for {}",
        row.id,
        row.taken_at,
        if local.equity.is_empty() {
            "no currency".to_string()
        } else {
            local.equity.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    )];
    for (currency, reason) in &local.unknown {
        notes.push(format!(
            "{currency}: no account summary in the snapshot ({reason})"
        ));
    }
    if !skipped.is_empty() {
        notes.push(skipped_note(&skipped));
    }
    let Some(fresh) = fresh else {
        notes.push("not compared with the exchange (offline)".into());
        return Check::pass(CAPITAL, notes.join("; "));
    };
    let mut problems = Vec::new();
    for (currency, local_equity) in &local.equity {
        match fresh.get(currency) {
            None => notes.push(format!("{currency}: not asked")),
            Some(Err(e)) => notes.push(format!("{currency}: not compared ({e})")),
            Some(Ok(v)) => match v.get("equity").and_then(Value::as_f64) {
                Some(ex) if ex.is_finite() => {
                    let diff = relative_difference(*local_equity, ex);
                    if diff > tolerance {
                        problems.push(format!(
                            "{currency}: local equity {local_equity} vs exchange {ex} differ by \
                             {:.2}% (tolerance {:.2}%)",
                            diff * 100.0,
                            tolerance * 100.0
                        ));
                    } else {
                        notes.push(format!(
                            "{currency}: equity {local_equity} agrees with the exchange's {ex} \
                             ({:.2}%)",
                            diff * 100.0
                        ));
                    }
                }
                _ => problems.push(format!(
                    "{currency}: the exchange's account summary has no finite equity"
                )),
            },
        }
    }
    if problems.is_empty() {
        Check::pass(CAPITAL, notes.join("; "))
    } else {
        Check::fail(CAPITAL, problems.join("; "))
    }
}

/// What is wrong with one strategy record (empty: valid). IDLE, ANALYZING, SIGNAL_DETECTED and
/// ENTERING_POSITION hold no position (a position appears only with POSITION_OPEN), IDLE also no
/// intent in flight; POSITION_OPEN and CLOSING hold a position with an instrument, a positive
/// finite size and a positive finite entry price; intents have positive finite sizes.
pub fn record_problems(record: &StrategyRecord) -> Vec<String> {
    let mut problems = Vec::new();
    let id = &record.id;
    let lifecycle = record.lifecycle.as_str();
    match (record.lifecycle, &record.position) {
        (
            Lifecycle::Idle
            | Lifecycle::Analyzing
            | Lifecycle::SignalDetected
            | Lifecycle::EnteringPosition,
            Some(p),
        ) => problems.push(format!(
            "{id}: {lifecycle} but holds a position on {}",
            p.instrument
        )),
        (Lifecycle::PositionOpen | Lifecycle::Closing, None) => {
            problems.push(format!("{id}: {lifecycle} without a position"));
        }
        (Lifecycle::PositionOpen | Lifecycle::Closing, Some(p)) => {
            if p.instrument.is_empty() {
                problems.push(format!("{id}: position without an instrument"));
            }
            if !(p.size.is_finite() && p.size > 0.0) {
                problems.push(format!("{id}: position size {} is not positive", p.size));
            }
            if !(p.entry_price.is_finite() && p.entry_price > 0.0) {
                problems.push(format!(
                    "{id}: position entry price {} is not positive",
                    p.entry_price
                ));
            }
        }
        _ => {}
    }
    if record.lifecycle == Lifecycle::Idle && !record.intents_in_flight.is_empty() {
        problems.push(format!("{id}: IDLE with intents in flight"));
    }
    for intent in &record.intents_in_flight {
        if !(intent.size.is_finite() && intent.size > 0.0) {
            problems.push(format!(
                "{id}: intent {} has size {}",
                intent.label, intent.size
            ));
        }
    }
    problems
}

/// `strategy_states`: every `strategy.<id>` state value deserializes into a
/// [`StrategyRecord`] naming that id, and passes [`record_problems`].
pub fn strategy_states(state: &BTreeMap<String, String>) -> Check {
    let mut problems = Vec::new();
    let mut n = 0;
    for (key, raw) in state.range(RECORD_KEY_PREFIX.to_string()..) {
        let Some(id) = key.strip_prefix(RECORD_KEY_PREFIX) else {
            break;
        };
        n += 1;
        match serde_json::from_str::<StrategyRecord>(raw) {
            Ok(r) if r.id != id => problems.push(format!("{key}: record names id {:?}", r.id)),
            Ok(r) => problems.extend(record_problems(&r)),
            Err(e) => problems.push(format!("{key}: unreadable: {e}")),
        }
    }
    Check::from_problems(
        STRATEGY_STATES,
        format!("{n} strategy records valid"),
        &problems,
    )
}

/// `mode`: the stored `mode` value, if any, is a [`StoredMode`] (none stored yet passes: the
/// fail-safe then uses its resolved initial mode).
pub fn mode(state: &BTreeMap<String, String>) -> Check {
    match state.get(MODE_KEY) {
        None => Check::pass(MODE, "no mode stored yet (first start)"),
        Some(raw) => match serde_json::from_str::<StoredMode>(raw) {
            Ok(m) => Check::pass(MODE, format!("stored mode {} ({})", m.mode, m.reason)),
            Err(e) => Check::fail(MODE, format!("stored mode is unreadable: {e}")),
        },
    }
}

/// `exchange`: the answer to `public/get_time` (milliseconds since the epoch), asked at
/// `sent` and answered at `received`: it must come, and the exchange's clock must be within
/// `skew` of ours.
pub fn exchange(
    answer: Result<Value, String>,
    sent: DateTime<Utc>,
    received: DateTime<Utc>,
    skew: Duration,
) -> Check {
    let value = match answer {
        Ok(v) => v,
        Err(e) => return Check::fail(EXCHANGE, format!("public/get_time failed: {e}")),
    };
    let Some(ms) = value.as_i64() else {
        return Check::fail(EXCHANGE, format!("public/get_time answered {value}"));
    };
    let Some(theirs) = DateTime::<Utc>::from_timestamp_millis(ms) else {
        return Check::fail(EXCHANGE, format!("public/get_time answered {ms}"));
    };
    let rtt = received - sent;
    let ours = sent + rtt / 2;
    let offset = (theirs - ours).abs();
    let allowed = chrono::Duration::from_std(skew).unwrap_or(chrono::Duration::MAX) + rtt / 2;
    if offset > allowed {
        return Check::fail(
            EXCHANGE,
            format!(
                "clock differs from the exchange's by {} ms (clock_skew {})",
                offset.num_milliseconds(),
                format_args!("{skew:?}")
            ),
        );
    }
    Check::pass(
        EXCHANGE,
        format!(
            "public/get_time answered in {} ms, clock offset {} ms",
            rtt.num_milliseconds(),
            offset.num_milliseconds()
        ),
    )
}

/// The store checks over `facts` (`capital` compared with `fresh` when given).
pub fn evaluate_store(
    facts: &IntegrityFacts,
    fresh: Option<&BTreeMap<String, FreshSummary>>,
    config: &ChecksConfig,
    now: DateTime<Utc>,
) -> Vec<Check> {
    vec![
        event_log(facts, now, config.clock_skew),
        snapshots(
            &facts.snapshots,
            facts.chain.last_seq,
            now,
            config.clock_skew,
        ),
        capital(&facts.snapshots, fresh, config.capital_tolerance),
        strategy_states(&facts.state),
        mode(&facts.state),
    ]
}

/// Every store check failing with the same reason (the store could not be read).
fn unreadable_store(reason: &str) -> Vec<Check> {
    [EVENT_LOG, SNAPSHOTS, CAPITAL, STRATEGY_STATES, MODE]
        .iter()
        .map(|n| Check::fail(n, format!("cannot read the store: {reason}")))
        .collect()
}

// ----- runners -----

/// Reads the store on a blocking thread (never on an async worker). The daemon reads it once
/// right after opening the store, before any actor can write (the fail-safe rewrites an
/// unreadable mode as SHUTDOWN, for one), and hands the result to [`startup`].
pub async fn read_facts(path: PathBuf) -> Result<IntegrityFacts, String> {
    match tokio::task::spawn_blocking(move || read_integrity_facts(&path, Scope::Tail)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the reading thread failed: {e}")),
    }
}

/// The offline subset (every check but `exchange`; capital not compared with the exchange) on
/// the store at `path`, read-only: what `tradebaas check` prints. Blocking.
pub fn run_offline(path: &Path, config: &ChecksConfig) -> ChecksReport {
    let started = Instant::now();
    let now = Utc::now();
    let checks = match read_integrity_facts(path, Scope::Tail) {
        Ok(facts) => evaluate_store(&facts, None, config, now),
        Err(e) => unreadable_store(&e.to_string()),
    };
    ChecksReport::new(RunKind::Offline, now, checks, started.elapsed())
}

/// What a runner needs.
#[derive(Debug, Clone)]
pub struct ChecksArgs {
    /// The store file (`<data_dir>/tradebaas.db`).
    pub store_path: PathBuf,
    pub config: ChecksConfig,
}

async fn ask_exchange(names: &Names, method: &str, params: Value) -> Result<Value, String> {
    match tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        crate::broker::request(names, method, params),
    )
    .await
    {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} s", EXCHANGE_TIMEOUT.as_secs())),
    }
}

/// Every check, online: the store checks plus `exchange`, with the newest snapshot's equity
/// compared to a fresh `private/get_account_summary` per currency (through the broker). Never
/// blocks an actor: the store is read on a blocking thread, the exchange asked through
/// [`crate::broker::request`]. This is the function to call before allowing AGGRESSIVE: allow it
/// only when the report's `passed` is true.
pub async fn run_online(names: &Names, args: &ChecksArgs, kind: RunKind) -> ChecksReport {
    let started = Instant::now();
    let facts = read_facts(args.store_path.clone()).await;
    run_with_facts(names, args, kind, facts, started).await
}

/// [`run_online`] on store facts read already.
async fn run_with_facts(
    names: &Names,
    args: &ChecksArgs,
    kind: RunKind,
    facts: Result<IntegrityFacts, String>,
    started: Instant,
) -> ChecksReport {
    let sent = Utc::now();
    let time = ask_exchange(names, "public/get_time", json!({})).await;
    let exchange_check = exchange(time, sent, Utc::now(), args.config.clock_skew);
    let now = Utc::now();
    let mut checks = match &facts {
        Ok(facts) => {
            let mut fresh = BTreeMap::new();
            let currencies = newest_with_capital(&facts.snapshots)
                .ok()
                .and_then(|w| w.found)
                .and_then(|(_, p)| local_capital(&p).ok())
                .map(|l| l.equity.into_keys().collect::<Vec<_>>())
                .unwrap_or_default();
            for currency in currencies {
                let answer = if exchange_check.passed {
                    ask_exchange(
                        names,
                        "private/get_account_summary",
                        json!({ "currency": currency }),
                    )
                    .await
                } else {
                    Err("exchange unreachable, see `exchange`".into())
                };
                fresh.insert(currency, answer);
            }
            evaluate_store(facts, Some(&fresh), &args.config, now)
        }
        Err(e) => unreadable_store(e),
    };
    checks.push(exchange_check);
    ChecksReport::new(kind, now, checks, started.elapsed())
}

/// An on-demand run (e.g. the admin socket before it allows AGGRESSIVE): [`run_online`] with
/// [`RunKind::OnDemand`], its report shown in `/health`. It changes no mode and raises no alert:
/// the caller refuses AGGRESSIVE unless `passed`.
pub async fn on_demand(names: &Names, args: &ChecksArgs) -> ChecksReport {
    let report = run_online(names, args, RunKind::OnDemand).await;
    report_to_failsafe(names, &report);
    if !report.passed {
        warn!(failed = ?report.failed(), "on-demand checks failed");
    }
    report
}

fn raise(names: &Names, alert: Alert) {
    match names.lookup::<AlertMsg>(ChildName::Alert) {
        Some(a) => {
            if let Err(e) = a.send_message(AlertMsg::Raise(alert)) {
                warn!(error = %e, "could not raise the checks alert");
            }
        }
        None => error!(alert = ?alert, "alert actor not running; checks alert only logged"),
    }
}

fn resolve(names: &Names, key: String) {
    if let Some(a) = names.lookup::<AlertMsg>(ChildName::Alert) {
        let _ = a.send_message(AlertMsg::Resolve { key });
    }
}

/// Hands the report to the fail-safe, which shows it in `/health` and `/ready`.
fn report_to_failsafe(names: &Names, report: &ChecksReport) {
    match names.lookup::<FailSafeMsg>(ChildName::FailSafe) {
        Some(f) => {
            let _ = f.send_message(FailSafeMsg::ChecksReported(report.clone()));
        }
        None => warn!("fail-safe not running; the checks report is not shown in /health"),
    }
}

/// Restricts trading to OBSERVE_ONLY (a SHUTDOWN stays), retrying while the fail-safe loads.
/// Whether the restriction was confirmed.
pub async fn restrict(names: &Names, reason: &str) -> bool {
    for _ in 0..RESTRICT_ATTEMPTS {
        if let Some(fs) = names.lookup::<FailSafeMsg>(ChildName::FailSafe)
            && let Ok(CallResult::Success(Ok(()))) = fs
                .call(
                    |reply| FailSafeMsg::Restrict {
                        mode: TradingMode::ObserveOnly,
                        reason: reason.to_owned(),
                        reply,
                    },
                    Some(Duration::from_secs(2)),
                )
                .await
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    error!(reason, "could not restrict trading to OBSERVE_ONLY");
    false
}

fn failed_details(report: &ChecksReport) -> Value {
    Value::Object(
        report
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| (c.name.clone(), Value::String(c.detail.clone())))
            .collect(),
    )
}

/// The CRITICAL `startup_checks` alert for a failed start-up run.
pub fn startup_alert(report: &ChecksReport) -> Alert {
    let failed = report.failed();
    let details = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect::<Vec<_>>()
        .join(" | ");
    Alert {
        key: STARTUP_ALERT_KEY.into(),
        severity: Severity::Critical,
        title: format!("start-up checks failed: {}", failed.join(", ")),
        message: format!(
            "failed start-up checks: {}; trading is OBSERVE_ONLY",
            failed.join(", ")
        ),
        root_cause: details,
        recommended_action: "Read each failed check in /health (actors.fail-safe.checks) or run \
                             `tradebaas check --config FILE`; docs/OPERATIONS.md \"Startup \
                             checks\" says what each failure means and what to do. Set the mode \
                             to AGGRESSIVE only once the checks pass."
            .into(),
        metadata: json!({ "failed": failed, "details": failed_details(report), "at": report.at }),
    }
}

fn integrity_alert(check: &Check, at: DateTime<Utc>) -> Alert {
    Alert {
        key: integrity_alert_key(&check.name),
        severity: Severity::Critical,
        title: format!("data integrity check `{}` failed", check.name),
        message: format!(
            "integrity check {} failed: {}; trading is OBSERVE_ONLY",
            check.name, check.detail
        ),
        root_cause: check.detail.clone(),
        recommended_action: "See docs/OPERATIONS.md \"Startup checks\" for this check; run \
                             `tradebaas check --config FILE` for the store's report. The alert \
                             resolves when the check passes again; the mode stays until an \
                             operator changes it."
            .into(),
        metadata: json!({ "check": check.name, "detail": check.detail, "at": at }),
    }
}

/// The start-up run (after recovery, before the fail-safe hears that recovery finished): the
/// store checks on `facts` (read with [`read_facts`] when the store was opened, before the tree
/// started) and the online checks now; shows the report in `/health`, and on any failure
/// restricts trading to OBSERVE_ONLY and raises one CRITICAL `startup_checks` alert naming each
/// failed check.
pub async fn startup(
    names: &Names,
    args: &ChecksArgs,
    facts: Result<IntegrityFacts, String>,
) -> ChecksReport {
    let report = run_with_facts(names, args, RunKind::Startup, facts, Instant::now()).await;
    report_to_failsafe(names, &report);
    if report.passed {
        info!(took_ms = report.took_ms, "startup checks passed");
        resolve(names, STARTUP_ALERT_KEY.into());
    } else {
        let failed = report.failed();
        error!(failed = ?failed, details = %failed_details(&report), "startup checks failed: trading is OBSERVE_ONLY");
        restrict(
            names,
            &format!("startup checks failed: {}", failed.join(", ")),
        )
        .await;
        raise(names, startup_alert(&report));
    }
    report
}

/// Acts on one periodic report: a failed check restricts trading to OBSERVE_ONLY, logs its
/// details and raises `integrity:<check>`; a failed `capital` instead fires the fail-safe
/// trigger `capital_inconsistent` (SHUTDOWN; the fail-safe raises its alert). Passing checks
/// resolve their `integrity:<check>` alert, and a fully passing run `startup_checks`.
pub async fn act_on_periodic(names: &Names, report: &ChecksReport) {
    report_to_failsafe(names, report);
    let mut restrict_for = BTreeSet::new();
    for check in &report.checks {
        if check.passed {
            resolve(names, integrity_alert_key(&check.name));
            continue;
        }
        error!(check = %check.name, detail = %check.detail, "data integrity check failed");
        if check.name == CAPITAL {
            match names.lookup::<FailSafeMsg>(ChildName::FailSafe) {
                Some(f) => {
                    let _ = f.send_message(FailSafeMsg::Trigger {
                        trigger: CAPITAL_TRIGGER.into(),
                        reason: check.detail.clone(),
                        reply: None,
                    });
                }
                None => error!("fail-safe not running: capital_inconsistent not triggered"),
            }
        } else {
            restrict_for.insert(check.name.as_str());
            raise(names, integrity_alert(check, report.at));
        }
    }
    if report.passed {
        resolve(names, STARTUP_ALERT_KEY.into());
    }
    if !restrict_for.is_empty() {
        let names_list = restrict_for.into_iter().collect::<Vec<_>>().join(", ");
        restrict(names, &format!("data integrity check failed: {names_list}")).await;
    }
}

/// Runs the checks every `config.interval` (the first one an interval after the call), for as
/// long as the task lives. Each run verifies the events since the stored checkpoint (as at
/// start) plus the next `full_verify_slice` events of the whole chain (a full pass over many
/// runs; its findings fail `event_log`), and, when `event_log` passed, moves the checkpoint to
/// the newest verified event (a `chain.checkpoint` event through the persister), so the next
/// start verifies at most about an interval of events.
pub async fn periodic(names: Names, args: ChecksArgs) {
    let mut cursor: u64 = 0;
    loop {
        tokio::time::sleep(args.config.interval).await;
        let started = Instant::now();
        let facts = read_facts(args.store_path.clone()).await;
        let head = facts
            .as_ref()
            .ok()
            .map(|f| (f.chain.last_seq, f.chain.last_hash().to_owned()));
        let mut report = run_with_facts(&names, &args, RunKind::Periodic, facts, started).await;
        let path = args.store_path.clone();
        let slice_len = args.config.full_verify_slice;
        let from = cursor;
        match tokio::task::spawn_blocking(move || verify_slice(&path, from, slice_len)).await {
            Ok(Ok(slice)) => {
                cursor = if slice.done { 0 } else { slice.through };
                if slice.problems.is_empty() {
                    if slice.done {
                        info!(
                            through = slice.through,
                            "full chain verification pass complete"
                        );
                    }
                } else {
                    fail_event_log(
                        &mut report,
                        &format!(
                            "full-chain slice after seq {}: {}",
                            slice.after,
                            slice.problems.join("; ")
                        ),
                    );
                }
            }
            Ok(Err(e)) => fail_event_log(&mut report, &format!("full-chain slice: {e}")),
            Err(e) => fail_event_log(&mut report, &format!("full-chain slice thread: {e}")),
        }
        if report.passed {
            info!(took_ms = report.took_ms, "integrity checks passed");
        }
        if report.get(EVENT_LOG).is_some_and(|c| c.passed)
            && let Some((seq, hash)) = head
        {
            advance_checkpoint(&names, seq, hash);
        }
        act_on_periodic(&names, &report).await;
    }
}

/// Marks `event_log` failed in `report` with `detail` added.
fn fail_event_log(report: &mut ChecksReport, detail: &str) {
    match report.checks.iter_mut().find(|c| c.name == EVENT_LOG) {
        Some(c) if c.passed => *c = Check::fail(EVENT_LOG, detail),
        Some(c) => c.detail = format!("{}; {detail}", c.detail),
        None => report.checks.push(Check::fail(EVENT_LOG, detail)),
    }
    report.passed = false;
}

/// Stores `seq`/`hash` as the verified checkpoint (with a `chain.checkpoint` event), through
/// the persister like every other write.
fn advance_checkpoint(names: &Names, seq: u64, hash: String) {
    use crate::persister::PersisterMsg;
    let cp = Checkpoint::now(seq, hash);
    let change = Change::event(
        "chain.checkpoint",
        json!({ "seq": cp.seq, "hash": cp.hash }),
    )
    .set(CHECKPOINT_KEY, cp.to_value());
    match names.lookup::<PersisterMsg>(ChildName::StatePersister) {
        Some(p) => {
            if p.send_message(PersisterMsg::Commit {
                change,
                reply: None,
            })
            .is_err()
            {
                warn!("chain checkpoint not stored: the persister stopped");
            }
        }
        None => warn!("chain checkpoint not stored: the persister is not running"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ChainVerifier, Change, EventRow, SnapshotKind, Store, chain_hash};
    use crate::strategy::{Intent, PositionData, Side};

    fn cfg() -> ChecksConfig {
        ChecksConfig::default()
    }

    /// A store with a few events, a daily snapshot with `capital`, a mode and a strategy.
    fn store_with(dir: &Path, capital: Value) -> PathBuf {
        let path = dir.join("tradebaas.db");
        let mut store = Store::open(&path).unwrap();
        store.begin_run(None).unwrap();
        store
            .commit(&Change::event("mode_changed", json!({})).set(
                MODE_KEY,
                json!({"mode": "OBSERVE_ONLY", "reason": "test", "changed_at": null}),
            ))
            .unwrap();
        store
            .commit(&Change::event("lifecycle.transition", json!({})).set(
                "strategy.a",
                serde_json::to_value(StrategyRecord::idle("a")).unwrap(),
            ))
            .unwrap();
        store
            .snapshot(
                SnapshotKind::Daily,
                &json!({ "capital": capital, "positions": [] }),
            )
            .unwrap();
        path
    }

    fn btc(equity: f64) -> Value {
        json!({ "BTC": {
            "currency": "BTC", "balance": equity, "equity": equity, "margin_balance": equity,
            "available_funds": equity, "initial_margin": 0.0, "maintenance_margin": 0.0,
            "session_upl": 0.0, "session_rpl": 0.0, "total_pl": 0.0,
        }})
    }

    fn exec(path: &Path, sql: &str) {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(sql).unwrap();
    }

    fn offline(path: &Path) -> ChecksReport {
        run_offline(path, &cfg())
    }

    #[test]
    fn a_good_store_passes_every_offline_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with(dir.path(), btc(10.0));
        let r = offline(&path);
        assert!(r.passed, "{}", r.render_text());
        assert_eq!(
            r.checks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            [EVENT_LOG, SNAPSHOTS, CAPITAL, STRATEGY_STATES, MODE]
        );
        assert!(r.render_text().contains("all 5 checks passed"));
    }

    #[test]
    fn an_edited_event_fails_event_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with(dir.path(), btc(10.0));
        exec(
            &path,
            "UPDATE events SET payload = '{\"x\":1}' WHERE seq = 2",
        );
        let r = offline(&path);
        assert_eq!(r.failed(), [EVENT_LOG]);
        assert!(r.get(EVENT_LOG).unwrap().detail.contains("edited row"));
    }

    #[test]
    fn a_duplicate_id_and_a_gap_fail_event_log() {
        let mut chain = ChainVerifier::new();
        let mut prev = crate::store::GENESIS_HASH.to_string();
        for (seq, id) in [(1, "a"), (2, "a"), (4, "b")] {
            let ts = "2026-01-01T00:00:00.000000Z";
            let hash = chain_hash(&prev, seq, id, ts, "k", "{}");
            chain.push(&EventRow {
                seq,
                event_id: id.into(),
                ts: ts.into(),
                kind: "k".into(),
                payload: "{}".into(),
                prev_hash: prev.clone(),
                hash: hash.clone(),
            });
            prev = hash;
        }
        let text = chain.problems.join("\n");
        assert!(text.contains("duplicate event id a"), "{text}");
        assert!(text.contains("expected seq 3"), "{text}");
    }

    #[test]
    fn a_future_timestamp_fails_event_log_beyond_the_skew_only() {
        let mut chain = ChainVerifier::new();
        let ts = "2030-01-01T00:00:00Z";
        let hash = chain_hash(crate::store::GENESIS_HASH, 1, "a", ts, "k", "{}");
        chain.push(&EventRow {
            seq: 1,
            event_id: "a".into(),
            ts: ts.into(),
            kind: "k".into(),
            payload: "{}".into(),
            prev_hash: crate::store::GENESIS_HASH.into(),
            hash,
        });
        let facts = IntegrityFacts {
            path: "x".into(),
            chain,
            scope: crate::store::Scope::Full,
            checkpoint_seq: None,
            snapshots: vec![],
            state: BTreeMap::new(),
        };
        let skew = Duration::from_secs(300);
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let c = event_log(&facts, at("2029-12-31T23:56:00Z"), skew);
        assert!(c.passed, "{c:?}");
        let c = event_log(&facts, at("2029-12-31T23:54:00Z"), skew);
        assert!(!c.passed);
        assert!(c.detail.contains("in the future"), "{c:?}");
    }

    #[test]
    fn a_backwards_timestamp_fails_event_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with(dir.path(), btc(10.0));
        // Rewrite event 3 with an earlier time, hash chain recomputed: only time is wrong.
        let store = Store::open_read_only(&path).unwrap();
        let events = store.events(0, 100).unwrap();
        drop(store);
        let mut prev = crate::store::GENESIS_HASH.to_string();
        let conn = rusqlite::Connection::open(&path).unwrap();
        for e in &events {
            let ts = if e.seq == 3 {
                "2000-01-01T00:00:00.000000Z".to_string()
            } else {
                e.ts.clone()
            };
            let hash = chain_hash(&prev, e.seq, &e.event_id, &ts, &e.kind, &e.payload);
            conn.execute(
                "UPDATE events SET ts = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
                rusqlite::params![ts, prev, hash, e.seq as i64],
            )
            .unwrap();
            prev = hash;
        }
        drop(conn);
        let r = offline(&path);
        assert_eq!(r.failed(), [EVENT_LOG]);
        assert!(
            r.get(EVENT_LOG)
                .unwrap()
                .detail
                .contains("before the previous")
        );
    }

    fn snap(id: i64, taken_at: &str, event_seq: u64, payload: &str) -> SnapshotRow {
        SnapshotRow {
            id,
            taken_at: taken_at.into(),
            kind: "daily".into(),
            payload: payload.into(),
            event_seq,
        }
    }

    #[test]
    fn snapshots_out_of_order_or_duplicate_fail() {
        let now = Utc::now();
        let skew = Duration::from_secs(300);
        let good = [
            snap(1, "2026-01-01T00:00:00Z", 3, "{}"),
            snap(2, "2026-01-02T00:00:00Z", 9, "{}"),
        ];
        assert!(snapshots(&good, 10, now, skew).passed);
        let dup = [
            snap(1, "2026-01-01T00:00:00Z", 3, "{}"),
            snap(2, "2026-01-01T00:00:00Z", 9, "{}"),
        ];
        let c = snapshots(&dup, 10, now, skew);
        assert!(
            !c.passed && c.detail.contains("not after the previous one"),
            "{c:?}"
        );
        let back = [
            snap(1, "2026-01-02T00:00:00Z", 3, "{}"),
            snap(2, "2026-01-01T00:00:00Z", 2, "[]"),
        ];
        let c = snapshots(&back, 10, now, skew);
        assert!(c.detail.contains("event seq 2 is not after"), "{c:?}");
        assert!(c.detail.contains("not a JSON object"), "{c:?}");
        let future = [snap(1, "2999-01-01T00:00:00Z", 11, "{}")];
        let c = snapshots(&future, 10, now, skew);
        assert!(c.detail.contains("in the future"), "{c:?}");
        assert!(c.detail.contains("past the last event"), "{c:?}");
    }

    #[test]
    fn a_crafted_snapshot_row_fails_snapshots_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with(dir.path(), btc(10.0));
        exec(
            &path,
            "INSERT INTO snapshots (taken_at, kind, payload, event_seq)
             VALUES ('2000-01-01T00:00:00.000000Z', 'daily', '{}', 1)",
        );
        let r = offline(&path);
        assert!(r.failed().contains(&SNAPSHOTS), "{}", r.render_text());
    }

    #[test]
    fn capital_local_consistency() {
        assert!(local_capital(&json!({"capital": btc(10.0)})).is_ok());
        let mut bad = btc(10.0);
        bad["BTC"]["equity"] = json!(12.0);
        let e = local_capital(&json!({"capital": bad}))
            .unwrap_err()
            .join(";");
        assert!(e.contains("≠ balance"), "{e}");
        let mut neg = btc(-1.0);
        neg["BTC"]["available_funds"] = json!(-1.0);
        let e = local_capital(&json!({"capital": neg}))
            .unwrap_err()
            .join(";");
        assert!(e.contains("equity -1 is negative"), "{e}");
        let mut nan = btc(1.0);
        nan["BTC"]["equity"] = json!("NaN");
        let e = local_capital(&json!({"capital": nan}))
            .unwrap_err()
            .join(";");
        assert!(e.contains("equity is not a finite number"), "{e}");
        let mut funds = btc(1.0);
        funds["BTC"]["available_funds"] = json!(0.5);
        let e = local_capital(&json!({"capital": funds}))
            .unwrap_err()
            .join(";");
        assert!(e.contains("available_funds"), "{e}");
        let mut other = btc(1.0);
        other["BTC"]["currency"] = json!("ETH");
        assert!(local_capital(&json!({"capital": other})).is_err());
        assert!(local_capital(&json!({"positions": []})).is_err());
        let unknown = local_capital(&json!({"capital": {"BTC": {"error": "down"}}})).unwrap();
        assert_eq!(unknown.unknown, [("BTC".to_string(), "down".to_string())]);
    }

    #[test]
    fn capital_fails_on_an_inconsistent_stored_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut capital = btc(10.0);
        capital["BTC"]["balance"] = json!(3.0);
        let path = store_with(dir.path(), capital);
        let r = offline(&path);
        assert_eq!(r.failed(), [CAPITAL], "{}", r.render_text());
    }

    #[test]
    fn capital_online_compares_within_the_tolerance() {
        let row = snap(
            1,
            "2026-01-01T00:00:00Z",
            1,
            &json!({"capital": btc(10.0)}).to_string(),
        );
        let fresh =
            |eq: f64| BTreeMap::from([("BTC".to_string(), Ok::<_, String>(json!({"equity": eq})))]);
        assert!(capital(std::slice::from_ref(&row), Some(&fresh(9.5)), 0.10).passed);
        let c = capital(std::slice::from_ref(&row), Some(&fresh(5.0)), 0.10);
        assert!(!c.passed && c.detail.contains("differ by 50.00%"), "{c:?}");
        let down = BTreeMap::from([("BTC".to_string(), Err("not connected".to_string()))]);
        let c = capital(std::slice::from_ref(&row), Some(&down), 0.10);
        assert!(c.passed && c.detail.contains("not compared"), "{c:?}");
        let c = capital(&[], Some(&fresh(5.0)), 0.10);
        assert!(c.passed && c.detail.contains("no snapshot yet"), "{c:?}");
        assert_eq!(relative_difference(0.0, 0.0), 0.0);
    }

    #[test]
    fn a_snapshot_with_an_error_instead_of_capital_is_looked_past_never_passed_on() {
        let failed = json!({"capital": {"BTC": {"error": "not connected"}}}).to_string();
        assert_eq!(
            capital_missing(&serde_json::from_str(&failed).unwrap()).as_deref(),
            Some("BTC: not connected")
        );
        assert!(capital_missing(&json!({"capital": btc(1.0)})).is_none());
        assert!(capital_missing(&json!({"capital": {}})).is_some());
        assert!(capital_missing(&json!({"positions": []})).is_some());
        // One currency answered, one did not: still a failed snapshot.
        let mut partial = btc(1.0);
        partial["ETH"] = json!({"error": "timeout"});
        assert!(capital_missing(&json!({ "capital": partial })).is_some());

        // An inconsistent snapshot followed by a failed one: the check still sees the
        // inconsistent one and fails.
        let mut bad = btc(10.0);
        bad["BTC"]["balance"] = json!(3.0);
        let rows = [
            snap(
                1,
                "2026-01-01T00:00:00Z",
                1,
                &json!({ "capital": bad }).to_string(),
            ),
            snap(2, "2026-01-02T00:00:00Z", 2, &failed),
        ];
        let c = capital(&rows, None, 0.10);
        assert!(!c.passed && c.detail.contains("snapshot 1"), "{c:?}");

        // A good snapshot followed by a failed one: the good one is compared with the exchange.
        let rows = [
            snap(
                1,
                "2026-01-01T00:00:00Z",
                1,
                &json!({"capital": btc(10.0)}).to_string(),
            ),
            snap(2, "2026-01-02T00:00:00Z", 2, &failed),
        ];
        let fresh = BTreeMap::from([("BTC".to_string(), Ok::<_, String>(json!({"equity": 5.0})))]);
        let c = capital(&rows, Some(&fresh), 0.10);
        assert!(!c.passed && c.detail.contains("differ by 50.00%"), "{c:?}");
        let fresh = BTreeMap::from([("BTC".to_string(), Ok::<_, String>(json!({"equity": 10.0})))]);
        let c = capital(&rows, Some(&fresh), 0.10);
        assert!(c.passed, "{c:?}");
        assert!(
            c.detail.contains("snapshot 1") && c.detail.contains("snapshot 2: BTC: not connected"),
            "{c:?}"
        );

        // Only failed snapshots: nothing reconciled, and the detail says so.
        let c = capital(&rows[1..], Some(&fresh), 0.10);
        assert!(c.detail.contains("no snapshot with capital"), "{c:?}");
        assert!(!c.detail.contains("consistent"), "{c:?}");
    }

    fn position() -> PositionData {
        PositionData {
            instrument: "BTC-PERPETUAL".into(),
            direction: Side::Buy,
            size: 10.0,
            entry_price: 50_000.0,
            protective_orders: vec![],
            entry_label: None,
            stop_price: None,
            take_profit_price: None,
        }
    }

    #[test]
    fn lifecycle_and_position_must_agree() {
        let mut r = StrategyRecord::idle("a");
        assert!(record_problems(&r).is_empty());
        r.position = Some(position());
        assert!(record_problems(&r)[0].contains("IDLE but holds a position"));
        r.lifecycle = Lifecycle::PositionOpen;
        assert!(record_problems(&r).is_empty());
        r.position = None;
        assert!(record_problems(&r)[0].contains("without a position"));
        r.lifecycle = Lifecycle::Closing;
        let mut p = position();
        p.size = 0.0;
        r.position = Some(p);
        assert!(record_problems(&r)[0].contains("size 0"));
        let mut r = StrategyRecord::idle("a");
        r.intents_in_flight.push(Intent {
            label: "tb-a-1".into(),
            side: Side::Buy,
            size: 10.0,
            sent_at: Utc::now(),
            stop_price: None,
            take_profit_price: None,
        });
        assert!(record_problems(&r)[0].contains("IDLE with intents"));
        r.lifecycle = Lifecycle::EnteringPosition;
        assert!(record_problems(&r).is_empty());
    }

    #[test]
    fn unreadable_or_invalid_strategy_records_fail_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with(dir.path(), btc(10.0));
        let mut open = StrategyRecord::idle("b");
        open.lifecycle = Lifecycle::PositionOpen;
        let mut store = Store::open(&path).unwrap();
        store
            .commit(
                &Change::event("crafted", json!({}))
                    .set("strategy.b", serde_json::to_value(&open).unwrap())
                    .set("strategy.c", json!({"lifecycle": "FLYING"})),
            )
            .unwrap();
        drop(store);
        let r = offline(&path);
        assert_eq!(r.failed(), [STRATEGY_STATES]);
        let d = &r.get(STRATEGY_STATES).unwrap().detail;
        assert!(d.contains("b: POSITION_OPEN without a position"), "{d}");
        assert!(d.contains("strategy.c: unreadable"), "{d}");
    }

    #[test]
    fn an_invalid_stored_mode_fails_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with(dir.path(), btc(10.0));
        exec(
            &path,
            "UPDATE state SET value = '{\"mode\": \"YOLO\"}' WHERE key = 'mode'",
        );
        let r = offline(&path);
        assert_eq!(r.failed(), [MODE]);
        let empty = BTreeMap::new();
        assert!(mode(&empty).passed);
    }

    #[test]
    fn exchange_needs_an_answer_and_a_close_clock() {
        let skew = Duration::from_secs(300);
        let now = Utc::now();
        let ms = |t: DateTime<Utc>| Ok(json!(t.timestamp_millis()));
        assert!(exchange(ms(now), now, now, skew).passed);
        let c = exchange(Err("not connected to the exchange".into()), now, now, skew);
        assert!(!c.passed && c.detail.contains("not connected"), "{c:?}");
        let late = now + chrono::Duration::minutes(10);
        let c = exchange(ms(late), now, now, skew);
        assert!(!c.passed && c.detail.contains("clock differs"), "{c:?}");
        assert!(!exchange(Ok(json!("x")), now, now, skew).passed);
    }

    #[test]
    fn a_missing_store_fails_every_store_check() {
        let dir = tempfile::tempdir().unwrap();
        let r = offline(&dir.path().join("nope.db"));
        assert_eq!(r.failed().len(), 5);
        assert!(!r.passed);
    }

    mod actors {
        use ractor::{Actor, ActorRef, call_t};

        use super::*;
        use crate::alert::{AlertActor, AlertArgs, AlertConfig, AlertStatus};
        use crate::failsafe::{
            FailSafeActor, FailSafeArgs, FailSafeConfig, FailSafeStatus, InitialMode,
        };
        use crate::metrics::Metrics;
        use crate::persister::{PersisterActor, PersisterArgs, PersisterMsg};

        struct Tree {
            names: Names,
            alert: ActorRef<AlertMsg>,
            fail_safe: ActorRef<FailSafeMsg>,
            persister: ActorRef<PersisterMsg>,
            _dir: tempfile::TempDir,
        }

        async fn tree(prefix: &str) -> Tree {
            let dir = tempfile::tempdir().unwrap();
            let names = Names::with_prefix(prefix);
            let (persister, _) = Actor::spawn(
                Some(names.of(ChildName::StatePersister)),
                PersisterActor,
                PersisterArgs::new(
                    names.clone(),
                    dir.path().join("tradebaas.db"),
                    Metrics::new().unwrap(),
                ),
            )
            .await
            .unwrap();
            let (alert, _) = Actor::spawn(
                Some(names.of(ChildName::Alert)),
                AlertActor,
                AlertArgs {
                    names: names.clone(),
                    config: AlertConfig::default(),
                },
            )
            .await
            .unwrap();
            let (fail_safe, _) = Actor::spawn(
                Some(names.of(ChildName::FailSafe)),
                FailSafeActor,
                FailSafeArgs {
                    names: names.clone(),
                    config: FailSafeConfig::default(),
                    initial: InitialMode::explicit(TradingMode::Aggressive),
                    health: Default::default(),
                },
            )
            .await
            .unwrap();
            Tree {
                names,
                alert,
                fail_safe,
                persister,
                _dir: dir,
            }
        }

        impl Tree {
            async fn until<T>(
                &self,
                what: &str,
                f: impl Fn(&FailSafeStatus, &AlertStatus) -> Option<T>,
            ) -> T {
                for _ in 0..300 {
                    let fs = call_t!(self.fail_safe, FailSafeMsg::Status, 1000).unwrap();
                    let al = call_t!(self.alert, AlertMsg::Status, 1000).unwrap();
                    if let Some(t) = f(&fs, &al) {
                        return t;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("never {what}");
            }

            fn stop(self) {
                self.fail_safe.stop(None);
                self.alert.stop(None);
                self.persister.stop(None);
            }
        }

        fn report(failing: &[&str]) -> ChecksReport {
            let checks = [
                EVENT_LOG,
                SNAPSHOTS,
                CAPITAL,
                STRATEGY_STATES,
                MODE,
                EXCHANGE,
            ]
            .iter()
            .map(|n| {
                if failing.contains(n) {
                    Check::fail(n, format!("{n} is broken"))
                } else {
                    Check::pass(n, "fine")
                }
            })
            .collect();
            ChecksReport::new(RunKind::Periodic, Utc::now(), checks, Duration::ZERO)
        }

        fn open(al: &AlertStatus, key: &str) -> bool {
            al.recent
                .iter()
                .any(|r| r.key == key && r.resolved_at.is_none())
        }

        #[tokio::test]
        async fn a_periodic_violation_restricts_alerts_and_resolves_when_repaired() {
            let t = tree("checks-periodic-").await;
            t.until("AGGRESSIVE", |fs, _| {
                (fs.mode == TradingMode::Aggressive).then_some(())
            })
            .await;
            act_on_periodic(&t.names, &report(&[STRATEGY_STATES])).await;
            t.until("restricted with the alert", |fs, al| {
                (fs.mode == TradingMode::ObserveOnly
                    && fs
                        .checks
                        .as_ref()
                        .is_some_and(|c| c.failed() == [STRATEGY_STATES])
                    && open(al, "integrity:strategy_states"))
                .then_some(())
            })
            .await;
            act_on_periodic(&t.names, &report(&[])).await;
            t.until("resolved", |fs, al| {
                (!open(al, "integrity:strategy_states")
                    && fs.checks.as_ref().is_some_and(|c| c.passed)
                    && fs.mode == TradingMode::ObserveOnly)
                    .then_some(())
            })
            .await;
            t.stop();
        }

        #[tokio::test]
        async fn a_periodic_capital_failure_triggers_shutdown() {
            let t = tree("checks-capital-").await;
            t.until("AGGRESSIVE", |fs, _| {
                (fs.mode == TradingMode::Aggressive).then_some(())
            })
            .await;
            act_on_periodic(&t.names, &report(&[CAPITAL])).await;
            t.until("SHUTDOWN", |fs, al| {
                (fs.mode == TradingMode::Shutdown
                    && fs.last_trigger.as_deref() == Some(CAPITAL_TRIGGER)
                    && open(al, "failsafe:capital_inconsistent")
                    && !open(al, "integrity:capital"))
                .then_some(())
            })
            .await;
            t.stop();
        }

        #[tokio::test]
        async fn a_failed_startup_run_restricts_and_names_each_check_in_one_alert() {
            let t = tree("checks-startup-").await;
            t.until("AGGRESSIVE", |fs, _| {
                (fs.mode == TradingMode::Aggressive).then_some(())
            })
            .await;
            let args = ChecksArgs {
                store_path: PathBuf::from("unused"),
                config: ChecksConfig::default(),
            };
            // No broker in this tree: `exchange` fails; a bad mode record fails `mode`.
            let mut facts_state = BTreeMap::new();
            facts_state.insert(MODE_KEY.to_string(), "{\"mode\": 1}".to_string());
            let facts = IntegrityFacts {
                path: "x".into(),
                chain: crate::store::ChainVerifier::new(),
                scope: crate::store::Scope::Full,
                checkpoint_seq: None,
                snapshots: vec![],
                state: facts_state,
            };
            let r = startup(&t.names, &args, Ok(facts)).await;
            assert_eq!(r.failed(), [MODE, EXCHANGE]);
            let alert = t
                .until("the alert", |fs, al| {
                    (fs.mode == TradingMode::ObserveOnly)
                        .then(|| {
                            al.recent
                                .iter()
                                .find(|a| a.key == STARTUP_ALERT_KEY)
                                .cloned()
                        })
                        .flatten()
                })
                .await;
            assert_eq!(alert.severity, Severity::Critical);
            assert!(
                alert.message.contains("mode, exchange"),
                "{}",
                alert.message
            );
            assert_eq!(alert.metadata["failed"], json!([MODE, EXCHANGE]));
            t.stop();
        }
    }

    #[test]
    fn config_validation_names_the_field() {
        assert!(cfg().validate().is_ok());
        let mut c = cfg();
        c.capital_tolerance = 1.5;
        assert!(c.validate().unwrap_err().contains("capital_tolerance"));
        let mut c = cfg();
        c.interval = Duration::ZERO;
        assert!(c.validate().unwrap_err().contains("interval"));
        let mut c = cfg();
        c.clock_skew = Duration::ZERO;
        assert!(c.validate().unwrap_err().contains("clock_skew"));
    }
}
