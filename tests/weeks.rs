//! Weeks in seconds: the whole supervision tree against the paper exchange for 14 simulated days,
//! on paused tokio time (issue 12, item 4).
//!
//! What makes this possible (see `docs/ARCHITECTURE.md`): the exchange is served in process over
//! `memory://` pipes (`memory_net`), which wake their reader directly, so tokio's clock does not
//! jump ahead while a frame is in flight; the persister's SQLite work runs on the blocking pool,
//! during which a paused clock stands still; and `clock::simulate_from` makes every wall-clock
//! stamp (events, snapshots, retention's age, "snapshot due") follow tokio's clock. The daemon's
//! own start-up sequence (`daemon::startup_sequence`: recovery, start-up checks, then daily
//! snapshots and hourly integrity checks) runs unchanged.
//!
//! Over the 14 days: hourly backups rotating at 24, hourly integrity checks (each verifying the
//! tail and a slice of the whole chain), retention before each backup, a daily snapshot, a tick
//! every 50 s with the example strategy trading on it, and every 4 hours all connections to the
//! exchange dropped, on the hour, so that the drop meets a check, a backup and an order-state
//! check. Defaults that decide what is asserted stay (`backups_keep`, `backup_interval`,
//! `snapshot_interval`, `[store.retention]`, `checks.interval`); rates that cost real time
//! without changing what is proven are lowered: a heartbeat round a minute and a `heartbeat`
//! event every 5 minutes (the live table's bound is asserted in those units), fail-safe
//! evaluation and the exchange heartbeat every minute, open positions re-checked every minute,
//! a full-chain slice of 10 k events per check. About 35 s real on the 2-core box.
//!
//! `TRADEBAAS_WEEKS_DAYS=n` simulates n days instead of 14 (while working on it);
//! `TRADEBAAS_WEEKS_LOG=info` (or any tracing filter) prints the daemon's log.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tradebaas::config::Config;
use tradebaas::daemon::{Startup, startup_sequence};
use tradebaas::paper_exchange::{PaperConfig, PaperExchange};
use tradebaas_actors::alert::{AlertMsg, AlertStatus};
use tradebaas_actors::broker::Credentials;
use tradebaas_actors::checks;
use tradebaas_actors::client::{self, Reply};
use tradebaas_actors::failsafe::{FailSafeMsg, FailSafeStatus};
use tradebaas_actors::heartbeat::{HeartbeatMsg, HeartbeatStatus};
use tradebaas_actors::metrics::Metrics;
use tradebaas_actors::mode::TradingMode;
use tradebaas_actors::names::{Child, ChildName, Names};
use tradebaas_actors::persister::{PersisterMsg, PersisterStatus};
use tradebaas_actors::secret::Secret;
use tradebaas_actors::store::{Scope, open_verified, verify_scoped};
use tradebaas_actors::strategy::signal::MaCrossConfig;
use tradebaas_actors::strategy::{StrategyEntry, StrategyMsg, StrategyStatus};
use tradebaas_actors::tree::start_tree;

const DAY: Duration = Duration::from_secs(24 * 3600);
const DAYS: u32 = 14;
/// How often every connection to the exchange is dropped.
const DROP_EVERY: Duration = Duration::from_secs(4 * 3600);
const TICKS_PER_SECOND: f64 = 0.02;

async fn ask<C: Child, T: Send + 'static>(
    names: &Names,
    build: impl FnOnce(ractor::RpcReplyPort<T>) -> C,
) -> T {
    match client::ask(names, build, Duration::from_secs(5)).await {
        Reply::Answered(t) => t,
        _ => panic!("{} did not answer", C::NAME),
    }
}

