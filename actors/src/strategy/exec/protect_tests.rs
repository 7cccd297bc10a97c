//! The order path's leg classification and position-check steps, without an exchange.

use super::*;

const SL: &str = "tb-a-3-sl";
const TP: &str = "tb-a-3-tp";

fn order(label: &str, state: &str) -> ExOrder {
    ExOrder::sample(&format!("id-{label}"), label, state)
}

fn cancelled(label: &str, why: &str) -> ExOrder {
    ExOrder {
        cancel_reason: Some(why.into()),
        ..order(label, "cancelled")
    }
}

fn position() -> PositionData {
    PositionData {
        instrument: "BTC-PERPETUAL".into(),
        direction: Side::Buy,
        size: 10.0,
        entry_price: 100.0,
        protective_orders: vec![SL.into(), TP.into()],
        entry_label: Some("tb-a-3".into()),
        stop_price: Some(99.0),
        take_profit_price: Some(101.0),
    }
}

#[test]
fn legs_are_classified_by_what_the_exchange_says() {
    let c = |found| classify_leg(SL, found);
    assert_eq!(c(Found::NotFound), LegState::Replace);
    assert_eq!(c(Found::Order(order(SL, "open"))), LegState::Resting);
    assert_eq!(c(Found::Order(order(SL, "untriggered"))), LegState::Resting);
    let filled = order(SL, "filled");
    assert_eq!(c(Found::Order(filled.clone())), LegState::Filled(filled));
    // A partial fill closed part of the position: it counts as filled, whatever the state.
    let partly = ExOrder {
        filled_amount: 3.0,
        ..order(SL, "cancelled")
    };
    assert_eq!(c(Found::Order(partly.clone())), LegState::Filled(partly));
    // A disconnect took it: place it again.
    assert_eq!(
        c(Found::Order(cancelled(SL, "cancel_on_disconnect"))),
        LegState::Replace
    );
    // Anything else: not protected, and the reason says what the exchange said.
    assert_eq!(
        c(Found::Order(cancelled(SL, "user_request"))),
        LegState::Broken(format!("{SL} cancelled (user_request)"))
    );
    assert_eq!(
        c(Found::Order(order(SL, "rejected"))),
        LegState::Broken(format!("{SL} rejected"))
    );
}

#[test]
fn a_filled_leg_finishes_the_trade_and_cancels_the_other() {
    let tp_fill = ExOrder {
        average_price: 101.5,
        ..order(TP, "filled")
    };
    let states = [&LegState::Resting, &LegState::Filled(tp_fill)];
    assert_eq!(
        after_legs(&position(), [SL, TP], states),
        AfterLegs::Filled {
            other: SL,
            exit: 101.5,
            reason: format!("take-profit {TP} filled at 101.5"),
        }
    );
    // No average price reported: the exit is booked at the entry price.
    let states = [&LegState::Filled(order(SL, "filled")), &LegState::Replace];
    assert_eq!(
        after_legs(&position(), [SL, TP], states),
        AfterLegs::Filled {
            other: TP,
            exit: 100.0,
            reason: format!("stop-loss {SL} filled at 100"),
        }
    );
}

#[test]
fn with_no_fill_the_position_is_asked_for() {
    let states = [&LegState::Replace, &LegState::Broken("x".into())];
    assert_eq!(
        after_legs(&position(), [SL, TP], states),
        AfterLegs::AskPosition
    );
}

#[test]
fn a_position_gone_from_the_exchange_was_closed_elsewhere() {
    let states = [&LegState::Replace, &LegState::Resting];
    assert_eq!(repair(0.0, [SL, TP], states), Repair::ClosedElsewhere);
}

#[test]
fn legs_not_in_place_are_replaced_or_reported_broken_stop_loss_first() {
    let states = [&LegState::Broken("sl rejected".into()), &LegState::Replace];
    assert_eq!(
        repair(10.0, [SL, TP], states),
        Repair::Legs(vec![
            Fix::Broken("sl rejected".into()),
            Fix::Replace(TP, Leg::TakeProfit),
        ])
    );
    let states = [&LegState::Replace, &LegState::Resting];
    assert_eq!(
        repair(-10.0, [SL, TP], states),
        Repair::Legs(vec![Fix::Replace(SL, Leg::StopLoss)])
    );
    let states = [&LegState::Resting, &LegState::Resting];
    assert_eq!(repair(10.0, [SL, TP], states), Repair::Legs(vec![]));
}
