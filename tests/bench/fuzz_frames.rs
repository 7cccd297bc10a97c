//! The frame decoder under 10,000,000 generated and mutated inputs (`tests/fuzz/frames.rs`):
//! no panic, and every decoded frame agrees with an independent reading of its text (anything
//! that does not is counted as a violation). Prints the counts by outcome, the throughput and
//! the seed (`TRADEBAAS_FUZZ_SEED=<seed>` replays a run).
//!
//! Run: `cargo bench --bench fuzz_frames` (options: `-- --inputs 10000000`). Exits non-zero on
//! a panic or a violation.

use std::time::Instant;

#[path = "args.rs"]
mod args;
#[path = "../fuzz/frames.rs"]
mod frames;

fn main() {
    let inputs = args::arg("--inputs", 10_000_000);
    let seed = frames::seed();
    println!("fuzz_frames: {inputs} inputs, seed {seed} (TRADEBAAS_FUZZ_SEED={seed} replays it)");
    let started = Instant::now();
    let tally = frames::run(seed, inputs);
    let took = started.elapsed();
    println!("{}", tally.summary());
    println!(
        "{:.1} s, {:.0} inputs/s",
        took.as_secs_f64(),
        tally.inputs as f64 / took.as_secs_f64()
    );
    for e in &tally.examples {
        println!("  {e}");
    }
    if tally.panics > 0 || tally.violations > 0 {
        std::process::exit(1);
    }
}
