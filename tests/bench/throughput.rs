//! Throughput through broker → strategy with `/health` polled, and tick-to-order latency.
//!
//! Run: `cargo bench --bench throughput` (options: `-- --rates 100000,200000,300000 --seconds 10
//! --rounds 100`; `--rates 0` or `--rounds 0` skips a part).
//!
//! **Throughput.** For each offered rate: a fresh paper exchange (own runtime, one thread named
//! `paper-exchange`) streams BTC-PERPETUAL ticks at that rate to the real supervision tree and
//! HTTP server in this process (the example strategy trading on it, as in `health_under_load`),
//! while sequential keep-alive `GET /health` run back to back. Over `--seconds` after a 2 s
//! warm-up it reports the ticks the exchange wrote, the ticks the strategy actor processed (its
//! `ticks_received`), the ticks the exchange skipped because the daemon lagged, `/health`
//! percentiles, and CPU seconds per thread name (`paper-exchange` = the feed,
//! `tokio-runtime-worker` = the daemon's runtime, which also runs the HTTP client of the bench).
//!
//! **Tick-to-order latency.** A WebSocket proxy (on the exchange's runtime) sits between the
//! daemon and the paper exchange. The market is frozen (`pause_market`; ticks keep flowing at
//! 1,000/s at the frozen price) and a strategy with `fast = 1`, `slow = 2` is made to cross by
//! `set_price`: each round moves the price one step against the last crossing, so the first tick
//! at the new price triggers an entry. The proxy stamps the moment it has written that ticker
//! frame to the daemon's socket and the moment it reads the resulting `private/buy|sell` from
//! it: socket to socket on loopback, including both kernel hops and the proxy's own wake-up.
//! Requests the daemon sends in between are stamped too, which splits the time into stages (with
//! the equity cached and cancel-on-disconnect armed ahead, ADR 0005, there are none: one stage). Each round then moves the price through the take-profit, waits until
//! the strategy is flat and ANALYZING again, waits `--pace-ms` (250: the order rate limiter's
//! lowest tier refills 5 orders/s; `--pace-ms 0` measures the limiter's wait once its burst of 20
//! is spent) and starts the next. The data dir is under `TMPDIR`
//! (default `/tmp`; the intent commits fsync there).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tradebaas_actors::strategy::signal::MaCrossConfig;
use tradebaas_actors::strategy::{Lifecycle, StrategyEntry};

#[path = "args.rs"]
mod args;
use args::arg;

#[path = "inproc.rs"]
mod inproc;
use inproc::{Daemon, Exchange, bench_config, cpu_by_thread, cpu_delta, poll_health};

fn list(name: &str, default: &[u64]) -> Vec<u64> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(std::env::var_os("TMPDIR").unwrap_or_else(|| "/tmp".into())).unwrap()
}

/// A ticker frame as the paper exchange writes it.
const PAPER_TICKER: &str = include_str!("../../actors/testdata/paper_ticker.json");

/// The broker's decode of one ticker frame, single-threaded: the best of 5 runs of `n`.
fn decode_cost(n: u64) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n {
            let decoded =
                tradebaas_actors::broker::protocol::decode(std::hint::black_box(PAPER_TICKER));
            assert!(matches!(
                decoded,
                Ok(tradebaas_actors::broker::protocol::Incoming::Ticker(_))
            ));
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64 * 1e9);
    }
    best
}

