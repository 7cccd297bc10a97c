use super::*;
use crate::alert::AlertMsg;
use crate::names::ChildName;
use crate::store::Committed;
use crate::store::{list_backups, open_verified};
use ractor::call_t;

async fn spawn(names: &Names, args: PersisterArgs) -> ActorRef<PersisterMsg> {
    let (p, _) = Actor::spawn(
        Some(names.of(ChildName::StatePersister)),
        PersisterActor,
        args,
    )
    .await
    .unwrap();
    p
}

async fn commit(p: &ActorRef<PersisterMsg>, kind: &str) -> Committed {
    let change = Change::event(kind, json!(1));
    p.call(
        |reply| PersisterMsg::Commit {
            change,
            reply: Some(reply),
        },
        Some(Duration::from_secs(5)),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap()
}

#[test]
fn disk_free_bytes_reads_the_store_directory_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let free = disk_free_bytes(&dir.path().join("tradebaas.db")).unwrap();
    assert!(free > 0, "a writable temp dir has free space");
    assert_eq!(
        disk_free_bytes(&dir.path().join("missing/tradebaas.db")),
        None
    );
}

async fn status(p: &ActorRef<PersisterMsg>) -> PersisterStatus {
    call_t!(p, PersisterMsg::Status, 1000).unwrap()
}

#[tokio::test]
async fn store_snapshots_commit_with_their_event_and_are_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tradebaas.db");
    let names = Names::with_prefix("persister-snap-");
    let p = spawn(
        &names,
        PersisterArgs::new(names.clone(), path.clone(), Metrics::new().unwrap()),
    )
    .await;
    let committed = call_t!(
        p,
        |reply| PersisterMsg::Snapshot {
            kind: SnapshotKind::OnDemand,
            payload: json!({"capital": {"BTC": 10.0}, "positions": []}),
            reply: Some(reply),
        },
        5000
    )
    .unwrap()
    .unwrap();
    assert!(committed.seq >= 1);
    let s = status(&p).await;
    assert_eq!(s.writes_ok, 1);
    assert_eq!(s.queue_depth, 0);
    assert!(s.last_snapshot_at.is_some());
    p.stop_and_wait(None, None).await.unwrap();
    let store = Store::open_read_only(&path).unwrap();
    let snaps = store.snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    let events = store.events(0, 100).unwrap();
    assert!(
        events.iter().any(|e| e.kind == "snapshot.taken"),
        "{events:?}"
    );
}

#[tokio::test]
async fn store_mark_clean_comes_after_queued_commits_and_the_next_open_sees_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tradebaas.db");
    let backups = dir.path().join("backups");
    let (store, report) = open_verified(&path, &backups).unwrap();
    assert!(!report.crashed);
    drop(store);
    let names = Names::with_prefix("persister-clean-");
    let p = spawn(
        &names,
        PersisterArgs::new(names.clone(), path.clone(), Metrics::new().unwrap()),
    )
    .await;
    for i in 0..20 {
        p.send_message(PersisterMsg::Commit {
            change: Change::event("test", json!(i)),
            reply: None,
        })
        .unwrap();
    }
    call_t!(p, PersisterMsg::MarkClean, 5000).unwrap().unwrap();
    p.stop_and_wait(None, None).await.unwrap();
    let store = Store::open(&path).unwrap();
    let events = store.events(0, 100).unwrap();
    assert_eq!(events.len(), 22);
    assert_eq!(events.last().unwrap().kind, "run.stopped");
    drop(store);
    let (_, report) = open_verified(&path, &backups).unwrap();
    assert!(!report.crashed);
}

#[tokio::test]
async fn store_backups_run_on_the_interval_and_only_the_newest_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tradebaas.db");
    let names = Names::with_prefix("persister-backup-");
    let mut args = PersisterArgs::new(names.clone(), path.clone(), Metrics::new().unwrap());
    args.backup_interval = Duration::from_millis(50);
    args.backups_keep = 2;
    let p = spawn(&names, args).await;
    commit(&p, "x").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(&p).await;
        if s.backups == Some(2) && list_backups(&dir.path().join("backups")).len() == 2 {
            assert!(s.last_backup_at.is_some() && s.last_backup_error.is_none());
            break;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // On demand, too; every kept backup verifies.
    let file = call_t!(p, PersisterMsg::Backup, 5000).unwrap().unwrap();
    assert!(file.exists());
    p.stop_and_wait(None, None).await.unwrap();
    let list = list_backups(&dir.path().join("backups"));
    assert!(
        list.len() <= 2 && list.iter().all(|b| b.verified.ok),
        "{list:?}"
    );
}

