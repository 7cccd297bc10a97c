//! The test kit for actors: spawn one actor under a test's [`Names`], a mini tree of the actors
//! most tests lean on (persister, alert, fail-safe), and [`eventually`], the wait on a condition
//! that replaces fixed sleeps. Compiled for this crate's unit tests and, through the
//! `test-hooks` feature (enabled by the root crate's dev-dependencies), for the integration
//! tests; never in a release build. Test code: a failure to spawn panics the test.

use std::path::Path;
use std::time::Duration;

use ractor::{Actor, ActorRef};

use crate::alert::{AlertActor, AlertArgs, AlertConfig, AlertMsg};
use crate::failsafe::{FailSafeActor, FailSafeArgs, FailSafeConfig, FailSafeMsg, InitialMode};
use crate::health::HealthConfig;
use crate::metrics::Metrics;
use crate::names::{ChildName, Names};
use crate::persister::{PersisterActor, PersisterArgs, PersisterMsg};
use crate::store::{Change, Committed};
use crate::strategy::{Intent, Lifecycle, PositionData, Side, StrategyMsg, TransitionData};

/// A state persister on the store at `path`, registered under `names`.
pub async fn spawn_persister(names: &Names, path: &Path) -> ActorRef<PersisterMsg> {
    let args = PersisterArgs::new(names.clone(), path.to_path_buf(), Metrics::new().unwrap());
    let (persister, _) = Actor::spawn(
        Some(names.of(ChildName::StatePersister)),
        PersisterActor,
        args,
    )
    .await
    .unwrap();
    persister
}

/// Commits `change` through `persister` and waits for it to be stored.
pub async fn commit(persister: &ActorRef<PersisterMsg>, change: Change) -> Committed {
    ractor::call_t!(
        persister,
        |reply| PersisterMsg::Commit {
            change,
            reply: Some(reply)
        },
        5000
    )
    .unwrap()
    .unwrap()
}

/// An alert actor with the default configuration (no sinks), registered under `names`.
pub async fn spawn_alert(names: &Names) -> ActorRef<AlertMsg> {
    spawn_alert_with(names, AlertConfig::default()).await
}

/// An alert actor with `config`, registered under `names`.
pub async fn spawn_alert_with(names: &Names, config: AlertConfig) -> ActorRef<AlertMsg> {
    let args = AlertArgs {
        names: names.clone(),
        config,
    };
    let (alert, _) = Actor::spawn(Some(names.of(ChildName::Alert)), AlertActor, args)
        .await
        .unwrap();
    alert
}

/// A fail-safe with `config` whose first-start mode is `initial`, registered under `names`.
pub async fn spawn_fail_safe(
    names: &Names,
    config: FailSafeConfig,
    initial: InitialMode,
) -> ActorRef<FailSafeMsg> {
    let args = FailSafeArgs {
        names: names.clone(),
        config,
        initial,
        health: HealthConfig::default(),
    };
    let (fail_safe, _) = Actor::spawn(Some(names.of(ChildName::FailSafe)), FailSafeActor, args)
        .await
        .unwrap();
    fail_safe
}

/// The persister, the alert actor and the fail-safe, spawned in the tree's start order without a
/// supervisor: enough for a test of any actor that stores, alerts or restricts the mode.
pub struct MiniTree {
    pub names: Names,
    pub persister: ActorRef<PersisterMsg>,
    pub alert: ActorRef<AlertMsg>,
    pub fail_safe: ActorRef<FailSafeMsg>,
}

impl MiniTree {
    /// Spawns the three on the store at `store`, the fail-safe with `config` and `initial`.
    pub async fn start(
        names: &Names,
        store: &Path,
        config: FailSafeConfig,
        initial: InitialMode,
    ) -> MiniTree {
        let persister = spawn_persister(names, store).await;
        let alert = spawn_alert(names).await;
        let fail_safe = spawn_fail_safe(names, config, initial).await;
        MiniTree {
            names: names.clone(),
            persister,
            alert,
            fail_safe,
        }
    }

