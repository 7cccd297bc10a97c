//! The state every task of the exchange shares (behind one `Arc`): configuration, the engine
//! under its mutex, faults, auth, statistics, and the channels that fan ticks, account events
//! and fault commands out to the connection tasks. Locks are held only for synchronous work.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::auth::AuthState;
use super::config::PaperConfig;
use super::engine::{Engine, EngineEvent, OrderRequest, OrderSeed, OrderType, PlaceContext};
use super::faults::FaultState;
use super::market::{InstrumentSpec, TickerData};
use super::protocol::{RpcError, notification_frame};
use super::stats::StatsCounters;

/// Ticks buffered per connection before a slow reader starts skipping them (about 80 ms at
/// 50,000 ticks/s; seconds at ordinary rates).
const TICK_CHANNEL_CAPACITY: usize = 4_096;
/// Account events buffered per connection.
const USER_CHANNEL_CAPACITY: usize = 4_096;

/// The intervals a ticker channel may name. The simulator sends every tick on all three: `100ms`
/// and `agg2` are not aggregated (a client must cope with receiving more often than promised).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interval {
    Raw = 0,
    Ms100 = 1,
    Agg2 = 2,
}

impl Interval {
    /// All intervals, indexed by their discriminant.
    pub const ALL: [Interval; 3] = [Interval::Raw, Interval::Ms100, Interval::Agg2];

    /// Parses the channel suffix.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "raw" => Some(Interval::Raw),
            "100ms" => Some(Interval::Ms100),
            "agg2" => Some(Interval::Agg2),
            _ => None,
        }
    }

    /// The channel suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Raw => "raw",
            Interval::Ms100 => "100ms",
            Interval::Agg2 => "agg2",
        }
    }
}

/// One tick, serialized once into a frame per interval that has subscribers.
#[derive(Debug)]
pub(crate) struct TickFrame {
    pub instrument: usize,
    pub frames: [Option<Utf8Bytes>; 3],
}

/// One account event, serialized once for every subscribed connection.
#[derive(Debug)]
pub(crate) struct UserFrame {
    pub channel: String,
    pub frame: Utf8Bytes,
}

/// Everything the tasks of one exchange share.
pub(crate) struct Shared {
    pub config: PaperConfig,
    engine: Mutex<Engine>,
    faults: Mutex<FaultState>,
    auth: Mutex<AuthState>,
    pub stats: StatsCounters,
    pub ticks: broadcast::Sender<Arc<TickFrame>>,
    pub user_events: broadcast::Sender<Arc<UserFrame>>,
    pub malformed: broadcast::Sender<usize>,
    /// Bumped by `drop_all`; every connection closes when it changes.
    pub drop_generation: watch::Sender<u64>,
    /// Subscribers per instrument and interval, so ticks nobody wants are not serialized.
    subscribers: Vec<[AtomicUsize; 3]>,
    ticker_channels: Vec<[String; 3]>,
    /// Listed instruments, in configuration order (the engine's indices).
    pub instruments: Vec<&'static InstrumentSpec>,
    pub paused: AtomicBool,
    next_conn: AtomicU64,
    /// Exchange start, the origin of the `paper/stats` offsets.
    pub started: std::time::Instant,
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Wall-clock milliseconds since the epoch (timestamps on the wire).
pub(crate) fn now_ms() -> i64 {
    tradebaas_actors::clock::now().timestamp_millis()
}

/// Wall-clock microseconds since the epoch (`usIn`/`usOut`).
pub(crate) fn now_us() -> i64 {
    tradebaas_actors::clock::now().timestamp_micros()
}

/// Monotonic time for stats, from tokio's clock so paused-time tests see virtual time.
pub(crate) fn now_instant() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock must not take the whole simulator down with it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Shared state for a validated config.
    pub fn new(config: PaperConfig, engine: Engine, auth: AuthState) -> Self {
        let instruments: Vec<&'static InstrumentSpec> =
            engine.markets().iter().map(|m| m.spec).collect();
        let names: Vec<&'static str> = instruments.iter().map(|spec| spec.name).collect();
        let ticker_channels = names
            .iter()
            .map(|name| Interval::ALL.map(|i| format!("ticker.{name}.{}", i.as_str())))
            .collect();
        let subscribers = names
            .iter()
            .map(|_| std::array::from_fn(|_| AtomicUsize::new(0)))
            .collect();
        Self {
            config,
            engine: Mutex::new(engine),
            faults: Mutex::new(FaultState::default()),
            auth: Mutex::new(auth),
            stats: StatsCounters::default(),
            ticks: broadcast::channel(TICK_CHANNEL_CAPACITY).0,
            user_events: broadcast::channel(USER_CHANNEL_CAPACITY).0,
            malformed: broadcast::channel(64).0,
            drop_generation: watch::channel(0).0,
            subscribers,
            ticker_channels,
            instruments,
            paused: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            started: now_instant(),
            shutdown: CancellationToken::new(),
        }
    }

