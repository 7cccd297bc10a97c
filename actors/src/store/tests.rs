use super::*;
use serde_json::json;

fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    (dir, path)
}

#[test]
fn event_times_never_go_backwards_when_the_clock_steps_back() {
    let (_dir, path) = temp();
    let mut store = Store::open(&path).unwrap();
    store.commit(&Change::event("a", json!({}))).unwrap();
    // As if the clock had been an hour ahead when event 1 was written: rewrite its time and
    // hash consistently.
    let ahead = (crate::clock::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(SecondsFormat::Micros, true);
    let (id, kind, payload): (String, String, String) = store
        .conn
        .query_row(
            "SELECT event_id, kind, payload FROM events WHERE seq = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let hash = chain_hash(GENESIS_HASH, 1, &id, &ahead, &kind, &payload);
    store
        .conn
        .execute(
            "UPDATE events SET ts = ?1, hash = ?2 WHERE seq = 1",
            params![ahead, hash],
        )
        .unwrap();
    drop(store);
    let mut store = Store::open(&path).unwrap();
    let c = store.commit(&Change::event("b", json!({}))).unwrap();
    assert_eq!(
        c.at.to_rfc3339_opts(SecondsFormat::Micros, true),
        ahead,
        "clamped to the previous event's time"
    );
    drop(store);
    let report = verify(&path);
    assert!(report.ok, "{report:?}");
}

#[test]
fn commits_state_and_event_together_and_survive_reopen() {
    let (_dir, path) = temp();
    let mut store = Store::open(&path).unwrap();
    let c = store
        .commit(
            &Change::event("mode.changed", json!({"mode": "OBSERVE_ONLY"}))
                .set("mode", json!({"mode": "OBSERVE_ONLY"})),
        )
        .unwrap();
    assert_eq!(c.seq, 1);
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.last_seq(), 1);
    assert_eq!(
        store.state().unwrap()["mode"],
        json!({"mode": "OBSERVE_ONLY"})
    );
    let events = store.events(0, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].prev_hash, GENESIS_HASH);
    assert_eq!(
        events[0].hash,
        chain_hash(
            GENESIS_HASH,
            1,
            &events[0].event_id,
            &events[0].ts,
            "mode.changed",
            &events[0].payload
        )
    );
}

#[test]
fn the_chain_links_each_event_to_the_previous() {
    let (_dir, path) = temp();
    let mut store = Store::open(&path).unwrap();
    for i in 0..5 {
        store
            .commit(&Change::event("test", json!({ "i": i })))
            .unwrap();
    }
    let events = store.events(0, 10).unwrap();
    for pair in events.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
}

#[test]
fn two_connections_never_fork_the_chain() {
    let (_dir, path) = temp();
    let mut a = Store::open(&path).unwrap();
    let mut b = Store::open(&path).unwrap();
    a.commit(&Change::event("a", json!(1))).unwrap();
    b.commit(&Change::event("b", json!(2))).unwrap();
    a.commit(&Change::event("a", json!(3))).unwrap();
    let events = a.events(0, 10).unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    for pair in events.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
}

#[test]
fn a_store_from_a_newer_binary_is_refused() {
    let (_dir, path) = temp();
    drop(Store::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("newer than this binary"));
}

#[test]
fn a_file_that_is_not_a_database_is_reported_corrupt() {
    let (_dir, path) = temp();
    std::fs::write(
        &path,
        b"this is not sqlite, just some bytes that are long enough to matter",
    )
    .unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}
