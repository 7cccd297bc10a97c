//! Soak: does memory stay flat over 10,000,000 ticks with the whole tree running?
//!
//! Run: `cargo bench --bench soak` (options: `-- --ticks 10000000 --rate 150000 --aged 1000000`).
//! The paper exchange (own runtime) streams BTC-PERPETUAL ticks at `--rate` per second through the
//! real supervision tree (broker → strategy with the example strategy trading on it, persister,
//! heartbeat, fail-safe, alerts) and the HTTP server, all in this process; `GET /health` is polled
//! every 10 ms on a keep-alive connection. Every second the bench samples this process's `VmRSS`
//! and the strategy actor's tick counter, until the strategy has processed `--ticks` ticks. It
//! prints RSS at start (ready), after warm-up (the first sample past 10 % of the ticks), the peak
//! (`VmHWM` and the largest sample), the end, and the growth from warm-up to the end.
//! `--aged N` first runs the release daemon once on the data dir and appends N chain-correct
//! heartbeat events to its store (the `aged_start` bench's aging, checkpoint included), so the run
//! starts on a store with a long history. `--trade 0` turns execution off (the strategy only
//! analyzes), which separates what trading adds to memory. `--process 1` runs the release binary
//! (`tradebaas run` on `config/default.toml` pointed at the bench's exchange, AGGRESSIVE, the
//! example strategy named) as its own process and samples its `/proc/<pid>/status` instead: RSS
//! is then the daemon's alone, without the exchange's kept orders and the bench's samples; ticks
//! come from its `/health`. The data dir is under `TMPDIR` (default `/tmp`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// `aged_start.rs` loads `args.rs` too.
#[allow(clippy::duplicate_mod)]
#[path = "args.rs"]
mod args;
use args::arg;

#[path = "inproc.rs"]
mod inproc;
use inproc::{
    Daemon, Exchange, bench_config, cpu_by_thread_of, cpu_delta, poll_health, status_kb_of,
};
use tradebaas::status::get;

// The aging (`age`) and the first run of the binary (`start_once`) of the aged_start bench.
#[allow(dead_code)]
#[path = "aged_start.rs"]
mod aged_start;

/// The system allocator, counting the bytes it has handed out and not yet been given back: the
/// live heap, which tells growth of what the program holds from growth of what the allocator
/// keeps (fragmentation, arenas) and of what is not heap at all (stacks, mapped files).
struct Counting;

static LIVE_HEAP: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counter is only arithmetic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) };
        LIVE_HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on as it is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_HEAP.fetch_add(new_size, Ordering::Relaxed);
            LIVE_HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The live heap in kB.
fn heap_kb() -> u64 {
    LIVE_HEAP.load(Ordering::Relaxed) as u64 / 1024
}