fn config() -> Config {
    let mut c = Config::default();
    c.broker.channels = vec!["ticker.BTC-PERPETUAL.100ms".into()];
    c.paper_exchange = PaperConfig {
        instruments: vec!["BTC-PERPETUAL".into()],
        ticks_per_second: TICKS_PER_SECOND,
        seed: Some(14),
        ..PaperConfig::default()
    };
    // The example strategy, a signal at most every 6 hours of ticks: a few dozen trades.
    c.strategies = Some(vec![StrategyEntry {
        id: "example".into(),
        instrument: "BTC-PERPETUAL".into(),
        ma_cross: MaCrossConfig {
            min_ticks_between_signals: (6.0 * 3600.0 * TICKS_PER_SECOND) as u64,
            ..MaCrossConfig::default()
        },
    }]);
    // Lowered for real-time cost only (see the module doc): 20 k rounds, not 240 k.
    c.heartbeat.interval = Duration::from_secs(60);
    c.heartbeat.event_interval = Duration::from_secs(300);
    c.fail_safe.triggers.evaluate_interval = Duration::from_secs(60);
    c.broker.heartbeat_interval = Duration::from_secs(60);
    // The whole chain re-verified over ~3 hourly runs instead of in each (the live table holds
    // ~25 k events here): a full pass still completes many times over the 14 days.
    c.checks.full_verify_slice = 10_000;
    // A day's worth of this test's heartbeat events per archive, as the default is for the
    // default heartbeat rate.
    c.store.retention.min_events_per_run = DAY.as_secs() / c.heartbeat.event_interval.as_secs();
    c.execution.check_interval = Duration::from_secs(60);
    c
}

