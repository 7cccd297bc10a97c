//! The Prometheus registry and the typed handles the actors and the HTTP layer use.
//!
//! Counters are incremented where the thing happens (a reconnect attempt, a tick, a restart);
//! gauges that describe current state are set from the actors' status replies at scrape time, so
//! `/metrics` and `/health` tell the same story. One `Metrics` per daemon, passed to the actors in
//! their arguments; nothing global.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// The `result` label values of `tradebaas_orders_total`, present from the start at 0.
pub const ORDER_RESULTS: [&str; 7] = [
    "filled",
    "open",
    "rejected",
    "refused",
    "unknown",
    "retried",
    "cancelled",
];

/// All metrics of one daemon.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// 1 while the process runs.
    pub up: IntGauge,
    /// 1 when /health says healthy or degraded.
    pub healthy: IntGauge,
    /// 1 when the broker session is connected and subscribed.
    pub broker_connected: IntGauge,
    /// 1 while the reconnect circuit breaker is open.
    pub circuit_breaker_open: IntGauge,
    /// Every reconnect attempt (success or failure).
    pub reconnect_attempts: IntCounter,
    /// Market-data notifications received.
    pub market_data_messages: IntCounter,
    /// Frames that could not be decoded.
    pub malformed_frames: IntCounter,
    /// Restarts per child.
    pub actor_restarts: IntCounterVec,
    /// Time to assemble /health.
    pub health_check_duration: Histogram,
    /// Strategies the strategy actor runs.
    pub strategies_active: IntGauge,
    pub panics: IntCounter,
    /// ERROR-level log events (counted by a `tracing` layer the daemon installs); the heartbeat
    /// turns it into an error rate per minute.
    pub errors: IntCounter,
    /// How long the last start-up recovery took.
    pub last_recovery_duration_seconds: Gauge,
    /// 1 when the last start-up recovery succeeded.
    pub last_recovery_success: IntGauge,
    /// Unclean shutdowns detected when the store was opened.
    pub crashes_total: IntCounter,
    /// Orders by outcome: `filled`, `open`, `rejected`, `refused` (never sent: a guard or the
    /// fail-safe said no), `unknown` (no answer; resolved by label), `retried`, `cancelled`.
    pub orders: IntCounterVec,
    /// Round trips finished (entry filled, position closed).
    pub trades: IntCounter,
    /// Trades closed at a profit (take-profit, or a close above the entry for a long).
    pub trades_success: IntCounter,
    /// Trades closed at a loss or rolled back.
    pub trades_failed: IntCounter,
    /// Positions the strategies hold (set at scrape time from the strategy actor's status).
    pub positions_open: IntGauge,
    /// Order request → answer.
    pub order_latency: Histogram,
    /// 1 for the current trading mode, 0 for the other two (set at scrape time from the fail-safe).
    pub trading_mode: IntGaugeVec,
    /// Age of the newest market data, or time since start when none has arrived (from the broker).
    pub market_data_age_seconds: Gauge,
    /// Time since the last successful backup, or since start when none was taken this run.
    pub backup_age_seconds: Gauge,
    /// Time since the newest snapshot, or since start when the store holds none.
    pub snapshot_age_seconds: Gauge,
    /// Free bytes (available to the daemon) on the data directory's filesystem.
    pub store_disk_free_bytes: IntGauge,
    /// `[store] disk_free_floor`: below this much free space the disk alert fires.
    pub store_disk_free_floor_bytes: IntGauge,
}

