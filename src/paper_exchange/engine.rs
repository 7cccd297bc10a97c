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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::market::{InstrumentSpec, MarketState, TAKER_COMMISSION, round_decimals};

/// How many closed (filled, cancelled, rejected) orders are kept for `get_order_state_by_label`
/// and [`crate::paper_exchange::PaperExchange::all_orders`]; older ones are forgotten.
pub(crate) const CLOSED_ORDERS_KEPT: usize = 10_000;

/// Side of an order or position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Buy / long.
    Buy,
    /// Sell / short.
    Sell,
}

impl Direction {
    /// The wire name, `buy` or `sell`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Buy => "buy",
            Direction::Sell => "sell",
        }
    }

    /// Parses the wire name.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "buy" => Some(Direction::Buy),
            "sell" => Some(Direction::Sell),
            _ => None,
        }
    }

    fn sign(self) -> f64 {
        match self {
            Direction::Buy => 1.0,
            Direction::Sell => -1.0,
        }
    }
}

/// A resting order placed as if by another session: see
/// [`crate::paper_exchange::PaperExchange::seed_order`].
#[derive(Debug, Clone, PartialEq)]
pub struct OrderSeed {
    /// Instrument name, e.g. `BTC-PERPETUAL`.
    pub instrument: String,
    /// Side.
    pub direction: Direction,
    /// Amount in USD.
    pub amount: f64,
    /// Deribit order type: `limit`, `market`, `stop_market`, `stop_limit`, `take_market`,
    /// `take_limit`.
    pub order_type: String,
    /// Limit price (limit types).
    pub price: Option<f64>,
    /// Trigger price (stop and take types).
    pub trigger_price: Option<f64>,
    /// Order label.
    pub label: String,
    /// Whether the order may only reduce the position.
    pub reduce_only: bool,
}

/// Identifies the connection that created an order (for cancel-on-disconnect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnId(pub u64);

/// Deribit order types the engine supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderType {
    Limit,
    Market,
    StopLimit,
    StopMarket,
    TakeLimit,
    TakeMarket,
}

impl OrderType {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "limit" => OrderType::Limit,
            // The rest of a market_limit order would turn into a limit order; fills here are
            // always complete, so it is a market order.
            "market" | "market_limit" => OrderType::Market,
            "stop_limit" => OrderType::StopLimit,
            "stop_market" => OrderType::StopMarket,
            "take_limit" => OrderType::TakeLimit,
            "take_market" => OrderType::TakeMarket,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            OrderType::Limit => "limit",
            OrderType::Market => "market",
            OrderType::StopLimit => "stop_limit",
            OrderType::StopMarket => "stop_market",
            OrderType::TakeLimit => "take_limit",
            OrderType::TakeMarket => "take_market",
        }
    }

    fn is_trigger(self) -> bool {
        matches!(
            self,
            OrderType::StopLimit
                | OrderType::StopMarket
                | OrderType::TakeLimit
                | OrderType::TakeMarket
        )
    }

    fn is_stop(self) -> bool {
        matches!(self, OrderType::StopLimit | OrderType::StopMarket)
    }

    fn needs_price(self) -> bool {
        matches!(
            self,
            OrderType::Limit | OrderType::StopLimit | OrderType::TakeLimit
        )
    }
}

/// Lifecycle of an order, as Deribit names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderState {
    Open,
    Filled,
    Rejected,
    Cancelled,
    Untriggered,
}

impl OrderState {
    fn as_str(self) -> &'static str {
        match self {
            OrderState::Open => "open",
            OrderState::Filled => "filled",
            OrderState::Rejected => "rejected",
            OrderState::Cancelled => "cancelled",
            OrderState::Untriggered => "untriggered",
        }
    }
}

/// Deribit's `time_in_force`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeInForce {
    GoodTilCancelled,
    /// Treated as good-til-cancelled: the simulator has no trading day.
    GoodTilDay,
    FillOrKill,
    ImmediateOrCancel,
}

