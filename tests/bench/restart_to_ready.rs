//! Process start → `/ready` 200 after a crash, with a restored store and reconciliation against
//! the paper exchange.
//!
//! Run: `cargo bench --bench restart_to_ready` (optionally `-- --rounds 20`). Each round starts
//! the release `tradebaas run` on the same data directory (so the store holds the previous runs'
//! state and the marker of an unclean stop), polls `/ready` every 2 ms from the moment of spawn,
//! then SIGKILLs it. Prints min / median / p90 / max of spawn → first 200, and the daemon's own
//! `startup complete` and `recovery finished` figures.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tradebaas::status::get;

const BIN: &str = env!("CARGO_BIN_EXE_tradebaas");

#[path = "args.rs"]
mod args;
use args::arg;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rounds = arg("--rounds", 20) as usize;
    let dir = tempfile::tempdir().unwrap();
    let mut spawn_to_ready = Vec::new();
    let mut startup_ms = Vec::new();
    let mut recovery_ms = Vec::new();
    for round in 0..=rounds {
        let t = Instant::now();
        let mut child = Command::new(BIN)
            .args([
                "--log-format",
                "json",
                "run",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = Arc::clone(&lines);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        let find =
            |pred: &dyn Fn(&Value) -> bool| lines.lock().unwrap().iter().find(|v| pred(v)).cloned();
        let base = loop {
            if let Some(v) = find(&|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("http: serving"))
            }) {
                break format!("http://{}", v["listen"].as_str().unwrap());
            }
            assert!(t.elapsed() < Duration::from_secs(20), "no listen line");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        loop {
            if let Ok((200, _)) = get(&base, "/ready", Duration::from_secs(1)).await {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "not ready in 20 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let took = t.elapsed();
        std::thread::sleep(Duration::from_millis(20));
        let startup = find(&|v| v["message"] == "startup complete: ready")
            .and_then(|v| v["took_ms"].as_u64());
        let recovery = find(&|v| v["message"] == "recovery finished")
            .and_then(|v| v["recovery_time_ms"].as_u64());
        Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
        // Round 0 creates the store; it is not a restart.
        if round > 0 {
            spawn_to_ready.push(took);
            startup_ms.extend(startup);
            recovery_ms.extend(recovery);
        }
    }
    spawn_to_ready.sort();
    startup_ms.sort();
    recovery_ms.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let n = spawn_to_ready.len();
    println!(
        "restart_to_ready: {n} restarts after SIGKILL on one data dir, paper exchange, release build"
    );
    println!(
        "  spawn → /ready 200: min {:.1} ms  median {:.1} ms  p90 {:.1} ms  max {:.1} ms",
        ms(&spawn_to_ready[0]),
        ms(&spawn_to_ready[n / 2]),
        ms(&spawn_to_ready[(n * 9) / 10]),
        ms(&spawn_to_ready[n - 1])
    );
    if !startup_ms.is_empty() && !recovery_ms.is_empty() {
        println!(
            "  daemon's own start → ready (took_ms): median {} ms, max {} ms; recovery median {} ms, max {} ms",
            startup_ms[startup_ms.len() / 2],
            startup_ms[startup_ms.len() - 1],
            recovery_ms[recovery_ms.len() / 2],
            recovery_ms[recovery_ms.len() - 1]
        );
    }
}
