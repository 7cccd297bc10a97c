//! The paper exchange: an in-process Deribit-protocol WebSocket JSON-RPC server. It is the
//! daemon's default "exchange" and the ground for every test, so the daemon's client runs the same
//! code path as against Deribit (`/ws/api/v2`, JSON-RPC 2.0, one message per text frame).
//!
//! It owns a simulated market (a seeded random walk per instrument), one simulated account
//! (orders, positions, balances), the connection handling (auth, heartbeats, subscriptions,
//! cancel-on-disconnect) and fault injection ([`FaultControl`], and the `paper/*` control methods
//! over the wire). It must not know anything about the daemon's actors: the daemon talks to it
//! only over the socket.
//!
//! ```text
//! PaperExchange ── server::run_accept ── connection::run (one per client) ── methods / control
//!        │                                   ▲ ticks, user.* events, faults (broadcast/watch)
//!        └──────── server::run_market ── Shared { engine (Mutex), faults, auth, stats }
//! ```
//!
//! # Simplifications (a simulator, not a venue)
//! - **One account.** Every credential is an API key of the same account: positions, balances
//!   and orders are shared by all connections. With no credentials added, any non-empty
//!   `client_id`/`client_secret` pair is accepted. `client_signature` auth is not supported.
//!   Tokens are valid on any connection (an `access_token` param authenticates a connection).
//! - **Prices.** Mark, index and last price are one number, so every `trigger` kind behaves the
//!   same. Best bid/ask are one tick around the mark, with random amounts; the book is infinitely
//!   deep. `pause_market` freezes the price but ticks keep flowing.
//! - **Ticks.** Every interval (`raw`, `100ms`, `agg2`) carries every tick: nothing is aggregated.
//!   Each tick is serialized once and shared by all subscribers; a lagging connection skips ticks
//!   (counted in [`PaperStats::ticks_dropped_lagging`]) instead of slowing the others.
//! - **Channels.** `ticker.{instrument}.{raw|100ms|agg2}`, and with `private/subscribe` on an
//!   authenticated connection `user.orders.{instrument}.raw` (one order object per change),
//!   `user.trades.{instrument}.raw` (array of trades) and `user.portfolio.{btc|eth}` (lower-case;
//!   the account summary after each fill). Anything else is silently left out of the result.
//! - **Matching.** Orders fill completely in one trade. Market orders take the best price at once.
//!   A limit order crossing the spread at placement takes the best price (taker fee 0.05 %);
//!   otherwise it rests and fills at its own price (maker, no fee) once the mark reaches it.
//!   Stops trigger when the mark moves against them (sell: mark <= trigger, buy: mark >=
//!   trigger), takes when it moves in favour; market variants then fill at the best price, limit
//!   variants rest. Triggers already passed at placement fire at once. `good_til_day` is
//!   good-til-cancelled; `immediate_or_cancel`/`fill_or_kill` that cannot fill are cancelled.
//!   `post_only` orders that would take are moved to the passive side, or rejected with 11054
//!   when `reject_post_only`. `trailing_stop` and `one_cancels_other` are not supported (-32602).
//! - **reduce_only** orders are capped at fill time to what reduces the position; with nothing to
//!   reduce they end `cancelled` with `cancel_reason: "reduce_only"`.
//! - **OTOCO / OTO.** Legs are `untriggered` until the primary fills (fills are always complete,
//!   so `first_hit` and `complete_fill` behave alike), then live. The first leg to fill cancels the
//!   others with `oco_other_closed`. Cancelling an unfilled primary cancels its legs with
//!   `oto_primary_closed`; cancelling one live leg leaves the other. Legs without a label take
//!   the primary's.
//! - **Margin.** An order that increases the position is rejected with 10009 when the resulting
//!   position (USD / mark) exceeds balance × max_leverage; open orders are not counted.
//! - **PnL.** Inverse-contract arithmetic: entries average by harmonic mean; closing `q` USD of a
//!   long realizes `q × (1/entry − 1/exit)` coins (short: the opposite) into the balance; fees are
//!   charged in coins. Initial margin is notional / max_leverage, maintenance half of it; no
//!   funding, no liquidation.
//! - **Positions.** `get_positions` reports instruments that ever had a position (including
//!   seeded ones); flat ones have direction `zero` and size 0. Never-traded ones are omitted.
//! - **Orders kept.** Closed orders are kept for `get_order_state_by_label` and
//!   [`PaperExchange::all_orders`] up to the last 10,000.
//! - **Errors.** Unknown instruments are 10020 on trading methods and -32602 on `public/ticker`;
//!   closing a flat position is 10010. A request without `id` is -32600 "Invalid Request".
//!   A frame above `max_frame_bytes` gets -32600 "request entity too large"; above 64× that the
//!   WebSocket layer closes the connection. Binary frames are answered with -32700.
//! - **Heartbeat.** After `public/set_heartbeat`, a `test_request` is sent every interval; if the
//!   previous one was not answered with `public/test` when the next is due, the connection closes.
//! - **Cancel-on-disconnect** (scope `connection`, or `account` for every connection) cancels the
//!   orders created on the closing connection whatever the reason of the close, except
//!   `private/logout`. Seeded orders belong to no connection.
//! - **Stall.** Requests received during a stall are dropped unexecuted and never answered.

