//! Unit tests of the checks: the pure evaluation over crafted stores, and the runs against a
//! mini tree (`actors`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::*;
use crate::alert::{AlertMsg, Severity};
use crate::failsafe::{FailSafeMsg, MODE_KEY};
use crate::mode::TradingMode;
use crate::names::Names;
use crate::store::{
    ChainVerifier, Change, EventRow, IntegrityFacts, SnapshotKind, SnapshotRow, Store, chain_hash,
};
use crate::strategy::{Lifecycle, PositionData, Side, StrategyRecord};
use crate::testkit::btc_capital;

fn cfg() -> ChecksConfig {
    ChecksConfig::default()
}

/// A store with a few events, a daily snapshot with `capital`, a mode and a strategy.
fn store_with(dir: &Path, capital: Value) -> PathBuf {
    let path = dir.join("tradebaas.db");
    let mut store = Store::open(&path).unwrap();
    store.begin_run(None).unwrap();
    store
        .commit(&Change::event("mode_changed", json!({})).set(
            MODE_KEY,
            json!({"mode": "OBSERVE_ONLY", "reason": "test", "changed_at": null}),
        ))
        .unwrap();
    store
        .commit(&Change::event("lifecycle.transition", json!({})).set(
            "strategy.a",
            serde_json::to_value(StrategyRecord::idle("a")).unwrap(),
        ))
        .unwrap();
    store
        .snapshot(
            SnapshotKind::Daily,
            &json!({ "capital": capital, "positions": [] }),
        )
        .unwrap();
    path
}

fn exec(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

fn offline(path: &Path) -> ChecksReport {
    run_offline(path, &cfg())
}

#[test]
fn a_good_store_passes_every_offline_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_with(dir.path(), btc_capital(10.0));
    let r = offline(&path);
    assert!(r.passed, "{}", r.render_text());
    assert_eq!(
        r.checks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        [EVENT_LOG, SNAPSHOTS, CAPITAL, STRATEGY_STATES, MODE]
    );
    assert!(r.render_text().contains("all 5 checks passed"));
}

#[test]
fn an_edited_event_fails_event_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_with(dir.path(), btc_capital(10.0));
    exec(
        &path,
        "UPDATE events SET payload = '{\"x\":1}' WHERE seq = 2",
    );
    let r = offline(&path);
    assert_eq!(r.failed(), [EVENT_LOG]);
    assert!(r.get(EVENT_LOG).unwrap().detail.contains("edited row"));
}

#[test]
fn a_duplicate_id_and_a_gap_fail_event_log() {
    let mut chain = ChainVerifier::new();
    let mut prev = crate::store::GENESIS_HASH.to_string();
    for (seq, id) in [(1, "a"), (2, "a"), (4, "b")] {
        let ts = "2026-01-01T00:00:00.000000Z";
        let hash = chain_hash(&prev, seq, id, ts, "k", "{}");
        chain.push(&EventRow {
            seq,
            event_id: id.into(),
            ts: ts.into(),
            kind: "k".into(),
            payload: "{}".into(),
            prev_hash: prev.clone(),
            hash: hash.clone(),
        });
        prev = hash;
    }
    let text = chain.problems.join("\n");
    assert!(text.contains("duplicate event id a"), "{text}");
    assert!(text.contains("expected seq 3"), "{text}");
}

#[test]
fn a_future_timestamp_fails_event_log_beyond_the_skew_only() {
    let mut chain = ChainVerifier::new();
    let ts = "2030-01-01T00:00:00Z";
    let hash = chain_hash(crate::store::GENESIS_HASH, 1, "a", ts, "k", "{}");
    chain.push(&EventRow {
        seq: 1,
        event_id: "a".into(),
        ts: ts.into(),
        kind: "k".into(),
        payload: "{}".into(),
        prev_hash: crate::store::GENESIS_HASH.into(),
        hash,
    });
    let facts = IntegrityFacts {
        path: "x".into(),
        chain,
        scope: crate::store::Scope::Full,
        checkpoint_seq: None,
        snapshots: vec![],
        state: BTreeMap::new(),
    };
    let skew = Duration::from_secs(300);
    let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    let c = event_log(&facts, at("2029-12-31T23:56:00Z"), skew);
    assert!(c.passed, "{c:?}");
    let c = event_log(&facts, at("2029-12-31T23:54:00Z"), skew);
    assert!(!c.passed);
    assert!(c.detail.contains("in the future"), "{c:?}");
}

