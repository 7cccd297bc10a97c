//! The order vocabulary of the engine: sides, order types, states, time in force, triggers,
//! linked-order requests, placement context, filters, the engine's errors, and the validation of
//! one request against an instrument's rules. Pure types; no engine state.

use serde::{Deserialize, Serialize};

use crate::paper_exchange::market::InstrumentSpec;

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

    pub(super) fn sign(self) -> f64 {
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

    pub(super) fn as_str(self) -> &'static str {
        match self {
            OrderType::Limit => "limit",
            OrderType::Market => "market",
            OrderType::StopLimit => "stop_limit",
            OrderType::StopMarket => "stop_market",
            OrderType::TakeLimit => "take_limit",
            OrderType::TakeMarket => "take_market",
        }
    }

    pub(super) fn is_trigger(self) -> bool {
        matches!(
            self,
            OrderType::StopLimit
                | OrderType::StopMarket
                | OrderType::TakeLimit
                | OrderType::TakeMarket
        )
    }

    pub(super) fn is_stop(self) -> bool {
        matches!(self, OrderType::StopLimit | OrderType::StopMarket)
    }

    pub(super) fn needs_price(self) -> bool {
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
    pub(super) fn as_str(self) -> &'static str {
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

    pub(super) fn as_str(self) -> &'static str {
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

    pub(super) fn as_str(self) -> &'static str {
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

    pub(super) fn as_str(self) -> &'static str {
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

pub(super) fn invalid(param: &'static str, reason: impl Into<String>) -> EngineError {
    EngineError::InvalidParams {
        param,
        reason: reason.into(),
    }
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

    pub(super) fn matches(self, order_type: OrderType) -> bool {
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

/// Checks one request (or leg) against the instrument's rules.
pub(super) fn validate(
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