    /// Stops the three in reverse start order, each waited for.
    pub async fn stop(self) {
        self.fail_safe.stop_and_wait(None, None).await.unwrap();
        self.alert.stop_and_wait(None, None).await.unwrap();
        self.persister.stop_and_wait(None, None).await.unwrap();
    }
}

/// How often [`eventually`] asks again.
pub const POLL: Duration = Duration::from_millis(10);

/// Asks `check` every [`POLL`] until it returns `Some`, and returns that; panics naming `what`
/// after `within`. Measured on tokio's clock: under paused time the wait runs through at once.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    check: impl AsyncFnMut() -> Option<T>,
) -> T {
    match eventually_or(within, check).await {
        Some(value) => value,
        None => panic!("never {what} within {within:?}"),
    }
}

/// [`eventually`] that returns `None` after `within` instead of panicking, for a caller that
/// says more about what it saw last.
pub async fn eventually_or<T>(
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a condition without a value.
pub async fn wait_until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    eventually(what, within, async || check().await.then_some(())).await
}

/// An intent in flight as the tests write it: a buy of 10 contracts under `label`, sent now,
/// no bracket prices.
pub fn buy_intent(label: &str) -> Intent {
    Intent {
        label: label.into(),
        side: Side::Buy,
        size: 10.0,
        sent_at: chrono::Utc::now(),
        stop_price: None,
        take_profit_price: None,
    }
}

/// Asks `strategy` to move instance `id` to `to` (reason `test`), with `data`; waits `within`
/// for the answer (panics past it: test code) and returns the strategy's verdict.
pub async fn transition(
    strategy: &ActorRef<StrategyMsg>,
    id: &str,
    to: Lifecycle,
    data: Option<TransitionData>,
    within: Duration,
) -> Result<(), String> {
    strategy
        .call(
            |reply| StrategyMsg::Transition {
                id: id.into(),
                to,
                reason: "test".into(),
                data,
                reply,
            },
            Some(within),
        )
        .await
        .expect("the strategy is running")
        .expect("the strategy answers in time")
}

/// An open position as the tests write it: entered at 65,000, protected by the orders labelled
/// `protective`, no bracket prices or entry label.
pub fn position(instrument: &str, direction: Side, size: f64, protective: &[&str]) -> PositionData {
    PositionData {
        instrument: instrument.into(),
        direction,
        size,
        entry_price: 65_000.0,
        protective_orders: protective.iter().map(|s| (*s).to_string()).collect(),
        entry_label: None,
        stop_price: None,
        take_profit_price: None,
    }
}

/// The `capital` a snapshot stores, as the tests write it: one BTC account whose balance,
/// equity, margin balance and available funds are all `equity`, with no margin or P&L.
pub fn btc_capital(equity: f64) -> serde_json::Value {
    serde_json::json!({ "BTC": {
        "currency": "BTC", "balance": equity, "equity": equity, "margin_balance": equity,
        "available_funds": equity, "initial_margin": 0.0, "maintenance_margin": 0.0,
        "session_upl": 0.0, "session_rpl": 0.0, "total_pl": 0.0,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eventually_returns_the_first_value_and_gives_up_at_the_deadline() {
        let mut asked = 0;
        let value = eventually("three asks", Duration::from_secs(1), async || {
            asked += 1;
            (asked >= 3).then_some(asked)
        })
        .await;
        assert_eq!(value, 3);
        let started = tokio::time::Instant::now();
        let never = eventually_or(Duration::from_millis(100), async || None::<()>).await;
        assert_eq!(never, None);
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_millis(100) + 2 * POLL);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "never ready within 50ms")]
    async fn eventually_panics_naming_what_it_waited_for() {
        eventually("ready", Duration::from_millis(50), async || None::<()>).await;
    }
}
