//! The entry: arm cancel-on-disconnect, size and send the entry with its OTOCO legs once its
//! intent is committed, and resolve an entry whose outcome is unknown by its label (the
//! idempotency rule of [`super`]).

use super::*;

/// Arms cancel-on-disconnect on the current session (no request when it is armed already).
pub(super) async fn arm(ex: &Exec) -> Result<(), RequestError> {
    client::set_cancel_on_disconnect(&ex.names, true).await
}

pub(super) async fn enter(
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
pub(super) async fn resolve(ex: &Exec, snap: &Snapshot) -> Result<(), String> {
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

pub(super) async fn resolve_intent(
    ex: &Exec,
    snap: &Snapshot,
    intent: &Intent,
) -> Result<(), String> {
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
pub(super) async fn on_entry_order(
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

pub(super) fn seq_of(ex: &Exec, snap: &Snapshot, label: &str) -> u64 {
    crate::orders::labels::parse_label(&ex.prefix, label)
        .map(|p| p.intent_seq)
        .unwrap_or(snap.record.next_intent_seq)
}
