//! Unit tests of the matching engine and account.

use super::*;
use crate::paper_exchange::market::{InstrumentSpec, TAKER_COMMISSION};

const NOW: i64 = 1_700_000_000_000;

fn engine() -> Engine {
    let markets = InstrumentSpec::BUILTIN
        .iter()
        .enumerate()
        .map(|(i, spec)| MarketState::new(spec, fastrand::Rng::with_seed(i as u64)))
        .collect();
    Engine::new(markets, 10.0, 100.0)
}

const BTC: usize = 0;

fn ctx() -> PlaceContext {
    PlaceContext {
        now_ms: NOW,
        ..PlaceContext::default()
    }
}

fn market(direction: Direction, amount: f64) -> OrderRequest {
    OrderRequest::new(BTC, direction, amount, OrderType::Market)
}

fn limit(direction: Direction, amount: f64, price: f64) -> OrderRequest {
    let mut req = OrderRequest::new(BTC, direction, amount, OrderType::Limit);
    req.price = Some(price);
    req
}

fn trigger(direction: Direction, order_type: OrderType, trigger_price: f64) -> OrderRequest {
    let mut req = OrderRequest::new(BTC, direction, 1_000.0, order_type);
    req.trigger_price = Some(trigger_price);
    req.trigger = Some(Trigger::Mark);
    req
}

