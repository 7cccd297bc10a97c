//! The simulated market: built-in instrument specs, one random-walk price per instrument, and the
//! ticker object built from it. Pure data and arithmetic; no I/O, no clock, no locking.

use serde::Serialize;
use serde_json::{Value, json};

/// Static description of a listed instrument (the `public/get_instruments` fields).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InstrumentSpec {
    /// Deribit instrument name, e.g. `BTC-PERPETUAL`.
    pub name: &'static str,
    /// Base and settlement currency (inverse perpetual), e.g. `BTC`.
    pub currency: &'static str,
    /// Deribit's numeric instrument id.
    pub instrument_id: u64,
    /// USD per contract; order amounts must be a multiple of it.
    pub contract_size: f64,
    /// Smallest order amount in USD.
    pub min_trade_amount: f64,
    /// Price granularity.
    pub tick_size: f64,
    /// Largest leverage the margin check allows.
    pub max_leverage: f64,
    /// Mark price when the exchange starts.
    pub start_price: f64,
    /// Index name, e.g. `btc_usd`.
    pub price_index: &'static str,
    /// Listing time in ms.
    pub creation_timestamp: i64,
}

/// Taker fee as a fraction of the traded notional (maker fills are free).
pub(crate) const TAKER_COMMISSION: f64 = 0.0005;

/// Far-future expiration Deribit reports for perpetuals.
const PERPETUAL_EXPIRATION_MS: i64 = 32_503_708_800_000;

impl InstrumentSpec {
    /// Every instrument the paper exchange knows how to simulate.
    pub const BUILTIN: [InstrumentSpec; 2] = [
        InstrumentSpec {
            name: "BTC-PERPETUAL",
            currency: "BTC",
            instrument_id: 124_972,
            contract_size: 10.0,
            min_trade_amount: 10.0,
            tick_size: 0.5,
            max_leverage: 50.0,
            start_price: 60_000.0,
            price_index: "btc_usd",
            creation_timestamp: 1_534_167_754_000,
        },
        InstrumentSpec {
            name: "ETH-PERPETUAL",
            currency: "ETH",
            instrument_id: 124_973,
            contract_size: 1.0,
            min_trade_amount: 1.0,
            tick_size: 0.05,
            max_leverage: 50.0,
            start_price: 3_000.0,
            price_index: "eth_usd",
            creation_timestamp: 1_534_167_754_000,
        },
    ];

    /// The built-in spec called `name`, if any.
    pub fn builtin(name: &str) -> Option<&'static InstrumentSpec> {
        Self::BUILTIN.iter().find(|spec| spec.name == name)
    }

    /// `price` rounded to the nearest tick, never below one tick.
    pub fn round_to_tick(&self, price: f64) -> f64 {
        let ticks = (price / self.tick_size).round().max(1.0);
        // Multiplying back can leave binary noise (0.05 * 3 = 0.15000000000000002); trim it.
        round_decimals(ticks * self.tick_size, 8)
    }

    /// Whether `price` lies on the tick grid (up to floating-point noise).
    pub fn is_on_tick(&self, price: f64) -> bool {
        is_multiple(price, self.tick_size)
    }

    /// Whether `amount` is a whole number of contracts.
    pub fn is_whole_contracts(&self, amount: f64) -> bool {
        is_multiple(amount, self.contract_size)
    }

    /// The `public/get_instruments` item for this instrument.
    pub fn to_json(&self) -> Value {
        json!({
            "instrument_name": self.name,
            "instrument_id": self.instrument_id,
            "kind": "future",
            "settlement_period": "perpetual",
            "instrument_type": "reversed",
            "base_currency": self.currency,
            "quote_currency": "USD",
            "counter_currency": "USD",
            "settlement_currency": self.currency,
            "contract_size": self.contract_size,
            "min_trade_amount": self.min_trade_amount,
            "tick_size": self.tick_size,
            "tick_size_steps": [],
            "taker_commission": TAKER_COMMISSION,
            "maker_commission": 0.0,
            "max_leverage": self.max_leverage,
            "price_index": self.price_index,
            "is_active": true,
            "state": "open",
            "creation_timestamp": self.creation_timestamp,
            "expiration_timestamp": PERPETUAL_EXPIRATION_MS,
        })
    }
}

