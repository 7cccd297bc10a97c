//! The in-process daemon the `soak` and `throughput` benches drive: the paper exchange on its
//! own runtime (threads named `paper-exchange`, so CPU time can be attributed), the real
//! supervision tree and the HTTP server on the bench's runtime, and helpers to read the strategy
//! actor's tick counter, poll `/health`, sample RSS and per-thread CPU from `/proc/self`.

#![allow(dead_code)] // each bench uses a different part

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tradebaas::config::Config;
use tradebaas::http::{Api, HttpServer};
use tradebaas::paper_exchange::{PaperConfig, PaperExchange};
use tradebaas_actors::broker::Credentials;
use tradebaas_actors::client::{self, Reply};
use tradebaas_actors::failsafe::FailSafeMsg;
use tradebaas_actors::health;
use tradebaas_actors::metrics::Metrics;
use tradebaas_actors::names::Names;
use tradebaas_actors::secret::Secret;
use tradebaas_actors::strategy::{StrategyMsg, StrategyStatus};
use tradebaas_actors::supervisor::SupervisorMsg;
use tradebaas_actors::tree::start_tree;

/// The paper exchange on a dedicated runtime.
pub struct Exchange {
    pub paper: Arc<PaperExchange>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Exchange {
    /// Starts the exchange at `rate` ticks/s (BTC-PERPETUAL only, seeded) on `threads` worker
    /// threads named `paper-exchange`.
    pub async fn start(rate: f64, threads: usize) -> Exchange {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("paper-exchange")
            .enable_all()
            .build()
            .unwrap();
        let config = PaperConfig {
            instruments: vec!["BTC-PERPETUAL".into()],
            ticks_per_second: rate,
            seed: Some(42),
            ..PaperConfig::default()
        };
        let paper = runtime
            .spawn(PaperExchange::start(config, "127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap()
            .unwrap();
        paper.add_credentials("bench", "bench-secret");
        Exchange {
            paper: Arc::new(paper),
            runtime: Some(runtime),
        }
    }

    /// The exchange's runtime, for bench tasks that should not run on the daemon's.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.as_ref().unwrap().handle().clone()
    }

    /// The WebSocket URL.
    pub fn url(&self) -> String {
        self.paper.url()
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        // Dropping the PaperExchange cancels its tasks; the runtime must not block in drop.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The supervision tree and the HTTP server, in this process.
pub struct Daemon {
    pub names: Names,
    pub supervisor: ractor::ActorRef<SupervisorMsg>,
    pub http: HttpServer,
    pub health_uri: hyper::Uri,
}

/// The example configuration the other benches use: the embedded paper exchange's defaults
/// (example strategy on BTC-PERPETUAL, AGGRESSIVE), ticker channel `raw`.
pub fn bench_config() -> Config {
    let mut c = Config::default();
    c.broker.channels = vec!["ticker.BTC-PERPETUAL.raw".into()];
    c
}

impl Daemon {
    /// Starts the tree on `data_dir` against `url` and waits (up to 30 s) until it is ready.
    pub async fn start(c: &Config, data_dir: &Path, url: String) -> Daemon {
        let tree = c.tree_config(
            data_dir,
            url,
            Some(Credentials {
                client_id: "bench".into(),
                client_secret: Secret::new("bench-secret"),
            }),
        );
        let names = Names::default();
        let metrics = Metrics::new().unwrap();
        let supervisor = start_tree(names.clone(), &tree, metrics.clone())
            .await
            .unwrap();
        let http = HttpServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Api {
                names: names.clone(),
                health: c.health.clone(),
                metrics: metrics.clone(),
                started: Instant::now(),
                version: env!("CARGO_PKG_VERSION"),
                require_recovery: false,
            },
        )
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while health::readiness(&health::gather(&names, Duration::from_secs(1)).await).is_err() {
            assert!(Instant::now() < deadline, "daemon not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // What the daemon's start-up task does before entries are allowed (the start-up checks
        // left out): reconcile with the exchange, then tell the fail-safe.
        let report = tradebaas_actors::recovery::recover(
            &names,
            &c.recovery,
            &c.recovery.currencies,
            &metrics,
        )
        .await;
        assert!(report.success, "recovery failed: {report:?}");
        names
            .get::<FailSafeMsg>()
            .unwrap()
            .send_message(FailSafeMsg::RecoveryFinished)
            .unwrap();
        let health_uri = format!("http://{}/health", http.local_addr)
            .parse()
            .unwrap();
        Daemon {
            names,
            supervisor,
            http,
            health_uri,
        }
    }

    /// The strategy actor's status (None if it did not answer within 5 s).
    pub async fn strategy(&self) -> Option<StrategyStatus> {
        match client::ask(&self.names, StrategyMsg::Status, Duration::from_secs(5)).await {
            Reply::Answered(s) => Some(s),
            _ => None,
        }
    }

    /// Ticks the strategy actor has processed (its `Status` answer is queued behind them).
    pub async fn ticks(&self) -> Option<u64> {
        self.strategy().await.map(|s| s.ticks_received)
    }

    /// Stops the HTTP server and the tree, and waits (up to 10 s) until the tree has stopped.
    pub async fn stop(self) {
        self.http.stop().await;
        let supervisor = self.supervisor.clone();
        supervisor.stop(None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while supervisor.get_status() != ractor::ActorStatus::Stopped && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// `/health` latencies and status codes of a poller.
#[derive(Default)]
pub struct HealthSamples {
    pub latencies: Vec<Duration>,
    pub codes: BTreeMap<u16, u64>,
}

impl HealthSamples {
    /// `p` (0..=1) of the latencies, in ms.
    pub fn pct_ms(&mut self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.sort();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)].as_secs_f64() * 1e3
    }

    pub fn summary(&mut self) -> String {
        let (p50, p99, p999, max) = (
            self.pct_ms(0.5),
            self.pct_ms(0.99),
            self.pct_ms(0.999),
            self.pct_ms(1.0),
        );
        format!(
            "{} requests {:?}: p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
            self.latencies.len(),
            self.codes,
            p50,
            p99,
            p999,
            max,
        )
    }
}

/// Polls `GET /health` over one keep-alive connection until `stop` is set, pausing `pause`
/// between requests (zero: back to back), and returns what it measured. Room for `capacity`
/// latencies is allocated and written once before the first request, so that a run that keeps
/// fewer does not grow this process's memory while it is measured.
pub fn poll_health(
    uri: hyper::Uri,
    pause: Duration,
    stop: Arc<AtomicBool>,
    capacity: usize,
) -> tokio::task::JoinHandle<HealthSamples> {
    tokio::spawn(async move {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut out = HealthSamples {
            latencies: vec![Duration::ZERO; capacity],
            ..HealthSamples::default()
        };
        out.latencies.clear();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let code = match client.get(uri.clone()).await {
                Ok(r) => {
                    let code = r.status().as_u16();
                    let _ = r.into_body().collect().await;
                    code
                }
                Err(_) => 0,
            };
            out.latencies.push(t.elapsed());
            *out.codes.entry(code).or_insert(0) += 1;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        out
    })
}

/// A field of `/proc/self/status` in kB (`VmRSS`, `VmHWM`).
pub fn status_kb(field: &str) -> u64 {
    status_kb_of("self", field)
}

/// A field of `/proc/<proc>/status` in kB (`proc`: a pid, or `self`).
pub fn status_kb_of(proc: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{proc}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| {
                v.trim_start_matches(':')
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) used so far by this process's threads, summed by thread name.
pub fn cpu_by_thread() -> BTreeMap<String, f64> {
    cpu_by_thread_of("self")
}

/// [`cpu_by_thread`] of process `proc` (a pid, or `self`).
pub fn cpu_by_thread_of(proc: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    // SAFETY-free: sysconf is not needed, Linux reports clock ticks at 100 Hz on every
    // supported architecture (USER_HZ).
    let hz = 100.0;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{proc}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // `rest` starts at field 3, so field n is at index n - 3.
        let cpu = (ticks(11) + ticks(12)) / hz;
        *out.entry(name).or_insert(0.0) += cpu;
    }
    out
}

/// The difference of two [`cpu_by_thread`] readings, as "name 1.23 s" pairs, largest first.
pub fn cpu_delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> String {
    let mut d: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.005)
        .collect();
    d.sort_by(|a, b| b.1.total_cmp(&a.1));
    d.iter()
        .map(|(k, v)| format!("{k} {v:.2} s"))
        .collect::<Vec<_>>()
        .join(", ")
}