#[test]
fn a_backwards_timestamp_fails_event_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_with(dir.path(), btc_capital(10.0));
    // Rewrite event 3 with an earlier time, hash chain recomputed: only time is wrong.
    let store = Store::open_read_only(&path).unwrap();
    let events = store.events(0, 100).unwrap();
    drop(store);
    let mut prev = crate::store::GENESIS_HASH.to_string();
    let conn = rusqlite::Connection::open(&path).unwrap();
    for e in &events {
        let ts = if e.seq == 3 {
            "2000-01-01T00:00:00.000000Z".to_string()
        } else {
            e.ts.clone()
        };
        let hash = chain_hash(&prev, e.seq, &e.event_id, &ts, &e.kind, &e.payload);
        conn.execute(
            "UPDATE events SET ts = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![ts, prev, hash, e.seq as i64],
        )
        .unwrap();
        prev = hash;
    }
    drop(conn);
    let r = offline(&path);
    assert_eq!(r.failed(), [EVENT_LOG]);
    assert!(
        r.get(EVENT_LOG)
            .unwrap()
            .detail
            .contains("before the previous")
    );
}

fn snap(id: i64, taken_at: &str, event_seq: u64, payload: &str) -> SnapshotRow {
    SnapshotRow {
        id,
        taken_at: taken_at.into(),
        kind: "daily".into(),
        payload: payload.into(),
        event_seq,
    }
}

#[test]
fn snapshots_out_of_order_or_duplicate_fail() {
    let now = Utc::now();
    let skew = Duration::from_secs(300);
    let good = [
        snap(1, "2026-01-01T00:00:00Z", 3, "{}"),
        snap(2, "2026-01-02T00:00:00Z", 9, "{}"),
    ];
    assert!(snapshots(&good, 10, now, skew).passed);
    let dup = [
        snap(1, "2026-01-01T00:00:00Z", 3, "{}"),
        snap(2, "2026-01-01T00:00:00Z", 9, "{}"),
    ];
    let c = snapshots(&dup, 10, now, skew);
    assert!(
        !c.passed && c.detail.contains("not after the previous one"),
        "{c:?}"
    );
    let back = [
        snap(1, "2026-01-02T00:00:00Z", 3, "{}"),
        snap(2, "2026-01-01T00:00:00Z", 2, "[]"),
    ];
    let c = snapshots(&back, 10, now, skew);
    assert!(c.detail.contains("event seq 2 is not after"), "{c:?}");
    assert!(c.detail.contains("not a JSON object"), "{c:?}");
    let future = [snap(1, "2999-01-01T00:00:00Z", 11, "{}")];
    let c = snapshots(&future, 10, now, skew);
    assert!(c.detail.contains("in the future"), "{c:?}");
    assert!(c.detail.contains("past the last event"), "{c:?}");
}

#[test]
fn a_crafted_snapshot_row_fails_snapshots_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_with(dir.path(), btc_capital(10.0));
    exec(
        &path,
        "INSERT INTO snapshots (taken_at, kind, payload, event_seq)
         VALUES ('2000-01-01T00:00:00.000000Z', 'daily', '{}', 1)",
    );
    let r = offline(&path);
    assert!(r.failed().contains(&SNAPSHOTS), "{}", r.render_text());
}