impl Metrics {
    /// A fresh registry with the process collector and every TradeBaas metric registered.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let up = IntGauge::new("tradebaas_up", "1 while the TradeBaas daemon is running")?;
        let healthy = IntGauge::new(
            "tradebaas_healthy",
            "1 when /health reports healthy or degraded, 0 when unhealthy",
        )?;
        let broker_connected = IntGauge::new(
            "tradebaas_broker_connected",
            "1 when the exchange session is connected and subscribed",
        )?;
        let circuit_breaker_open = IntGauge::new(
            "tradebaas_circuit_breaker_open",
            "1 while the reconnect circuit breaker is open",
        )?;
        let reconnect_attempts = IntCounter::new(
            "tradebaas_reconnect_attempts_total",
            "Reconnect attempts to the exchange, successful or not",
        )?;
        let market_data_messages = IntCounter::new(
            "tradebaas_market_data_messages_total",
            "Market-data notifications received from the exchange",
        )?;
        let malformed_frames = IntCounter::new(
            "tradebaas_malformed_frames_total",
            "Frames from the exchange that could not be decoded",
        )?;
        let actor_restarts = IntCounterVec::new(
            Opts::new(
                "tradebaas_actor_restarts_total",
                "Restarts of each supervised actor",
            ),
            &["actor"],
        )?;
        let health_check_duration = Histogram::with_opts(
            HistogramOpts::new(
                "tradebaas_health_check_duration_seconds",
                "Time to assemble a health report from the actors' replies",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            ]),
        )?;
        let strategies_active = IntGauge::new(
            "tradebaas_strategies_active",
            "Strategies hosted by the strategy actor",
        )?;
        let panics = IntCounter::new(
            "tradebaas_panics_total",
            "Panics anywhere in the process (inside actors they become supervisor restarts)",
        )?;
        let errors = IntCounter::new("tradebaas_errors_total", "ERROR-level log events")?;
        let last_recovery_duration_seconds = Gauge::new(
            "tradebaas_last_recovery_duration_seconds",
            "Duration of the last start-up recovery (state load and exchange reconciliation)",
        )?;
        let last_recovery_success = IntGauge::new(
            "tradebaas_last_recovery_success",
            "1 when the last start-up recovery restored the state and reconciled with the exchange",
        )?;
        let crashes_total = IntCounter::new(
            "tradebaas_crashes_total",
            "Unclean shutdowns detected when the store was opened",
        )?;
        let orders = IntCounterVec::new(
            Opts::new(
                "tradebaas_orders_total",
                "Order requests by result (filled, open, rejected, refused, unknown, retried, cancelled)",
            ),
            &["result"],
        )?;
        let trades = IntCounter::new(
            "tradebaas_trades_total",
            "Trades finished: a filled entry whose position was closed",
        )?;
        let trades_success = IntCounter::new(
            "tradebaas_trades_success_total",
            "Trades closed at a profit",
        )?;
        let trades_failed = IntCounter::new(
            "tradebaas_trades_failed_total",
            "Trades closed at a loss, by the stop-loss or a rollback",
        )?;
        let positions_open = IntGauge::new(
            "tradebaas_positions_open",
            "Positions held by the strategies",
        )?;
        let order_latency = Histogram::with_opts(
            HistogramOpts::new(
                "tradebaas_order_latency_seconds",
                "Order request to answer from the exchange",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        let trading_mode = IntGaugeVec::new(
            Opts::new(
                "tradebaas_trading_mode",
                "1 for the current trading mode (AGGRESSIVE, OBSERVE_ONLY, SHUTDOWN), 0 for the others",
            ),
            &["mode"],
        )?;
        let market_data_age_seconds = Gauge::new(
            "tradebaas_market_data_age_seconds",
            "Age of the newest market data, or time since start when none has arrived",
        )?;
        let backup_age_seconds = Gauge::new(
            "tradebaas_backup_age_seconds",
            "Time since the last successful backup, or since start when none was taken this run",
        )?;
        let snapshot_age_seconds = Gauge::new(
            "tradebaas_snapshot_age_seconds",
            "Time since the newest snapshot, or since start when the store holds none",
        )?;
        let store_disk_free_bytes = IntGauge::new(
            "tradebaas_store_disk_free_bytes",
            "Bytes available to the daemon on the data directory's filesystem",
        )?;
        let store_disk_free_floor_bytes = IntGauge::new(
            "tradebaas_store_disk_free_floor_bytes",
            "The configured free-space floor for the data directory ([store] disk_free_floor)",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("tradebaas_build_info", "Build information, always 1"),
            &["version"],
        )?;

        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(healthy.clone()))?;
        registry.register(Box::new(broker_connected.clone()))?;
        registry.register(Box::new(circuit_breaker_open.clone()))?;
        registry.register(Box::new(reconnect_attempts.clone()))?;
        registry.register(Box::new(market_data_messages.clone()))?;
        registry.register(Box::new(malformed_frames.clone()))?;
        registry.register(Box::new(actor_restarts.clone()))?;
        registry.register(Box::new(health_check_duration.clone()))?;
        registry.register(Box::new(strategies_active.clone()))?;
        registry.register(Box::new(panics.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(last_recovery_duration_seconds.clone()))?;
        registry.register(Box::new(last_recovery_success.clone()))?;
        registry.register(Box::new(crashes_total.clone()))?;
        registry.register(Box::new(orders.clone()))?;
        registry.register(Box::new(trades.clone()))?;
        registry.register(Box::new(trades_success.clone()))?;
        registry.register(Box::new(trades_failed.clone()))?;
        registry.register(Box::new(positions_open.clone()))?;
        registry.register(Box::new(order_latency.clone()))?;
        registry.register(Box::new(trading_mode.clone()))?;
        registry.register(Box::new(market_data_age_seconds.clone()))?;
        registry.register(Box::new(backup_age_seconds.clone()))?;
        registry.register(Box::new(snapshot_age_seconds.clone()))?;
        registry.register(Box::new(store_disk_free_bytes.clone()))?;
        registry.register(Box::new(store_disk_free_floor_bytes.clone()))?;
        registry.register(Box::new(build_info.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        up.set(1);
        for child in crate::names::ChildName::START_ORDER {
            // Present from the start at 0, so rate() works before the first restart.
            actor_restarts.with_label_values(&[child.as_str()]);
        }
        for result in ORDER_RESULTS {
            orders.with_label_values(&[result]);
        }
        for mode in crate::mode::TradingMode::ALL {
            trading_mode.with_label_values(&[mode.as_str()]);
        }

        Ok(Self {
            registry,
            up,
            healthy,
            broker_connected,
            circuit_breaker_open,
            reconnect_attempts,
            market_data_messages,
            malformed_frames,
            actor_restarts,
            health_check_duration,
            strategies_active,
            panics,
            errors,
            last_recovery_duration_seconds,
            last_recovery_success,
            crashes_total,
            orders,
            trades,
            trades_success,
            trades_failed,
            positions_open,
            order_latency,
            trading_mode,
            market_data_age_seconds,
            backup_age_seconds,
            snapshot_age_seconds,
            store_disk_free_bytes,
            store_disk_free_floor_bytes,
        })
    }

    /// Sets `tradebaas_trading_mode`: 1 for `mode`, 0 for the others.
    pub fn set_trading_mode(&self, mode: crate::mode::TradingMode) {
        for m in crate::mode::TradingMode::ALL {
            self.trading_mode
                .with_label_values(&[m.as_str()])
                .set(i64::from(m == mode));
        }
    }

    /// The registry, for metrics added by later modules.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders the Prometheus text format 0.0.4.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::with_capacity(8 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_named_metric() {
        let m = Metrics::new().unwrap();
        m.actor_restarts.with_label_values(&["strategy"]).inc();
        m.health_check_duration.observe(0.001);
        m.set_trading_mode(crate::mode::TradingMode::Shutdown);
        let text = m.render().unwrap();
        for name in [
            "tradebaas_up 1",
            "tradebaas_healthy",
            "tradebaas_broker_connected",
            "tradebaas_circuit_breaker_open",
            "tradebaas_reconnect_attempts_total",
            "tradebaas_market_data_messages_total",
            "tradebaas_actor_restarts_total{actor=\"strategy\"} 1",
            "tradebaas_actor_restarts_total{actor=\"alert\"} 0",
            "tradebaas_health_check_duration_seconds_bucket",
            "tradebaas_strategies_active",
            "tradebaas_last_recovery_duration_seconds",
            "tradebaas_last_recovery_success",
            "tradebaas_crashes_total",
            "tradebaas_errors_total 0",
            "tradebaas_orders_total{result=\"filled\"} 0",
            "tradebaas_trades_total",
            "tradebaas_trades_success_total",
            "tradebaas_trades_failed_total",
            "tradebaas_positions_open",
            "tradebaas_order_latency_seconds_bucket",
            "tradebaas_trading_mode{mode=\"SHUTDOWN\"} 1",
            "tradebaas_trading_mode{mode=\"OBSERVE_ONLY\"} 0",
            "tradebaas_trading_mode{mode=\"AGGRESSIVE\"} 0",
            "tradebaas_market_data_age_seconds",
            "tradebaas_backup_age_seconds",
            "tradebaas_snapshot_age_seconds",
            "tradebaas_store_disk_free_bytes",
            "tradebaas_store_disk_free_floor_bytes",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
