//! Placement, matching, linked (OTO/OTOCO) orders and cancelling: how orders move through
//! their states as the mark price moves.

use serde_json::{Value, json};

use super::request::{invalid, validate};
use super::{
    CLOSED_ORDERS_KEPT, ConnId, Direction, Engine, EngineError, EngineEvent, LinkKind, Order,
    OrderFilter, OrderRequest, OrderState, OrderType, PlaceContext, TimeInForce, Trigger, num,
};
use crate::paper_exchange::market::{TAKER_COMMISSION, round_decimals};

impl Engine {
    // ----- placement -----

    /// Validates and places an order (and its linked legs), then matches it against the current
    /// market. Returns the order object and its trades, as `private/buy` answers.
    pub(crate) fn place(
        &mut self,
        mut req: OrderRequest,
        ctx: PlaceContext,
    ) -> Result<(Value, Vec<Value>), EngineError> {
        let spec = self
            .markets
            .get(req.instrument)
            .ok_or(EngineError::UnknownInstrument)?
            .spec;
        validate(spec, &req, "amount")?;
        let events_before = self.events.len();
        if let Some(link) = &req.link {
            if link.legs.is_empty() || link.legs.len() > 2 {
                return Err(invalid("otoco_config", "must hold one or two orders"));
            }
            for leg in &link.legs {
                if leg.link.is_some() {
                    return Err(invalid("otoco_config", "legs cannot be linked themselves"));
                }
                validate(spec, leg, "otoco_config")?;
            }
        }
        if let Some(valid_until) = req.valid_until_ms
            && valid_until < ctx.now_ms
        {
            return Err(EngineError::TimedOut);
        }
        let market = &self.markets[req.instrument];
        if req.post_only
            && req.order_type == OrderType::Limit
            && let Some(price) = req.price
        {
            let takes = match req.direction {
                Direction::Buy => price >= market.best_ask(),
                Direction::Sell => price <= market.best_bid(),
            };
            if takes {
                if req.reject_post_only {
                    return Err(EngineError::PostOnlyReject);
                }
                // Deribit moves a taking post-only order to the passive side of the book.
                req.price = Some(match req.direction {
                    Direction::Buy => market.best_bid(),
                    Direction::Sell => market.best_ask(),
                });
            }
        }
        if !ctx.skip_margin_check && !req.reduce_only {
            self.check_margin(&req)?;
        }

        let link = req.link.take();
        let primary_seq = self.insert_order(&req, &ctx, None, None);
        if let Some(link) = link {
            let primary_id = self.orders[&primary_seq].order_id.clone();
            let oco_ref = match link.kind {
                LinkKind::OneTriggersOneCancelsOther => Some(format!("OCO-{}", self.next_seq)),
                LinkKind::OneTriggersOther => None,
            };
            let mut leg_ids = Vec::with_capacity(link.legs.len());
            for mut leg in link.legs {
                leg.instrument = req.instrument;
                if leg.label.is_empty() {
                    leg.label = req.label.clone();
                }
                let leg_seq =
                    self.insert_order(&leg, &ctx, Some(primary_id.clone()), oco_ref.clone());
                leg_ids.push(self.orders[&leg_seq].order_id.clone());
            }
            if let Some(primary) = self.orders.get_mut(&primary_seq) {
                primary.link = Some(link.kind);
                primary.oto_order_ids = leg_ids;
                primary.fill_condition = Some(link.fill_condition);
                primary.reject_legs = ctx.reject_legs;
            }
        }
        // Publish the creation of the primary and its legs before anything fills.
        let created: Vec<u64> = self
            .orders
            .range(primary_seq..)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in created {
            self.emit_order(seq);
        }

        self.step(primary_seq, ctx.now_ms);
        if let Some(order) = self.orders.get(&primary_seq)
            && order.is_active()
            && order.state == OrderState::Open
            && matches!(
                order.time_in_force,
                TimeInForce::ImmediateOrCancel | TimeInForce::FillOrKill
            )
        {
            let reason = match order.time_in_force {
                TimeInForce::FillOrKill => "fill_or_kill",
                _ => "immediate_or_cancel",
            };
            self.cancel_seq(primary_seq, reason, ctx.now_ms);
        }
        self.settle(req.instrument, ctx.now_ms);

        let order = self
            .orders
            .get(&primary_seq)
            .ok_or(EngineError::OrderNotFound)?;
        // The reply's trades are this order's fills during this placement: they are in the
        // events it produced, so a kept (closed) order does not carry them for its whole life.
        let trades = self.events[events_before..]
            .iter()
            .filter_map(|event| match event {
                EngineEvent::Trades { trades, .. } => Some(trades),
                _ => None,
            })
            .flatten()
            .filter(|trade| trade["order_id"].as_str() == Some(order.order_id.as_str()))
            .cloned()
            .collect();
        Ok((self.order_json(order), trades))
    }

