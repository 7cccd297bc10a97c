//! Tests of the fail-safe actor (spawned with a real persister and alert actor).

use super::*;
use crate::alert::Severity;
use crate::protocol::persister::PersisterMsg;
use crate::testkit::{
    commit, eventually, spawn_alert, spawn_fail_safe, spawn_persister, wait_until,
};
use ractor::call_t;
use serde_json::json;

/// A fail-safe whose resolved initial mode is `config.initial_mode` (unset: OBSERVE_ONLY).
async fn spawn(names: &Names, config: FailSafeConfig) -> ActorRef<FailSafeMsg> {
    let initial = config
        .initial_mode
        .map(InitialMode::explicit)
        .unwrap_or_else(|| InitialMode::observe_only("test: initial_mode not set"));
    spawn_fail_safe(names, config, initial).await
}

/// Polls until the stored mode is loaded and `mode` is in effect (real time, ≤ 2 s).
async fn wait_for(actor: &ActorRef<FailSafeMsg>, mode: TradingMode) -> FailSafeStatus {
    let what = format!("a loaded {mode}");
    eventually(&what, Duration::from_secs(2), async || {
        let s = call_t!(actor, FailSafeMsg::Status, 1000).unwrap();
        (s.loaded && s.mode == mode).then_some(s)
    })
    .await
}

async fn set(actor: &ActorRef<FailSafeMsg>, mode: TradingMode) -> Result<(), String> {
    call_t!(
        actor,
        |reply| FailSafeMsg::SetMode {
            mode,
            reason: "test".into(),
            reply
        },
        2000
    )
    .unwrap()
}

async fn trigger(actor: &ActorRef<FailSafeMsg>, name: &str) -> Result<(), String> {
    call_t!(
        actor,
        |reply| FailSafeMsg::Trigger {
            trigger: name.into(),
            reason: "test trigger".into(),
            reply: Some(reply)
        },
        3000
    )
    .unwrap()
}

async fn allow(actor: &ActorRef<FailSafeMsg>) -> Result<(), String> {
    call_t!(actor, FailSafeMsg::AllowEntry, 1000).unwrap()
}

/// A persister on a fresh store under names with `prefix` (keep the directory alive).
async fn stored(prefix: impl Into<String>) -> (tempfile::TempDir, Names, ActorRef<PersisterMsg>) {
    let dir = tempfile::tempdir().unwrap();
    let names = Names::with_prefix(prefix);
    let persister = spawn_persister(&names, &dir.path().join("state.db")).await;
    (dir, names, persister)
}

async fn stop(fs: ActorRef<FailSafeMsg>, persister: ActorRef<PersisterMsg>) {
    fs.stop_and_wait(None, None).await.unwrap();
    persister.stop_and_wait(None, None).await.unwrap();
}

async fn mode_of(fs: &ActorRef<FailSafeMsg>) -> TradingMode {
    call_t!(fs, FailSafeMsg::GetMode, 1000).unwrap()
}

/// The mode in the store, once everything sent was written.
async fn stored_mode(persister: &ActorRef<PersisterMsg>) -> TradingMode {
    call_t!(persister, PersisterMsg::Flush, 5000)
        .unwrap()
        .unwrap();
    let stored = call_t!(persister, PersisterMsg::Load, 5000)
        .unwrap()
        .unwrap();
    let mode: StoredMode = serde_json::from_value(stored[MODE_KEY].clone()).unwrap();
    mode.mode
}

async fn restrict(fs: &ActorRef<FailSafeMsg>, mode: TradingMode) -> Result<(), String> {
    call_t!(
        fs,
        |reply| FailSafeMsg::Restrict {
            mode,
            reason: "store restored".into(),
            reply
        },
        2000
    )
    .unwrap()
}

fn aggressive() -> FailSafeConfig {
    FailSafeConfig {
        initial_mode: Some(TradingMode::Aggressive),
        ..FailSafeConfig::default()
    }
}