fn state(engine: &Engine, order: &Value) -> String {
    let id = order["order_id"].as_str().unwrap();
    engine.order_state(id).unwrap()["order_state"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn position_size(engine: &Engine) -> f64 {
    engine.positions[BTC].size
}

#[test]
fn amount_not_multiple_of_contract_size_is_invalid_params() {
    let mut e = engine();
    let err = e.place(market(Direction::Buy, 15.0), ctx()).unwrap_err();
    assert_eq!(
        err,
        EngineError::InvalidParams {
            param: "amount",
            reason: "must be a multiple of contract size".into()
        }
    );
}

#[test]
fn zero_amount_is_qty_too_low() {
    let mut e = engine();
    assert_eq!(
        e.place(market(Direction::Buy, 0.0), ctx()).unwrap_err(),
        EngineError::QtyTooLow
    );
}

#[test]
fn price_off_tick_is_rejected() {
    let mut e = engine();
    let err = e
        .place(limit(Direction::Buy, 10.0, 59_000.3), ctx())
        .unwrap_err();
    assert_eq!(err, EngineError::PriceWrongTick);
}

#[test]
fn long_label_is_invalid_params() {
    let mut e = engine();
    let mut req = market(Direction::Buy, 10.0);
    req.label = "x".repeat(65);
    assert!(matches!(
        e.place(req, ctx()),
        Err(EngineError::InvalidParams { param: "label", .. })
    ));
}

#[test]
fn limit_without_price_is_invalid_params() {
    let mut e = engine();
    let req = OrderRequest::new(BTC, Direction::Buy, 10.0, OrderType::Limit);
    assert!(matches!(
        e.place(req, ctx()),
        Err(EngineError::InvalidParams { param: "price", .. })
    ));
}

#[test]
fn position_beyond_leverage_is_not_enough_funds() {
    let mut e = engine();
    // 10 BTC * 50 * 60000 = 30M USD allowed.
    assert_eq!(
        e.place(market(Direction::Buy, 31_000_000.0), ctx())
            .unwrap_err(),
        EngineError::NotEnoughFunds
    );
    assert!(e.place(market(Direction::Buy, 1_000_000.0), ctx()).is_ok());
}

#[test]
fn market_buy_fills_at_best_ask_and_opens_long() {
    let mut e = engine();
    let (order, trades) = e.place(market(Direction::Buy, 1_000.0), ctx()).unwrap();
    assert_eq!(order["order_state"], "filled");
    assert_eq!(trades.len(), 1);
    assert_eq!(trades[0]["price"], json!(60_000.5));
    assert_eq!(trades[0]["liquidity"], "T");
    assert_eq!(position_size(&e), 1_000.0);
    assert_eq!(e.positions[BTC].average_price, 60_000.5);
}

#[test]
fn resting_limit_fills_when_market_reaches_it() {
    let mut e = engine();
    let (order, trades) = e
        .place(limit(Direction::Buy, 100.0, 59_000.0), ctx())
        .unwrap();
    assert_eq!(order["order_state"], "open");
    assert!(trades.is_empty());
    e.set_mark(BTC, 59_500.0, NOW);
    assert_eq!(state(&e, &order), "open");
    e.set_mark(BTC, 58_990.0, NOW);
    assert_eq!(state(&e, &order), "filled");
    assert_eq!(e.positions[BTC].average_price, 59_000.0);
}

#[test]
fn crossing_limit_takes_at_best_price() {
    let mut e = engine();
    let (order, trades) = e
        .place(limit(Direction::Sell, 100.0, 50_000.0), ctx())
        .unwrap();
    assert_eq!(order["order_state"], "filled");
    assert_eq!(trades[0]["price"], json!(59_999.5));
}

#[test]
fn post_only_crossing_is_rejected_or_moved() {
    let mut e = engine();
    let mut req = limit(Direction::Buy, 100.0, 61_000.0);
    req.post_only = true;
    req.reject_post_only = true;
    assert_eq!(
        e.place(req.clone(), ctx()).unwrap_err(),
        EngineError::PostOnlyReject
    );
    req.reject_post_only = false;
    let (order, _) = e.place(req, ctx()).unwrap();
    assert_eq!(order["order_state"], "open");
    assert_eq!(order["price"], json!(59_999.5));
}

#[test]
fn immediate_or_cancel_limit_that_cannot_fill_is_cancelled() {
    let mut e = engine();
    let mut req = limit(Direction::Buy, 100.0, 50_000.0);
    req.time_in_force = TimeInForce::ImmediateOrCancel;
    let (order, _) = e.place(req, ctx()).unwrap();
    assert_eq!(order["order_state"], "cancelled");
}

#[test]
fn sell_stop_triggers_when_price_falls_to_it() {
    let mut e = engine();
    e.place(market(Direction::Buy, 1_000.0), ctx()).unwrap();
    let (stop, _) = e
        .place(
            trigger(Direction::Sell, OrderType::StopMarket, 58_000.0),
            ctx(),
        )
        .unwrap();
    assert_eq!(stop["order_state"], "untriggered");
    assert_eq!(stop["price"], "market_price");
    e.set_mark(BTC, 62_000.0, NOW);
    assert_eq!(state(&e, &stop), "untriggered");
    e.set_mark(BTC, 57_900.0, NOW);
    assert_eq!(state(&e, &stop), "filled");
    assert_eq!(position_size(&e), 0.0);
    let filled = e.order_state(stop["order_id"].as_str().unwrap()).unwrap();
    assert_eq!(filled["triggered"], true);
}

#[test]
fn buy_stop_triggers_when_price_rises_to_it() {
    let mut e = engine();
    let (stop, _) = e
        .place(
            trigger(Direction::Buy, OrderType::StopMarket, 61_000.0),
            ctx(),
        )
        .unwrap();
    e.set_mark(BTC, 60_500.0, NOW);
    assert_eq!(state(&e, &stop), "untriggered");
    e.set_mark(BTC, 61_000.0, NOW);
    assert_eq!(state(&e, &stop), "filled");
    assert_eq!(position_size(&e), 1_000.0);
}

#[test]
fn take_limit_triggers_in_favourable_direction_then_rests() {
    let mut e = engine();
    let mut req = trigger(Direction::Sell, OrderType::TakeLimit, 62_000.0);
    req.price = Some(62_500.0);
    let (take, _) = e.place(req, ctx()).unwrap();
    e.set_mark(BTC, 58_000.0, NOW);
    assert_eq!(state(&e, &take), "untriggered");
    e.set_mark(BTC, 62_000.0, NOW);
    assert_eq!(state(&e, &take), "open");
    e.set_mark(BTC, 62_500.0, NOW);
    assert_eq!(state(&e, &take), "filled");
}

#[test]
fn reduce_only_is_capped_to_position_and_cancelled_when_flat() {
    let mut e = engine();
    let mut req = market(Direction::Sell, 500.0);
    req.reduce_only = true;
    let (order, _) = e.place(req.clone(), ctx()).unwrap();
    assert_eq!(order["order_state"], "cancelled");
    assert_eq!(order["cancel_reason"], "reduce_only");
    assert_eq!(position_size(&e), 0.0);

    e.place(market(Direction::Buy, 200.0), ctx()).unwrap();
    let (order, _) = e.place(req, ctx()).unwrap();
    assert_eq!(order["order_state"], "filled");
    assert_eq!(order["filled_amount"], json!(200));
    assert_eq!(position_size(&e), 0.0);
}

fn otoco(fill_stop: f64, take: f64) -> OrderRequest {
    let mut primary = market(Direction::Buy, 1_000.0);
    primary.label = "entry-1".into();
    let mut stop = trigger(Direction::Sell, OrderType::StopMarket, fill_stop);
    stop.reduce_only = true;
    let mut tp = limit(Direction::Sell, 1_000.0, take);
    tp.reduce_only = true;
    primary.link = Some(LinkRequest {
        kind: LinkKind::OneTriggersOneCancelsOther,
        fill_condition: FillCondition::FirstHit,
        legs: vec![stop, tp],
    });
    primary
}

#[test]
fn otoco_legs_wait_for_primary_then_take_profit_cancels_stop() {
    let mut e = engine();
    let mut primary = otoco(58_000.0, 63_000.0);
    primary.order_type = OrderType::Limit;
    primary.price = Some(59_000.0);
    let (order, _) = e.place(primary, ctx()).unwrap();
    assert_eq!(order["is_primary_otoco"], true);
    let legs: Vec<String> = order["oto_order_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(legs.len(), 2);
    let leg = |e: &Engine, i: usize| e.order_state(&legs[i]).unwrap();
    assert_eq!(leg(&e, 0)["order_state"], "untriggered");
    assert_eq!(leg(&e, 1)["order_state"], "untriggered");
    assert_eq!(leg(&e, 0)["primary_order_id"], order["order_id"]);
    assert_eq!(leg(&e, 0)["oco_ref"], leg(&e, 1)["oco_ref"]);
    assert_eq!(leg(&e, 1)["label"], "entry-1");

    // A spike to the take-profit before entry must not fire the (inactive) legs.
    e.set_mark(BTC, 64_000.0, NOW);
    assert_eq!(leg(&e, 1)["order_state"], "untriggered");

    e.set_mark(BTC, 59_000.0, NOW);
    assert_eq!(state(&e, &order), "filled");
    assert_eq!(leg(&e, 0)["order_state"], "untriggered");
    assert_eq!(leg(&e, 1)["order_state"], "open");

    e.set_mark(BTC, 63_000.0, NOW);
    assert_eq!(leg(&e, 1)["order_state"], "filled");
    assert_eq!(leg(&e, 0)["order_state"], "cancelled");
    assert_eq!(leg(&e, 0)["cancel_reason"], "oco_other_closed");
    assert_eq!(position_size(&e), 0.0);
}

#[test]
fn otoco_stop_fill_cancels_take_profit() {
    let mut e = engine();
    let (order, _) = e.place(otoco(58_000.0, 63_000.0), ctx()).unwrap();
    assert_eq!(order["order_state"], "filled");
    let legs = order["oto_order_ids"].as_array().unwrap().clone();
    e.set_mark(BTC, 57_500.0, NOW);
    let stop = e.order_state(legs[0].as_str().unwrap()).unwrap();
    let tp = e.order_state(legs[1].as_str().unwrap()).unwrap();
    assert_eq!(stop["order_state"], "filled");
    assert_eq!(tp["order_state"], "cancelled");
    assert_eq!(tp["cancel_reason"], "oco_other_closed");
    assert_eq!(position_size(&e), 0.0);
}

#[test]
fn rejected_legs_leave_filled_primary_unprotected() {
    let mut e = engine();
    let context = PlaceContext {
        reject_legs: true,
        ..ctx()
    };
    let (order, _) = e.place(otoco(58_000.0, 63_000.0), context).unwrap();
    assert_eq!(order["order_state"], "filled");
    for leg in order["oto_order_ids"].as_array().unwrap() {
        let leg = e.order_state(leg.as_str().unwrap()).unwrap();
        assert_eq!(leg["order_state"], "rejected");
    }
    assert_eq!(position_size(&e), 1_000.0);
    assert!(e.open_orders(&OrderFilter::default()).is_empty());
}

#[test]
fn cancelling_unfilled_primary_cancels_its_legs() {
    let mut e = engine();
    let mut primary = otoco(50_000.0, 70_000.0);
    primary.order_type = OrderType::Limit;
    primary.price = Some(55_000.0);
    let (order, _) = e.place(primary, ctx()).unwrap();
    e.cancel(order["order_id"].as_str().unwrap(), NOW).unwrap();
    assert!(e.open_orders(&OrderFilter::default()).is_empty());
}

#[test]
fn cancel_on_disconnect_selects_only_that_connections_orders() {
    let mut e = engine();
    let on = |conn| PlaceContext {
        created_by: Some(ConnId(conn)),
        ..ctx()
    };
    let (a, _) = e
        .place(limit(Direction::Buy, 10.0, 50_000.0), on(1))
        .unwrap();
    let (b, _) = e
        .place(limit(Direction::Buy, 10.0, 50_000.0), on(2))
        .unwrap();
    let (seeded, _) = e
        .place(limit(Direction::Buy, 10.0, 50_000.0), ctx())
        .unwrap();
    assert_eq!(e.cancel_created_by(ConnId(1), NOW), 1);
    let a = e.order_state(a["order_id"].as_str().unwrap()).unwrap();
    assert_eq!(a["order_state"], "cancelled");
    assert_eq!(a["cancel_reason"], "cancel_on_disconnect");
    assert_eq!(state(&e, &b), "open");
    assert_eq!(state(&e, &seeded), "open");
}

#[test]
fn position_averaging_uses_harmonic_mean() {
    let mut e = engine();
    e.apply_fill(BTC, Direction::Buy, 1_000.0, 50_000.0, 0.0);
    e.apply_fill(BTC, Direction::Buy, 1_000.0, 100_000.0, 0.0);
    let avg = e.positions[BTC].average_price;
    // 2000 USD bought for 0.02 + 0.01 BTC.
    assert!((avg - 2_000.0 / 0.03).abs() < 1e-6, "{avg}");
    assert_eq!(position_size(&e), 2_000.0);
}

#[test]
fn realized_pnl_follows_inverse_contract_math() {
    let mut e = engine();
    e.apply_fill(BTC, Direction::Buy, 1_000.0, 50_000.0, 0.0);
    e.apply_fill(BTC, Direction::Sell, 1_000.0, 100_000.0, 0.0);
    // 1000 * (1/50000 - 1/100000) = 0.01 BTC.
    assert!((e.accounts[0].balance - 10.01).abs() < 1e-12);
    assert_eq!(position_size(&e), 0.0);

    e.apply_fill(BTC, Direction::Sell, 1_000.0, 100_000.0, 0.0);
    e.apply_fill(BTC, Direction::Buy, 1_000.0, 50_000.0, 0.0);
    // Short from 100k covered at 50k: 1000 * (1/50000 - 1/100000) = +0.01 BTC.
    assert!((e.accounts[0].balance - 10.02).abs() < 1e-12);
}

#[test]
fn flipping_a_position_reopens_at_fill_price() {
    let mut e = engine();
    e.apply_fill(BTC, Direction::Buy, 1_000.0, 50_000.0, 0.0);
    e.apply_fill(BTC, Direction::Sell, 3_000.0, 55_000.0, 0.0);
    assert_eq!(position_size(&e), -2_000.0);
    assert_eq!(e.positions[BTC].average_price, 55_000.0);
}

#[test]
fn flat_position_is_reported_once_it_existed() {
    let mut e = engine();
    assert!(e.positions(Some("BTC")).is_empty());
    e.place(market(Direction::Buy, 100.0), ctx()).unwrap();
    e.place(market(Direction::Sell, 100.0), ctx()).unwrap();
    let positions = e.positions(Some("BTC"));
    assert_eq!(positions.len(), 1);
    assert_eq!(positions[0]["direction"], "zero");
    assert_eq!(positions[0]["size"], json!(0));
}

#[test]
fn taker_fee_reduces_balance() {
    let mut e = engine();
    e.place(market(Direction::Buy, 1_000.0), ctx()).unwrap();
    let summary = e.account_summary("BTC").unwrap();
    let fee = 1_000.0 / 60_000.5 * TAKER_COMMISSION;
    assert!((summary["balance"].as_f64().unwrap() - (10.0 - fee)).abs() < 1e-9);
}

#[test]
fn orders_by_label_include_closed_ones() {
    let mut e = engine();
    let mut req = market(Direction::Buy, 10.0);
    req.label = "idem-1".into();
    e.place(req, ctx()).unwrap();
    let filter = OrderFilter {
        currency: Some("BTC"),
        label: Some("idem-1"),
        ..OrderFilter::default()
    };
    let found = e.all_orders(&filter);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["order_state"], "filled");
}

#[test]
fn cancel_matching_respects_type_filter() {
    let mut e = engine();
    e.place(limit(Direction::Buy, 10.0, 50_000.0), ctx())
        .unwrap();
    e.place(
        trigger(Direction::Sell, OrderType::StopMarket, 50_000.0),
        ctx(),
    )
    .unwrap();
    let stops = OrderFilter {
        types: TypeFilter::StopAll,
        ..OrderFilter::default()
    };
    assert_eq!(e.cancel_matching(&stops, NOW), 1);
    assert_eq!(e.open_orders(&OrderFilter::default()).len(), 1);
}

#[test]
fn closed_orders_are_forgotten_beyond_the_limit() {
    let mut e = engine();
    for _ in 0..(CLOSED_ORDERS_KEPT + 5) {
        let (order, _) = e
            .place(limit(Direction::Buy, 10.0, 50_000.0), ctx())
            .unwrap();
        e.cancel(order["order_id"].as_str().unwrap(), NOW).unwrap();
    }
    assert_eq!(e.orders.len(), CLOSED_ORDERS_KEPT);
    assert_eq!(e.ids.len(), CLOSED_ORDERS_KEPT);
}

#[test]
fn engine_records_events_for_order_changes() {
    let mut e = engine();
    e.take_events();
    e.place(market(Direction::Buy, 10.0), ctx()).unwrap();
    let events = e.take_events();
    assert!(
        events
            .iter()
            .any(|ev| matches!(ev, EngineEvent::Order { .. }))
    );
    assert!(
        events
            .iter()
            .any(|ev| matches!(ev, EngineEvent::Trades { .. }))
    );
    assert!(
        events
            .iter()
            .any(|ev| matches!(ev, EngineEvent::Portfolio { currency: "BTC" }))
    );
}