async fn throughput(rate: u64, seconds: u64) {
    let dir = tempdir();
    let exchange = Exchange::start(rate as f64, 1).await;
    let daemon = Daemon::start(&bench_config(), dir.path(), exchange.url()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_health(
        daemon.health_uri.clone(),
        Duration::ZERO,
        Arc::clone(&stop),
        0,
    );
    let s0 = exchange.paper.stats();
    let cpu0 = cpu_by_thread();
    let ticks0 = daemon.ticks().await.unwrap_or(0);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let ticks1 = daemon.ticks().await.unwrap_or(0);
    let elapsed = t0.elapsed().as_secs_f64();
    let s1 = exchange.paper.stats();
    let cpu = cpu_delta(&cpu0, &cpu_by_thread());
    stop.store(true, Ordering::Relaxed);
    let mut health = poller.await.unwrap();
    let sent = (s1.ticks_sent - s0.ticks_sent) as f64 / elapsed;
    let processed = (ticks1 - ticks0) as f64 / elapsed;
    let skipped = s1.ticks_dropped_lagging - s0.ticks_dropped_lagging;
    println!(
        "{rate:>9} offered: exchange wrote {sent:>8.0}/s, strategy processed {processed:>8.0}/s, \
         {skipped} skipped (daemon lagging)"
    );
    println!("          /health {}", health.summary());
    println!("          CPU over {elapsed:.1} s: {cpu}");
    daemon.stop().await;
    drop(exchange);
}

/// What the proxy saw in the current round.
#[derive(Default)]
struct Round {
    /// The mark price whose first ticker frame starts the round.
    armed: Option<f64>,
    /// When that frame was written to the daemon's socket.
    tick_at: Option<Instant>,
    /// Requests read from the daemon after it: (method, when).
    requests: Vec<(String, Instant)>,
    /// When the entry order request was read.
    order_at: Option<Instant>,
}

type Probe = Arc<Mutex<Round>>;

fn method_of(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    v.get("method")?.as_str().map(str::to_owned)
}

fn mark_of(text: &str) -> Option<f64> {
    if !text.contains("\"ticker.") {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    v.pointer("/params/data/mark_price")?.as_f64()
}

/// One proxied connection: daemon (`down`) ↔ exchange (`up`).
async fn proxy_conn(stream: tokio::net::TcpStream, upstream: String, probe: Probe) {
    let _ = stream.set_nodelay(true);
    let Ok(down) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let Ok((up, _)) = tokio_tungstenite::connect_async_with_config(&upstream, None, true).await
    else {
        return;
    };
    let (mut down_w, mut down_r) = down.split();
    let (mut up_w, mut up_r) = up.split();
    let p = Arc::clone(&probe);
    let to_daemon = async move {
        while let Some(Ok(msg)) = up_r.next().await {
            let armed = {
                let r = p.lock().unwrap();
                r.armed.filter(|_| r.tick_at.is_none())
            };
            let hit = match (&msg, armed) {
                (Message::Text(t), Some(price)) => mark_of(t.as_str()) == Some(price),
                _ => false,
            };
            if down_w.send(msg).await.is_err() {
                break;
            }
            if hit {
                p.lock().unwrap().tick_at = Some(Instant::now());
            }
        }
    };
    let to_exchange = async move {
        while let Some(Ok(msg)) = down_r.next().await {
            if let Message::Text(t) = &msg {
                let now = Instant::now();
                let mut r = probe.lock().unwrap();
                if r.tick_at.is_some()
                    && r.order_at.is_none()
                    && let Some(method) = method_of(t.as_str())
                {
                    if method == "private/buy" || method == "private/sell" {
                        r.order_at = Some(now);
                    }
                    r.requests.push((method, now));
                }
            }
            if up_w.send(msg).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = to_daemon => {}
        _ = to_exchange => {}
    }
}

async fn proxy(listener: TcpListener, upstream: String, probe: Probe) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(proxy_conn(stream, upstream.clone(), Arc::clone(&probe)));
    }
}

/// Waits until `ok` holds for the only strategy instance, up to `limit`.
async fn wait_for(
    daemon: &Daemon,
    limit: Duration,
    ok: impl Fn(&tradebaas_actors::strategy::StrategyInstanceStatus, &[String]) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(s) = daemon.strategy().await
            && let Some(i) = s.strategies.first()
            && ok(i, &s.instrument_specs)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn line(label: &str, v: &mut [f64]) {
    v.sort_by(f64::total_cmp);
    println!(
        "  {label:<44} p50 {:>8.1} µs  p90 {:>8.1} µs  p99 {:>8.1} µs  max {:>8.1} µs",
        pct(v, 0.5),
        pct(v, 0.9),
        pct(v, 0.99),
        pct(v, 1.0)
    );
}

async fn latency(rounds: u64, pace: Duration) {
    let dir = tempdir();
    let exchange = Exchange::start(1000.0, 1).await;
    exchange.paper.pause_market(true);
    let mut price = 60_000.0;
    exchange.paper.set_price("BTC-PERPETUAL", price);
    let probe: Probe = Arc::default();
    let listener = exchange
        .handle()
        .spawn(TcpListener::bind("127.0.0.1:0"))
        .await
        .unwrap()
        .unwrap();
    let proxy_url = format!("ws://{}/ws/api/v2", listener.local_addr().unwrap());
    exchange
        .handle()
        .spawn(proxy(listener, exchange.url(), Arc::clone(&probe)));

    let mut c = bench_config();
    c.strategies = Some(vec![StrategyEntry {
        id: "lat".into(),
        instrument: "BTC-PERPETUAL".into(),
        ma_cross: MaCrossConfig {
            fast: 1,
            slow: 2,
            stop_distance_pct: 0.5,
            take_profit_pct: 0.2,
            min_ticks_between_signals: 0,
        },
    }]);
    c.execution.check_interval = Duration::from_millis(20);
    let daemon = Daemon::start(&c, dir.path(), proxy_url).await;
    let flat = |i: &tradebaas_actors::strategy::StrategyInstanceStatus, specs: &[String]| {
        i.lifecycle == Lifecycle::Analyzing
            && i.position.is_none()
            && i.job.is_none()
            && i.intents_in_flight == 0
            && !specs.is_empty()
    };
    assert!(
        wait_for(&daemon, Duration::from_secs(20), flat).await,
        "the strategy did not reach ANALYZING"
    );
    // Record a side below the frozen price: the first round's step up is a crossing.
    price -= 10.0;
    exchange.paper.set_price("BTC-PERPETUAL", price);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut total = Vec::new();
    let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut failed = 0;
    let mut up = true;
    for round in 0..rounds {
        // One step against the last crossing: the first tick at this price crosses.
        price += if up { 20.0 } else { -20.0 };
        *probe.lock().unwrap() = Round {
            armed: Some(price),
            ..Round::default()
        };
        exchange.paper.set_price("BTC-PERPETUAL", price);
        let deadline = Instant::now() + Duration::from_secs(10);
        while probe.lock().unwrap().order_at.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        let r = std::mem::take(&mut *probe.lock().unwrap());
        match (r.tick_at, r.order_at) {
            (Some(t0), Some(t1)) => {
                total.push((t1 - t0).as_secs_f64() * 1e6);
                let mut prev = t0;
                for (n, (method, at)) in r.requests.iter().enumerate() {
                    let method = method.replace("private/buy", "private/buy|sell");
                    let method = method.replace("private/sell", "private/buy|sell");
                    stages
                        .entry(format!("{}. → {method}", n + 1))
                        .or_default()
                        .push((*at - prev).as_secs_f64() * 1e6);
                    prev = *at;
                }
            }
            _ => {
                failed += 1;
                let status = daemon.strategy().await;
                let i = status.as_ref().and_then(|s| s.strategies.first());
                println!(
                    "  round {round}: no entry order seen (tick seen: {}); instance: {:?}",
                    r.tick_at.is_some(),
                    i.map(|i| (
                        i.lifecycle,
                        &i.last_decision,
                        &i.last_refusal,
                        &i.last_error
                    ))
                );
            }
        }
        // Wait for the position, then move through the take-profit (0.2 %) and wait until flat.
        wait_for(&daemon, Duration::from_secs(10), |i, _| {
            i.position.is_some() && i.lifecycle == Lifecycle::PositionOpen
        })
        .await;
        price *= if up { 1.004 } else { 0.996 };
        price = price.round();
        exchange.paper.set_price("BTC-PERPETUAL", price);
        if !wait_for(&daemon, Duration::from_secs(10), flat).await {
            println!("  round {round}: the strategy did not return to flat ANALYZING");
        }
        // The order rate limiter (Deribit's lowest matching-engine tier until the account's
        // limits are known: burst 20, 5/s) would otherwise hold the order and be measured.
        tokio::time::sleep(pace).await;
        up = !up;
    }
    println!(
        "tick-to-order: {} entries ({failed} rounds without one); ticker frame written to the \
         daemon's socket → its order request read from it, loopback, via the proxy",
        total.len()
    );
    line("total (tick frame → private/buy|sell)", &mut total);
    println!("  stages (from the previous stamp to this request read from the daemon):");
    for (name, mut v) in stages {
        line(&name, &mut v);
    }
    daemon.stop().await;
    drop(exchange);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `RUST_LOG=info` shows the daemon's log lines (with µs timestamps) while investigating.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rates = list("--rates", &[100_000, 200_000, 300_000]);
    let seconds = arg("--seconds", 10);
    let rounds = arg("--rounds", 100);
    let decode = arg("--decode", 200_000);
    if decode > 0 {
        println!(
            "decode of one paper-exchange ticker frame ({} bytes) by the broker: {:.0} ns \
             (best of 5 × {decode})",
            PAPER_TICKER.len(),
            decode_cost(decode)
        );
    }
    if rates != [0] {
        println!(
            "throughput: ticks through broker → strategy with back-to-back GET /health, \
             {seconds} s per rate"
        );
        for rate in rates {
            throughput(rate, seconds).await;
        }
    }
    if rounds > 0 {
        latency(rounds, Duration::from_millis(arg("--pace-ms", 250))).await;
    }
}
