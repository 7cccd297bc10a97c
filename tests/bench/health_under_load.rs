//! `/health` latency while the daemon processes a ticker stream.
//!
//! Run: `cargo bench --bench health_under_load` (optionally `-- --ticks 10000 --requests 5000`).
//! Starts the paper exchange at the given tick rate on loopback, the real supervision tree and the
//! HTTP server in this process, waits until ready, then issues sequential `GET /health` over one
//! keep-alive connection and prints latency percentiles and the tick rate the strategy actually
//! received during the measurement.

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
use tradebaas_actors::health;
use tradebaas_actors::metrics::Metrics;
use tradebaas_actors::names::Names;
use tradebaas_actors::secret::Secret;
use tradebaas_actors::strategy::StrategyMsg;
use tradebaas_actors::tree::start_tree;

#[path = "args.rs"]
mod args;
use args::arg;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn ticks(names: &Names) -> u64 {
    match client::ask(names, StrategyMsg::Status, Duration::from_secs(2)).await {
        Reply::Answered(s) => s.ticks_received,
        _ => 0,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rate = arg("--ticks", 10_000);
    let requests = arg("--requests", 5_000) as usize;
    let paper = PaperExchange::start(
        PaperConfig {
            instruments: vec!["BTC-PERPETUAL".into()],
            ticks_per_second: rate as f64,
            seed: Some(42),
            ..PaperConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    paper.add_credentials("bench", "bench-secret");
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::default();
    c.broker.channels = vec!["ticker.BTC-PERPETUAL.raw".into()];
    let tree = c.tree_config(
        dir.path(),
        paper.url(),
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
            metrics,
            started: Instant::now(),
            version: env!("CARGO_PKG_VERSION"),
            require_recovery: false,
        },
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while health::readiness(&health::gather(&names, Duration::from_secs(1)).await).is_err() {
        assert!(Instant::now() < deadline, "daemon not ready within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{}/health", http.local_addr)
        .parse()
        .unwrap();
    // Warm up: connection, allocator, the tick stream reaching steady state.
    for _ in 0..200 {
        let r = client.get(uri.clone()).await.unwrap();
        r.into_body().collect().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let ticks_before = ticks(&names).await;
    let t0 = Instant::now();
    let mut lat = Vec::with_capacity(requests);
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..requests {
        let t = Instant::now();
        let r = client.get(uri.clone()).await.unwrap();
        let code = r.status().as_u16();
        r.into_body().collect().await.unwrap();
        lat.push(t.elapsed());
        *codes.entry(code).or_insert(0u64) += 1;
    }
    let elapsed = t0.elapsed();
    let ticks_after = ticks(&names).await;
    lat.sort();
    let tick_rate = (ticks_after - ticks_before) as f64 / elapsed.as_secs_f64();
    println!(
        "health_under_load: {requests} sequential GET /health, paper exchange at {rate} ticks/s"
    );
    println!(
        "  ticks processed by the strategy actor during the run: {:.0}/s",
        tick_rate
    );
    println!("  status codes: {codes:?}");
    println!(
        "  latency: p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        pct(&lat, 0.50).as_secs_f64() * 1e3,
        pct(&lat, 0.90).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        pct(&lat, 0.999).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3,
    );
    http.stop().await;
    supervisor.stop(None);
    paper.shutdown().await;
}