#[test]
fn config_defaults_fail_closed_and_validate_names_the_field() {
    let c = FailSafeConfig::default();
    assert_eq!(
        c.initial_mode, None,
        "unset: the daemon decides by the exchange"
    );
    assert_eq!(c.load_timeout, Duration::from_secs(2));
    assert_eq!(c.validate(), Ok(()));
    let bad = FailSafeConfig {
        initial_mode: Some(TradingMode::Shutdown),
        ..c.clone()
    };
    assert!(bad.validate().unwrap_err().contains("initial_mode"));
    let parsed: FailSafeConfig =
        serde_json::from_value(json!({"initial_mode": "AGGRESSIVE", "load_timeout": "1s"}))
            .unwrap();
    assert_eq!(parsed.initial_mode, Some(TradingMode::Aggressive));
    assert!(serde_json::from_value::<FailSafeConfig>(json!({"mode": "AGGRESSIVE"})).is_err());
}

#[tokio::test]
async fn a_restarted_fail_safe_knows_this_runs_recovery_finished() {
    let (_dir, names, persister) = stored("fs-recovered-").await;
    let started = crate::clock::now();
    let change = Change::event("test", json!({}))
        .set(
            crate::store::RUN_KEY,
            json!({"clean": false, "started_at": started}),
        )
        .set(
            crate::recovery::RECOVERY_KEY,
            json!({"finished_at": started + chrono::Duration::milliseconds(5)}),
        );
    commit(&persister, change).await;
    let fs = spawn(&names, aggressive()).await;
    wait_for(&fs, TradingMode::Aggressive).await;
    wait_until("recovered", Duration::from_secs(2), async || {
        call_t!(fs, FailSafeMsg::Status, 1000).unwrap().recovered
    })
    .await;
    assert_eq!(allow(&fs).await, Ok(()));
    fs.stop_and_wait(None, None).await.unwrap();

    // A report from an earlier run does not count.
    let change = Change::event("test", json!({})).set(
        crate::store::RUN_KEY,
        json!({"clean": false, "started_at": crate::clock::now() + chrono::Duration::seconds(1)}),
    );
    commit(&persister, change).await;
    let fs = spawn(&names, aggressive()).await;
    wait_for(&fs, TradingMode::Aggressive).await;
    let err = allow(&fs).await.unwrap_err();
    assert!(err.contains("recovery has not finished"), "{err}");
    stop(fs, persister).await;
}

#[tokio::test]
async fn stored_shutdown_is_latched_across_a_restart() {
    let (_dir, names, persister) = stored("fs-latch-").await;

    let fs = spawn(&names, aggressive()).await;
    wait_for(&fs, TradingMode::Aggressive).await;
    fs.send_message(FailSafeMsg::RecoveryFinished).unwrap();
    assert_eq!(allow(&fs).await, Ok(()));
    assert_eq!(trigger(&fs, "test").await, Ok(()));
    assert!(allow(&fs).await.is_err());
    fs.stop_and_wait(None, None).await.unwrap();

    // The new instance is configured for AGGRESSIVE, but the store says SHUTDOWN.
    let fs = spawn(&names, aggressive()).await;
    let s = wait_for(&fs, TradingMode::Shutdown).await;
    assert!(s.reason.contains("test trigger"), "{}", s.reason);
    assert_eq!(mode_of(&fs).await, TradingMode::Shutdown);
    assert!(allow(&fs).await.is_err());
    stop(fs, persister).await;
}

#[tokio::test]
async fn status_says_which_mode_the_run_started_in_and_why() {
    let (_dir, names, persister) = stored("fs-initial-").await;

    // Nothing stored: the resolved initial mode, with its reason.
    let fs = spawn(&names, aggressive()).await;
    let s = wait_for(&fs, TradingMode::Aggressive).await;
    assert_eq!(s.initial_mode, TradingMode::Aggressive);
    assert_eq!(
        s.initial_mode_reason,
        InitialMode::explicit(TradingMode::Aggressive).reason
    );
    assert!(
        s.reason.contains("initial mode (nothing stored)"),
        "{}",
        s.reason
    );
    assert_eq!(set(&fs, TradingMode::ObserveOnly).await, Ok(()));
    fs.stop_and_wait(None, None).await.unwrap();

    // A stored mode wins over the configuration, and the reason says so.
    let fs = spawn(&names, aggressive()).await;
    let s = wait_for(&fs, TradingMode::ObserveOnly).await;
    assert_eq!(s.initial_mode, TradingMode::ObserveOnly);
    assert!(
        s.initial_mode_reason
            .contains("stored mode takes precedence over the configured initial mode AGGRESSIVE"),
        "{}",
        s.initial_mode_reason
    );
    stop(fs, persister).await;
}

