//! Tests of the alert actor (spawned, with a real persister where the store matters).

use super::*;
use ractor::call_t;
use serde_json::json;

fn alert(key: &str, severity: Severity) -> Alert {
    Alert {
        key: key.into(),
        severity,
        title: format!("{key} happened"),
        message: "something went wrong".into(),
        root_cause: "a test".into(),
        recommended_action: "nothing".into(),
        metadata: json!({ "n": 1 }),
    }
}

/// Sends `alert(key, severity)` to be raised.
fn raise(actor: &ActorRef<AlertMsg>, key: &str, severity: Severity) {
    actor
        .send_message(AlertMsg::Raise(alert(key, severity)))
        .unwrap();
}

fn resolve(actor: &ActorRef<AlertMsg>, key: &str) {
    actor
        .send_message(AlertMsg::Resolve { key: key.into() })
        .unwrap();
}

async fn spawn(prefix: &str, config: AlertConfig) -> (Names, ActorRef<AlertMsg>) {
    let names = Names::with_prefix(prefix);
    let actor = crate::testkit::spawn_alert_with(&names, config).await;
    (names, actor)
}

#[test]
fn default_config_is_valid_and_zero_recent_is_not() {
    assert_eq!(AlertConfig::default().validate(), Ok(()));
    let bad = AlertConfig {
        max_recent: 0,
        ..AlertConfig::default()
    };
    assert!(bad.validate().unwrap_err().contains("max_recent"));
    let parsed: AlertConfig = serde_json::from_value(json!({"dedup_window": "30s"})).unwrap();
    assert_eq!(parsed.dedup_window, Duration::from_secs(30));
    assert!(serde_json::from_value::<AlertConfig>(json!({"bogus": 1})).is_err());
}

/// 3 repeats, and a thousand (a flapping check): one open alert, counted.
#[tokio::test]
async fn repeat_inside_the_window_only_bumps_the_count() {
    tokio::time::pause();
    for n in [3u64, 1000] {
        let (_, actor) = spawn(&format!("alert-dedup-{n}-"), AlertConfig::default()).await;
        for _ in 0..n {
            raise(&actor, "failsafe:k", Severity::Critical);
        }
        let s = call_t!(actor, AlertMsg::Status, 5000).unwrap();
        assert_eq!(s.open, 1);
        assert_eq!(s.open_critical, 1);
        assert_eq!(s.raised_total, 1);
        assert_eq!(s.deduplicated_total, n - 1);
        assert_eq!(s.recent.len(), 1);
        assert_eq!(s.recent[0].count, n);
        assert_eq!(s.recent[0].alert.severity, Severity::Critical);
        assert!(uuid::Uuid::parse_str(&s.recent[0].alert_id).is_ok());
        actor.stop_and_wait(None, None).await.unwrap();
    }
}

