//! Crash atomicity: the real binary is killed with SIGKILL 100 times at random moments while it
//! commits state changes with their events; after each kill the store must verify, the event
//! chain must be intact and no acknowledged change may be missing.
//!
//! The writer is `tradebaas state bench-writes --acks`, which commits through the same
//! `Store::commit` the persister's database thread uses and prints `ack <seq> <n>` only after a
//! commit returned (is durable).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tradebaas_actors::store::{Store, open_verified, verify};

const BIN: &str = env!("CARGO_BIN_EXE_tradebaas");
const ROUNDS: usize = 100;

#[test]
fn sigkill_at_random_moments_never_loses_an_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("tradebaas.db");
    let backups = dir.path().join("backups");
    let mut rng = fastrand::Rng::with_seed(20261123);
    let mut acked_total = 0u64;
    let mut recovery = Vec::with_capacity(ROUNDS);
    let mut acked_seqs: Vec<(u64, u64)> = Vec::new();

    for round in 0..ROUNDS {
        let mut child = Command::new(BIN)
            .args([
                "state",
                "bench-writes",
                "--count",
                "0",
                "--acks",
                "--data-dir",
            ])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace();
                if parts.next() == Some("ack") {
                    let seq: u64 = parts.next().unwrap().parse().unwrap();
                    let n: u64 = parts.next().unwrap().parse().unwrap();
                    acks.push((seq, n));
                }
            }
            acks
        });
        // A random moment: anywhere from during start-up to well into the writes.
        std::thread::sleep(Duration::from_millis(rng.u64(1..80)));
        Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        acked_total += acks.len() as u64;
        // The newest acknowledged value of each state key in this round (a writer numbers its
        // changes from 0, so values only grow within one round).
        let mut last_acked: BTreeMap<String, u64> = BTreeMap::new();
        for (seq, n) in &acks {
            last_acked.insert(format!("bench.key{}", n % 16), *n);
            acked_seqs.push((*seq, *n));
        }

        let t = Instant::now();
        let (store, report) = open_verified(&store_path, &backups).unwrap();
        recovery.push(t.elapsed());
        drop(store);
        assert!(
            !report.degraded(),
            "round {round}: store was moved aside: {report:?}"
        );
        let v = verify(&store_path);
        assert!(v.ok, "round {round}: {v:?}");

        let store = Store::open_read_only(&store_path).unwrap();
        let state = store.state().unwrap();
        for (key, n) in &last_acked {
            let stored = state.get(key).and_then(Value::as_u64);
            // The stored value is the acknowledged one or a later commit that was not yet acked.
            assert!(
                stored.is_some_and(|s| s >= *n),
                "round {round}: {key} acknowledged {n}, stored {stored:?}"
            );
        }
    }

    // Every acknowledged event is in the log with the payload it was acknowledged with.
    let store = Store::open_read_only(&store_path).unwrap();
    let mut events = BTreeMap::new();
    let mut after = 0;
    loop {
        let batch = store.events(after, 10_000).unwrap();
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for e in batch {
            events.insert(e.seq, e);
        }
    }
    for (seq, n) in &acked_seqs {
        let e = events
            .get(seq)
            .unwrap_or_else(|| panic!("acknowledged event {seq} missing"));
        let payload: Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(e.kind, "bench.write");
        assert_eq!(payload["n"].as_u64(), Some(*n), "event {seq}");
    }

    recovery.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "atomicity: {ROUNDS} SIGKILLs, {acked_total} acknowledged changes, {} events in the log, \
         0 lost; open+verify after kill: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        events.len(),
        ms(recovery[0]),
        ms(recovery[recovery.len() / 2]),
        ms(recovery[recovery.len() - 1]),
    );
    assert!(acked_total > 0, "the writer never got to commit");
}
