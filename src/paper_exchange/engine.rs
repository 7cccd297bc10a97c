//! The matching engine and account of the simulated exchange: orders, triggers, linked
//! (OTO/OTOCO) orders, positions, balances and PnL. Pure state and arithmetic: no I/O, no clock
//! (callers pass `now_ms`), no locking. Every change is recorded as an [`EngineEvent`] that the
//! server drains and publishes on the `user.*` channels.
//!
//! Simplifications (documented in the module root too):
//! - One simulated account; every credential is an API key of it.
//! - Orders always fill completely in one trade (no partial fills), so the OTOCO fill conditions
//!   `first_hit`, `complete_fill` and `incremental` behave alike.
//! - Index, mark and last price are the same number, so every `trigger` kind behaves alike.
//! - A resting limit order fills at its own price (maker, no fee) once the mark price reaches it;
//!   at placement a limit order that crosses the spread fills at the best price (taker, fee).
//! - `reduce_only` orders are capped at fill time to what reduces the position; nothing left to
//!   reduce cancels them with `cancel_reason: "reduce_only"`.
//! - The margin check looks at the resulting position only (not at other open orders).
//!
//! The engine is split by concept: `request` (the order vocabulary and its validation),
//! `matching` (placement, triggers, fills, linked orders, cancels), `account` (positions,
//! balances, PnL) and `query` (order selection and the Deribit order object).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde_json::{Value, json};

use super::market::MarketState;

mod account;
mod matching;
mod query;
mod request;
#[cfg(test)]
mod tests;

use request::OrderState;
pub(crate) use request::{
    ConnId, EngineError, FillCondition, LinkKind, LinkRequest, OrderFilter, OrderRequest,
    OrderType, PlaceContext, TimeInForce, Trigger, TypeFilter,
};
pub use request::{Direction, OrderSeed};

/// How many closed (filled, cancelled, rejected) orders are kept for `get_order_state_by_label`
/// and [`crate::paper_exchange::PaperExchange::all_orders`]; older ones are forgotten.
pub(crate) const CLOSED_ORDERS_KEPT: usize = 10_000;

/// Something that changed and may interest `user.*` subscribers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EngineEvent {
    /// An order was created or changed; `order` is its current Deribit order object.
    Order { instrument: usize, order: Value },
    /// Trades happened on an instrument.
    Trades {
        instrument: usize,
        trades: Vec<Value>,
    },
    /// Balance or positions of a currency changed.
    Portfolio { currency: &'static str },
}

#[derive(Debug, Clone)]
struct Order {
    order_id: String,
    instrument: usize,
    direction: Direction,
    order_type: OrderType,
    amount: f64,
    filled_amount: f64,
    price: Option<f64>,
    average_price: f64,
    trigger_price: Option<f64>,
    trigger: Option<Trigger>,
    triggered: bool,
    state: OrderState,
    time_in_force: TimeInForce,
    post_only: bool,
    reject_post_only: bool,
    reduce_only: bool,
    label: String,
    creation_ms: i64,
    last_update_ms: i64,
    cancel_reason: Option<&'static str>,
    created_by: Option<ConnId>,
    /// False until the first matching attempt: that one is the placement (may take liquidity);
    /// later ones are a resting order being reached by the market.
    resting: bool,
    // Linked orders.
    link: Option<LinkKind>,
    oto_order_ids: Vec<String>,
    fill_condition: Option<FillCondition>,
    reject_legs: bool,
    primary_order_id: Option<String>,
    oco_ref: Option<String>,
    /// A leg whose primary has not filled yet: shown untriggered, never matched.
    awaiting_primary: bool,
}

impl Order {
    fn is_active(&self) -> bool {
        matches!(self.state, OrderState::Open | OrderState::Untriggered)
    }
}

#[derive(Debug, Clone, Default)]
struct Position {
    /// Signed size in USD: positive long, negative short.
    size: f64,
    average_price: f64,
    realized_pnl: f64,
    /// Once a position existed, `get_positions` keeps reporting it (flat: direction `zero`).
    existed: bool,
}

#[derive(Debug, Clone)]
struct Account {
    currency: &'static str,
    balance: f64,
    realized_pnl: f64,
}

/// The matching engine and the simulated account.
#[derive(Debug)]
pub(crate) struct Engine {
    markets: Vec<MarketState>,
    positions: Vec<Position>,
    accounts: Vec<Account>,
    orders: BTreeMap<u64, Order>,
    ids: HashMap<String, u64>,
    active: BTreeSet<u64>,
    closed: VecDeque<u64>,
    next_seq: u64,
    next_trade: u64,
    /// Cancel-on-disconnect with scope `account`: applies to every connection.
    pub cod_account: bool,
    events: Vec<EngineEvent>,
}

/// Currencies the account holds, whatever instruments are listed.
pub(crate) const CURRENCIES: [&str; 2] = ["BTC", "ETH"];

/// Whole numbers as JSON integers (as Deribit prints amounts), others as floats.
pub(crate) fn num(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        // The guard above keeps the cast exact.
        json!(value as i64)
    } else {
        json!(value)
    }
}

impl Engine {
    /// An engine trading `markets` for an account holding the given balances.
    pub(crate) fn new(markets: Vec<MarketState>, balance_btc: f64, balance_eth: f64) -> Self {
        let positions = vec![Position::default(); markets.len()];
        Self {
            markets,
            positions,
            accounts: vec![
                Account {
                    currency: "BTC",
                    balance: balance_btc,
                    realized_pnl: 0.0,
                },
                Account {
                    currency: "ETH",
                    balance: balance_eth,
                    realized_pnl: 0.0,
                },
            ],
            orders: BTreeMap::new(),
            ids: HashMap::new(),
            active: BTreeSet::new(),
            closed: VecDeque::new(),
            next_seq: 1,
            next_trade: 1,
            cod_account: false,
            events: Vec::new(),
        }
    }

    /// The listed markets, in configuration order.
    pub(crate) fn markets(&self) -> &[MarketState] {
        &self.markets
    }

    /// Mutable access to one market, for the random walk.
    pub(crate) fn market_mut(&mut self, instrument: usize) -> Option<&mut MarketState> {
        self.markets.get_mut(instrument)
    }

    /// Open interest shown in the ticker: a constant base plus the paper position.
    pub(crate) fn open_interest(&self, instrument: usize) -> f64 {
        let own = self.positions.get(instrument).map_or(0.0, |p| p.size.abs());
        1_000_000.0 + own
    }

    /// Drains what changed since the last call.
    pub(crate) fn take_events(&mut self) -> Vec<EngineEvent> {
        std::mem::take(&mut self.events)
    }
}
