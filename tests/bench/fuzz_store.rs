//! The store's open path under at least 10,000 mutated database files (`tests/fuzz/store.rs`):
//! truncations, bit flips in pages, overwritten and zeroed pages, a wrong or newer schema
//! version, rows edited, forged, deleted, swapped and inserted, the checkpoint edited, tables
//! dropped, pages swapped, garbage appended or in a `-wal`. Each must be opened intact (or
//! with damage before the checkpoint that only the periodic full walk reads), moved aside with
//! the good backup restored and a CRITICAL alert, or refused as too new; never a panic, another
//! error, or a silent accept of a damaged chain. Prints the outcomes per mutation, the rate and
//! the seed (`TRADEBAAS_FUZZ_SEED=<seed>` replays a run). Set `TMPDIR` to fuzz on another disk.
//!
//! Run: `cargo bench --bench fuzz_store` (options: `-- --files 10000`). Exits non-zero on a
//! failure.

use std::time::Instant;

#[path = "args.rs"]
mod args;
#[path = "../fuzz/store.rs"]
mod store;

fn main() {
    let files = args::arg("--files", 10_000);
    let seed = std::env::var("TRADEBAAS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("fuzz_store: {files} files, seed {seed} (TRADEBAAS_FUZZ_SEED={seed} replays it)");
    let started = Instant::now();
    let tally = store::run(seed, files);
    let took = started.elapsed();
    println!("{}", tally.summary());
    println!(
        "{:.1} s, {:.0} files/s",
        took.as_secs_f64(),
        tally.files as f64 / took.as_secs_f64()
    );
    for f in &tally.failures {
        println!("  FAILURE {f}");
    }
    if !tally.failures.is_empty() {
        std::process::exit(1);
    }
}