    fn check_margin(&self, req: &OrderRequest) -> Result<(), EngineError> {
        let market = &self.markets[req.instrument];
        let position = &self.positions[req.instrument];
        let resulting = position.size + req.direction.sign() * req.amount;
        if resulting.abs() <= position.size.abs() {
            return Ok(());
        }
        let balance = self
            .account(market.spec.currency)
            .map_or(0.0, |a| a.balance);
        let notional = resulting.abs() / market.mark;
        if notional > balance * market.spec.max_leverage {
            return Err(EngineError::NotEnoughFunds);
        }
        Ok(())
    }

    fn insert_order(
        &mut self,
        req: &OrderRequest,
        ctx: &PlaceContext,
        primary_order_id: Option<String>,
        oco_ref: Option<String>,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let spec = self.markets[req.instrument].spec;
        let is_leg = primary_order_id.is_some();
        let order_id = if is_leg {
            format!("OTO-{seq}")
        } else {
            format!("{}-{seq}", spec.currency)
        };
        let state = if req.order_type.is_trigger() || is_leg {
            OrderState::Untriggered
        } else {
            OrderState::Open
        };
        let trigger = if req.order_type.is_trigger() {
            Some(req.trigger.unwrap_or(Trigger::Mark))
        } else {
            None
        };
        let order = Order {
            order_id: order_id.clone(),
            instrument: req.instrument,
            direction: req.direction,
            order_type: req.order_type,
            amount: req.amount,
            filled_amount: 0.0,
            price: if req.order_type.needs_price() {
                req.price
            } else {
                None
            },
            average_price: 0.0,
            trigger_price: if req.order_type.is_trigger() {
                req.trigger_price
            } else {
                None
            },
            trigger,
            triggered: false,
            state,
            time_in_force: req.time_in_force,
            post_only: req.post_only,
            reject_post_only: req.reject_post_only,
            reduce_only: req.reduce_only,
            label: req.label.clone(),
            creation_ms: ctx.now_ms,
            last_update_ms: ctx.now_ms,
            cancel_reason: None,
            created_by: ctx.created_by,
            resting: false,
            link: None,
            oto_order_ids: Vec::new(),
            fill_condition: None,
            reject_legs: false,
            primary_order_id,
            oco_ref,
            awaiting_primary: is_leg,
        };
        self.ids.insert(order_id, seq);
        self.orders.insert(seq, order);
        self.active.insert(seq);
        seq
    }

    // ----- matching -----

    /// Moves the mark price of `instrument` and runs triggers and limit matching on it.
    pub(crate) fn set_mark(&mut self, instrument: usize, price: f64, now_ms: i64) {
        if let Some(market) = self.markets.get_mut(instrument) {
            market.set_mark(price);
            self.settle(instrument, now_ms);
        }
    }

    /// Runs triggers and limit matching on `instrument` at its current price until nothing moves
    /// (a fill can activate linked legs, which may fill in turn).
    pub(crate) fn settle(&mut self, instrument: usize, now_ms: i64) {
        // Bounded: each round fills, triggers or cancels at least one order for good.
        for _ in 0..1_000 {
            let candidates =
                self.active_where(|o| o.instrument == instrument && !o.awaiting_primary);
            if candidates.is_empty() {
                return;
            }
            let mut progressed = false;
            for seq in candidates {
                progressed |= self.step(seq, now_ms);
            }
            if !progressed {
                return;
            }
        }
    }

