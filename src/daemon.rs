//! `tradebaas run`: start the embedded paper exchange (when configured), the supervision tree
//! and the HTTP server; wait for SIGTERM/SIGINT; shut down in four logged steps.
//!
//! Shutdown order (each step logged with its duration; the whole sequence is bounded by
//! `server.shutdown_timeout`, past which the process exits 1):
//! 1. `stop_http` — stop accepting HTTP requests, finish the ones in flight; close the admin
//!    socket (no operator action during shutdown);
//! 2. `stop_trading` — stop the `heartbeat` (so stopping the trading actors is not taken for a
//!    wedge), the `strategy` actor, then `broker-connection` (which closes the WebSocket with a
//!    close frame);
//! 3. `flush_state` — the persister answers once everything queued before is durable;
//! 4. `stop_actors` — stop the remaining actors in reverse start order, then the supervisor.
//!
//! The limit is hard: when shutdown starts, a plain thread independent of the tokio runtime is
//! armed ([`arm_hard_deadline`]) that exits the process with code 1 at the limit whatever any
//! task does (a wedged actor can hold a runtime worker, and dropping the runtime would then wait
//! for it forever). A second SIGTERM or SIGINT during shutdown exits at once with code 1.
//!
//! The daemon's own detached tasks (recovery, then the daily snapshots and periodic checks;
//! readiness logging) are spawned with [`spawn_critical`]: a panic in one latches SHUTDOWN and
//! raises `failsafe:unrecoverable_error`, the same path as a panic of the daemon's future.
//!
//! Under systemd (`Type=notify`) the daemon reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and
//! `WATCHDOG_PID` once ([`systemd_notifier`]), sends `READY=1` when start-up recovery has finished
//! and `STOPPING=1` when a signal starts the shutdown; the heartbeat sends `WATCHDOG=1`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{ActorRef, call_t};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};
use tradebaas_actors::alert::AlertMsg;
use tradebaas_actors::broker::Credentials;
use tradebaas_actors::checks;
use tradebaas_actors::client::{self, commit_change};
use tradebaas_actors::failsafe::FailSafeMsg;
use tradebaas_actors::health;
use tradebaas_actors::metrics::Metrics;
use tradebaas_actors::names::{Child, ChildName, Names};
use tradebaas_actors::notify::SdNotifier;
use tradebaas_actors::persister::PersisterMsg;
use tradebaas_actors::protocol::alert::Alert;
use tradebaas_actors::recovery::{RECOVERY_KEY, RecoveryConfig, RecoveryReport, recover};
use tradebaas_actors::secret::Secret;
use tradebaas_actors::store::{
    Change, DataDirLock, IntegrityFacts, OpenReport, SnapshotKind, open_verified,
};
use tradebaas_actors::strategy::StrategyMsg;
use tradebaas_actors::supervisor::{SupervisorMsg, SupervisorStatus};
use tradebaas_actors::task::{spawn_critical, unrecoverable_error};
use tradebaas_actors::test_points;
use tradebaas_actors::tree::start_tree;

use crate::admin::{self, AdminContext, AdminServer};
use crate::config::{Config, Exchange};
use crate::http::{Api, HttpServer};
use crate::paper_exchange::PaperExchange;

/// Exit codes.
pub mod exit {
    /// Clean shutdown.
    pub const OK: i32 = 0;
    /// Runtime failure: a shutdown step hung past the limit, a second signal, a panic.
    pub const FAILURE: i32 = 1;
    /// Bad configuration or a failed startup check; systemd should not restart in a loop.
    pub const CONFIG: i32 = 2;
}

/// Installs a panic hook that logs every panic with a backtrace and counts it
/// (`tradebaas_panics_total`). Panics inside actors are caught by ractor and become supervision
/// events; a panic of the daemon's own future unwinds into `main`, which then runs
/// [`emergency_shutdown`] (the same stop-and-flush steps) and exits 1.
pub fn install_panic_hook(metrics: Metrics) {
    std::panic::set_hook(Box::new(move |info| {
        let backtrace = std::backtrace::Backtrace::force_capture();
        let thread = std::thread::current();
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        metrics.panics.inc();
        error!(
            panic = %payload,
            location = %location,
            thread = thread.name().unwrap_or("unnamed"),
            backtrace = %backtrace,
            "panic"
        );
    }));
}

