//! Order queries: which orders a filter selects, and each order as the Deribit order object
//! (also what `user.orders` publishes).

use serde_json::{Value, json};

use super::{Engine, EngineEvent, Order, OrderFilter, OrderState, OrderType, num};

impl Engine {
    // ----- queries -----

    pub(super) fn select_active(&self, filter: &OrderFilter<'_>) -> Vec<u64> {
        self.active_where(|order| self.filter_matches(order, filter))
    }

    /// The active orders (by sequence number, oldest first) for which `pred` holds.
    pub(super) fn active_where(&self, pred: impl Fn(&Order) -> bool) -> Vec<u64> {
        self.active
            .iter()
            .copied()
            .filter(|seq| self.orders.get(seq).is_some_and(&pred))
            .collect()
    }

    fn filter_matches(&self, order: &Order, filter: &OrderFilter<'_>) -> bool {
        filter
            .currency
            .is_none_or(|c| self.markets[order.instrument].spec.currency == c)
            && filter.instrument.is_none_or(|i| order.instrument == i)
            && filter.label.is_none_or(|l| order.label == l)
            && filter.types.matches(order.order_type)
    }

    /// Open (and untriggered) orders the filter selects.
    pub(crate) fn open_orders(&self, filter: &OrderFilter<'_>) -> Vec<Value> {
        self.select_active(filter)
            .into_iter()
            .filter_map(|seq| self.order_by_seq(seq))
            .collect()
    }

    /// Every kept order (active and recently closed) the filter selects, oldest first.
    pub(crate) fn all_orders(&self, filter: &OrderFilter<'_>) -> Vec<Value> {
        self.orders
            .values()
            .filter(|order| self.filter_matches(order, filter))
            .map(|order| self.order_json(order))
            .collect()
    }

    /// One order by id (active or recently closed).
    pub(crate) fn order_state(&self, order_id: &str) -> Option<Value> {
        self.ids
            .get(order_id)
            .and_then(|seq| self.order_by_seq(*seq))
    }

    pub(super) fn order_by_seq(&self, seq: u64) -> Option<Value> {
        self.orders.get(&seq).map(|order| self.order_json(order))
    }

    pub(super) fn emit_order(&mut self, seq: u64) {
        if let Some(order) = self.orders.get(&seq) {
            let event = EngineEvent::Order {
                instrument: order.instrument,
                order: self.order_json(order),
            };
            self.events.push(event);
        }
    }

    pub(super) fn order_json(&self, order: &Order) -> Value {
        let spec = self.markets[order.instrument].spec;
        let is_market = matches!(
            order.order_type,
            OrderType::Market | OrderType::StopMarket | OrderType::TakeMarket
        );
        let price = match order.price {
            Some(price) if !is_market => num(price),
            _ if order.state == OrderState::Filled => num(order.average_price),
            _ => json!("market_price"),
        };
        let mut value = json!({
            "order_id": order.order_id,
            "order_state": order.state.as_str(),
            "order_type": order.order_type.as_str(),
            "time_in_force": order.time_in_force.as_str(),
            "instrument_name": spec.name,
            "direction": order.direction.as_str(),
            "price": price,
            "amount": num(order.amount),
            "contracts": num(order.amount / spec.contract_size),
            "filled_amount": num(order.filled_amount),
            "average_price": num(order.average_price),
            "label": order.label,
            "post_only": order.post_only,
            "reject_post_only": order.reject_post_only,
            "reduce_only": order.reduce_only,
            "api": true,
            "web": false,
            "replaced": false,
            "is_liquidation": false,
            "risk_reducing": false,
            "mmp": false,
            "max_show": num(order.amount),
            "creation_timestamp": order.creation_ms,
            "last_update_timestamp": order.last_update_ms,
        });
        if let Some(map) = value.as_object_mut() {
            if order.order_type.is_trigger() {
                if let Some(trigger) = order.trigger {
                    map.insert("trigger".into(), json!(trigger.as_str()));
                }
                if let Some(trigger_price) = order.trigger_price {
                    map.insert("trigger_price".into(), num(trigger_price));
                }
                map.insert("triggered".into(), json!(order.triggered));
            }
            if let Some(reason) = order.cancel_reason {
                map.insert("cancel_reason".into(), json!(reason));
            }
            if order.link.is_some() {
                map.insert("is_primary_otoco".into(), json!(true));
                map.insert("oto_order_ids".into(), json!(order.oto_order_ids));
                if let Some(condition) = order.fill_condition {
                    map.insert("trigger_fill_condition".into(), json!(condition.as_str()));
                }
            }
            if let Some(primary) = &order.primary_order_id {
                map.insert("primary_order_id".into(), json!(primary));
            }
            if let Some(oco_ref) = &order.oco_ref {
                map.insert("oco_ref".into(), json!(oco_ref));
            }
        }
        value
    }
}