    /// The fault state, locked.
    pub fn lock_faults(&self) -> MutexGuard<'_, FaultState> {
        lock(&self.faults)
    }

    /// The auth state, locked.
    pub fn lock_auth(&self) -> MutexGuard<'_, AuthState> {
        lock(&self.auth)
    }

    /// The engine, locked, for read-only queries. Changes go through [`Shared::with_engine`] so
    /// their events are published.
    pub fn lock_engine(&self) -> MutexGuard<'_, Engine> {
        lock(&self.engine)
    }

    /// Index of the listed instrument called `name`.
    pub fn instrument_index(&self, name: &str) -> Option<usize> {
        self.instruments.iter().position(|spec| spec.name == name)
    }

    /// A fresh connection id.
    pub fn next_connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs `f` on the engine, then publishes the events it caused (after unlocking).
    pub fn with_engine<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        let (result, frames) = {
            let mut engine = lock(&self.engine);
            let result = f(&mut engine);
            let frames = self.user_frames(&mut engine);
            (result, frames)
        };
        self.publish_user_frames(frames);
        result
    }

    /// Drains the engine's events into notification payloads (channel, data), reading account
    /// summaries while the lock is held. Serialization happens later, outside the lock.
    fn user_frames(&self, engine: &mut Engine) -> Vec<(String, Value)> {
        let events = engine.take_events();
        if events.is_empty() || self.user_events.receiver_count() == 0 {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(events.len());
        let mut portfolios: Vec<&'static str> = Vec::new();
        for event in events {
            match event {
                EngineEvent::Order { instrument, order } => {
                    let name = engine.markets()[instrument].spec.name;
                    out.push((format!("user.orders.{name}.raw"), order));
                }
                EngineEvent::Trades { instrument, trades } => {
                    let name = engine.markets()[instrument].spec.name;
                    out.push((format!("user.trades.{name}.raw"), Value::Array(trades)));
                }
                EngineEvent::Portfolio { currency } => {
                    if !portfolios.contains(&currency) {
                        portfolios.push(currency);
                    }
                }
            }
        }
        for currency in portfolios {
            if let Some(summary) = engine.account_summary(currency) {
                let channel = format!("user.portfolio.{}", currency.to_lowercase());
                out.push((channel, summary));
            }
        }
        out
    }

    fn publish_user_frames(&self, frames: Vec<(String, Value)>) {
        for (channel, data) in frames {
            let frame = notification_frame(&channel, &data.to_string());
            // No receiver is fine: nobody is subscribed.
            let _ = self.user_events.send(Arc::new(UserFrame {
                channel,
                frame: Utf8Bytes::from(frame),
            }));
        }
    }

    /// Adjusts the subscriber count of a ticker channel.
    pub fn count_ticker_subscriber(&self, instrument: usize, interval: Interval, delta: isize) {
        if let Some(counts) = self.subscribers.get(instrument) {
            let counter = &counts[interval as usize];
            if delta >= 0 {
                counter.fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
            } else {
                counter.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
            }
        }
    }

    /// Whether anyone listens to ticks of `instrument`.
    pub fn has_ticker_subscribers(&self, instrument: usize) -> bool {
        self.subscribers
            .get(instrument)
            .is_some_and(|counts| counts.iter().any(|c| c.load(Ordering::Relaxed) > 0))
    }

    /// Serializes one tick once and fans it out to every subscribed connection.
    pub fn publish_tick(&self, instrument: usize, data: &TickerData) {
        let (Some(counts), Some(channels)) = (
            self.subscribers.get(instrument),
            self.ticker_channels.get(instrument),
        ) else {
            return;
        };
        let wanted: [bool; 3] = std::array::from_fn(|i| counts[i].load(Ordering::Relaxed) > 0);
        if !wanted.iter().any(|w| *w) {
            return;
        }
        let Ok(json) = serde_json::to_string(data) else {
            return;
        };
        let frames = std::array::from_fn(|i| {
            wanted[i].then(|| Utf8Bytes::from(notification_frame(&channels[i], &json)))
        });
        let _ = self.ticks.send(Arc::new(TickFrame { instrument, frames }));
    }

    /// Advances the random walk of each instrument by `counts[i]` ticks, runs matching on every
    /// new price and publishes the ticks and account events.
    pub fn advance_market(&self, counts: &[u32]) {
        let timestamp = now_ms();
        let paused = self.paused.load(Ordering::Relaxed);
        let volatility = self.config.volatility;
        let mut ticks: Vec<(usize, TickerData)> = Vec::new();
        let frames = {
            let mut engine = lock(&self.engine);
            for (instrument, count) in counts.iter().enumerate() {
                let wanted = self.has_ticker_subscribers(instrument);
                for _ in 0..*count {
                    if !paused {
                        let Some(market) = engine.market_mut(instrument) else {
                            break;
                        };
                        let before = market.mark;
                        market.step(volatility);
                        if market.mark != before {
                            engine.settle(instrument, timestamp);
                        }
                    }
                    if wanted {
                        let open_interest = engine.open_interest(instrument);
                        if let Some(market) = engine.markets().get(instrument) {
                            ticks.push((instrument, market.ticker(timestamp, open_interest)));
                        }
                    }
                }
            }
            self.user_frames(&mut engine)
        };
        for (instrument, data) in &ticks {
            self.publish_tick(*instrument, data);
        }
        self.publish_user_frames(frames);
    }

    /// Moves one instrument's price now, runs matching and publishes a tick at the new price.
    pub fn set_price(&self, instrument: usize, price: f64) {
        let timestamp = now_ms();
        let tick = self.with_engine(|engine| {
            engine.set_mark(instrument, price, timestamp);
            let open_interest = engine.open_interest(instrument);
            engine
                .markets()
                .get(instrument)
                .map(|m| m.ticker(timestamp, open_interest))
        });
        if let Some(tick) = tick {
            self.publish_tick(instrument, &tick);
        }
    }

    /// Places a seeded order (no connection, no margin check); returns its order object.
    pub fn seed_order(&self, seed: &OrderSeed) -> Result<Value, RpcError> {
        let instrument = self
            .instrument_index(&seed.instrument)
            .ok_or_else(|| RpcError::invalid_params("instrument_name", "unknown instrument"))?;
        let order_type = OrderType::parse(&seed.order_type).ok_or_else(|| {
            RpcError::invalid_params(
                "type",
                "must be limit, market, stop_limit, stop_market, take_limit or take_market",
            )
        })?;
        let mut req = OrderRequest::new(instrument, seed.direction, seed.amount, order_type);
        req.price = seed.price;
        req.trigger_price = seed.trigger_price;
        req.label = seed.label.clone();
        req.reduce_only = seed.reduce_only;
        let ctx = PlaceContext {
            created_by: None,
            now_ms: now_ms(),
            reject_legs: false,
            skip_margin_check: true,
        };
        let (order, _trades) = self.with_engine(|engine| engine.place(req, ctx))?;
        Ok(order)
    }

    /// Tells every connection to close at once.
    pub fn drop_all_connections(&self) {
        self.drop_generation
            .send_modify(|generation| *generation += 1);
    }

    /// Tells every connection to push `count` malformed frames.
    pub fn send_malformed(&self, count: usize) {
        let _ = self.malformed.send(count);
    }
}