/// Resolves the exchange: starts the embedded paper exchange for `url = "paper"`, otherwise
/// reads credentials from the environment.
async fn resolve_exchange(
    config: &Config,
) -> Result<(String, Option<Credentials>, Option<PaperExchange>), String> {
    if config.broker.is_embedded_paper() {
        let exchange = PaperExchange::start(
            config.paper_exchange.clone(),
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .map_err(|e| format!("cannot start the embedded paper exchange on 127.0.0.1: {e}"))?;
        let client_id = format!("paper-{:016x}", fastrand::u64(..));
        let secret: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(32)
            .collect();
        exchange.add_credentials(&client_id, &secret);
        info!(url = %exchange.url(), "embedded paper exchange listening");
        return Ok((
            exchange.url(),
            Some(Credentials {
                client_id,
                client_secret: Secret::new(secret),
            }),
            Some(exchange),
        ));
    }
    let id = std::env::var(&config.broker.client_id_env).ok();
    let secret = std::env::var(&config.broker.client_secret_env).ok();
    let credentials = match (id, secret) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Some(Credentials {
            client_id: id,
            client_secret: Secret::new(secret),
        }),
        _ if config.broker.require_credentials => {
            return Err(format!(
                "startup check `credentials` failed: broker.require_credentials is true but \
                 the environment variables {} and {} are not both set",
                config.broker.client_id_env, config.broker.client_secret_env
            ));
        }
        _ => {
            warn!("no exchange credentials in the environment: public data only");
            None
        }
    };
    Ok((config.broker.url.clone(), credentials, None))
}

/// The systemd notifier, from `NOTIFY_SOCKET` and `WATCHDOG_USEC`/`WATCHDOG_PID`: read here once,
/// at start-up, and passed down (the heartbeat never reads the environment). `None` when the
/// daemon does not run under systemd's `Type=notify`.
pub fn systemd_notifier() -> Option<SdNotifier> {
    let watchdog = sd_notify::watchdog_enabled();
    match std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) {
        Some(socket) => {
            info!(
                socket = ?socket,
                watchdog_ms = watchdog.map(|w| w.as_millis() as u64),
                "systemd notifications enabled"
            );
            Some(SdNotifier::new(socket, watchdog))
        }
        None => {
            if watchdog.is_some() {
                warn!("WATCHDOG_USEC is set but NOTIFY_SOCKET is not: no watchdog notifications");
            }
            None
        }
    }
}