#[test]
fn capital_local_consistency() {
    assert!(local_capital(&json!({"capital": btc_capital(10.0)})).is_ok());
    let mut bad = btc_capital(10.0);
    bad["BTC"]["equity"] = json!(12.0);
    let e = local_capital(&json!({"capital": bad}))
        .unwrap_err()
        .join(";");
    assert!(e.contains("≠ balance"), "{e}");
    let mut neg = btc_capital(-1.0);
    neg["BTC"]["available_funds"] = json!(-1.0);
    let e = local_capital(&json!({"capital": neg}))
        .unwrap_err()
        .join(";");
    assert!(e.contains("equity -1 is negative"), "{e}");
    let mut nan = btc_capital(1.0);
    nan["BTC"]["equity"] = json!("NaN");
    let e = local_capital(&json!({"capital": nan}))
        .unwrap_err()
        .join(";");
    assert!(e.contains("equity is not a finite number"), "{e}");
    let mut funds = btc_capital(1.0);
    funds["BTC"]["available_funds"] = json!(0.5);
    let e = local_capital(&json!({"capital": funds}))
        .unwrap_err()
        .join(";");
    assert!(e.contains("available_funds"), "{e}");
    let mut other = btc_capital(1.0);
    other["BTC"]["currency"] = json!("ETH");
    assert!(local_capital(&json!({"capital": other})).is_err());
    assert!(local_capital(&json!({"positions": []})).is_err());
    let unknown = local_capital(&json!({"capital": {"BTC": {"error": "down"}}})).unwrap();
    assert_eq!(unknown.unknown, [("BTC".to_string(), "down".to_string())]);
}

#[test]
fn capital_fails_on_an_inconsistent_stored_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut capital = btc_capital(10.0);
    capital["BTC"]["balance"] = json!(3.0);
    let path = store_with(dir.path(), capital);
    let r = offline(&path);
    assert_eq!(r.failed(), [CAPITAL], "{}", r.render_text());
}

#[test]
fn capital_online_compares_within_the_tolerance() {
    let row = snap(
        1,
        "2026-01-01T00:00:00Z",
        1,
        &json!({"capital": btc_capital(10.0)}).to_string(),
    );
    let fresh =
        |eq: f64| BTreeMap::from([("BTC".to_string(), Ok::<_, String>(json!({"equity": eq})))]);
    assert!(capital(std::slice::from_ref(&row), Some(&fresh(9.5)), 0.10).passed);
    let c = capital(std::slice::from_ref(&row), Some(&fresh(5.0)), 0.10);
    assert!(!c.passed && c.detail.contains("differ by 50.00%"), "{c:?}");
    let down = BTreeMap::from([("BTC".to_string(), Err("not connected".to_string()))]);
    let c = capital(std::slice::from_ref(&row), Some(&down), 0.10);
    assert!(c.passed && c.detail.contains("not compared"), "{c:?}");
    let c = capital(&[], Some(&fresh(5.0)), 0.10);
    assert!(c.passed && c.detail.contains("no snapshot yet"), "{c:?}");
    assert_eq!(relative_difference(0.0, 0.0), 0.0);
}