mod auth;
mod config;
mod connection;
mod control;
mod engine;
mod faults;
mod market;
mod methods;
mod protocol;
mod server;
mod shared;
mod stats;
mod subscriptions;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use config::PaperConfig;
pub use engine::{Direction, OrderSeed};
pub use faults::FaultControl;
pub use stats::PaperStats;

use auth::AuthState;
use engine::{Engine, OrderFilter};
use market::{InstrumentSpec, MarketState};
use shared::Shared;

/// A running paper exchange. Dropping it stops its tasks (without waiting); prefer
/// [`PaperExchange::shutdown`], which waits for them.
#[derive(Debug)]
pub struct PaperExchange {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    /// The in-process name, when started with [`PaperExchange::start_in_memory`].
    memory: Option<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl PaperExchange {
    /// Validates `config`, binds `listen` (port 0 picks a free port) and starts serving.
    /// An invalid config is an `InvalidInput` error naming the field.
    pub async fn start(config: PaperConfig, listen: SocketAddr) -> std::io::Result<PaperExchange> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        Self::serve(config, server::Listener::Tcp(listener), local_addr, None)
    }

    /// Like [`PaperExchange::start`], but listening on the in-process name `name` rather than a
    /// socket: clients dial `memory://<name>/ws/api/v2` ([`PaperExchange::url`]). What a
    /// simulation on paused time runs against (see `tradebaas_actors::memory_net`). Must be
    /// called on the runtime the clients run on.
    pub fn start_in_memory(config: PaperConfig, name: &str) -> std::io::Result<PaperExchange> {
        let listener = tradebaas_actors::memory_net::Listener::bind(name)?;
        let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        Self::serve(
            config,
            server::Listener::Memory(listener),
            unspecified,
            Some(name.to_owned()),
        )
    }