    /// One matching attempt for one order. Returns whether its state changed.
    fn step(&mut self, seq: u64, now_ms: i64) -> bool {
        let Some(order) = self.orders.get(&seq) else {
            return false;
        };
        if !order.is_active() || order.awaiting_primary {
            return false;
        }
        let market = &self.markets[order.instrument];
        let mark = market.mark;
        let (bid, ask) = (market.best_bid(), market.best_ask());
        let direction = order.direction;

        if order.state == OrderState::Untriggered {
            let Some(trigger_price) = order.trigger_price else {
                return false;
            };
            let hit = match (order.order_type.is_stop(), direction) {
                // Stops trigger when the price moves against the position they protect.
                (true, Direction::Sell) => mark <= trigger_price,
                (true, Direction::Buy) => mark >= trigger_price,
                // Takes trigger when it moves in favour.
                (false, Direction::Sell) => mark >= trigger_price,
                (false, Direction::Buy) => mark <= trigger_price,
            };
            if !hit {
                return false;
            }
            let is_market = matches!(
                order.order_type,
                OrderType::StopMarket | OrderType::TakeMarket
            );
            if let Some(order) = self.orders.get_mut(&seq) {
                order.triggered = true;
                order.state = OrderState::Open;
                order.resting = false;
                order.last_update_ms = now_ms;
            }
            if is_market {
                let price = match direction {
                    Direction::Buy => ask,
                    Direction::Sell => bid,
                };
                self.fill(seq, price, true, now_ms);
            } else {
                self.emit_order(seq);
                self.step(seq, now_ms);
            }
            return true;
        }

        // Open.
        let fill = match order.order_type {
            OrderType::Market | OrderType::StopMarket | OrderType::TakeMarket => Some((
                match direction {
                    Direction::Buy => ask,
                    Direction::Sell => bid,
                },
                true,
            )),
            OrderType::Limit | OrderType::StopLimit | OrderType::TakeLimit => {
                let Some(price) = order.price else {
                    return false;
                };
                match (direction, order.resting) {
                    (Direction::Buy, false) if price >= ask => Some((ask, true)),
                    (Direction::Sell, false) if price <= bid => Some((bid, true)),
                    (Direction::Buy, _) if mark <= price => Some((price, false)),
                    (Direction::Sell, _) if mark >= price => Some((price, false)),
                    _ => None,
                }
            }
        };
        match fill {
            Some((price, taker)) => {
                self.fill(seq, price, taker, now_ms);
                true
            }
            None => {
                if let Some(order) = self.orders.get_mut(&seq) {
                    order.resting = true;
                }
                false
            }
        }
    }

    /// Fills what is left of an order at `price` (capped for reduce-only), books the trade and
    /// runs the linked-order consequences.
    fn fill(&mut self, seq: u64, price: f64, taker: bool, now_ms: i64) {
        let Some(order) = self.orders.get(&seq) else {
            return;
        };
        let instrument = order.instrument;
        let direction = order.direction;
        let mut quantity = order.amount - order.filled_amount;
        let reduce_only = order.reduce_only;
        if reduce_only {
            let size = self.positions[instrument].size;
            let reducible = match direction {
                Direction::Buy if size < 0.0 => -size,
                Direction::Sell if size > 0.0 => size,
                _ => 0.0,
            };
            quantity = quantity.min(reducible);
        }
        if quantity <= 0.0 {
            self.cancel_seq(seq, "reduce_only", now_ms);
            return;
        }

        let spec = self.markets[instrument].spec;
        let fee = if taker {
            round_decimals(quantity / price * TAKER_COMMISSION, 10)
        } else {
            0.0
        };
        self.apply_fill(instrument, direction, quantity, price, fee);

        let trade_seq = self.next_trade;
        self.next_trade += 1;
        let mark = self.markets[instrument].mark;
        let Some(order) = self.orders.get_mut(&seq) else {
            return;
        };
        order.filled_amount += quantity;
        if reduce_only {
            // Capped: the order is done with what it could reduce.
            order.amount = order.filled_amount;
        }
        order.average_price = price;
        order.state = OrderState::Filled;
        order.last_update_ms = now_ms;
        let trade = json!({
            "trade_id": format!("{}-T{trade_seq}", spec.currency),
            "trade_seq": trade_seq,
            "order_id": order.order_id,
            "instrument_name": spec.name,
            "timestamp": now_ms,
            "direction": direction.as_str(),
            "price": num(price),
            "amount": num(quantity),
            "fee": fee,
            "fee_currency": spec.currency,
            "liquidity": if taker { "T" } else { "M" },
            "state": "filled",
            "tick_direction": 0,
            "index_price": num(mark),
            "mark_price": num(mark),
            "order_type": order.order_type.as_str(),
            "matching_id": null,
            "post_only": order.post_only,
            "reduce_only": order.reduce_only,
            "label": order.label,
        });
        self.close_seq(seq);
        self.emit_order(seq);
        self.events.push(EngineEvent::Trades {
            instrument,
            trades: vec![trade],
        });
        self.events.push(EngineEvent::Portfolio {
            currency: spec.currency,
        });
        self.after_fill(seq, now_ms);
    }