/// Runs the daemon until a signal; returns the process exit code. `metrics` is created by
/// `main` before logging, whose error counter (`tradebaas_errors_total`) it holds.
pub async fn run(config: Config, metrics: Metrics) -> i32 {
    let started = Instant::now();
    install_panic_hook(metrics.clone());
    let notifier = systemd_notifier();

    let data_dir: PathBuf = config.server.data_dir.clone();
    if let Err(e) = std::fs::create_dir_all(&data_dir) {
        error!(
            "startup check `data_dir` failed: cannot create {} (key `server.data_dir`): {e}",
            data_dir.display()
        );
        return exit::CONFIG;
    }
    // Single instance: two daemons on one store is how duplicate orders happen.
    let _lock = match DataDirLock::acquire(&data_dir) {
        Ok(lock) => lock,
        Err(e) => {
            error!("startup check `single_instance` failed: {e}");
            return exit::CONFIG;
        }
    };
    // Open and verify the store before anything starts: a damaged store is moved aside and the
    // newest good backup restored; a store newer than this binary is refused.
    let store_path = crate::state_cmd::store_path(&data_dir);
    let backups_dir = crate::state_cmd::backups_dir(&data_dir);
    let open_report = match open_verified(&store_path, &backups_dir) {
        Ok((store, report)) => {
            drop(store); // the persister opens its own connection
            report
        }
        Err(e) => {
            error!("startup check `store` failed: {e}");
            return exit::CONFIG;
        }
    };
    // What the start-up checks judge, read before any actor can write to the store.
    let store_facts = checks::read_facts(store_path.clone()).await;
    if open_report.crashed {
        metrics.crashes_total.inc();
    }
    metrics
        .store_disk_free_floor_bytes
        .set(i64::try_from(config.store.disk_free_floor).unwrap_or(i64::MAX));
    if open_report.degraded() {
        error!(report = ?open_report, "store was damaged: restored; trading starts in OBSERVE_ONLY");
    } else {
        info!(
            created = open_report.created,
            crashed = open_report.crashed,
            "store verified"
        );
    }

    let names = Names::default();
    let api = Api {
        names: names.clone(),
        health: config.health.clone(),
        metrics: metrics.clone(),
        started,
        version: env!("CARGO_PKG_VERSION"),
        require_recovery: true,
    };
    // Bind first: a taken port is a startup failure before anything trades.
    let http = match HttpServer::start(config.server.listen, api).await {
        Ok(h) => h,
        Err(e) => {
            error!("startup check `listen` failed: {e}");
            return exit::CONFIG;
        }
    };
    // The admin socket too (operator commands; see `admin`): bound now, served once the tree runs.
    let admin = match admin::bind(&data_dir) {
        Ok(a) => a,
        Err(e) => {
            error!("startup check `admin_socket` failed: {e}");
            http.stop().await;
            return exit::CONFIG;
        }
    };
    let (url, credentials, paper) = match resolve_exchange(&config).await {
        Ok(x) => x,
        Err(e) => {
            error!("{e}");
            http.stop().await;
            admin.discard();
            return exit::CONFIG;
        }
    };
    let mut tree = config.tree_config(&data_dir, url, credentials);
    tree.notifier = notifier.clone();
    let supervisor = match start_tree(names.clone(), &tree, metrics.clone()).await {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot start the supervision tree");
            http.stop().await;
            admin.discard();
            return exit::FAILURE;
        }
    };
    test_points::install(&names);
    let admin = admin.serve(AdminContext {
        names: names.clone(),
        config: config.admin.clone(),
        checks: checks::ChecksArgs {
            store_path: store_path.clone(),
            config: config.checks.clone(),
        },
    });
    // Which mode and strategies the configuration chose, and why: the operator's first question
    // about a daemon that does (or does not) trade. A stored mode still takes precedence; the
    // fail-safe logs and reports (`initial_mode_reason` in /health) what it started in.
    let resolved = config.resolve();
    info!(
        listen = %http.local_addr,
        took_ms = started.elapsed().as_millis() as u64,
        embedded_paper = resolved.exchange == Exchange::EmbeddedPaper,
        initial_mode = %resolved.initial_mode.mode,
        initial_mode_reason = %resolved.initial_mode.reason,
        strategies = %resolved.strategies_text(),
        strategies_reason = %resolved.strategies_reason,
        "tradebaas started"
    );
    // Recovery runs before the strategy may act: reconcile the stored state with the exchange and
    // decide the mode. Its report is committed to the store (event `recovery.completed`, state
    // key `recovery.last`), where the persister reports it in /health. Then the start-up checks
    // (`checks::startup`), and every `checks.interval` the same checks (`checks::periodic`).
    let config_checks = config.checks.clone();
    let recovery = spawn_critical(
        &names,
        "recovery",
        startup_sequence(Startup {
            names: names.clone(),
            open_report: open_report.clone(),
            store_facts,
            recovery: config.recovery.clone(),
            snapshot_interval: config.store.snapshot_interval,
            checks: checks::ChecksArgs {
                store_path: store_path.clone(),
                config: config_checks,
            },
            metrics: metrics.clone(),
            notifier: notifier.clone(),
        }),
    );
    let readiness = spawn_critical(
        &names,
        "readiness",
        log_readiness(
            names.clone(),
            config.health.actor_timeout,
            config.server.startup_timeout,
            started,
        ),
    );

    let mut sigterm = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot install the SIGTERM handler");
            return exit::FAILURE;
        }
    };
    let mut sigint = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot install the SIGINT handler");
            return exit::FAILURE;
        }
    };
    let signal_name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    info!(signal = signal_name, "shutdown: signal received");
    let limit = config.server.shutdown_timeout;
    arm_hard_deadline(limit);
    if let Some(n) = &notifier {
        n.stopping(&format!("stopping: {signal_name} received"));
    }
    readiness.abort();
    recovery.abort();

    // A second signal exits at once.
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => {},
            _ = sigint.recv() => {},
        }
        error!("second signal during shutdown: exiting immediately");
        std::process::exit(exit::FAILURE);
    });

    let stopping = Instant::now();
    let code = match tokio::time::timeout(
        limit,
        shutdown(&names, &supervisor, Some(http), Some(admin), paper),
    )
    .await
    {
        Ok(()) => exit::OK,
        Err(_) => {
            error!(
                limit_ms = limit.as_millis() as u64,
                "shutdown: a step did not finish within the hard limit; exiting 1"
            );
            exit::FAILURE
        }
    };
    info!(
        exit_code = code,
        shutdown_ms = stopping.elapsed().as_millis() as u64,
        uptime_ms = started.elapsed().as_millis() as u64,
        "shutdown: exit"
    );
    code
}