/// Installs a log subscriber when `TRADEBAAS_WEEKS_LOG` is set.
fn log() {
    if let Ok(filter) = std::env::var("TRADEBAAS_WEEKS_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

#[tokio::test(start_paused = true)]
async fn fourteen_simulated_days_rotate_backups_bound_the_store_and_keep_trading() {
    log();
    let real = std::time::Instant::now();
    let epoch: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap();
    assert!(tradebaas_actors::clock::simulate_from(epoch));

    let c = config();
    let paper = PaperExchange::start_in_memory(c.paper_exchange.clone(), "weeks").unwrap();
    paper.add_credentials("sim", "sim-secret");
    // On tmpfs where there is one: what this test proves does not depend on fsync, and an fsync
    // per commit on a disk would cost minutes of real time over 14 days of commits.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let tree = c.tree_config(
        dir.path(),
        paper.url(),
        Some(Credentials {
            client_id: "sim".into(),
            client_secret: Secret::new("sim-secret"),
        }),
    );
    // What `daemon::run` does before the tree starts: open and verify the store, read the
    // start-up checks' facts.
    let (store, open_report) = open_verified(&tree.store_path, &tree.backups_dir).unwrap();
    drop(store);
    let store_facts = checks::read_facts(tree.store_path.clone()).await;
    let names = Names::with_prefix("weeks");
    let metrics = Metrics::new().unwrap();
    let supervisor = start_tree(names.clone(), &tree, metrics.clone())
        .await
        .unwrap();
    let sequence = tokio::spawn(startup_sequence(Startup {
        names: names.clone(),
        open_report,
        store_facts,
        recovery: c.recovery.clone(),
        snapshot_interval: c.store.snapshot_interval,
        checks: checks::ChecksArgs {
            store_path: tree.store_path.clone(),
            config: c.checks.clone(),
        },
        metrics: metrics.clone(),
        notifier: None,
    }));

    // Simulated time runs; every 4 hours the exchange drops every connection.
    let start = tokio::time::Instant::now();
    let days: u32 = std::env::var("TRADEBAAS_WEEKS_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(DAYS);
    let end = start + DAY * days + Duration::from_secs(60);
    let mut drops = 0u32;
    let mut max_heartbeat_events = 0u64;
    while tokio::time::Instant::now() + DROP_EVERY <= end {
        tokio::time::sleep(DROP_EVERY).await;
        paper.faults().drop_all();
        drops += 1;
        let live = heartbeat_events(&tree.store_path);
        max_heartbeat_events = max_heartbeat_events.max(live);
        println!(
            "day {:.2}: {:.1} s real, {live} live heartbeat events",
            (tokio::time::Instant::now() - start).as_secs_f64() / 86_400.0,
            real.elapsed().as_secs_f64()
        );
    }
    tokio::time::sleep_until(end).await;
    let simulated = tokio::time::Instant::now() - start;

    let persister: PersisterStatus = ask(&names, PersisterMsg::Status).await;
    let heartbeat: HeartbeatStatus = ask(&names, HeartbeatMsg::Status).await;
    let fail_safe: FailSafeStatus = ask(&names, FailSafeMsg::Status).await;
    let alerts: AlertStatus = ask(&names, AlertMsg::Status).await;
    let strategy: StrategyStatus = ask(&names, StrategyMsg::Status).await;
    let stats = paper.stats();
    let orders = paper.all_orders();
    let db = rusqlite::Connection::open(&tree.store_path).unwrap();
    let snapshots: Vec<(String, String)> = db
        .prepare("SELECT taken_at, kind FROM snapshots ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let kinds: BTreeMap<String, u64> = db
        .prepare("SELECT kind, count(*) FROM events GROUP BY kind")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let archives: i64 = db
        .query_row("SELECT count(*) FROM archives", [], |r| r.get::<_, i64>(0))
        .unwrap();
    let unanswered: i64 = db
        .query_row(
            "SELECT count(*) FROM events WHERE kind = 'heartbeat' \
             AND json_array_length(payload, '$.unanswered') > 0",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
    drop(db);
    let (archives, unanswered) = (archives as u64, unanswered as u64);
    let full = verify_scoped(&tree.store_path, Scope::Full);
    let alert_keys: BTreeSet<String> = alerts.recent.iter().map(|a| a.alert.key.clone()).collect();
    let labels: Vec<String> = orders
        .iter()
        .filter_map(|o| o["label"].as_str().map(str::to_owned))
        .collect();
    let unique_labels: BTreeSet<&String> = labels.iter().collect();
    let trades = metrics.trades.get();
    let summary = format!(
        "simulated {:.1} days in {:.1} s real; drops {drops}; beats {}; backups {:?}; \
         snapshots {}; events by kind {kinds:?}; heartbeat events live max {max_heartbeat_events}; \
         archives {archives}; orders {} ({} labels); trades {trades}; ticks received {}; \
         mode {} ({}); triggers {}; alerts {alert_keys:?}; connections accepted {}; \
         requests {:?}; ticks sent {}; test requests {}",
        simulated.as_secs_f64() / 86_400.0,
        real.elapsed().as_secs_f64(),
        heartbeat.beats,
        persister.backups,
        snapshots.len(),
        orders.len(),
        labels.len(),
        strategy.ticks_received,
        fail_safe.mode,
        fail_safe.reason,
        fail_safe.triggers,
        stats.connections_accepted,
        stats.requests_by_method,
        stats.ticks_sent,
        stats.test_requests_sent,
    );
    println!("{summary}");

    // Hourly backups, rotated at `backups_keep`.
    assert_eq!(persister.backups, Some(c.store.backups_keep), "{summary}");
    assert_eq!(persister.last_backup_error, None, "{summary}");
    // One daily snapshot per day, with capital, a day apart: the first right after recovery.
    let daily: Vec<DateTime<Utc>> = snapshots
        .iter()
        .filter(|(_, kind)| kind == "daily")
        .map(|(at, _)| at.parse().unwrap())
        .collect();
    assert_eq!(daily.len(), days as usize + 1, "{summary}");
    for pair in daily.windows(2) {
        let gap = (pair[1] - pair[0]).to_std().unwrap();
        assert!(
            gap >= DAY && gap <= DAY + Duration::from_secs(120),
            "snapshots {:?} and {:?} are {gap:?} apart; {summary}",
            pair[0],
            pair[1]
        );
    }
    assert!(
        persister.last_capital_snapshot_at == persister.last_snapshot_at,
        "the newest snapshot failed: {summary}"
    );
    // The live event table stays within the retention bound: `keep` worth of heartbeat events
    // (one per `event_interval`), plus what accrues between two retention runs (one backup
    // interval) and the hour the verified checkpoint may lag behind.
    let per_event = c.heartbeat.event_interval.as_secs();
    // A run archives only once `min_events_per_run` are due: up to that many more.
    let bound = (c.store.retention.keep.as_secs()
        + 2 * c.store.backup_interval.as_secs()
        + c.checks.interval.as_secs())
        / per_event
        + c.store.retention.min_events_per_run;
    let live = kinds.get("heartbeat").copied().unwrap_or(0);
    assert!(
        max_heartbeat_events <= bound && live <= bound,
        "heartbeat events live {live} (max {max_heartbeat_events}) > bound {bound}; {summary}"
    );
    assert!(
        live >= c.store.retention.keep.as_secs() / per_event * 9 / 10,
        "retention archived events younger than `keep`: {summary}"
    );
    assert!(archives > 0, "retention never ran: {summary}");
    // Few, large archives: about one a simulated day once events pass `keep`, not one an hour.
    assert!(
        archives <= u64::from(days),
        "{archives} archives in {days} days: {summary}"
    );
    // The whole chain, across the archives and the live table, still verifies.
    assert!(full.ok, "verify --full: {full:?}");
    // Every heartbeat round answered: a round every 30 s, none with an unanswered actor (in the
    // live events, and no `heartbeat:unanswered` alert ever), no actor restarted.
    let expected_beats = simulated.as_secs() / c.heartbeat.interval.as_secs();
    assert!(
        heartbeat.beats + 2 >= expected_beats && heartbeat.beats <= expected_beats + 1,
        "{} rounds, expected {expected_beats}: {summary}",
        heartbeat.beats
    );
    assert_eq!(
        unanswered, 0,
        "heartbeat events with unanswered actors: {summary}"
    );
    assert!(heartbeat.unanswered.is_empty(), "{summary}");
    for child in ChildName::START_ORDER {
        let restarts = metrics
            .actor_restarts
            .with_label_values(&[child.as_str()])
            .get();
        assert_eq!(restarts, 0, "{child} restarted: {summary}");
    }
    // No alert but the expected ones, and none open.
    assert!(
        alert_keys.is_empty(),
        "unexpected alerts {:#?}; {summary}",
        alerts.recent
    );
    assert_eq!(alerts.open, 0, "{summary}");
    // Still trading: AGGRESSIVE, no trigger fired, recovered, and it traded.
    assert_eq!(fail_safe.mode, TradingMode::Aggressive, "{summary}");
    assert_eq!(fail_safe.triggers, 0, "{summary}");
    assert!(fail_safe.recovered, "{summary}");
    assert!(trades >= 3, "fewer than 3 trades: {summary}");
    // No duplicate order: every order the exchange ever saw carries its own label.
    assert_eq!(
        labels.len(),
        orders.len(),
        "an order without a label: {summary}"
    );
    assert_eq!(
        unique_labels.len(),
        labels.len(),
        "duplicate order labels: {summary}"
    );
    // The connection came back after every drop.
    assert!(
        stats.connections_accepted > u64::from(drops),
        "{drops} drops but {} connections: {summary}",
        stats.connections_accepted
    );

    sequence.abort();
    supervisor.stop(None);
}

/// Live `heartbeat` events in the store (read on a connection of its own).
fn heartbeat_events(path: &std::path::Path) -> u64 {
    let db = rusqlite::Connection::open(path).unwrap();
    db.query_row(
        "SELECT count(*) FROM events WHERE kind = 'heartbeat'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap() as u64
}