/// What SQLite holds in kB (page caches, statements, schema), process-wide: bundled SQLite
/// allocates with its own `malloc`, so none of it is in [`heap_kb`].
fn sqlite_kb() -> u64 {
    // SAFETY: `sqlite3_memory_used` reads SQLite's own counter; it takes no arguments and is
    // thread-safe in the bundled (serialized) build.
    let used = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    used.max(0) as u64 / 1024
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The daemon under soak: the tree in this process (with the exchange and the bench, so the
/// live heap can be counted by owner), or the release binary as its own process (`--process 1`:
/// its RSS is the daemon's alone, as an operator sees it against a remote exchange).
enum Target {
    InProc(Daemon),
    Binary {
        child: std::process::Child,
        base: String,
        health_uri: hyper::Uri,
    },
}

impl Target {
    /// `tradebaas run` on `data` against the bench's exchange at `url`: `config/default.toml`
    /// with the raw ticker channel, AGGRESSIVE from the start and the built-in example strategy
    /// named (against a non-paper URL the daemon would otherwise observe only), execution as
    /// `trade` says. Waits (up to 60 s) for its listen line.
    async fn spawn(data: &Path, url: &str, trade: bool) -> Target {
        const DEFAULT: &str = include_str!("../../config/default.toml");
        let example = DEFAULT
            .find("# [[strategies]]")
            .map(|i| {
                DEFAULT[i..]
                    .lines()
                    .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap();
        let mut text = DEFAULT
            .replacen("url = \"paper\"", &format!("url = \"{url}\""), 1)
            .replacen("ticker.BTC-PERPETUAL.100ms", "ticker.BTC-PERPETUAL.raw", 1)
            .replacen(
                "# initial_mode = \"OBSERVE_ONLY\"",
                "initial_mode = \"AGGRESSIVE\"",
                1,
            );
        if !trade {
            text = text.replacen(
                "[execution]\nenabled = true",
                "[execution]\nenabled = false",
                1,
            );
        }
        text.push_str(&example);
        let config = data.with_file_name("soak.toml");
        std::fs::write(&config, text).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tradebaas"))
            .args([
                "--log-format",
                "json",
                "run",
                "--listen",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(&config)
            .arg("--data-dir")
            .arg(data)
            .env_remove("TRADEBAAS_BROKER_URL")
            .env("DERIBIT_CLIENT_ID", "bench")
            .env("DERIBIT_CLIENT_SECRET", "bench-secret")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The log is drained for as long as the daemon runs (a full pipe would block it); only
        // the listen line is kept.
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("http: serving"))
                {
                    let _ = tx.send(v["listen"].as_str().unwrap_or_default().to_owned());
                }
            }
        });
        let listen = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .expect("the daemon logs its listen address within 60 s");
        let base = format!("http://{listen}");
        let health_uri = format!("{base}/health").parse().unwrap();
        Target::Binary {
            child,
            base,
            health_uri,
        }
    }

    fn health_uri(&self) -> hyper::Uri {
        match self {
            Target::InProc(d) => d.health_uri.clone(),
            Target::Binary { health_uri, .. } => health_uri.clone(),
        }
    }

    /// Ticks the strategy actor has processed (from `/health` for the binary).
    async fn ticks(&self) -> Option<u64> {
        match self {
            Target::InProc(d) => d.ticks().await,
            Target::Binary { base, .. } => {
                let (_, body) = get(base, "/health", Duration::from_secs(2)).await.ok()?;
                let health: serde_json::Value = serde_json::from_slice(&body).ok()?;
                health["actors"]["strategy"]["ticks_received"].as_u64()
            }
        }
    }

    /// Whose `/proc` entry to read: `self` or the daemon's pid.
    fn proc(&self) -> String {
        match self {
            Target::InProc(_) => "self".into(),
            Target::Binary { child, .. } => child.id().to_string(),
        }
    }

    async fn stop(self) {
        match self {
            Target::InProc(d) => d.stop().await,
            Target::Binary { mut child, .. } => {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let _ = tokio::task::spawn_blocking(move || child.wait()).await;
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let target = arg("--ticks", 10_000_000);
    let rate = arg("--rate", 150_000) as f64;
    let aged = arg("--aged", 0);
    let process = arg("--process", 0) == 1;
    // `--trade 0`: the strategies only analyze (no orders), to tell trading's share of growth.
    let trade = arg("--trade", 1) == 1;
    let dir =
        tempfile::tempdir_in(std::env::var_os("TMPDIR").unwrap_or_else(|| "/tmp".into())).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut history = String::from("fresh store");
    if aged > 0 {
        aged_start::start_once(&data, Duration::from_secs(60)).await;
        let db = data.join("tradebaas.db");
        let t = Instant::now();
        aged_start::age(&db, aged);
        let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
        history = format!(
            "store aged with {aged} heartbeat events ({size:.0} MB, built in {:.0} s)",
            t.elapsed().as_secs_f64()
        );
    }
    println!("soak: {target} ticks at {rate:.0} ticks/s offered, {history}, /health every 10 ms");

    let heap_before = heap_kb();
    let exchange = Exchange::start(rate, 1).await;
    let heap_exchange = heap_kb();
    let started = Instant::now();
    let daemon = if process {
        Target::spawn(&data, &exchange.url(), trade).await
    } else {
        let mut config = bench_config();
        config.execution.enabled = trade;
        Target::InProc(Daemon::start(&config, &data, exchange.url()).await)
    };
    let ready_ms = started.elapsed().as_secs_f64() * 1e3;
    let proc = daemon.proc();
    let rss_start = status_kb_of(&proc, "VmRSS");
    let heap_start = heap_kb();
    let cpu_before = cpu_by_thread_of(&proc);
    let stop = Arc::new(AtomicBool::new(false));
    // A poll every 10 ms (about 100 a second) for at most 1.5x the run's nominal length.
    let room = (target as f64 / rate * 1.5 * 110.0) as usize + 2_000;
    let poller = poll_health(
        daemon.health_uri(),
        Duration::from_millis(10),
        Arc::clone(&stop),
        room,
    );
    let dropped_before = exchange.paper.stats().ticks_dropped_lagging;

    let t0 = Instant::now();
    let ticks0 = daemon.ticks().await.unwrap_or(0);
    // (seconds since t0, ticks processed since t0, RSS kB, live heap kB, anonymous RSS kB)
    let mut samples: Vec<(f64, u64, u64, u64, u64)> = Vec::new();
    let limit = Duration::from_secs_f64(target as f64 / rate * 3.0 + 120.0);
    let mut next = t0 + Duration::from_secs(1);
    let mut next_report = target / 10;
    loop {
        tokio::time::sleep_until(next.into()).await;
        next += Duration::from_secs(1);
        let ticks = daemon.ticks().await.map(|t| t - ticks0);
        let rss = status_kb_of(&proc, "VmRSS");
        let at = t0.elapsed().as_secs_f64();
        if let Some(ticks) = ticks {
            let heap = heap_kb();
            samples.push((at, ticks, rss, heap, status_kb_of(&proc, "RssAnon")));
            if ticks >= next_report {
                // The heaps are this process's: the daemon's only when it runs in it.
                let heaps = if process {
                    String::new()
                } else {
                    format!(
                        "  live heap {:.1} MB  SQLite {:.1} MB",
                        mb(heap),
                        mb(sqlite_kb())
                    )
                };
                println!(
                    "  {at:>6.0} s  {ticks:>10} ticks  RSS {:.1} MB{heaps}",
                    mb(rss)
                );
                next_report += target / 10;
            }
            if ticks >= target {
                break;
            }
        }
        assert!(
            t0.elapsed() < limit,
            "only {ticks:?} of {target} ticks within {limit:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut health = poller.await.unwrap();
    let cpu = cpu_delta(&cpu_before, &cpu_by_thread_of(&proc));
    let dropped = exchange.paper.stats().ticks_dropped_lagging - dropped_before;
    let hwm = status_kb_of(&proc, "VmHWM");
    let (end_at, end_ticks, rss_end, heap_end, anon_end) = *samples.last().unwrap();
    let warm = samples
        .iter()
        .find(|s| s.1 >= target / 10)
        .copied()
        .unwrap();
    let after: Vec<u64> = samples
        .iter()
        .filter(|s| s.0 >= warm.0)
        .map(|s| s.2)
        .collect();
    let mut sorted = after.clone();
    sorted.sort();
    let steady = sorted[sorted.len() / 2];
    let max_after = sorted[sorted.len() - 1];
    let peak_sample = samples.iter().map(|s| s.2).max().unwrap_or(0);
    let growth = (rss_end as f64 - warm.2 as f64) / warm.2 as f64 * 100.0;
    // The second half alone: growth that is still going on, not the settling after warm-up.
    let half = samples.iter().find(|s| s.1 >= target / 2).copied().unwrap();
    let growth_half = (rss_end as f64 - half.2 as f64) / half.2 as f64 * 100.0;

    if process {
        println!("  the release binary, pid {proc}: serving after {ready_ms:.0} ms");
    } else {
        println!("  ready after {ready_ms:.0} ms");
    }
    println!(
        "  processed {end_ticks} ticks in {end_at:.1} s: {:.0} ticks/s through broker → strategy; \
         {dropped} ticks skipped by the exchange because the daemon lagged",
        end_ticks as f64 / end_at
    );
    println!(
        "  RSS: start {:.1} MB, after warm-up ({} ticks, {:.0} s) {:.1} MB, peak {:.1} MB \
         (largest sample; VmHWM {:.1} MB), end {:.1} MB",
        mb(rss_start),
        warm.1,
        warm.0,
        mb(warm.2),
        mb(peak_sample),
        mb(hwm),
        mb(rss_end),
    );
    println!(
        "  after warm-up: median {:.1} MB, max {:.1} MB; growth warm-up → end {growth:+.2} % \
         (target < 5 %, steady < 40 MB)",
        mb(steady),
        mb(max_after)
    );
    println!(
        "  second half ({} ticks → end): {:.1} → {:.1} MB, {growth_half:+.2} %",
        half.1,
        mb(half.2),
        mb(rss_end)
    );
    if !process {
        println!(
            "  live heap: start {:.1} MB, after warm-up {:.1} MB, end {:.1} MB ({:+.2} MB); \
             the rest of RSS is code, stacks, mapped files and what the allocator keeps",
            mb(heap_start),
            mb(warm.3),
            mb(heap_end),
            (heap_end as f64 - warm.3 as f64) / 1024.0
        );
    }
    // RSS is anonymous memory (heap, stacks, SQLite's caches) plus file-backed pages (the
    // binary's code as new paths run for the first time, mapped files): only the first can leak.
    let anon_growth = anon_end as f64 - warm.4 as f64;
    println!(
        "  RSS growth warm-up → end: anonymous {:+.2} MB, file-backed {:+.2} MB (code paths run \
         for the first time, mapped files)",
        anon_growth / 1024.0,
        (rss_end as f64 - warm.2 as f64 - anon_growth) / 1024.0
    );
    println!("  /health: {}", health.summary());
    // What grows with the run's age besides the daemon: the exchange's kept orders (at most
    // 10,000) and the store file (the example strategy trades; SQLite caches up to 2 MB of pages
    // per connection); the bench itself keeps every /health latency (16 bytes each).
    let db = std::fs::metadata(data.join("tradebaas.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    let wal = std::fs::metadata(data.join("tradebaas.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "  at the end: {} orders kept by the exchange, store {:.1} MB + WAL {:.1} MB, \
         {} /health latencies kept by the bench",
        exchange.paper.all_orders().len(),
        db as f64 / 1e6,
        wal as f64 / 1e6,
        health.latencies.len()
    );
    println!("  CPU by thread: {cpu}");
    if process {
        println!(
            "  RSS is the daemon's alone; the exchange and the bench run in the bench process."
        );
        daemon.stop().await;
        return;
    }
    println!("  RSS includes the paper exchange and the bench, which run in the same process.");
    // Whose heap it is: what each part gives back when it stops, against what it took to start.
    drop(health);
    let heap_running = heap_kb();
    daemon.stop().await;
    let heap_no_daemon = heap_kb();
    drop(exchange);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heap_none = heap_kb();
    println!(
        "  live heap by owner: daemon {:.2} MB at ready → {:.2} MB at the end, paper exchange \
         {:.2} → {:.2} MB",
        mb(heap_start.saturating_sub(heap_exchange)),
        mb(heap_running.saturating_sub(heap_no_daemon)),
        mb(heap_exchange.saturating_sub(heap_before)),
        mb(heap_no_daemon.saturating_sub(heap_none)),
    );
}
