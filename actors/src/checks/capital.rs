//! `capital`: the newest snapshot with capital, its local consistency and, online, its equity
//! against a fresh account summary. Pure.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{CAPITAL, Check};
use crate::store::SnapshotRow;

/// Sums that must match exactly are compared with this relative slack (rounding of the
/// exchange's decimals), and never tighter than [`SUM_ABSOLUTE`].
const SUM_RELATIVE: f64 = 1e-6;
const SUM_ABSOLUTE: f64 = 1e-8;

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