    fn serve(
        config: PaperConfig,
        listener: server::Listener,
        local_addr: SocketAddr,
        memory: Option<String>,
    ) -> std::io::Result<PaperExchange> {
        config.validate().map_err(|reason| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid [paper_exchange] config: {reason}"),
            )
        })?;
        let seed = config.seed.unwrap_or_else(|| fastrand::u64(..));
        let markets = config
            .instruments
            .iter()
            .filter_map(|name| InstrumentSpec::builtin(name))
            .zip(0u64..)
            .map(|(spec, i)| {
                // Each instrument walks with its own stream, so adding one leaves the others'
                // prices unchanged for a given seed.
                let stream = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                MarketState::new(spec, fastrand::Rng::with_seed(stream))
            })
            .collect();
        let engine = Engine::new(
            markets,
            config.initial_balance_btc,
            config.initial_balance_eth,
        );
        let auth = AuthState::new(fastrand::Rng::with_seed(seed ^ 0x5EED_A0A0_0000_0001));
        let shared = Arc::new(Shared::new(config, engine, auth));
        let tasks = vec![
            tokio::spawn(server::run_accept(Arc::clone(&shared), listener)),
            tokio::spawn(server::run_market(Arc::clone(&shared))),
        ];
        match &memory {
            Some(name) => info!(name, seed, "paper exchange listening in memory"),
            None => info!(%local_addr, seed, "paper exchange listening"),
        }
        Ok(PaperExchange {
            shared,
            local_addr,
            memory,
            tasks,
        })
    }

    /// The address the exchange listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The WebSocket URL clients connect to, e.g. `ws://127.0.0.1:PORT/ws/api/v2` (a wildcard
    /// listen address is given as loopback).
    pub fn url(&self) -> String {
        if let Some(name) = &self.memory {
            return format!("{}{name}/ws/api/v2", tradebaas_actors::memory_net::SCHEME);
        }
        let ip = match self.local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!(
            "ws://{}/ws/api/v2",
            SocketAddr::new(ip, self.local_addr.port())
        )
    }

    /// Registers an accepted credential pair. Once any pair is registered only registered pairs
    /// are accepted; with none, any `client_credentials` pair is.
    pub fn add_credentials(&self, client_id: &str, client_secret: &str) {
        self.shared
            .lock_auth()
            .add_credentials(client_id, client_secret);
    }

    /// A handle for injecting faults.
    pub fn faults(&self) -> FaultControl {
        FaultControl {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PaperStats {
        self.shared.stats.snapshot()
    }

    /// Moves the market of `instrument` to `price` (rounded to the tick) now: triggers and limit
    /// matching run on it, subscribers get a tick, and the walk continues from there. Unknown
    /// instruments and non-positive prices are ignored with a warning.
    pub fn set_price(&self, instrument: &str, price: f64) {
        match self.shared.instrument_index(instrument) {
            Some(index) if price.is_finite() && price > 0.0 => {
                self.shared.set_price(index, price);
            }
            _ => warn!(
                instrument,
                price, "set_price ignored: unknown instrument or bad price"
            ),
        }
    }

    /// Stops (`true`) or restarts (`false`) the random walk. Ticks keep flowing at the frozen
    /// price.
    pub fn pause_market(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::Relaxed);
    }

    /// Overwrites the position of `instrument` (size in USD, always positive; `direction` gives
    /// the side). Unknown instruments are ignored with a warning.
    pub fn seed_position(
        &self,
        instrument: &str,
        direction: Direction,
        size_usd: f64,
        average_price: f64,
    ) {
        let Some(index) = self.shared.instrument_index(instrument) else {
            warn!(instrument, "seed_position ignored: unknown instrument");
            return;
        };
        self.shared.with_engine(|engine| {
            engine.seed_position(index, direction, size_usd, average_price);
        });
    }

    /// Places an order as if another session had placed it (no cancel-on-disconnect owner, no
    /// margin check) and returns its order id. It matches like any order (a crossing limit fills
    /// at once). An invalid seed is logged and yields an empty string.
    pub fn seed_order(&self, seed: OrderSeed) -> String {
        match self.shared.seed_order(&seed) {
            Ok(order) => order["order_id"].as_str().unwrap_or_default().to_owned(),
            Err(err) => {
                warn!(code = err.code, message = %err.message, data = ?err.data, "seed_order rejected");
                String::new()
            }
        }
    }

    /// Every open and untriggered order, as Deribit order objects.
    pub fn open_orders(&self) -> Vec<Value> {
        self.shared
            .lock_engine()
            .open_orders(&OrderFilter::default())
    }

    /// Every kept order, including filled, cancelled and rejected ones (oldest first).
    pub fn all_orders(&self) -> Vec<Value> {
        self.shared
            .lock_engine()
            .all_orders(&OrderFilter::default())
    }

    /// Every position that exists or once existed, as Deribit position objects.
    pub fn positions(&self) -> Vec<Value> {
        self.shared.lock_engine().positions(None)
    }

    /// Closes the listener and every connection (cancel-on-disconnect fires), and returns once
    /// every task has ended.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        for task in std::mem::take(&mut self.tasks) {
            if let Err(err) = task.await {
                warn!(%err, "paper exchange task ended abnormally");
            }
        }
        info!(local_addr = %self.local_addr, "paper exchange stopped");
    }
}

impl Drop for PaperExchange {
    fn drop(&mut self) {
        // Without this a forgotten exchange would keep serving until the runtime ends.
        self.shared.shutdown.cancel();
    }
}
