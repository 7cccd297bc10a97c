//! What the strategy actor does after every (re)connect besides re-checking its instances:
//! fetch the instruments' trading rules and cancel orphan orders.
//!
//! An orphan is an open order whose label is one of ours (`<prefix>-<strategy>-<seq>[-leg]`)
//! while no strategy record refers to that `(strategy, seq)`: a leg left behind by a position that
//! was closed while we were away, an entry whose intent was dropped. Orders without our label —
//! placed by hand or by another program — are never touched.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ractor::ActorRef;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::StrategyMsg;
use super::guards::InstrumentSpec;
use crate::client;
use crate::names::Names;
use crate::orders::labels::parse_label;
use crate::recovery::ExOrder;
use crate::store::Change;

/// `public/get_instruments` for each currency → the specs by instrument name. Failures are
/// logged; entries for an instrument without a spec are refused with that reason.
pub(super) async fn fetch_specs(
    names: &Names,
    currencies: &[String],
) -> HashMap<String, InstrumentSpec> {
    let mut specs = HashMap::new();
    for currency in currencies {
        let answer = client::request(
            names,
            "public/get_instruments",
            json!({ "currency": currency, "kind": "future" }),
        )
        .await;
        let items = match answer {
            Ok(Value::Array(items)) => items,
            Ok(other) => {
                warn!(actor = "strategy", currency, answer = %other, "unexpected get_instruments answer");
                continue;
            }
            Err(e) => {
                warn!(actor = "strategy", currency, error = %e, "instrument specs not fetched; entries wait for the next connect");
                continue;
            }
        };
        for item in items {
            let Some(name) = item.get("instrument_name").and_then(Value::as_str) else {
                continue;
            };
            let spec = InstrumentSpec {
                tick_size: item.get("tick_size").and_then(Value::as_f64).unwrap_or(0.0),
                contract_size: item
                    .get("contract_size")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0),
                min_trade_amount: item
                    .get("min_trade_amount")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0),
            };
            match spec.validate() {
                Ok(()) => {
                    specs.insert(name.to_string(), spec);
                }
                Err(e) => {
                    warn!(actor = "strategy", instrument = name, error = %e, "unusable instrument spec ignored")
                }
            }
        }
    }
    specs
}

/// Lists our open orders, asks the actor which ones its records own, cancels the rest. The
/// order matters: every order listed was committed as an intent before it was sent, so asking
/// for ownership *after* listing cannot miss an entry that is just being placed. Returns how
/// many were cancelled.
pub(super) async fn sweep(
    names: &Names,
    me: &ActorRef<StrategyMsg>,
    prefix: &str,
    currencies: &[String],
    conn: u64,
) -> u64 {
    let mut ours = Vec::new();
    for currency in currencies {
        match client::request(
            names,
            "private/get_open_orders_by_currency",
            json!({ "currency": currency }),
        )
        .await
        .map_err(|e| e.to_string())
        .and_then(|v| serde_json::from_value::<Vec<ExOrder>>(v).map_err(|e| e.to_string()))
        {
            Ok(orders) => ours.extend(
                orders
                    .into_iter()
                    .filter_map(|o| parse_label(prefix, &o.label).map(|p| (o, p))),
            ),
            Err(e) => {
                warn!(actor = "strategy", currency, error = %e, "open orders not listed; orphan cleanup skipped until the next connect");
                return 0;
            }
        }
    }
    if ours.is_empty() {
        return 0;
    }
    let owned: HashSet<(String, u64)> = match me
        .call(StrategyMsg::Owned, Some(Duration::from_secs(5)))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(owned)) => owned,
        _ => return 0,
    };
    let mut cancelled = 0;
    for (order, parsed) in ours {
        if owned.contains(&(parsed.strategy_id.clone(), parsed.intent_seq)) {
            continue;
        }
        match client::request(
            names,
            "private/cancel",
            json!({ "order_id": order.order_id }),
        )
        .await
        {
            Ok(_) => {
                cancelled += 1;
                info!(
                    actor = "strategy",
                    conn,
                    order_id = %order.order_id,
                    label = %order.label,
                    instrument = %order.instrument_name,
                    "orphan order cancelled: labelled by us, owned by no strategy"
                );
                let change = Change::event(
                    "order.orphan_cancelled",
                    json!({
                        "order_id": order.order_id,
                        "label": order.label,
                        "instrument": order.instrument_name,
                    }),
                );
                if let Err(e) = client::commit_change(names, change, Duration::from_secs(5)).await {
                    warn!(actor = "strategy", error = %e, "orphan cancel event not stored");
                }
            }
            Err(e) => {
                warn!(actor = "strategy", order_id = %order.order_id, label = %order.label, error = %e, "orphan order not cancelled; retried at the next connect");
            }
        }
    }
    cancelled
}