impl TimeInForce {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "good_til_cancelled" => TimeInForce::GoodTilCancelled,
            "good_til_day" => TimeInForce::GoodTilDay,
            "fill_or_kill" => TimeInForce::FillOrKill,
            "immediate_or_cancel" => TimeInForce::ImmediateOrCancel,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            TimeInForce::GoodTilCancelled => "good_til_cancelled",
            TimeInForce::GoodTilDay => "good_til_day",
            TimeInForce::FillOrKill => "fill_or_kill",
            TimeInForce::ImmediateOrCancel => "immediate_or_cancel",
        }
    }
}

/// Which price a trigger order watches. All three are the same price in the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    Index,
    Mark,
    Last,
}

impl Trigger {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "index_price" => Trigger::Index,
            "mark_price" => Trigger::Mark,
            "last_price" => Trigger::Last,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Trigger::Index => "index_price",
            Trigger::Mark => "mark_price",
            Trigger::Last => "last_price",
        }
    }
}

/// When the legs of a linked order become live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FillCondition {
    FirstHit,
    CompleteFill,
    Incremental,
}

impl FillCondition {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "first_hit" => FillCondition::FirstHit,
            "complete_fill" => FillCondition::CompleteFill,
            "incremental" => FillCondition::Incremental,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            FillCondition::FirstHit => "first_hit",
            FillCondition::CompleteFill => "complete_fill",
            FillCondition::Incremental => "incremental",
        }
    }
}

/// Supported `linked_order_type`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkKind {
    /// `one_triggers_other`: the legs go live when the primary fills.
    OneTriggersOther,
    /// `one_triggers_one_cancels_other`: as above, and the first leg to fill cancels the others.
    OneTriggersOneCancelsOther,
}

/// The linked part of an order request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LinkRequest {
    pub kind: LinkKind,
    pub fill_condition: FillCondition,
    pub legs: Vec<OrderRequest>,
}

/// A validated-shape order request (types parsed; values checked by [`Engine::place`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrderRequest {
    pub instrument: usize,
    pub direction: Direction,
    pub amount: f64,
    pub order_type: OrderType,
    pub price: Option<f64>,
    pub trigger_price: Option<f64>,
    pub trigger: Option<Trigger>,
    pub label: String,
    pub time_in_force: TimeInForce,
    pub post_only: bool,
    pub reject_post_only: bool,
    pub reduce_only: bool,
    pub valid_until_ms: Option<i64>,
    pub link: Option<LinkRequest>,
}

impl OrderRequest {
    /// A plain good-til-cancelled request with every option off.
    pub(crate) fn new(
        instrument: usize,
        direction: Direction,
        amount: f64,
        order_type: OrderType,
    ) -> Self {
        Self {
            instrument,
            direction,
            amount,
            order_type,
            price: None,
            trigger_price: None,
            trigger: None,
            label: String::new(),
            time_in_force: TimeInForce::GoodTilCancelled,
            post_only: false,
            reject_post_only: false,
            reduce_only: false,
            valid_until_ms: None,
            link: None,
        }
    }
}

/// Circumstances of a placement that are not part of the request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PlaceContext {
    /// The connection placing it (None: seeded from outside).
    pub created_by: Option<ConnId>,
    pub now_ms: i64,
    /// Fault injection: the linked legs end `rejected` when the primary fills.
    pub reject_legs: bool,
    /// Seeded orders skip the margin check.
    pub skip_margin_check: bool,
}

/// Why the engine refused a request. Mapped to Deribit error codes by the protocol layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum EngineError {
    #[error("invalid param {param}: {reason}")]
    InvalidParams { param: &'static str, reason: String },
    #[error("invalid or unsupported instrument")]
    UnknownInstrument,
    #[error("amount below the minimum trade amount")]
    QtyTooLow,
    #[error("price not on the tick grid")]
    PriceWrongTick,
    #[error("not enough funds")]
    NotEnoughFunds,
    #[error("order not found")]
    OrderNotFound,
    #[error("order already closed")]
    AlreadyClosed,
    #[error("post-only order would take liquidity")]
    PostOnlyReject,
    #[error("valid_until has passed")]
    TimedOut,
}

