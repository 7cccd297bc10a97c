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
    /// 1 when the broker reports its session established (the handshake done: authenticated
    /// when credentials are set, heartbeat set, subscribe answered), 0 otherwise or when it does
    /// not answer. Channels the exchange left out of the subscription show in `/ready`, not here.
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
    /// Unix time this registry (the process) was created: a restart counter that needs no
    /// `/proc/stat` (hidden by the unit's `ProcSubset=pid`, where the process collector's
    /// `process_start_time_seconds` reads 0).
    pub start_time_seconds: Gauge,
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
            "1 when the exchange session is established (handshake done, subscribe answered; a channel left out shows in /ready), 0 while connecting, reconnecting or when the broker does not answer",
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
        let start_time_seconds = Gauge::new(
            "tradebaas_start_time_seconds",
            "Unix time the daemon process started (works where process_start_time_seconds cannot read /proc/stat)",
        )?;
        start_time_seconds.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
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
        registry.register(Box::new(start_time_seconds.clone()))?;
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
            start_time_seconds,
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
    use prometheus_parse::{Scrape, Value};

    /// The type a sample must have in the exposition.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Kind {
        Counter,
        Gauge,
        Histogram,
    }

    fn kind(v: &Value) -> Option<Kind> {
        match v {
            Value::Counter(_) => Some(Kind::Counter),
            Value::Gauge(_) => Some(Kind::Gauge),
            Value::Histogram(_) => Some(Kind::Histogram),
            _ => None,
        }
    }

    /// A sample's value: counters and gauges their number, histograms their observation count
    /// (the `+Inf` bucket).
    fn number(v: &Value) -> f64 {
        match v {
            Value::Counter(n) | Value::Gauge(n) | Value::Untyped(n) => *n,
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map_or(f64::NAN, |b| b.count),
            Value::Summary(_) => f64::NAN,
        }
    }

    /// A wanted sample: metric, labels, type, value (`None`: any finite number ≥ 0).
    type Want<'a> = (&'a str, &'a [(&'a str, &'a str)], Kind, Option<f64>);

    #[test]
    fn renders_every_named_metric() {
        let m = Metrics::new().unwrap();
        // A distinct value per handle, so a handle registered under the wrong name shows.
        m.healthy.set(1);
        m.broker_connected.set(1);
        m.circuit_breaker_open.set(0);
        m.reconnect_attempts.inc_by(3);
        m.market_data_messages.inc_by(7);
        m.malformed_frames.inc_by(2);
        m.actor_restarts.with_label_values(&["strategy"]).inc();
        m.health_check_duration.observe(0.001);
        m.health_check_duration.observe(0.002);
        m.strategies_active.set(4);
        m.panics.inc_by(5);
        m.last_recovery_duration_seconds.set(0.25);
        m.last_recovery_success.set(1);
        m.crashes_total.inc_by(6);
        m.orders.with_label_values(&["retried"]).inc_by(8);
        m.trades.inc_by(9);
        m.trades_success.inc_by(10);
        m.trades_failed.inc_by(11);
        m.positions_open.set(12);
        m.order_latency.observe(0.01);
        m.set_trading_mode(crate::mode::TradingMode::Shutdown);
        m.market_data_age_seconds.set(13.0);
        m.backup_age_seconds.set(14.0);
        m.snapshot_age_seconds.set(15.0);
        m.store_disk_free_bytes.set(16);
        m.store_disk_free_floor_bytes.set(17);
        let text = m.render().unwrap();
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();

        let version = env!("CARGO_PKG_VERSION");
        // (metric, labels, type, value: None = any finite number ≥ 0, the process's own facts)
        let want: &[Want] = &[
            ("tradebaas_up", &[], Kind::Gauge, Some(1.0)),
            ("tradebaas_healthy", &[], Kind::Gauge, Some(1.0)),
            ("tradebaas_broker_connected", &[], Kind::Gauge, Some(1.0)),
            (
                "tradebaas_circuit_breaker_open",
                &[],
                Kind::Gauge,
                Some(0.0),
            ),
            (
                "tradebaas_reconnect_attempts_total",
                &[],
                Kind::Counter,
                Some(3.0),
            ),
            (
                "tradebaas_market_data_messages_total",
                &[],
                Kind::Counter,
                Some(7.0),
            ),
            (
                "tradebaas_malformed_frames_total",
                &[],
                Kind::Counter,
                Some(2.0),
            ),
            (
                "tradebaas_actor_restarts_total",
                &[("actor", "strategy")],
                Kind::Counter,
                Some(1.0),
            ),
            (
                "tradebaas_actor_restarts_total",
                &[("actor", "alert")],
                Kind::Counter,
                Some(0.0),
            ),
            (
                "tradebaas_health_check_duration_seconds",
                &[],
                Kind::Histogram,
                Some(2.0),
            ),
            ("tradebaas_strategies_active", &[], Kind::Gauge, Some(4.0)),
            ("tradebaas_panics_total", &[], Kind::Counter, Some(5.0)),
            ("tradebaas_errors_total", &[], Kind::Counter, Some(0.0)),
            (
                "tradebaas_last_recovery_duration_seconds",
                &[],
                Kind::Gauge,
                Some(0.25),
            ),
            (
                "tradebaas_last_recovery_success",
                &[],
                Kind::Gauge,
                Some(1.0),
            ),
            ("tradebaas_crashes_total", &[], Kind::Counter, Some(6.0)),
            (
                "tradebaas_orders_total",
                &[("result", "filled")],
                Kind::Counter,
                Some(0.0),
            ),
            (
                "tradebaas_orders_total",
                &[("result", "retried")],
                Kind::Counter,
                Some(8.0),
            ),
            ("tradebaas_trades_total", &[], Kind::Counter, Some(9.0)),
            (
                "tradebaas_trades_success_total",
                &[],
                Kind::Counter,
                Some(10.0),
            ),
            (
                "tradebaas_trades_failed_total",
                &[],
                Kind::Counter,
                Some(11.0),
            ),
            ("tradebaas_positions_open", &[], Kind::Gauge, Some(12.0)),
            (
                "tradebaas_order_latency_seconds",
                &[],
                Kind::Histogram,
                Some(1.0),
            ),
            (
                "tradebaas_build_info",
                &[("version", version)],
                Kind::Gauge,
                Some(1.0),
            ),
            (
                "tradebaas_trading_mode",
                &[("mode", "SHUTDOWN")],
                Kind::Gauge,
                Some(1.0),
            ),
            (
                "tradebaas_trading_mode",
                &[("mode", "OBSERVE_ONLY")],
                Kind::Gauge,
                Some(0.0),
            ),
            (
                "tradebaas_trading_mode",
                &[("mode", "AGGRESSIVE")],
                Kind::Gauge,
                Some(0.0),
            ),
            (
                "tradebaas_market_data_age_seconds",
                &[],
                Kind::Gauge,
                Some(13.0),
            ),
            ("tradebaas_backup_age_seconds", &[], Kind::Gauge, Some(14.0)),
            (
                "tradebaas_snapshot_age_seconds",
                &[],
                Kind::Gauge,
                Some(15.0),
            ),
            (
                "tradebaas_store_disk_free_bytes",
                &[],
                Kind::Gauge,
                Some(16.0),
            ),
            (
                "tradebaas_store_disk_free_floor_bytes",
                &[],
                Kind::Gauge,
                Some(17.0),
            ),
            ("process_resident_memory_bytes", &[], Kind::Gauge, None),
            ("process_cpu_seconds_total", &[], Kind::Counter, None),
            ("process_start_time_seconds", &[], Kind::Gauge, None),
            ("tradebaas_start_time_seconds", &[], Kind::Gauge, None),
        ];
        for (name, labels, ty, value) in want {
            let found: Vec<_> = scrape
                .samples
                .iter()
                .filter(|s| s.metric == *name)
                .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
                .collect();
            assert_eq!(
                found.len(),
                1,
                "{name}{labels:?}: want one sample, got {found:?} in\n{text}"
            );
            let sample = found[0];
            assert_eq!(kind(&sample.value), Some(*ty), "{name}: {:?}", sample.value);
            assert!(
                scrape.docs.get(*name).is_some_and(|d| !d.is_empty()),
                "{name} has no HELP"
            );
            let got = number(&sample.value);
            match value {
                Some(v) => assert_eq!(got, *v, "{name}{labels:?}"),
                None => assert!(got.is_finite() && got >= 0.0, "{name}: {got}"),
            }
        }
        for name in [
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "tradebaas_start_time_seconds",
        ] {
            let s = scrape.samples.iter().find(|s| s.metric == name);
            assert!(s.is_some_and(|s| number(&s.value) > 0.0), "{name}: {s:?}");
        }
        // Every actor's restart counter and every order result exists from the start.
        for child in crate::names::ChildName::START_ORDER {
            assert!(
                scrape
                    .samples
                    .iter()
                    .any(|s| s.metric == "tradebaas_actor_restarts_total"
                        && s.labels.get("actor") == Some(child.as_str())),
                "no restart counter for {child}"
            );
        }
        for result in ORDER_RESULTS {
            assert!(
                scrape
                    .samples
                    .iter()
                    .any(|s| s.metric == "tradebaas_orders_total"
                        && s.labels.get("result") == Some(result)),
                "no orders counter for {result}"
            );
        }
        // The histogram buckets are the configured ones, ascending to +Inf.
        let Some(Value::Histogram(buckets)) = scrape
            .samples
            .iter()
            .find(|s| s.metric == "tradebaas_health_check_duration_seconds")
            .map(|s| &s.value)
        else {
            panic!("no health check histogram");
        };
        assert_eq!(buckets.len(), 13, "{buckets:?}");
        assert!(buckets.windows(2).all(|w| w[0].less_than < w[1].less_than));
        assert!(buckets.last().is_some_and(|b| b.less_than.is_infinite()));
    }
}
