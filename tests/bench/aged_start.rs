//! Start-up cost against the age of the store: start → `/ready` and RSS right after ready, on
//! stores whose event log holds 0, 1 M and 10 M extra `heartbeat` events (a year at the 30 s
//! heartbeat-event rate is ~1 M).
//!
//! Run: `cargo bench --bench aged_start` (options: `-- --sizes 0,1000000,10000000 --rounds 5`).
//! For each size: a fresh data dir; the release daemon is run once on the embedded paper exchange
//! and stopped (SIGTERM); then `N` chain-correct heartbeat events (the daemon's own payload shape,
//! ~170 bytes) are appended straight into its `tradebaas.db` with the daemon's hash function, and
//! the stored checkpoint (`chain.verified`) is set where a long-running daemon's hourly integrity
//! check would have left it: 120 events (an hour of heartbeats) before the head. Then `rounds`
//! starts: spawn → first `/ready` 200, `VmRSS` of the process at that moment, SIGTERM.
//! `--no-checkpoint 1` also times one start with the checkpoint removed (the first start after
//! an upgrade from a binary that wrote none: a full walk, cost grows with history).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use serde_json::{Value, json};
use tradebaas::status::get;
use tradebaas_actors::store::{CHECKPOINT_KEY, Checkpoint, chain_hash};

const BIN: &str = env!("CARGO_BIN_EXE_tradebaas");

#[path = "args.rs"]
mod args;
use args::arg;

fn sizes() -> Vec<u64> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![0, 1_000_000, 10_000_000])
}

fn spawn(data: &Path) -> (Child, Arc<Mutex<Vec<Value>>>) {
    let mut child = Command::new(BIN)
        .args([
            "--log-format",
            "json",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .env_remove("TRADEBAAS_BROKER_URL")
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
    (child, lines)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One start: spawn → first /ready 200, and RSS then; stops the daemon with SIGTERM.
pub async fn start_once(data: &Path, limit: Duration) -> (Duration, u64) {
    let t = Instant::now();
    let (mut child, lines) = spawn(data);
    let base = loop {
        let found = lines.lock().unwrap().iter().find_map(|v| {
            v["message"]
                .as_str()
                .filter(|m| m.starts_with("http: serving"))
                .and(v["listen"].as_str().map(str::to_owned))
        });
        if let Some(listen) = found {
            break format!("http://{listen}");
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("daemon exited {status}: {:?}", lines.lock().unwrap());
        }
        assert!(t.elapsed() < limit, "no listen line within {limit:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    loop {
        if let Ok((200, _)) = get(&base, "/ready", Duration::from_secs(1)).await {
            break;
        }
        assert!(t.elapsed() < limit, "not ready within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = t.elapsed();
    let rss = rss_kb(child.id());
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    (took, rss)
}

/// Appends `n` chain-correct heartbeat events after the store's head and sets the checkpoint
/// 120 events before the new head (or removes it with `checkpoint = false`).
pub fn age(db: &Path, n: u64) {
    let mut conn = Connection::open(db).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;")
        .unwrap();
    let (mut seq, mut prev, head_ts): (u64, String, String) = conn
        .query_row(
            "SELECT seq, hash, ts FROM events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let start = chrono::DateTime::parse_from_rfc3339(&head_ts)
        .unwrap()
        .with_timezone(&chrono::Utc);
    let tx = conn.transaction().unwrap();
    let mut checkpoint = None;
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO events (seq, event_id, ts, kind, payload, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .unwrap();
        for i in 0..n {
            seq += 1;
            // Microsecond spacing: non-decreasing, and at most seconds ahead of now.
            let ts = (start + chrono::Duration::microseconds(i as i64 + 1))
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let id = format!("00000000-0000-7000-8000-{seq:012x}");
            let payload = json!({
                "uptime_seconds": i * 30,
                "beats": i * 6,
                "round_trip_ms": 0.21,
                "unanswered": [],
                "mode": "AGGRESSIVE",
                "error_rate_per_minute": 0.0,
            })
            .to_string();
            let hash = chain_hash(&prev, seq, &id, &ts, "heartbeat", &payload);
            insert
                .execute(params![
                    seq as i64,
                    id,
                    ts,
                    "heartbeat",
                    payload,
                    prev,
                    hash
                ])
                .unwrap();
            prev = hash;
            if i + 120 == n {
                checkpoint = Some(Checkpoint::now(seq, prev.clone()));
            }
        }
    }
    if let Some(cp) = checkpoint {
        tx.execute(
            "INSERT INTO state (key, value, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![CHECKPOINT_KEY, cp.to_value().to_string(), cp.at],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    drop(conn);
    // The aging wrote with synchronous=OFF: flush it now, or the daemon's first fsync would pay
    // for writing back the whole file and be timed as start-up.
    std::fs::File::open(db).unwrap().sync_all().unwrap();
}

fn remove_checkpoint(db: &Path) {
    let conn = Connection::open(db).unwrap();
    conn.execute("DELETE FROM state WHERE key = ?1", [CHECKPOINT_KEY])
        .unwrap();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rounds = arg("--rounds", 5) as usize;
    let no_checkpoint = arg("--no-checkpoint", 0) == 1;
    println!(
        "aged_start: start → /ready 200 and RSS at ready, release build, embedded paper exchange"
    );
    println!(
        "{:>12} {:>10} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "events", "db MB", "min ms", "median ms", "max ms", "RSS MB", "build s"
    );
    let mut fresh_rss = None;
    for n in sizes() {
        let dir = tempfile::tempdir_in(std::env::var_os("TMPDIR").unwrap_or_else(|| "/tmp".into()))
            .unwrap();
        let data = dir.path().join("data");
        // The store as a first run leaves it.
        start_once(&data, Duration::from_secs(60)).await;
        let db = data.join("tradebaas.db");
        let built = Instant::now();
        if n > 0 {
            age(&db, n);
        }
        let build_s = built.elapsed().as_secs_f64();
        let size_mb = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
        let mut times = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..rounds {
            let (t, r) = start_once(&data, Duration::from_secs(600)).await;
            times.push(t);
            rss.push(r);
        }
        times.sort();
        rss.sort();
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        let rss_mb = rss[rss.len() / 2] as f64 / 1024.0;
        fresh_rss.get_or_insert(rss_mb);
        println!(
            "{n:>12} {size_mb:>10.1} {:>12.1} {:>12.1} {:>12.1} {rss_mb:>10.1} {build_s:>10.1}",
            ms(&times[0]),
            ms(&times[times.len() / 2]),
            ms(&times[times.len() - 1]),
        );
        if no_checkpoint && n > 0 {
            remove_checkpoint(&db);
            let (t, r) = start_once(&data, Duration::from_secs(3600)).await;
            println!(
                "{:>12} {size_mb:>10.1} {:>12.1} {:>12} {:>12} {:>10.1}   (no checkpoint: full walk)",
                n,
                ms(&t),
                "-",
                "-",
                r as f64 / 1024.0
            );
        }
    }
    if let Some(f) = fresh_rss {
        println!("RSS of the fresh store: {f:.1} MB (target: every size within 1.5x)");
    }
}
