//! The first paper trade with the default configuration: spawn → first position open → first
//! trade finished (closed by its stop-loss or take-profit).
//!
//! Run: `cargo bench --bench first_trade` (optionally `-- --rounds 5`). Each round starts the
//! release `tradebaas run` with the built-in defaults (= `config/default.toml`: the embedded paper
//! exchange, the example strategy, AGGRESSIVE) on a fresh data directory and polls `/metrics`
//! every 50 ms until `tradebaas_trades_total` is 1, then stops it with SIGTERM. Prints each round
//! and min / median / max of both times, and the mean order latency (request → answer) from
//! `tradebaas_order_latency_seconds`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tradebaas::status::get;

const BIN: &str = env!("CARGO_BIN_EXE_tradebaas");

#[path = "args.rs"]
mod args;
use args::arg;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn summary(label: &str, v: &mut [f64]) {
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    println!(
        "{label}: min {:.1} s, median {median:.1} s, max {:.1} s ({} rounds)",
        v[0],
        v[v.len() - 1],
        v.len()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rounds = arg("--rounds", 5) as usize;
    let port = arg("--port", 39_517);
    let mut to_open = Vec::new();
    let mut to_trade = Vec::new();
    let mut latency = Vec::new();
    for round in 1..=rounds {
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{port}");
        let base = format!("http://{listen}");
        let t = Instant::now();
        let mut child = Command::new(BIN)
            .args(["run", "--listen", &listen, "--data-dir"])
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut opened = None;
        let deadline = Instant::now() + Duration::from_secs(180);
        let finished = loop {
            assert!(
                Instant::now() < deadline,
                "round {round}: no trade in 180 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            let Ok((200, body)) = get(&base, "/metrics", Duration::from_secs(2)).await else {
                continue;
            };
            let text = String::from_utf8_lossy(&body).into_owned();
            if opened.is_none() && metric(&text, "tradebaas_orders_total{result=\"filled\"}") >= 1.0
            {
                opened = Some(t.elapsed());
            }
            if metric(&text, "tradebaas_trades_total ") >= 1.0 {
                let sum = metric(&text, "tradebaas_order_latency_seconds_sum ");
                let count = metric(&text, "tradebaas_order_latency_seconds_count ");
                if count > 0.0 {
                    latency.push(sum / count * 1000.0);
                }
                break t.elapsed();
            }
        };
        let opened = opened.unwrap_or(finished);
        println!(
            "round {round}: position open after {:.1} s, trade finished after {:.1} s",
            opened.as_secs_f64(),
            finished.as_secs_f64()
        );
        to_open.push(opened.as_secs_f64());
        to_trade.push(finished.as_secs_f64());
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    summary("spawn → first position open", &mut to_open);
    summary("spawn → first trade finished", &mut to_trade);
    if !latency.is_empty() {
        let mean = latency.iter().sum::<f64>() / latency.len() as f64;
        println!("order request → answer, mean over the rounds: {mean:.2} ms");
    }
}
