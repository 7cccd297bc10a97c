//! The `strategy` actor: hosts one instance per configured strategy and feeds it ticker data.
//!
//! Each instance has a [`Lifecycle`]; a tick for its instrument moves it from IDLE to ANALYZING.
//! No orders are placed yet. The broker sends every ticker here, so the tick path is kept cheap:
//! one hash lookup, a few counters, no allocation and no logging per tick.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::broker::protocol::Ticker;
use crate::metrics::Metrics;
use crate::names::Names;

/// One configured strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyEntry {
    pub id: String,
    /// E.g. `BTC-PERPETUAL`.
    pub instrument: String,
}

/// What the strategy actor is spawned with.
#[derive(Clone)]
pub struct StrategyArgs {
    pub names: Names,
    pub strategies: Vec<StrategyEntry>,
    pub metrics: Metrics,
}

/// Messages of the strategy actor.
pub enum StrategyMsg {
    /// Market data from the broker.
    Ticker(Ticker),
    /// Liveness.
    Ping(RpcReplyPort<()>),
    /// Report every instance.
    Status(RpcReplyPort<StrategyStatus>),
    /// Test-only misbehaviour.
    #[cfg(any(test, feature = "test-hooks"))]
    Hook(crate::hooks::TestHook),
}

/// Where a strategy instance is in its trade cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Lifecycle {
    Idle,
    Analyzing,
    SignalDetected,
    EnteringPosition,
    PositionOpen,
    Closing,
}

impl Lifecycle {
    /// Every state, for tables and property tests.
    pub const ALL: [Lifecycle; 6] = [
        Lifecycle::Idle,
        Lifecycle::Analyzing,
        Lifecycle::SignalDetected,
        Lifecycle::EnteringPosition,
        Lifecycle::PositionOpen,
        Lifecycle::Closing,
    ];

    /// Whether `self → next` is legal: the cycle IDLE → ANALYZING → SIGNAL_DETECTED →
    /// ENTERING_POSITION → POSITION_OPEN → CLOSING → IDLE, plus a return to IDLE from ANALYZING,
    /// SIGNAL_DETECTED (signal dropped) and ENTERING_POSITION (entry rejected). A position, once
    /// open, leaves only through CLOSING.
    pub fn can_transition_to(self, next: Lifecycle) -> bool {
        use Lifecycle::*;
        matches!(
            (self, next),
            (Idle, Analyzing)
                | (Analyzing, SignalDetected)
                | (SignalDetected, EnteringPosition)
                | (EnteringPosition, PositionOpen)
                | (PositionOpen, Closing)
                | (Closing, Idle)
                | (Analyzing, Idle)
                | (SignalDetected, Idle)
                | (EnteringPosition, Idle)
        )
    }
}

/// One instance in [`StrategyStatus`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyInstanceStatus {
    pub id: String,
    pub instrument: String,
    pub lifecycle: Lifecycle,
    /// Ticks for its instrument.
    pub ticks: u64,
    pub last_mark_price: Option<f64>,
}

/// The strategy actor's answer to `Status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyStatus {
    /// Instances hosted.
    pub active: usize,
    pub strategies: Vec<StrategyInstanceStatus>,
    /// Every ticker received, for any instrument.
    pub ticks_received: u64,
    pub last_tick_at: Option<DateTime<Utc>>,
}

struct Instance {
    entry: StrategyEntry,
    lifecycle: Lifecycle,
    ticks: u64,
    last_mark_price: Option<f64>,
}

impl Instance {
    fn on_tick(&mut self, ticker: &Ticker) {
        self.ticks += 1;
        self.last_mark_price = Some(ticker.mark_price);
        if self.lifecycle == Lifecycle::Idle {
            self.lifecycle = Lifecycle::Analyzing;
        }
    }
}

/// The strategy actor.
pub struct StrategyActor;

/// The strategy actor's state.
pub struct StrategyState {
    instances: Vec<Instance>,
    /// Instrument → indices into `instances`.
    by_instrument: HashMap<String, Vec<usize>>,
    ticks_received: u64,
    last_tick_at: Option<DateTime<Utc>>,
}

impl StrategyState {
    fn new(strategies: Vec<StrategyEntry>) -> Self {
        let mut by_instrument: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in strategies.iter().enumerate() {
            by_instrument
                .entry(s.instrument.clone())
                .or_default()
                .push(i);
        }
        Self {
            instances: strategies
                .into_iter()
                .map(|entry| Instance {
                    entry,
                    lifecycle: Lifecycle::Idle,
                    ticks: 0,
                    last_mark_price: None,
                })
                .collect(),
            by_instrument,
            ticks_received: 0,
            last_tick_at: None,
        }
    }

    fn on_tick(&mut self, ticker: &Ticker) {
        self.ticks_received += 1;
        self.last_tick_at = Some(Utc::now());
        if let Some(indices) = self.by_instrument.get(ticker.instrument_name.as_str()) {
            for &i in indices {
                if let Some(instance) = self.instances.get_mut(i) {
                    instance.on_tick(ticker);
                }
            }
        }
    }