#[tokio::test]
async fn entries_are_allowed_only_in_a_loaded_aggressive_mode() {
    let dir = tempfile::tempdir().unwrap();
    let names = Names::with_prefix("fs-allow-");
    // No persister yet: nothing can be loaded.
    let fs = spawn(&names, FailSafeConfig::default()).await;
    let err = allow(&fs).await.unwrap_err();
    assert!(err.contains("not been loaded"), "{err}");
    fs.stop_and_wait(None, None).await.unwrap();

    let persister = spawn_persister(&names, &dir.path().join("state.db")).await;
    let fs = spawn(&names, FailSafeConfig::default()).await;
    wait_for(&fs, TradingMode::ObserveOnly).await;
    assert_eq!(set(&fs, TradingMode::Aggressive).await, Ok(()));
    // Fail closed until this run's recovery has finished.
    let err = allow(&fs).await.unwrap_err();
    assert!(err.contains("recovery has not finished"), "{err}");
    fs.send_message(FailSafeMsg::RecoveryFinished).unwrap();
    assert_eq!(set(&fs, TradingMode::ObserveOnly).await, Ok(()));
    assert!(allow(&fs).await.unwrap_err().contains("OBSERVE_ONLY"));
    assert_eq!(set(&fs, TradingMode::Aggressive).await, Ok(()));
    assert_eq!(allow(&fs).await, Ok(()));
    assert_eq!(trigger(&fs, "test").await, Ok(()));
    assert!(allow(&fs).await.unwrap_err().contains("SHUTDOWN"));

    // The initial mode and every change were stored.
    assert_eq!(stored_mode(&persister).await, TradingMode::Shutdown);
    stop(fs, persister).await;
}

#[tokio::test]
async fn shutdown_is_cleared_only_through_observe_only() {
    let (_dir, names, persister) = stored("fs-clear-").await;
    let fs = spawn(&names, FailSafeConfig::default()).await;
    wait_for(&fs, TradingMode::ObserveOnly).await;
    assert_eq!(trigger(&fs, "test").await, Ok(()));
    assert_eq!(trigger(&fs, "again").await, Ok(()));
    let err = set(&fs, TradingMode::Aggressive).await.unwrap_err();
    assert!(err.contains("OBSERVE_ONLY first"), "{err}");
    assert_eq!(mode_of(&fs).await, TradingMode::Shutdown);
    assert_eq!(set(&fs, TradingMode::ObserveOnly).await, Ok(()));
    assert_eq!(set(&fs, TradingMode::Aggressive).await, Ok(()));
    let s = call_t!(fs, FailSafeMsg::Status, 1000).unwrap();
    assert_eq!(s.mode, TradingMode::Aggressive);
    assert_eq!(s.triggers, 2);
    assert_eq!(s.last_trigger.as_deref(), Some("again"));
    stop(fs, persister).await;
}

#[tokio::test]
async fn restrict_wins_over_an_initial_aggressive_still_being_stored() {
    for round in 0..10 {
        let (_dir, names, persister) = stored(format!("fs-race-{round}-")).await;
        let fs = spawn(&names, aggressive()).await;
        // Ask as early as possible, retrying while the stored mode is loading.
        loop {
            if restrict(&fs, TradingMode::ObserveOnly).await.is_ok() {
                break;
            }
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            mode_of(&fs).await,
            TradingMode::ObserveOnly,
            "round {round}"
        );
        assert_eq!(
            stored_mode(&persister).await,
            TradingMode::ObserveOnly,
            "round {round}: stored"
        );
        stop(fs, persister).await;
    }
}

#[tokio::test]
async fn restrict_only_ever_tightens_the_mode() {
    let (_dir, names, persister) = stored("fs-restrict-").await;
    let fs = spawn(&names, FailSafeConfig::default()).await;
    wait_for(&fs, TradingMode::ObserveOnly).await;
    assert_eq!(set(&fs, TradingMode::Aggressive).await, Ok(()));
    assert_eq!(restrict(&fs, TradingMode::ObserveOnly).await, Ok(()));
    assert_eq!(mode_of(&fs).await, TradingMode::ObserveOnly);
    assert_eq!(trigger(&fs, "test").await, Ok(()));
    // Unlike SetMode, Restrict never clears SHUTDOWN.
    assert_eq!(restrict(&fs, TradingMode::ObserveOnly).await, Ok(()));
    assert_eq!(mode_of(&fs).await, TradingMode::Shutdown);
    stop(fs, persister).await;
}