/// What [`startup_sequence`] needs.
pub struct Startup {
    pub names: Names,
    /// What opening the store found (its alert is raised first; a restore restricts trading).
    pub open_report: OpenReport,
    /// The start-up checks' facts, read before any actor could write to the store.
    pub store_facts: Result<IntegrityFacts, String>,
    pub recovery: RecoveryConfig,
    pub snapshot_interval: Duration,
    pub checks: checks::ChecksArgs,
    pub metrics: Metrics,
    pub notifier: Option<SdNotifier>,
}

/// What runs once the tree is up, in this order, before the strategy may act: the store's alert,
/// recovery (reconcile with the exchange; its report committed as `recovery.completed` and state
/// key `recovery.last`), the start-up checks (any failure restricts to OBSERVE_ONLY, awaited),
/// then entries allowed and systemd told READY. Then, forever, the daily snapshots and the
/// periodic checks (`checks.interval`). `run` spawns it; a simulation runs the same sequence.
pub async fn startup_sequence(s: Startup) {
    let Startup {
        names,
        open_report,
        store_facts,
        recovery: config,
        snapshot_interval,
        checks: checks_args,
        metrics,
        notifier,
    } = s;
    if let Some(alert) = Alert::for_store_open(&open_report) {
        // The supervisor starts its children after `start_tree` returns: wait for the
        // alert actor rather than drop the alert.
        let sent = send_when_running(&names, || AlertMsg::Raise(alert.clone())).await;
        if !sent {
            error!(alert = ?alert, "store alert not raised: the alert actor is not running");
        }
    }
    if open_report.degraded() {
        checks::restrict(&names, "the store was restored from a backup").await;
    }
    let report = recover(&names, &config, &config.currencies, &metrics).await;
    record_recovery(&names, &report).await;
    // The start-up checks, before the strategy may act: any failure restricts trading to
    // OBSERVE_ONLY (awaited, so it is in force before entries are allowed) and raises one
    // `startup_checks` alert.
    checks::startup(&names, &checks_args, store_facts).await;
    // Entries stay refused until the fail-safe hears that recovery finished.
    if send_when_running(&names, || FailSafeMsg::RecoveryFinished).await {
        // Start-up is over: systemd may now consider the service started.
        if let Some(n) = &notifier {
            n.ready(&format!(
                "started: recovery finished ({})",
                if report.success {
                    "ok"
                } else {
                    "with problems, see /health"
                }
            ));
        }
    } else {
        // No READY=1: systemd's start timeout restarts a daemon stuck here.
        error!("the fail-safe is not running: entries stay refused");
    }
    test_points::point("after_startup");
    tokio::join!(
        daily_snapshots(&names, snapshot_interval, &config.currencies),
        checks::periodic(names.clone(), checks_args),
    );
}