#[tokio::test]
async fn repeat_after_the_window_is_a_new_record() {
    tokio::time::pause();
    let config = AlertConfig {
        dedup_window: Duration::from_secs(60),
        max_recent: 50,
        ..AlertConfig::default()
    };
    let (_, actor) = spawn("alert-window-", config).await;
    raise(&actor, "failsafe:k", Severity::Warning);
    call_t!(actor, AlertMsg::Ping, 1000).unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    raise(&actor, "failsafe:k", Severity::Warning);
    let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
    assert_eq!(s.raised_total, 2);
    assert_eq!(s.deduplicated_total, 0);
    assert_eq!(s.open, 1);
    assert_eq!(s.open_critical, 0);
    assert_ne!(s.recent[0].alert_id, s.recent[1].alert_id);
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn resolve_closes_and_a_new_raise_opens_again() {
    let (_, actor) = spawn("alert-resolve-", AlertConfig::default()).await;
    raise(&actor, "failsafe:k", Severity::Critical);
    resolve(&actor, "failsafe:k");
    resolve(&actor, "unknown");
    let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
    assert_eq!(s.open, 0);
    assert!(s.recent[0].resolved_at.is_some());
    raise(&actor, "failsafe:k", Severity::Critical);
    let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
    assert_eq!(s.open, 1);
    assert_eq!(s.raised_total, 2);
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn keeps_at_most_max_recent_records() {
    let config = AlertConfig {
        max_recent: 3,
        ..AlertConfig::default()
    };
    let (_, actor) = spawn("alert-cap-", config).await;
    for i in 0..10 {
        raise(&actor, &format!("failsafe:k{i}"), Severity::Info);
    }
    let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
    assert_eq!(s.raised_total, 10);
    assert_eq!(s.recent.len(), 3);
    assert_eq!(s.recent[2].alert.key, "failsafe:k9");
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn raised_and_resolved_alerts_reach_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    // Loaded first: a load finishing mid-test would add its own event.
    let (actor, persister) = spawn_stored("alert-store-", &path).await;
    raise(&actor, "failsafe:k", Severity::Critical);
    resolve(&actor, "failsafe:k");
    stop_stored(actor, persister).await;
    assert_eq!(stored_kinds(&path), ["alert_raised", "alert_resolved"]);
}

#[tokio::test]
async fn acknowledge_marks_the_record_and_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    // Loaded first: a load finishing mid-test would add its own event.
    let (actor, persister) = spawn_stored("alert-ack-", &path).await;
    raise(&actor, "failsafe:k", Severity::Warning);
    let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
    let id = s.recent[0].alert_id.clone();
    assert!(!s.recent[0].acknowledged);

    let acked = acknowledge(&actor, id.clone()).await.unwrap();
    assert!(acked.acknowledged);
    assert_eq!(acked.alert_id, id);
    let unknown = acknowledge(&actor, "nope").await;
    assert_eq!(
        unknown,
        Err(AlertError::UnknownAlert {
            alert_id: "nope".into()
        })
    );
    let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
    assert!(s.recent[0].acknowledged);
    // A repeat keeps the acknowledgement (it is the same open alert).
    raise(&actor, "failsafe:k", Severity::Warning);
    let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
    assert!(s.recent[0].acknowledged);
    assert_eq!(s.recent[0].count, 2);

    stop_stored(actor, persister).await;
    assert_eq!(stored_kinds(&path), ["alert_raised", "alert_acknowledged"]);
}

#[test]
fn only_the_allowed_kinds_are_alert_keys() {
    for key in [
        "failsafe:heartbeat",
        "escalation:strategy",
        "startup_checks:event_log",
        "integrity:hash_chain",
        "heartbeat:lost",
        "capital:recovery_differences",
        "store:backup",
        "store:recovered",
        "strategy:ma-1:unprotected",
    ] {
        assert!(alert_kind(key).is_some(), "{key} must be allowed");
    }
    assert_eq!(alert_kind("failsafe:heartbeat"), Some("failsafe"));
    assert_eq!(alert_kind("strategy:ma-1:unprotected"), Some("strategy"));
    // The key the persister raises when a backup fails.
    assert_eq!(
        alert_kind(crate::persister::BACKUP_ALERT_KEY),
        Some("store")
    );
    for key in [
        "broker:reconnect",
        // Backups fail as `store:backup`; no `backup` kind is raised anywhere.
        "backup:failed",
        "strategy:ma-1:entry_blocked",
        "strategy::unprotected",
        "strategy:a:b:unprotected",
        "failsafe",
        "failsafe:",
        "",
        "FAILSAFE:heartbeat",
        "trade:blocked",
    ] {
        assert_eq!(alert_kind(key), None, "{key} must be refused");
    }
}

#[tokio::test]
async fn a_routine_event_is_refused_and_counted() {
    let (_, actor) = spawn("alert-refuse-", AlertConfig::default()).await;
    raise(&actor, "broker:reconnect", Severity::Warning);
    raise(&actor, "strategy:s1:entry_blocked", Severity::Info);
    raise(&actor, "strategy:s1:unprotected", Severity::Critical);
    let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
    assert_eq!(s.refused_total, 2);
    assert_eq!(s.raised_total, 1);
    assert_eq!(s.open, 1);
    assert_eq!(s.recent.len(), 1);
    assert_eq!(s.recent[0].alert.key, "strategy:s1:unprotected");
    actor.stop_and_wait(None, None).await.unwrap();
}

/// An alert actor and a persister on `path` under fresh names, the history loaded.
async fn spawn_stored(
    prefix: &str,
    path: &std::path::Path,
) -> (ActorRef<AlertMsg>, ActorRef<PersisterMsg>) {
    let (names, actor) = spawn(prefix, AlertConfig::default()).await;
    let persister = persister_loaded(&names, &actor, path).await;
    (actor, persister)
}

/// A persister on `path` under `names`, once `actor` has loaded its history from it.
async fn persister_loaded(
    names: &Names,
    actor: &ActorRef<AlertMsg>,
    path: &std::path::Path,
) -> ActorRef<PersisterMsg> {
    let persister = crate::testkit::spawn_persister(names, path).await;
    crate::testkit::wait_until(
        "the alert history loaded",
        Duration::from_secs(5),
        async || {
            call_t!(actor, AlertMsg::Status, 1000)
                .unwrap()
                .history_loaded
        },
    )
    .await;
    persister
}

/// The kinds of the first 100 events stored at `path`.
fn stored_kinds(path: &std::path::Path) -> Vec<String> {
    let store = crate::store::Store::open(path).unwrap();
    let events = store.events(0, 100).unwrap();
    events.into_iter().map(|e| e.kind).collect()
}

async fn acknowledge(
    actor: &ActorRef<AlertMsg>,
    id: impl Into<String>,
) -> Result<AlertRecord, AlertError> {
    let alert_id = id.into();
    call_t!(
        actor,
        |reply| AlertMsg::Acknowledge {
            alert_id: alert_id.clone(),
            reply
        },
        1000
    )
    .unwrap()
}

async fn stop_stored(actor: ActorRef<AlertMsg>, persister: ActorRef<PersisterMsg>) {
    call_t!(actor, AlertMsg::Ping, 1000).unwrap();
    call_t!(persister, PersisterMsg::Flush, 5000)
        .unwrap()
        .unwrap();
    actor.stop_and_wait(None, None).await.unwrap();
    persister.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn an_acknowledged_alert_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (actor, persister) = spawn_stored("alert-restart-a-", &path).await;
    raise(&actor, "failsafe:k", Severity::Critical);
    raise(&actor, "store:backup", Severity::Warning);
    resolve(&actor, "store:backup");
    let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
    let id = s.recent[0].alert_id.clone();
    acknowledge(&actor, id.clone()).await.unwrap();
    stop_stored(actor, persister).await;

    let (actor, persister) = spawn_stored("alert-restart-b-", &path).await;
    let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
    assert_eq!(s.history_load_error, None);
    assert_eq!(s.store_failures, 0, "{:?}", s.last_store_error);
    assert_eq!(s.recent.len(), 2);
    assert_eq!(s.open, 1, "the open alert is open again");
    let r = &s.open_alerts[0];
    assert_eq!(r.alert_id, id);
    assert!(r.acknowledged);
    assert!(r.acknowledged_at.is_some());
    assert_eq!(r.alert.severity, Severity::Critical);
    assert_eq!(r.alert.title, "failsafe:k happened");
    assert_eq!(r.alert.root_cause, "a test");
    assert_eq!(r.alert.recommended_action, "nothing");
    assert_eq!(r.alert.metadata, json!({ "n": 1 }));
    assert!(s.recent[1].resolved_at.is_some(), "{:?}", s.recent);
    // The open alert is the same one: a repeat inside the window bumps its count.
    raise(&actor, "failsafe:k", Severity::Critical);
    let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
    assert_eq!(s.open_alerts[0].alert_id, id);
    assert_eq!(s.open_alerts[0].count, 2);
    assert!(s.open_alerts[0].acknowledged);
    // Resolving it after the restart closes it for good.
    resolve(&actor, "failsafe:k");
    stop_stored(actor, persister).await;
    let (actor, persister) = spawn_stored("alert-restart-c-", &path).await;
    let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
    assert_eq!(s.open, 0);
    assert_eq!(s.recent.len(), 2);
    assert!(s.recent.iter().all(|r| r.resolved_at.is_some()));
    stop_stored(actor, persister).await;
}

#[tokio::test]
async fn a_storm_of_repeats_is_stored_as_one_count_update() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (actor, persister) = spawn_stored("alert-storm-", &path).await;
    for _ in 0..1000 {
        raise(&actor, "heartbeat:lost", Severity::Critical);
    }
    call_t!(actor, AlertMsg::Ping, 5000).unwrap();
    // The counts are written once, one interval after the first repeat.
    tokio::time::sleep(COUNT_PERSIST_INTERVAL + Duration::from_millis(300)).await;
    stop_stored(actor, persister).await;
    let store = crate::store::Store::open(&path).unwrap();
    let events = store.events(0, 100).unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["alert_raised", "alert_repeated"]);
    let repeated: Value = serde_json::from_str(&events[1].payload).unwrap();
    assert_eq!(repeated["alerts"][0]["count"], 1000);
    let stored = store.state().unwrap();
    assert_eq!(stored[ALERTS_STATE_KEY]["open"][0]["count"], 1000);
}

#[tokio::test]
async fn an_alert_raised_before_the_persister_starts_is_stored_once_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (names, actor) = spawn("alert-early-", AlertConfig::default()).await;
    raise(&actor, "store:recovered", Severity::Critical);
    call_t!(actor, AlertMsg::Ping, 1000).unwrap();
    let persister = persister_loaded(&names, &actor, &path).await;
    let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
    assert!(s.history_loaded);
    assert_eq!(s.store_failures, 0, "{:?}", s.last_store_error);
    stop_stored(actor, persister).await;
    assert_eq!(stored_kinds(&path), ["alert_raised"]);
    let state = crate::store::Store::open(&path).unwrap().state().unwrap();
    assert_eq!(state[ALERTS_STATE_KEY]["open"][0]["key"], "store:recovered");
}

#[tokio::test]
async fn an_absent_persister_does_not_stop_alerts() {
    let (_, actor) = spawn("alert-nopersist-", AlertConfig::default()).await;
    raise(&actor, "failsafe:k", Severity::Critical);
    let s = call_t!(actor, AlertMsg::Status, 1000).unwrap();
    assert_eq!(s.open, 1);
    actor.stop_and_wait(None, None).await.unwrap();
}