#[test]
fn a_snapshot_with_an_error_instead_of_capital_is_looked_past_never_passed_on() {
    let failed = json!({"capital": {"BTC": {"error": "not connected"}}}).to_string();
    assert_eq!(
        capital_missing(&serde_json::from_str(&failed).unwrap()).as_deref(),
        Some("BTC: not connected")
    );
    assert!(capital_missing(&json!({"capital": btc_capital(1.0)})).is_none());
    assert!(capital_missing(&json!({"capital": {}})).is_some());
    assert!(capital_missing(&json!({"positions": []})).is_some());
    // One currency answered, one did not: still a failed snapshot.
    let mut partial = btc_capital(1.0);
    partial["ETH"] = json!({"error": "timeout"});
    assert!(capital_missing(&json!({ "capital": partial })).is_some());

    // An inconsistent snapshot followed by a failed one: the check still sees the
    // inconsistent one and fails.
    let mut bad = btc_capital(10.0);
    bad["BTC"]["balance"] = json!(3.0);
    let rows = [
        snap(
            1,
            "2026-01-01T00:00:00Z",
            1,
            &json!({ "capital": bad }).to_string(),
        ),
        snap(2, "2026-01-02T00:00:00Z", 2, &failed),
    ];
    let c = capital(&rows, None, 0.10);
    assert!(!c.passed && c.detail.contains("snapshot 1"), "{c:?}");

    // A good snapshot followed by a failed one: the good one is compared with the exchange.
    let rows = [
        snap(
            1,
            "2026-01-01T00:00:00Z",
            1,
            &json!({"capital": btc_capital(10.0)}).to_string(),
        ),
        snap(2, "2026-01-02T00:00:00Z", 2, &failed),
    ];
    let fresh = BTreeMap::from([("BTC".to_string(), Ok::<_, String>(json!({"equity": 5.0})))]);
    let c = capital(&rows, Some(&fresh), 0.10);
    assert!(!c.passed && c.detail.contains("differ by 50.00%"), "{c:?}");
    let fresh = BTreeMap::from([("BTC".to_string(), Ok::<_, String>(json!({"equity": 10.0})))]);
    let c = capital(&rows, Some(&fresh), 0.10);
    assert!(c.passed, "{c:?}");
    assert!(
        c.detail.contains("snapshot 1") && c.detail.contains("snapshot 2: BTC: not connected"),
        "{c:?}"
    );

    // Only failed snapshots: nothing reconciled, and the detail says so.
    let c = capital(&rows[1..], Some(&fresh), 0.10);
    assert!(c.detail.contains("no snapshot with capital"), "{c:?}");
    assert!(!c.detail.contains("consistent"), "{c:?}");
}

fn position() -> PositionData {
    PositionData {
        instrument: "BTC-PERPETUAL".into(),
        direction: Side::Buy,
        size: 10.0,
        entry_price: 50_000.0,
        protective_orders: vec![],
        entry_label: None,
        stop_price: None,
        take_profit_price: None,
    }
}

#[test]
fn lifecycle_and_position_must_agree() {
    let mut r = StrategyRecord::idle("a");
    assert!(record_problems(&r).is_empty());
    r.position = Some(position());
    assert!(record_problems(&r)[0].contains("IDLE but holds a position"));
    r.lifecycle = Lifecycle::PositionOpen;
    assert!(record_problems(&r).is_empty());
    r.position = None;
    assert!(record_problems(&r)[0].contains("without a position"));
    r.lifecycle = Lifecycle::Closing;
    let mut p = position();
    p.size = 0.0;
    r.position = Some(p);
    assert!(record_problems(&r)[0].contains("size 0"));
    let mut r = StrategyRecord::idle("a");
    r.intents_in_flight
        .push(crate::testkit::buy_intent("tb-a-1"));
    assert!(record_problems(&r)[0].contains("IDLE with intents"));
    r.lifecycle = Lifecycle::EnteringPosition;
    assert!(record_problems(&r).is_empty());
}

#[test]
fn unreadable_or_invalid_strategy_records_fail_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_with(dir.path(), btc_capital(10.0));
    let mut open = StrategyRecord::idle("b");
    open.lifecycle = Lifecycle::PositionOpen;
    let mut store = Store::open(&path).unwrap();
    store
        .commit(
            &Change::event("crafted", json!({}))
                .set("strategy.b", serde_json::to_value(&open).unwrap())
                .set("strategy.c", json!({"lifecycle": "FLYING"})),
        )
        .unwrap();
    drop(store);
    let r = offline(&path);
    assert_eq!(r.failed(), [STRATEGY_STATES]);
    let d = &r.get(STRATEGY_STATES).unwrap().detail;
    assert!(d.contains("b: POSITION_OPEN without a position"), "{d}");
    assert!(d.contains("strategy.c: unreadable"), "{d}");
}