/// Arms the hard shutdown limit: a plain thread, independent of the tokio runtime (whose worker
/// threads a wedged task may hold), that exits the process with code 1 once `limit` has passed.
/// Call when shutdown starts; a shutdown that finishes in time has exited before.
pub fn arm_hard_deadline(limit: Duration) {
    let armed = std::thread::Builder::new()
        .name("shutdown-deadline".into())
        .spawn(move || {
            std::thread::sleep(limit);
            error!(
                limit_ms = limit.as_millis() as u64,
                "shutdown: hard limit reached; exiting 1 whatever is still running"
            );
            let _ = std::io::Write::flush(&mut std::io::stderr());
            std::process::exit(exit::FAILURE);
        });
    if let Err(e) = armed {
        error!(error = %e, "shutdown: cannot arm the hard limit; relying on the runtime's timeout");
    }
}

/// How soon a failed snapshot (one holding an error instead of an account summary) is retried.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(10 * 60);

/// Whether a `daily` snapshot is due at `now`: the newest snapshot *with capital* is older than
/// `interval` (or there is none), and no failed one was taken within `min(interval,
/// SNAPSHOT_RETRY)`. A failed snapshot does not count as taken: it is retried within minutes,
/// not a day later (by then `snapshot_failing` would have shut the daemon down).
fn snapshot_due(
    now: chrono::DateTime<chrono::Utc>,
    last: Option<chrono::DateTime<chrono::Utc>>,
    last_capital: Option<chrono::DateTime<chrono::Utc>>,
    interval: Duration,
) -> bool {
    let older = |t: Option<chrono::DateTime<chrono::Utc>>, d: Duration| {
        t.is_none_or(|t| now - t >= chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX))
    };
    older(last_capital, interval) && older(last, interval.min(SNAPSHOT_RETRY))
}

