//! Protection after an entry fills: each leg checked by label, a leg the exchange cancelled
//! placed again (reduce-only), an unprotected position closed at market; the close itself.

use super::enter::seq_of;
use super::*;

/// The state of one protective leg.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum LegState {
    Resting,
    Filled(ExOrder),
    /// Gone, but placing it again is right (cancelled on a disconnect, or not found).
    Replace,
    /// Rejected or cancelled for another reason: the position is not protected.
    Broken(String),
}

pub(super) async fn leg_state(ex: &Exec, currency: &str, label: &str) -> Result<LegState, String> {
    Ok(classify_leg(label, ex.find(currency, label).await?))
}

/// Leg classification, pure: what the exchange's answer for a protective label means.
/// Resting is fine; any fill counts as filled (a partly filled leg closed part of the position);
/// cancelled by a disconnect or never found means place it again; anything else (rejected,
/// cancelled by hand) means the position is not protected.
pub(super) fn classify_leg(label: &str, found: Found) -> LegState {
    match found {
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
    }
}

/// After both legs are classified: did one of them close the position?
#[derive(Debug, Clone, PartialEq)]
pub(super) enum AfterLegs<'a> {
    /// Leg `filled` closed it: cancel `other`, finish the trade at `exit`.
    Filled {
        other: &'a str,
        exit: f64,
        reason: String,
    },
    /// Neither filled: ask the exchange whether the position is still there.
    AskPosition,
}

/// The first step of the position check, pure: the stop-loss is looked at first; the exit
/// price is the leg's average fill, or the entry price when the exchange gave none.
pub(super) fn after_legs<'a>(
    position: &PositionData,
    [sl, tp]: [&'a str; 2],
    [sl_state, tp_state]: [&LegState; 2],
) -> AfterLegs<'a> {
    for (state, other, what) in [(sl_state, tp, "stop-loss"), (tp_state, sl, "take-profit")] {
        if let LegState::Filled(o) = state {
            let exit = if o.average_price > 0.0 {
                o.average_price
            } else {
                position.entry_price
            };
            return AfterLegs::Filled {
                other,
                exit,
                reason: format!("{what} {} filled at {exit}", o.label),
            };
        }
    }
    AfterLegs::AskPosition
}

/// What to do once the exchange's position size is known and no leg filled.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Repair<'a> {
    /// The position is gone (closed outside TradeBaas): cancel both legs, finish at entry.
    ClosedElsewhere,
    /// What each leg that is not in place needs, stop-loss first. Closing is the answer if
    /// any is broken (or if placing one again fails).
    Legs(Vec<Fix<'a>>),
}

/// One leg's repair.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Fix<'a> {
    /// Place the leg `label` again (reduce-only).
    Replace(&'a str, Leg),
    /// It cannot be had, for this reason.
    Broken(String),
}

/// The second step of the position check, pure.
pub(super) fn repair<'a>(
    exchange_size: f64,
    [sl, tp]: [&'a str; 2],
    [sl_state, tp_state]: [&LegState; 2],
) -> Repair<'a> {
    if exchange_size.abs() < 1e-9 {
        return Repair::ClosedElsewhere;
    }
    let fixes = [
        (sl_state, sl, Leg::StopLoss),
        (tp_state, tp, Leg::TakeProfit),
    ]
    .into_iter()
    .filter_map(|(state, label, leg)| match state {
        LegState::Resting | LegState::Filled(_) => None,
        LegState::Broken(why) => Some(Fix::Broken(why.clone())),
        LegState::Replace => Some(Fix::Replace(label, leg)),
    })
    .collect();
    Repair::Legs(fixes)
}

/// POSITION_OPEN: has a leg closed the position, was it closed elsewhere, are both legs in
/// place? Re-places legs a disconnect took; rolls back when protection cannot be had.
pub(super) async fn check(ex: &Exec, snap: &Snapshot) -> Result<(), String> {
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
    let states = [
        &leg_state(ex, currency, &sl).await?,
        &leg_state(ex, currency, &tp).await?,
    ];
    let labels = [sl.as_str(), tp.as_str()];
    if let AfterLegs::Filled {
        other,
        exit,
        reason,
    } = after_legs(&position, labels, states)
    {
        let _ = ex
            .call(
                "private/cancel_by_label",
                json!({ "label": other, "currency": currency }),
            )
            .await;
        return finish(ex, snap, &position, exit, &reason).await;
    }

    let exchange_size = position_size(ex, &position.instrument).await?;
    let fixes = match repair(exchange_size, labels, states) {
        Repair::ClosedElsewhere => {
            for label in labels {
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
        Repair::Legs(fixes) => fixes,
    };
    let mut broken = Vec::new();
    for fix in fixes {
        match fix {
            Fix::Broken(why) => broken.push(why),
            Fix::Replace(label, leg) => {
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

pub(super) async fn replace_leg(
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

pub(super) async fn position_size(ex: &Exec, instrument: &str) -> Result<f64, String> {
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
pub(super) async fn finish(
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
pub(super) async fn close(ex: &Exec, snap: &Snapshot, reason: &str) -> Result<(), String> {
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

#[cfg(test)]
#[path = "protect_tests.rs"]
mod tests;