#[test]
fn an_invalid_stored_mode_fails_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_with(dir.path(), btc_capital(10.0));
    exec(
        &path,
        "UPDATE state SET value = '{\"mode\": \"YOLO\"}' WHERE key = 'mode'",
    );
    let r = offline(&path);
    assert_eq!(r.failed(), [MODE]);
    let empty = BTreeMap::new();
    assert!(mode(&empty).passed);
}

#[test]
fn exchange_needs_an_answer_and_a_close_clock() {
    let skew = Duration::from_secs(300);
    let now = Utc::now();
    let ms = |t: DateTime<Utc>| Ok(json!(t.timestamp_millis()));
    assert!(exchange(ms(now), now, now, skew).passed);
    let c = exchange(Err("not connected to the exchange".into()), now, now, skew);
    assert!(!c.passed && c.detail.contains("not connected"), "{c:?}");
    let late = now + chrono::Duration::minutes(10);
    let c = exchange(ms(late), now, now, skew);
    assert!(!c.passed && c.detail.contains("clock differs"), "{c:?}");
    assert!(!exchange(Ok(json!("x")), now, now, skew).passed);
}

#[test]
fn a_missing_store_fails_every_store_check() {
    let dir = tempfile::tempdir().unwrap();
    let r = offline(&dir.path().join("nope.db"));
    assert_eq!(r.failed().len(), 5);
    assert!(!r.passed);
}

mod actors {
    use ractor::{ActorRef, call_t};

    use super::*;
    use crate::alert::AlertStatus;
    use crate::failsafe::{FailSafeStatus, InitialMode};

    use crate::persister::PersisterMsg;
    use crate::testkit::MiniTree;

    struct Tree {
        names: Names,
        alert: ActorRef<AlertMsg>,
        fail_safe: ActorRef<FailSafeMsg>,
        persister: ActorRef<PersisterMsg>,
        _dir: tempfile::TempDir,
    }

