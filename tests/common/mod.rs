//! The integration tests' kit. Here: a whole daemon in one test process (the embedded paper
//! exchange, the real supervision tree under unique registry names, and the HTTP API on a free
//! loopback port) and raw HTTP. In [`process`]: the real binary as a child process. Actor-level
//! helpers (`spawn_persister`, a mini tree, `eventually`) are `tradebaas_actors::testkit`.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ractor::ActorRef;
use serde_json::Value;
use tradebaas::config::Config;
use tradebaas::http::{Api, HttpServer};
use tradebaas::paper_exchange::{PaperConfig, PaperExchange};
use tradebaas::status::get;
use tradebaas_actors::broker::Credentials;
use tradebaas_actors::health::HealthConfig;
use tradebaas_actors::metrics::Metrics;
use tradebaas_actors::names::{ChildName, Names};
use tradebaas_actors::secret::Secret;
use tradebaas_actors::supervisor::SupervisorMsg;
use tradebaas_actors::tree::{TreeConfig, start_tree};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub const SECRET: &str = "s3cr3t-never-printed-0123456789";

/// The six supervised actors, in start order, as `/health` names them.
pub const ACTORS: [&str; 6] = [
    "alert",
    "state-persister",
    "fail-safe",
    "heartbeat",
    "broker-connection",
    "strategy",
];

/// A paper exchange on a free loopback port that accepts the fast heartbeats of a test
/// (≥ 100 ms); `customize` sets the rest (seed, tick rate, …).
pub async fn paper_exchange(customize: impl FnOnce(&mut PaperConfig)) -> PaperExchange {
    let mut config = PaperConfig {
        min_heartbeat_interval: Duration::from_millis(100),
        ..PaperConfig::default()
    };
    customize(&mut config);
    PaperExchange::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub struct Harness {
    pub names: Names,
    pub paper: PaperExchange,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub metrics: Metrics,
    pub http: HttpServer,
    pub base: String,
    pub dir: tempfile::TempDir,
}

/// Test-speed configuration: fast heartbeats, real numbers everywhere else.
pub fn tree_config(dir: &std::path::Path, url: String) -> TreeConfig {
    let mut c = Config::default();
    c.broker.heartbeat_interval = Duration::from_secs(1);
    c.heartbeat.interval = Duration::from_millis(200);
    // Issue-3 behaviour unless a test opts in: no trading on a first start, no order management.
    c.fail_safe.initial_mode = Some(tradebaas_actors::mode::TradingMode::ObserveOnly);
    c.execution.enabled = false;
    c.tree_config(
        dir,
        url,
        Some(Credentials {
            client_id: "test-client".into(),
            client_secret: Secret::new(SECRET),
        }),
    )
}

pub async fn start(customize: impl FnOnce(&mut TreeConfig, &mut HealthConfig)) -> Harness {
    let paper = paper_exchange(|c| c.seed = Some(1)).await;
    paper.add_credentials("test-client", SECRET);
    let dir = tempfile::tempdir().unwrap();
    start_with(paper, dir, customize).await
}

/// Starts a tree (and HTTP) on an existing paper exchange and data directory, under fresh names.
pub async fn start_with(
    paper: PaperExchange,
    dir: tempfile::TempDir,
    customize: impl FnOnce(&mut TreeConfig, &mut HealthConfig),
) -> Harness {
    let names = Names::with_prefix(format!(
        "t{}-{}-",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let mut tree = tree_config(dir.path(), paper.url());
    let mut health = HealthConfig::default();
    customize(&mut tree, &mut health);
    let metrics = Metrics::new().unwrap();
    let supervisor = start_tree(names.clone(), &tree, metrics.clone())
        .await
        .unwrap();
    let http = HttpServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Api {
            names: names.clone(),
            health,
            metrics: metrics.clone(),
            started: Instant::now(),
            version: env!("CARGO_PKG_VERSION"),
            require_recovery: false,
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", http.local_addr);
    Harness {
        names,
        paper,
        supervisor,
        metrics,
        http,
        base,
        dir,
    }
}

/// Stops HTTP, then the tree's children in reverse start order.
async fn stop_http_and_children(http: HttpServer, supervisor: &ActorRef<SupervisorMsg>) {
    http.stop().await;
    let order: Vec<ChildName> = ChildName::START_ORDER.iter().rev().copied().collect();
    let _ = supervisor
        .call(
            |r| SupervisorMsg::StopChildren(order, r),
            Some(Duration::from_secs(10)),
        )
        .await;
}

impl Harness {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (code, body) = get(&self.base, path, Duration::from_secs(5)).await.unwrap();
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        (code, value)
    }

    /// Polls `path` until `pred(code, body)` holds.
    pub async fn wait_for(
        &self,
        path: &str,
        timeout: Duration,
        pred: impl Fn(u16, &Value) -> bool,
    ) -> (u16, Value) {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, body) = self.get(path).await;
            if pred(code, &body) {
                return (code, body);
            }
            assert!(
                Instant::now() < deadline,
                "{path} never matched within {timeout:?}; last {code}: {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn ready(&self) {
        self.wait_for("/ready", Duration::from_secs(15), |c, _| c == 200)
            .await;
    }

    pub fn child(&self, c: ChildName) -> String {
        self.names.of(c)
    }

    pub async fn stop(self) {
        stop_http_and_children(self.http, &self.supervisor).await;
        self.supervisor.stop(None);
        self.paper.shutdown().await;
    }

    /// Stops HTTP and the tree (children in reverse order, then the supervisor) and hands back
    /// the paper exchange and the data directory, for a restart with [`start_with`].
    pub async fn stop_tree(self) -> (PaperExchange, tempfile::TempDir) {
        stop_http_and_children(self.http, &self.supervisor).await;
        let _ = self
            .supervisor
            .stop_and_wait(None, Some(Duration::from_secs(10)))
            .await;
        (self.paper, self.dir)
    }
}

/// A raw HTTP/1.1 exchange (any method, empty body, `Connection: close`): the whole response
/// (status line, headers, body) as text.
pub fn raw(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The real binary as a process, the polls of its routes, and a fake systemd notify socket.
pub mod process;