/// Takes a `daily` snapshot of capital and positions whenever [`snapshot_due`] (checked every
/// minute, and once right after recovery). Capital comes from the exchange
/// (`private/get_account_summary` per currency), positions from the strategy actor.
async fn daily_snapshots(names: &Names, interval: Duration, currencies: &[String]) {
    let ask = Duration::from_secs(5);
    loop {
        let due = match client::ask(names, PersisterMsg::Status, ask).await {
            client::Reply::Answered(s) => snapshot_due(
                tradebaas_actors::clock::now(),
                s.last_snapshot_at,
                s.last_capital_snapshot_at,
                interval,
            ),
            _ => false,
        };
        if due {
            let mut capital = serde_json::Map::new();
            for currency in currencies {
                // A snapshot due during a reconnect waits for the next session rather than
                // store a failed one.
                let answer = client::request_when_connected(
                    names,
                    "private/get_account_summary",
                    serde_json::json!({ "currency": currency }),
                    ask,
                )
                .await;
                let value = match answer {
                    Some(Ok(v)) => v,
                    Some(Err(e)) => serde_json::json!({ "error": e.to_string() }),
                    None => serde_json::json!({ "error": "broker-connection did not answer" }),
                };
                capital.insert(currency.clone(), value);
            }
            let positions = match client::ask(names, StrategyMsg::Status, ask).await {
                client::Reply::Answered(s) => {
                    serde_json::to_value(&s.strategies).unwrap_or(serde_json::Value::Null)
                }
                _ => serde_json::json!({ "error": "strategy did not answer" }),
            };
            let payload = serde_json::json!({ "capital": capital, "positions": positions });
            let missing = tradebaas_actors::checks::capital_missing(&payload);
            match client::ask(
                names,
                |reply| PersisterMsg::Snapshot {
                    kind: SnapshotKind::Daily,
                    payload,
                    reply: Some(reply),
                },
                ask,
            )
            .await
            {
                client::Reply::Answered(Ok(c)) => match missing {
                    None => info!(seq = c.seq, "daily snapshot taken"),
                    Some(why) => warn!(
                        seq = c.seq,
                        reason = %why,
                        "daily snapshot stored without capital (a failed snapshot); retried in \
                         at most 10 minutes"
                    ),
                },
                client::Reply::Answered(Err(e)) => warn!(error = %e, "daily snapshot failed"),
                _ => warn!("daily snapshot failed: the persister did not answer"),
            }
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

/// Sends `msg()` to the child `C` once it is running (the supervisor starts its children after
/// `start_tree` returns), trying for about two seconds. Whether it was delivered.
async fn send_when_running<C: Child>(names: &Names, msg: impl Fn() -> C) -> bool {
    for _ in 0..100 {
        if client::tell(names, msg()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Commits the recovery report through the persister (bounded; a failure is logged).
async fn record_recovery(names: &Names, report: &RecoveryReport) {
    let Ok(value) = serde_json::to_value(report) else {
        return;
    };
    let change = Change::event("recovery.completed", value.clone()).set(RECOVERY_KEY, value);
    if let Err(e) = commit_change(names, change, Duration::from_secs(5)).await {
        warn!(error = %e, "recovery report not stored");
    }
}

/// Logs once when the daemon becomes ready (actors up, broker connected and subscribed).
async fn log_readiness(names: Names, timeout: Duration, limit: Duration, started: Instant) {
    let deadline = Instant::now() + limit;
    let mut last;
    loop {
        let replies = health::gather(&names, timeout).await;
        match health::readiness(&replies)
            .and_then(|()| health::recovery_finished(&replies, started.elapsed()))
        {
            Ok(()) => {
                info!(
                    took_ms = started.elapsed().as_millis() as u64,
                    "startup complete: ready"
                );
                return;
            }
            Err(reason) => last = reason,
        }
        if Instant::now() > deadline {
            warn!(reason = %last, "not ready after {}s; see /ready", limit.as_secs());
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn step<F: std::future::Future<Output = String>>(n: u8, name: &'static str, f: F) {
    let t = Instant::now();
    info!(step = name, "shutdown step {n}/4: {name}");
    let outcome = f.await;
    info!(
        step = name,
        duration_ms = t.elapsed().as_millis() as u64,
        outcome = %outcome,
        "shutdown step {n}/4 done: {name}"
    );
}

fn stop_summary(
    r: Result<CallResult<Vec<tradebaas_actors::supervisor::StopReport>>, impl std::fmt::Debug>,
) -> String {
    match r {
        Ok(CallResult::Success(reports)) => reports
            .iter()
            .map(|r| format!("{} {} ({} ms)", r.child, r.outcome, r.duration_ms))
            .collect::<Vec<_>>()
            .join(", "),
        Ok(CallResult::Timeout) => "supervisor did not answer in time".into(),
        Ok(CallResult::SenderError) | Err(_) => "supervisor not running".into(),
    }
}

async fn shutdown(
    names: &Names,
    supervisor: &ActorRef<SupervisorMsg>,
    http: Option<HttpServer>,
    admin: Option<AdminServer>,
    paper: Option<PaperExchange>,
) {
    // Generous per-call limit: the overall hard limit is the real bound.
    let call_limit = Duration::from_secs(3600);
    step(1, "stop_http", async {
        let admin = match admin {
            Some(admin) => {
                admin.stop().await;
                "admin socket closed"
            }
            None => "admin socket not open",
        };
        match http {
            Some(http) => {
                http.stop().await;
                format!("http server stopped; {admin}")
            }
            None => format!("http server not running; {admin}"),
        }
    })
    .await;
    step(2, "stop_trading", async {
        stop_summary(
            supervisor
                .call(
                    |r| {
                        SupervisorMsg::StopChildren(
                            vec![
                                ChildName::Heartbeat,
                                ChildName::Strategy,
                                ChildName::BrokerConnection,
                            ],
                            r,
                        )
                    },
                    Some(call_limit),
                )
                .await,
        )
    })
    .await;
    step(3, "flush_state", async {
        match names.get::<PersisterMsg>() {
            Some(p) => match p.call(PersisterMsg::Flush, Some(call_limit)).await {
                Ok(CallResult::Success(Ok(r))) => {
                    let clean = match p.call(PersisterMsg::MarkClean, Some(call_limit)).await {
                        Ok(CallResult::Success(Ok(()))) => "clean stop recorded",
                        _ => "clean stop NOT recorded (next start counts a crash)",
                    };
                    format!(
                        "flushed through event {} in {} ms; {clean}",
                        r.last_seq, r.took_ms
                    )
                }
                Ok(CallResult::Success(Err(e))) => {
                    error!(error = %e, "shutdown: flush failed");
                    format!("flush failed: {e}")
                }
                _ => "persister did not answer".into(),
            },
            None => {
                warn!("shutdown: persister not running; nothing to flush");
                "persister not running".into()
            }
        }
    })
    .await;
    step(4, "stop_actors", async {
        let rest: Vec<ChildName> = ChildName::START_ORDER
            .iter()
            .rev()
            .copied()
            .filter(|c| {
                !matches!(
                    c,
                    ChildName::Heartbeat | ChildName::Strategy | ChildName::BrokerConnection
                )
            })
            .collect();
        let summary = stop_summary(
            supervisor
                .call(|r| SupervisorMsg::StopChildren(rest, r), Some(call_limit))
                .await,
        );
        let _: Result<SupervisorStatus, _> = call_t!(supervisor, SupervisorMsg::Status, 1000);
        supervisor.stop(None);
        if let Some(paper) = paper {
            paper.shutdown().await;
        }
        summary
    })
    .await;
}

/// The stop-and-flush steps after a panic of the daemon's own future (called from `main` on a
/// runtime that is still alive). Returns whether they finished within `limit`.
pub async fn emergency_shutdown(limit: Duration) -> bool {
    let names = Names::default();
    error!("shutdown: after a panic outside the actors");
    let Some(cell) = ractor::registry::where_is(names.supervisor()) else {
        error!("shutdown: supervisor not running; nothing to stop");
        return false;
    };
    let supervisor = ActorRef::<SupervisorMsg>::from(cell);
    // An unrecoverable error: latch SHUTDOWN (stored, so it survives the restart that follows)
    // before stopping, so the next run does not trade until an operator has looked.
    unrecoverable_error(&names, "the daemon panicked outside the actors", limit / 2).await;
    tokio::time::timeout(limit, shutdown(&names, &supervisor, None, None, None))
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_snapshot_is_retried_within_minutes_a_good_one_waits_the_interval() {
        let t0 = tradebaas_actors::clock::now();
        let day = Duration::from_secs(24 * 3600);
        let mins = |m: i64| t0 + chrono::Duration::minutes(m);
        // None yet: due.
        assert!(snapshot_due(t0, None, None, day));
        // A good snapshot just now: not due until a day later.
        assert!(!snapshot_due(mins(60), Some(t0), Some(t0), day));
        assert!(snapshot_due(mins(24 * 60), Some(t0), Some(t0), day));
        // A day later the snapshot failed (no capital): retried 10 minutes after, not a day.
        let failed = Some(mins(24 * 60));
        assert!(!snapshot_due(mins(24 * 60 + 5), failed, Some(t0), day));
        assert!(snapshot_due(mins(24 * 60 + 10), failed, Some(t0), day));
        // Only failed snapshots so far: also retried.
        assert!(snapshot_due(mins(24 * 60 + 10), failed, None, day));
    }
}
