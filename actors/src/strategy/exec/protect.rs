//! Protection after an entry fills: each leg checked by label, a leg the exchange cancelled
//! placed again (reduce-only), an unprotected position closed at market; the close itself.

use super::enter::seq_of;
use super::*;

/// The state of one protective leg.
pub(super) enum LegState {
    Resting,
    Filled(ExOrder),
    /// Gone, but placing it again is right (cancelled on a disconnect, or not found).
    Replace,
    /// Rejected or cancelled for another reason: the position is not protected.
    Broken(String),
}

pub(super) async fn leg_state(ex: &Exec, currency: &str, label: &str) -> Result<LegState, String> {
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