fn invalid(param: &'static str, reason: impl Into<String>) -> EngineError {
    EngineError::InvalidParams {
        param,
        reason: reason.into(),
    }
}

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

/// Which open orders a query or mass cancel selects.
#[derive(Debug, Clone, Default)]
pub(crate) struct OrderFilter<'a> {
    pub currency: Option<&'a str>,
    pub instrument: Option<usize>,
    pub label: Option<&'a str>,
    pub types: TypeFilter,
}

/// The `type` parameter of the open-order queries and mass cancels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum TypeFilter {
    #[default]
    All,
    Limit,
    TriggerAll,
    StopAll,
    StopLimit,
    StopMarket,
    TakeAll,
    TakeLimit,
    TakeMarket,
}

impl TypeFilter {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "all" => TypeFilter::All,
            "limit" => TypeFilter::Limit,
            "trigger_all" => TypeFilter::TriggerAll,
            "stop_all" | "stop" => TypeFilter::StopAll,
            "stop_limit" => TypeFilter::StopLimit,
            "stop_market" => TypeFilter::StopMarket,
            "take_all" | "take" => TypeFilter::TakeAll,
            "take_limit" => TypeFilter::TakeLimit,
            "take_market" => TypeFilter::TakeMarket,
            _ => return None,
        })
    }

    fn matches(self, order_type: OrderType) -> bool {
        use OrderType as T;
        match self {
            TypeFilter::All => true,
            TypeFilter::Limit => matches!(order_type, T::Limit | T::Market),
            TypeFilter::TriggerAll => order_type.is_trigger(),
            TypeFilter::StopAll => order_type.is_stop(),
            TypeFilter::StopLimit => order_type == T::StopLimit,
            TypeFilter::StopMarket => order_type == T::StopMarket,
            TypeFilter::TakeAll => matches!(order_type, T::TakeLimit | T::TakeMarket),
            TypeFilter::TakeLimit => order_type == T::TakeLimit,
            TypeFilter::TakeMarket => order_type == T::TakeMarket,
        }
    }
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
    trades: Vec<Value>,
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
        Ok((self.order_json(order), order.trades.clone()))
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
            trades: Vec::new(),
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
            let candidates: Vec<u64> = self
                .active
                .iter()
                .copied()
                .filter(|seq| {
                    self.orders
                        .get(seq)
                        .is_some_and(|o| o.instrument == instrument && !o.awaiting_primary)
                })
                .collect();
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
        order.trades.push(trade.clone());
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

    /// Books a fill into the position and the balance (inverse-contract arithmetic).
    fn apply_fill(
        &mut self,
        instrument: usize,
        direction: Direction,
        quantity: f64,
        price: f64,
        fee: f64,
    ) {
        let currency = self.markets[instrument].spec.currency;
        let position = &mut self.positions[instrument];
        position.existed = true;
        let signed = direction.sign() * quantity;
        let mut pnl = 0.0;
        if position.size == 0.0 || position.size.signum() == signed.signum() {
            let old = position.size.abs();
            // Inverse contracts average by harmonic mean: USD over coins.
            position.average_price = if old == 0.0 {
                price
            } else {
                (old + quantity) / (old / position.average_price + quantity / price)
            };
            position.size += signed;
        } else {
            let closed = quantity.min(position.size.abs());
            pnl = if position.size > 0.0 {
                closed * (1.0 / position.average_price - 1.0 / price)
            } else {
                closed * (1.0 / price - 1.0 / position.average_price)
            };
            position.size += signed;
            if position.size.abs() < 1e-9 {
                position.size = 0.0;
                position.average_price = 0.0;
            } else if quantity > closed {
                // Flipped: the remainder opened a new position at the fill price.
                position.average_price = price;
            }
        }
        position.realized_pnl += pnl;
        let market = &mut self.markets[instrument];
        market.volume_usd += quantity;
        market.volume += quantity / price;
        if let Some(account) = self.accounts.iter_mut().find(|a| a.currency == currency) {
            account.balance += pnl - fee;
            account.realized_pnl += pnl;
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
        let selected: Vec<u64> = self
            .active
            .iter()
            .copied()
            .filter(|seq| {
                self.orders
                    .get(seq)
                    .is_some_and(|o| o.created_by == Some(connection))
            })
            .collect();
        selected
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

    // ----- positions -----

    /// `private/close_position`: a reduce-only order against the whole position. `price` is
    /// required for `limit`.
    pub(crate) fn close_position(
        &mut self,
        instrument: usize,
        order_type: OrderType,
        price: Option<f64>,
        created_by: Option<ConnId>,
        now_ms: i64,
    ) -> Result<(Value, Vec<Value>), EngineError> {
        let size = self
            .positions
            .get(instrument)
            .ok_or(EngineError::UnknownInstrument)?
            .size;
        if size == 0.0 {
            return Err(EngineError::AlreadyClosed);
        }
        let direction = if size > 0.0 {
            Direction::Sell
        } else {
            Direction::Buy
        };
        let mut req = OrderRequest::new(instrument, direction, size.abs(), order_type);
        req.price = price;
        req.reduce_only = true;
        self.place(
            req,
            PlaceContext {
                created_by,
                now_ms,
                ..PlaceContext::default()
            },
        )
    }

    /// Overwrites the position of `instrument` (test seeding).
    pub(crate) fn seed_position(
        &mut self,
        instrument: usize,
        direction: Direction,
        size_usd: f64,
        average_price: f64,
    ) {
        let Some(position) = self.positions.get_mut(instrument) else {
            return;
        };
        position.size = direction.sign() * size_usd.abs();
        position.average_price = if position.size == 0.0 {
            0.0
        } else {
            average_price
        };
        position.existed = true;
        self.events.push(EngineEvent::Portfolio {
            currency: self.markets[instrument].spec.currency,
        });
    }

    /// `private/get_positions`: positions of `currency` that exist or once existed (flat ones
    /// with direction `zero`); instruments never traded are left out.
    pub(crate) fn positions(&self, currency: Option<&str>) -> Vec<Value> {
        self.positions
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                p.existed && currency.is_none_or(|c| self.markets[*i].spec.currency == c)
            })
            .map(|(i, _)| self.position_json(i))
            .collect()
    }

    /// `private/get_position`: one instrument's position (flat if never traded).
    pub(crate) fn position_json(&self, instrument: usize) -> Value {
        let market = &self.markets[instrument];
        let position = &self.positions[instrument];
        let mark = market.mark;
        let size = position.size;
        let direction = if size > 0.0 {
            "buy"
        } else if size < 0.0 {
            "sell"
        } else {
            "zero"
        };
        let floating = floating_pnl(size, position.average_price, mark);
        let size_currency = size / mark;
        let initial_margin = size_currency.abs() / market.spec.max_leverage;
        json!({
            "instrument_name": market.spec.name,
            "kind": "future",
            "direction": direction,
            "size": num(size),
            "size_currency": round_decimals(size_currency, 9),
            "average_price": position.average_price,
            "mark_price": num(mark),
            "index_price": num(mark),
            "settlement_price": num(market.spec.start_price),
            "delta": round_decimals(size_currency, 9),
            "leverage": num(market.spec.max_leverage),
            "initial_margin": round_decimals(initial_margin, 9),
            "maintenance_margin": round_decimals(initial_margin / 2.0, 9),
            "open_orders_margin": 0.0,
            "floating_profit_loss": round_decimals(floating, 9),
            "realized_profit_loss": round_decimals(position.realized_pnl, 9),
            "total_profit_loss": round_decimals(floating + position.realized_pnl, 9),
            "realized_funding": 0.0,
            "interest_value": 0.0,
        })
    }

    fn account(&self, currency: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.currency == currency)
    }

    /// `private/get_account_summary` for `currency` (also the `user.portfolio` data).
    pub(crate) fn account_summary(&self, currency: &str) -> Option<Value> {
        let account = self.account(currency)?;
        let mut upl = 0.0;
        let mut initial_margin = 0.0;
        for (market, position) in self.markets.iter().zip(&self.positions) {
            if market.spec.currency != currency {
                continue;
            }
            upl += floating_pnl(position.size, position.average_price, market.mark);
            initial_margin += position.size.abs() / market.mark / market.spec.max_leverage;
        }
        let equity = account.balance + upl;
        Some(json!({
            "currency": account.currency,
            "balance": round_decimals(account.balance, 9),
            "equity": round_decimals(equity, 9),
            "margin_balance": round_decimals(equity, 9),
            "available_funds": round_decimals(equity - initial_margin, 9),
            "available_withdrawal_funds": round_decimals((equity - initial_margin).min(account.balance), 9),
            "initial_margin": round_decimals(initial_margin, 9),
            "maintenance_margin": round_decimals(initial_margin / 2.0, 9),
            "session_upl": round_decimals(upl, 9),
            "session_rpl": round_decimals(account.realized_pnl, 9),
            "total_pl": round_decimals(upl + account.realized_pnl, 9),
            "delta_total": 0.0,
            "limits": {
                "non_matching_engine": { "rate": 20, "burst": 100 },
                "matching_engine": { "rate": 5, "burst": 20 },
            },
        }))
    }

    // ----- queries -----

    fn select_active(&self, filter: &OrderFilter<'_>) -> Vec<u64> {
        self.active
            .iter()
            .copied()
            .filter(|seq| {
                self.orders
                    .get(seq)
                    .is_some_and(|order| self.filter_matches(order, filter))
            })
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

    fn order_by_seq(&self, seq: u64) -> Option<Value> {
        self.orders.get(&seq).map(|order| self.order_json(order))
    }

    fn emit_order(&mut self, seq: u64) {
        if let Some(order) = self.orders.get(&seq) {
            let event = EngineEvent::Order {
                instrument: order.instrument,
                order: self.order_json(order),
            };
            self.events.push(event);
        }
    }

    fn order_json(&self, order: &Order) -> Value {
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

/// Checks one request (or leg) against the instrument's rules.
fn validate(
    spec: &InstrumentSpec,
    req: &OrderRequest,
    amount_param: &'static str,
) -> Result<(), EngineError> {
    if !(req.amount.is_finite() && req.amount >= 0.0) {
        return Err(invalid(amount_param, "must be a positive number"));
    }
    if !spec.is_whole_contracts(req.amount) {
        return Err(invalid(amount_param, "must be a multiple of contract size"));
    }
    if req.amount < spec.min_trade_amount {
        return Err(EngineError::QtyTooLow);
    }
    if req.label.chars().count() > 64 {
        return Err(invalid("label", "must be at most 64 characters"));
    }
    let price_param = if amount_param == "amount" {
        "price"
    } else {
        "otoco_config"
    };
    if req.order_type.needs_price() {
        let Some(price) = req.price else {
            return Err(invalid(price_param, "required for limit orders"));
        };
        if !(price.is_finite() && price > 0.0) {
            return Err(invalid(price_param, "must be a positive number"));
        }
        if !spec.is_on_tick(price) {
            return Err(EngineError::PriceWrongTick);
        }
    }
    if req.order_type.is_trigger() {
        let param = if amount_param == "amount" {
            "trigger_price"
        } else {
            "otoco_config"
        };
        let Some(trigger_price) = req.trigger_price else {
            return Err(invalid(param, "required for trigger orders"));
        };
        if !(trigger_price.is_finite() && trigger_price > 0.0) {
            return Err(invalid(param, "must be a positive number"));
        }
        if !spec.is_on_tick(trigger_price) {
            return Err(EngineError::PriceWrongTick);
        }
    }
    Ok(())
}

/// Unrealized PnL in the settlement currency of an inverse position of `size` USD.
fn floating_pnl(size: f64, average_price: f64, mark: f64) -> f64 {
    if size == 0.0 || average_price <= 0.0 || mark <= 0.0 {
        return 0.0;
    }
    size * (1.0 / average_price - 1.0 / mark)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