    async fn tree(prefix: &str) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("tradebaas.db");
        let initial = InitialMode::explicit(TradingMode::Aggressive);
        let MiniTree {
            names,
            persister,
            alert,
            fail_safe,
        } = MiniTree::start(
            &Names::with_prefix(prefix),
            &store,
            Default::default(),
            initial,
        )
        .await;
        Tree {
            names,
            alert,
            fail_safe,
            persister,
            _dir: dir,
        }
    }

    impl Tree {
        async fn until<T>(
            &self,
            what: &str,
            f: impl Fn(&FailSafeStatus, &AlertStatus) -> Option<T>,
        ) -> T {
            for _ in 0..300 {
                let fs = call_t!(self.fail_safe, FailSafeMsg::Status, 1000).unwrap();
                let al = call_t!(self.alert, AlertMsg::Status, 1000).unwrap();
                if let Some(t) = f(&fs, &al) {
                    return t;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("never {what}");
        }

        fn stop(self) {
            self.fail_safe.stop(None);
            self.alert.stop(None);
            self.persister.stop(None);
        }
    }

    fn report(failing: &[&str]) -> ChecksReport {
        let checks = [
            EVENT_LOG,
            SNAPSHOTS,
            CAPITAL,
            STRATEGY_STATES,
            MODE,
            EXCHANGE,
        ]
        .iter()
        .map(|n| {
            if failing.contains(n) {
                Check::fail(n, format!("{n} is broken"))
            } else {
                Check::pass(n, "fine")
            }
        })
        .collect();
        ChecksReport::new(RunKind::Periodic, Utc::now(), checks, Duration::ZERO)
    }

    fn open(al: &AlertStatus, key: &str) -> bool {
        al.recent
            .iter()
            .any(|r| r.alert.key == key && r.resolved_at.is_none())
    }

    #[tokio::test]
    async fn a_periodic_violation_restricts_alerts_and_resolves_when_repaired() {
        let t = tree("checks-periodic-").await;
        t.until("AGGRESSIVE", |fs, _| {
            (fs.mode == TradingMode::Aggressive).then_some(())
        })
        .await;
        act_on_periodic(&t.names, &report(&[STRATEGY_STATES])).await;
        t.until("restricted with the alert", |fs, al| {
            (fs.mode == TradingMode::ObserveOnly
                && fs
                    .checks
                    .as_ref()
                    .is_some_and(|c| c.failed() == [STRATEGY_STATES])
                && open(al, "integrity:strategy_states"))
            .then_some(())
        })
        .await;
        act_on_periodic(&t.names, &report(&[])).await;
        t.until("resolved", |fs, al| {
            (!open(al, "integrity:strategy_states")
                && fs.checks.as_ref().is_some_and(|c| c.passed)
                && fs.mode == TradingMode::ObserveOnly)
                .then_some(())
        })
        .await;
        t.stop();
    }

    #[tokio::test]
    async fn a_periodic_capital_failure_triggers_shutdown() {
        let t = tree("checks-capital-").await;
        t.until("AGGRESSIVE", |fs, _| {
            (fs.mode == TradingMode::Aggressive).then_some(())
        })
        .await;
        act_on_periodic(&t.names, &report(&[CAPITAL])).await;
        t.until("SHUTDOWN", |fs, al| {
            (fs.mode == TradingMode::Shutdown
                && fs.last_trigger.as_deref() == Some(CAPITAL_TRIGGER)
                && open(al, "failsafe:capital_inconsistent")
                && !open(al, "integrity:capital"))
            .then_some(())
        })
        .await;
        t.stop();
    }

    #[tokio::test]
    async fn a_failed_startup_run_restricts_and_names_each_check_in_one_alert() {
        let t = tree("checks-startup-").await;
        t.until("AGGRESSIVE", |fs, _| {
            (fs.mode == TradingMode::Aggressive).then_some(())
        })
        .await;
        let args = ChecksArgs {
            store_path: PathBuf::from("unused"),
            config: ChecksConfig::default(),
        };
        // No broker in this tree: `exchange` fails; a bad mode record fails `mode`.
        let mut facts_state = BTreeMap::new();
        facts_state.insert(MODE_KEY.to_string(), "{\"mode\": 1}".to_string());
        let facts = IntegrityFacts {
            path: "x".into(),
            chain: crate::store::ChainVerifier::new(),
            scope: crate::store::Scope::Full,
            checkpoint_seq: None,
            snapshots: vec![],
            state: facts_state,
        };
        let r = startup(&t.names, &args, Ok(facts)).await;
        assert_eq!(r.failed(), [MODE, EXCHANGE]);
        let alert = t
            .until("the alert", |fs, al| {
                (fs.mode == TradingMode::ObserveOnly)
                    .then(|| {
                        al.recent
                            .iter()
                            .find(|a| a.alert.key == STARTUP_ALERT_KEY)
                            .cloned()
                    })
                    .flatten()
            })
            .await;
        assert_eq!(alert.alert.severity, Severity::Critical);
        assert!(
            alert.alert.message.contains("mode, exchange"),
            "{}",
            alert.alert.message
        );
        assert_eq!(alert.alert.metadata["failed"], json!([MODE, EXCHANGE]));
        t.stop();
    }
}

#[test]
fn config_validation_names_the_field() {
    assert!(cfg().validate().is_ok());
    let mut c = cfg();
    c.capital_tolerance = 1.5;
    assert!(c.validate().unwrap_err().contains("capital_tolerance"));
    let mut c = cfg();
    c.interval = Duration::ZERO;
    assert!(c.validate().unwrap_err().contains("interval"));
    let mut c = cfg();
    c.clock_skew = Duration::ZERO;
    assert!(c.validate().unwrap_err().contains("clock_skew"));
}