    fn status(&self) -> StrategyStatus {
        StrategyStatus {
            active: self.instances.len(),
            strategies: self
                .instances
                .iter()
                .map(|i| StrategyInstanceStatus {
                    id: i.entry.id.clone(),
                    instrument: i.entry.instrument.clone(),
                    lifecycle: i.lifecycle,
                    ticks: i.ticks,
                    last_mark_price: i.last_mark_price,
                })
                .collect(),
            ticks_received: self.ticks_received,
            last_tick_at: self.last_tick_at,
        }
    }
}

impl Actor for StrategyActor {
    type Msg = StrategyMsg;
    type State = StrategyState;
    type Arguments = StrategyArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let active = args.strategies.len();
        args.metrics
            .strategies_active
            .set(i64::try_from(active).unwrap_or(i64::MAX));
        info!(
            actor = "strategy",
            active,
            ids = ?args.strategies.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            "strategies loaded (idle)"
        );
        Ok(StrategyState::new(args.strategies))
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StrategyMsg::Ticker(ticker) => state.on_tick(&ticker),
            StrategyMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            StrategyMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            #[cfg(any(test, feature = "test-hooks"))]
            StrategyMsg::Hook(hook) => hook.act(&_myself.get_cell()).await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::ChildName;
    use ractor::call_t;

    fn ticker(instrument: &str, mark: f64) -> Ticker {
        Ticker {
            instrument_name: instrument.into(),
            timestamp: 1,
            mark_price: mark,
            last_price: None,
            index_price: None,
            best_bid_price: None,
            best_ask_price: None,
            best_bid_amount: None,
            best_ask_amount: None,
            state: None,
        }
    }

    fn entry(id: &str, instrument: &str) -> StrategyEntry {
        StrategyEntry {
            id: id.into(),
            instrument: instrument.into(),
        }
    }

    async fn spawn(
        prefix: &str,
        strategies: Vec<StrategyEntry>,
    ) -> (ActorRef<StrategyMsg>, Metrics) {
        let names = Names::with_prefix(prefix);
        let metrics = Metrics::new().unwrap();
        let (a, _) = Actor::spawn(
            Some(names.of(ChildName::Strategy)),
            StrategyActor,
            StrategyArgs {
                names,
                strategies,
                metrics: metrics.clone(),
            },
        )
        .await
        .unwrap();
        (a, metrics)
    }

    #[test]
    fn lifecycle_transition_table() {
        use Lifecycle::*;
        let legal = [
            (Idle, Analyzing),
            (Analyzing, SignalDetected),
            (SignalDetected, EnteringPosition),
            (EnteringPosition, PositionOpen),
            (PositionOpen, Closing),
            (Closing, Idle),
            (Analyzing, Idle),
            (SignalDetected, Idle),
            (EnteringPosition, Idle),
        ];
        for from in Lifecycle::ALL {
            for to in Lifecycle::ALL {
                assert_eq!(
                    from.can_transition_to(to),
                    legal.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
        // An open position never skips CLOSING.
        assert!(!PositionOpen.can_transition_to(Idle));
    }

    #[test]
    fn lifecycle_serializes_screaming() {
        assert_eq!(
            serde_json::to_string(&Lifecycle::EnteringPosition).unwrap(),
            "\"ENTERING_POSITION\""
        );
    }

    #[tokio::test]
    async fn a_tick_moves_its_instance_from_idle_to_analyzing() {
        let (a, metrics) = spawn(
            "strat-tick-",
            vec![entry("a", "BTC-PERPETUAL"), entry("b", "ETH-PERPETUAL")],
        )
        .await;
        assert_eq!(metrics.strategies_active.get(), 2);
        let s = call_t!(a, StrategyMsg::Status, 1000).unwrap();
        assert!(s.strategies.iter().all(|i| i.lifecycle == Lifecycle::Idle));
        assert_eq!(s.last_tick_at, None);

        a.send_message(StrategyMsg::Ticker(ticker("BTC-PERPETUAL", 65_000.5)))
            .unwrap();
        a.send_message(StrategyMsg::Ticker(ticker("SOL-PERPETUAL", 1.0)))
            .unwrap();
        let s = call_t!(a, StrategyMsg::Status, 1000).unwrap();
        assert_eq!(s.active, 2);
        assert_eq!(s.ticks_received, 2);
        assert!(s.last_tick_at.is_some());
        assert_eq!(s.strategies[0].lifecycle, Lifecycle::Analyzing);
        assert_eq!(s.strategies[0].ticks, 1);
        assert_eq!(s.strategies[0].last_mark_price, Some(65_000.5));
        assert_eq!(s.strategies[1].lifecycle, Lifecycle::Idle);
        assert_eq!(s.strategies[1].ticks, 0);
        a.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn keeps_up_with_a_burst_of_ticks() {
        let (a, _) = spawn("strat-burst-", vec![entry("a", "BTC-PERPETUAL")]).await;
        let started = std::time::Instant::now();
        for i in 0..20_000 {
            a.send_message(StrategyMsg::Ticker(ticker("BTC-PERPETUAL", f64::from(i))))
                .unwrap();
        }
        let s = call_t!(a, StrategyMsg::Status, 5000).unwrap();
        assert_eq!(s.strategies[0].ticks, 20_000);
        // 10,000 ticks/s is the requirement; a debug build on a busy CI box still does far better.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        a.stop_and_wait(None, None).await.unwrap();
    }
}