#[tokio::test]
async fn store_retention_archives_old_heartbeats_before_each_timed_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tradebaas.db");
    let backups = dir.path().join("backups");
    {
        let mut store = Store::open(&path).unwrap();
        for i in 0..50 {
            store
                .commit(&Change::event("heartbeat", json!({ "i": i })))
                .unwrap();
        }
        store
            .commit(&Change::event("order.placed", json!({})))
            .unwrap();
        store
            .commit(&Change::event("heartbeat", json!({})))
            .unwrap();
    }
    // The open stores the checkpoint at the head (seq 52).
    drop(open_verified(&path, &backups).unwrap());
    let names = Names::with_prefix("persister-retention-");
    let mut args = PersisterArgs::new(names.clone(), path.clone(), Metrics::new().unwrap());
    args.backup_interval = Duration::from_millis(50);
    // Everything is "old" with a zero keep (the config refuses < 1h; the mechanism does not care).
    args.retention.keep = Duration::ZERO;
    args.retention.min_events_per_run = 1;
    let p = spawn(&names, args).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(&p).await;
        if s.backups >= Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = status(&p).await;
    p.stop_and_wait(None, None).await.unwrap();
    let store = Store::open_read_only(&path).unwrap();
    let events = store.events(0, 1000).unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "heartbeat").count(),
        1,
        "50 heartbeats before the checkpoint archived, the checkpoint's own kept: {kinds:?}"
    );
    assert!(kinds.contains(&"order.placed"));
    assert!(kinds.contains(&"store.archived"));
    assert_eq!(
        s.last_seq,
        events.last().unwrap().seq,
        "the persister counted the commit"
    );
    let files: Vec<_> = std::fs::read_dir(dir.path().join("archives"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1);
    assert!(crate::store::verify(&path).ok);
    let list = list_backups(&backups);
    assert!(
        !list.is_empty() && list.iter().all(|b| b.verified.ok),
        "{list:?}"
    );
}

#[tokio::test]
async fn store_a_failed_backup_raises_a_warning_and_the_persister_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tradebaas.db");
    let not_a_dir = dir.path().join("backups");
    std::fs::write(&not_a_dir, b"a file where the backups directory should be").unwrap();
    let names = Names::with_prefix("persister-backup-fail-");
    let alert = crate::testkit::spawn_alert(&names).await;
    let mut args = PersisterArgs::new(names.clone(), path.clone(), Metrics::new().unwrap());
    args.backup_interval = Duration::from_millis(50);
    let p = spawn(&names, args).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = call_t!(alert, AlertMsg::Status, 1000).unwrap();
        if let Some(r) = a.recent.iter().find(|r| r.alert.key == BACKUP_ALERT_KEY) {
            assert_eq!(r.alert.severity, Severity::Warning);
            break;
        }
        assert!(Instant::now() < deadline, "no backup alert");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(status(&p).await.last_backup_error.is_some());
    assert!(commit(&p, "still").await.seq >= 1);
    p.stop_and_wait(None, None).await.unwrap();
    alert.stop_and_wait(None, None).await.unwrap();
}

#[test]
fn store_config_defaults_and_validation() {
    let c = StoreConfig::default();
    assert_eq!(c.backup_interval, Duration::from_secs(3600));
    assert_eq!(c.backups_keep, 24);
    assert!(c.validate().is_ok());
    assert!(
        StoreConfig {
            backups_keep: 0,
            ..c.clone()
        }
        .validate()
        .unwrap_err()
        .contains("backups_keep")
    );
    assert!(
        StoreConfig {
            backup_interval: Duration::from_secs(1),
            ..c
        }
        .validate()
        .unwrap_err()
        .contains("backup_interval")
    );
}