fn is_multiple(value: f64, step: f64) -> bool {
    let steps = value / step;
    (steps - steps.round()).abs() < 1e-6
}

/// Rounds to `decimals` places, to keep prices and PnL free of binary noise in the JSON.
pub(crate) fn round_decimals(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

/// The live state of one instrument's market: its price walk and session statistics.
#[derive(Debug)]
pub(crate) struct MarketState {
    /// What is being traded.
    pub spec: &'static InstrumentSpec,
    /// Current mark price (also used as index and last price).
    pub mark: f64,
    high: f64,
    low: f64,
    /// Traded volume in USD since start (paper fills only).
    pub volume_usd: f64,
    /// Traded volume in the base currency since start.
    pub volume: f64,
    bid_amount: f64,
    ask_amount: f64,
    rng: fastrand::Rng,
}

impl MarketState {
    /// A market at the spec's start price, walking with its own RNG.
    pub fn new(spec: &'static InstrumentSpec, rng: fastrand::Rng) -> Self {
        let mut market = Self {
            spec,
            mark: spec.start_price,
            high: spec.start_price,
            low: spec.start_price,
            volume_usd: 0.0,
            volume: 0.0,
            bid_amount: 0.0,
            ask_amount: 0.0,
            rng,
        };
        market.refresh_book_amounts();
        market
    }

    /// One random-walk step: the price moves by `volatility` standard deviations (relative),
    /// rounded to the tick. The top-of-book amounts are redrawn as well.
    pub fn step(&mut self, volatility: f64) {
        if volatility > 0.0 {
            let z = standard_normal(&mut self.rng);
            let next = self.mark * (1.0 + volatility * z);
            self.set_mark(next);
        }
        self.refresh_book_amounts();
    }

    /// Moves the mark price to `price` (rounded to the tick) and updates high/low.
    pub fn set_mark(&mut self, price: f64) {
        if !price.is_finite() {
            return;
        }
        self.mark = self.spec.round_to_tick(price);
        self.high = self.high.max(self.mark);
        self.low = self.low.min(self.mark);
    }

    /// Best bid: one tick under the mark.
    pub fn best_bid(&self) -> f64 {
        self.spec.round_to_tick(self.mark - self.spec.tick_size)
    }

    /// Best ask: one tick over the mark.
    pub fn best_ask(&self) -> f64 {
        round_decimals(self.mark + self.spec.tick_size, 8)
    }

    fn refresh_book_amounts(&mut self) {
        let lots = |rng: &mut fastrand::Rng| f64::from(rng.u32(10..=50_000));
        self.bid_amount = lots(&mut self.rng) * self.spec.contract_size;
        self.ask_amount = lots(&mut self.rng) * self.spec.contract_size;
    }

    /// The ticker object for this instant (`timestamp_ms`), with `open_interest` in USD.
    pub fn ticker(&self, timestamp_ms: i64, open_interest: f64) -> TickerData {
        let start = self.spec.start_price;
        let band = 0.025;
        TickerData {
            timestamp: timestamp_ms,
            stats: TickerStats {
                volume_usd: round_decimals(self.volume_usd, 2),
                volume: round_decimals(self.volume, 8),
                price_change: round_decimals((self.mark - start) / start * 100.0, 4),
                low: self.low,
                high: self.high,
            },
            state: "open",
            settlement_price: start,
            open_interest,
            min_price: self.spec.round_to_tick(self.mark * (1.0 - band)),
            max_price: self.spec.round_to_tick(self.mark * (1.0 + band)),
            mark_price: self.mark,
            last_price: self.mark,
            instrument_name: self.spec.name,
            index_price: self.mark,
            funding_8h: 0.0,
            estimated_delivery_price: self.mark,
            current_funding: 0.0,
            best_bid_price: Some(self.best_bid()),
            best_bid_amount: self.bid_amount,
            best_ask_price: Some(self.best_ask()),
            best_ask_amount: self.ask_amount,
        }
    }
}

/// A standard normal draw (Box–Muller), from the given RNG so seeded runs repeat.
fn standard_normal(rng: &mut fastrand::Rng) -> f64 {
    // 1 - f64() lies in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.f64();
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `stats` inside a ticker.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TickerStats {
    volume_usd: f64,
    volume: f64,
    price_change: f64,
    low: f64,
    high: f64,
}

/// The ticker object of `ticker.*` notifications and `public/ticker`, in Deribit's field order.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TickerData {
    timestamp: i64,
    stats: TickerStats,
    state: &'static str,
    settlement_price: f64,
    open_interest: f64,
    min_price: f64,
    max_price: f64,
    mark_price: f64,
    last_price: f64,
    instrument_name: &'static str,
    index_price: f64,
    funding_8h: f64,
    estimated_delivery_price: f64,
    current_funding: f64,
    best_bid_price: Option<f64>,
    best_bid_amount: f64,
    best_ask_price: Option<f64>,
    best_ask_amount: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn btc() -> &'static InstrumentSpec {
        InstrumentSpec::builtin("BTC-PERPETUAL").unwrap()
    }

    #[test]
    fn walk_stays_on_tick_and_positive() {
        let eth = InstrumentSpec::builtin("ETH-PERPETUAL").unwrap();
        let mut market = MarketState::new(eth, fastrand::Rng::with_seed(1));
        for _ in 0..10_000 {
            market.step(0.01);
            assert!(eth.is_on_tick(market.mark), "{} off tick", market.mark);
            assert!(market.mark >= eth.tick_size);
        }
    }

    #[test]
    fn same_seed_gives_same_walk() {
        let mut a = MarketState::new(btc(), fastrand::Rng::with_seed(42));
        let mut b = MarketState::new(btc(), fastrand::Rng::with_seed(42));
        for _ in 0..1000 {
            a.step(0.0002);
            b.step(0.0002);
            assert_eq!(a.mark, b.mark);
        }
    }

    #[test]
    fn best_bid_and_ask_are_one_tick_around_mark() {
        let mut market = MarketState::new(btc(), fastrand::Rng::with_seed(3));
        market.set_mark(60_000.2);
        assert_eq!(market.mark, 60_000.0);
        assert_eq!(market.best_bid(), 59_999.5);
        assert_eq!(market.best_ask(), 60_000.5);
    }

    #[test]
    fn ticker_has_every_required_field() {
        let market = MarketState::new(btc(), fastrand::Rng::with_seed(3));
        let value = serde_json::to_value(market.ticker(1_700_000_000_000, 5.0)).unwrap();
        for field in [
            "instrument_name",
            "timestamp",
            "state",
            "stats",
            "open_interest",
            "index_price",
            "best_bid_price",
            "best_bid_amount",
            "best_ask_price",
            "best_ask_amount",
            "min_price",
            "max_price",
            "mark_price",
            "last_price",
            "estimated_delivery_price",
        ] {
            assert!(value.get(field).is_some(), "missing {field}");
        }
        assert_eq!(value["state"], "open");
        assert_eq!(value["instrument_name"], "BTC-PERPETUAL");
    }

    #[test]
    fn tick_and_contract_checks() {
        assert!(btc().is_on_tick(60_000.5));
        assert!(!btc().is_on_tick(60_000.3));
        assert!(btc().is_whole_contracts(1_000.0));
        assert!(!btc().is_whole_contracts(15.0));
        let eth = InstrumentSpec::builtin("ETH-PERPETUAL").unwrap();
        assert!(eth.is_on_tick(3_000.15));
        assert_eq!(eth.round_to_tick(3_000.149), 3_000.15);
    }
}
