//! Durable state save latency: 2,000 `Store::commit`s (a state write + its event, WAL,
//! `synchronous=FULL`, so each commit waits for fsync) into a fresh store in a temporary
//! directory (set `TMPDIR` to measure the disk the daemon uses). Prints p50/p90/p99/max.
//!
//! `cargo bench --bench store_save`

use std::time::{Duration, Instant};

use serde_json::json;
use tradebaas_actors::store::{Change, Store};

const COMMITS: usize = 2_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("tradebaas.db");
    let mut store = Store::open(&path).expect("open store");
    let mut took = Vec::with_capacity(COMMITS);
    let started = Instant::now();
    for i in 0..COMMITS {
        let change = Change::event(
            "bench.save",
            json!({ "i": i, "capital": 1000.0 + i as f64 }),
        )
        .set(
            "capital",
            json!({ "equity": 1000.0 + i as f64, "positions": [] }),
        );
        let t = Instant::now();
        store.commit(&change).expect("commit");
        took.push(t.elapsed());
    }
    let total = started.elapsed();
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "store_save: {COMMITS} durable commits in {:.2} s ({:.0}/s) on {}",
        total.as_secs_f64(),
        COMMITS as f64 / total.as_secs_f64(),
        dir.path().display()
    );
    println!(
        "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        ms(percentile(&took, 50.0)),
        ms(percentile(&took, 90.0)),
        ms(percentile(&took, 99.0)),
        ms(*took.last().expect("samples"))
    );
}