#[tokio::test]
async fn a_missing_persister_leaves_observe_only_and_triggers_still_latch() {
    tokio::time::pause();
    let names = Names::with_prefix("fs-nopersist-");
    let fs = spawn(&names, aggressive()).await;
    // Every retry finds no persister; the paused clock runs through the delays.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let s = call_t!(fs, FailSafeMsg::Status, 1000).unwrap();
    assert_eq!(s.mode, TradingMode::ObserveOnly);
    assert!(!s.loaded);
    assert!(s.reason.contains("could not be loaded"), "{}", s.reason);
    assert!(allow(&fs).await.is_err());
    assert!(set(&fs, TradingMode::Aggressive).await.is_err());
    let err = trigger(&fs, "test").await.unwrap_err();
    assert!(err.contains("not running"), "{err}");
    assert_eq!(mode_of(&fs).await, TradingMode::Shutdown);
    fs.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn a_trigger_raises_a_critical_alert() {
    let names = Names::with_prefix("fs-alert-");
    let alert = spawn_alert(&names).await;
    let fs = spawn(&names, FailSafeConfig::default()).await;
    let _ = trigger(&fs, "heartbeat").await;
    let s = call_t!(alert, AlertMsg::Status, 1000).unwrap();
    assert_eq!(s.open_critical, 1);
    assert_eq!(s.recent[0].alert.key, "failsafe:heartbeat");
    fs.stop_and_wait(None, None).await.unwrap();
    alert.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn clearing_shutdown_resolves_the_fail_safe_alerts_only() {
    let (_dir, names, persister) = stored("fs-resolve-").await;
    let alert = spawn_alert(&names).await;
    let fs = spawn(&names, FailSafeConfig::default()).await;
    wait_for(&fs, TradingMode::ObserveOnly).await;
    alert
        .send_message(AlertMsg::Raise(Alert {
            key: "integrity:event_log".into(),
            severity: Severity::Critical,
            title: "not the fail-safe's".into(),
            message: String::new(),
            root_cause: String::new(),
            recommended_action: String::new(),
            metadata: json!({}),
        }))
        .unwrap();
    assert_eq!(trigger(&fs, "market_data_stalled").await, Ok(()));
    assert_eq!(trigger(&fs, "error_rate").await, Ok(()));
    let open = |s: &crate::alert::AlertStatus| {
        let mut keys: Vec<String> = s.open_alerts.iter().map(|r| r.alert.key.clone()).collect();
        keys.sort();
        keys
    };
    let s = call_t!(alert, AlertMsg::Status, 1000).unwrap();
    assert_eq!(
        open(&s),
        [
            "failsafe:error_rate",
            "failsafe:market_data_stalled",
            "integrity:event_log"
        ]
    );
    // Tightening again (still SHUTDOWN) resolves nothing; clearing it does.
    assert_eq!(set(&fs, TradingMode::Shutdown).await, Ok(()));
    assert_eq!(set(&fs, TradingMode::ObserveOnly).await, Ok(()));
    let what = "the fail-safe's alerts resolved";
    let keys = eventually(what, Duration::from_secs(2), async || {
        let keys = open(&call_t!(alert, AlertMsg::Status, 1000).unwrap());
        (keys == ["integrity:event_log"]).then_some(keys)
    })
    .await;
    assert_eq!(keys, ["integrity:event_log"]);
    let s = call_t!(alert, AlertMsg::Status, 1000).unwrap();
    let resolved = s
        .recent
        .iter()
        .find(|r| r.alert.key == "failsafe:market_data_stalled")
        .unwrap();
    assert!(resolved.resolved_at.is_some(), "{resolved:?}");
    fs.stop_and_wait(None, None).await.unwrap();
    alert.stop_and_wait(None, None).await.unwrap();
    persister.stop_and_wait(None, None).await.unwrap();
}