    /// Linked-order consequences of a fill: a primary activates (or, under fault injection,
    /// rejects) its legs; an OCO leg cancels its siblings.
    fn after_fill(&mut self, seq: u64, now_ms: i64) {
        let Some(order) = self.orders.get(&seq) else {
            return;
        };
        let legs: Vec<u64> = order
            .oto_order_ids
            .iter()
            .filter_map(|id| self.ids.get(id).copied())
            .collect();
        let reject_legs = order.reject_legs;
        let oco_ref = order.oco_ref.clone();
        for leg in legs {
            let Some(leg_order) = self.orders.get_mut(&leg) else {
                continue;
            };
            if !leg_order.is_active() || !leg_order.awaiting_primary {
                continue;
            }
            leg_order.awaiting_primary = false;
            leg_order.last_update_ms = now_ms;
            if reject_legs {
                leg_order.state = OrderState::Rejected;
                self.close_seq(leg);
            } else {
                leg_order.state = if leg_order.order_type.is_trigger() {
                    OrderState::Untriggered
                } else {
                    OrderState::Open
                };
            }
            self.emit_order(leg);
        }
        if let Some(oco_ref) = oco_ref {
            let siblings: Vec<u64> = self
                .active
                .iter()
                .copied()
                .filter(|other| {
                    *other != seq
                        && self
                            .orders
                            .get(other)
                            .is_some_and(|o| o.oco_ref.as_deref() == Some(oco_ref.as_str()))
                })
                .collect();
            for sibling in siblings {
                self.cancel_seq(sibling, "oco_other_closed", now_ms);
            }
        }
    }

    // ----- cancelling -----

    fn cancel_seq(&mut self, seq: u64, reason: &'static str, now_ms: i64) -> bool {
        let Some(order) = self.orders.get_mut(&seq) else {
            return false;
        };
        if !order.is_active() {
            return false;
        }
        order.state = OrderState::Cancelled;
        order.cancel_reason = Some(reason);
        order.last_update_ms = now_ms;
        let legs: Vec<u64> = order
            .oto_order_ids
            .iter()
            .filter_map(|id| self.ids.get(id).copied())
            .collect();
        self.close_seq(seq);
        self.emit_order(seq);
        // Legs that never went live die with their primary.
        for leg in legs {
            if self.orders.get(&leg).is_some_and(|o| o.awaiting_primary) {
                self.cancel_seq(leg, "oto_primary_closed", now_ms);
            }
        }
        true
    }

    /// `private/cancel`: cancels one order by id; returns its order object.
    pub(crate) fn cancel(&mut self, order_id: &str, now_ms: i64) -> Result<Value, EngineError> {
        let seq = *self.ids.get(order_id).ok_or(EngineError::OrderNotFound)?;
        if !self.cancel_seq(seq, "user_request", now_ms) {
            return Err(EngineError::AlreadyClosed);
        }
        self.order_by_seq(seq).ok_or(EngineError::OrderNotFound)
    }

    /// Cancels every active order the filter selects; returns how many.
    pub(crate) fn cancel_matching(&mut self, filter: &OrderFilter<'_>, now_ms: i64) -> usize {
        let selected = self.select_active(filter);
        selected
            .into_iter()
            .filter(|seq| self.cancel_seq(*seq, "user_request", now_ms))
            .count()
    }

    /// Cancel-on-disconnect: cancels the active orders created by `connection`.
    pub(crate) fn cancel_created_by(&mut self, connection: ConnId, now_ms: i64) -> usize {
        self.active_where(|o| o.created_by == Some(connection))
            .into_iter()
            .filter(|seq| self.cancel_seq(*seq, "cancel_on_disconnect", now_ms))
            .count()
    }

    fn close_seq(&mut self, seq: u64) {
        if self.active.remove(&seq) {
            self.closed.push_back(seq);
        }
        while self.closed.len() > CLOSED_ORDERS_KEPT {
            if let Some(old) = self.closed.pop_front()
                && let Some(order) = self.orders.remove(&old)
            {
                self.ids.remove(&order.order_id);
            }
        }
    }
}
