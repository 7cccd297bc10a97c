//! The command line: `run`, `check`, `check-config`, `paper-exchange`, `status`, `state`, and the
//! operator commands `mode` and `alerts` (over the local admin socket, see [`crate::admin`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::admin::OperatorMode;
use crate::config::LogFormat;

/// TradeBaas: a supervised 24/7 runtime for trading strategies on Deribit.
#[derive(Debug, Parser)]
#[command(name = "tradebaas", version, about)]
pub struct Cli {
    /// Log line format (overrides `logging.format`).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (on the embedded paper exchange unless the config says otherwise).
    Run {
        /// TOML configuration file; without it the built-in defaults (= config/default.toml).
        #[arg(long, env = "TRADEBAAS_CONFIG")]
        config: Option<PathBuf>,
        /// HTTP listen address (overrides `server.listen` and TRADEBAAS_LISTEN).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory (overrides `server.data_dir` and TRADEBAAS_DATA_DIR).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the offline start-up checks (event log, snapshots, capital consistency, strategy
    /// states, stored mode) on the configured data directory's store, read-only (safe while the
    /// daemon runs); print the report; exit 0 when all pass, 1 when one fails, 2 on a bad config.
    Check {
        #[arg(long, env = "TRADEBAAS_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory (overrides `server.data_dir` and TRADEBAAS_DATA_DIR).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a configuration file and print the effective configuration; exit 2 when invalid.
    CheckConfig {
        #[arg(long, env = "TRADEBAAS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run the paper exchange alone (a Deribit-protocol server on a loopback port).
    PaperExchange {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8765")]
        listen: SocketAddr,
        /// Take `[paper_exchange]` from this config file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Ticker updates per second per instrument (overrides the config).
        #[arg(long)]
        ticks_per_second: Option<f64>,
    },
    /// Print a running daemon's /health as a table; exit 0 healthy, 1 degraded, 2 unhealthy or
    /// unreachable.
    Status {
        /// Base URL of the daemon's HTTP server.
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
    },
    /// Inspect the durable store (read-only; safe while the daemon runs).
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// Change the trading mode of the running daemon (over its admin socket), or, without a mode,
    /// print the mode, why, and the open alerts. Exit 0 done, 1 refused by the daemon, 2 daemon
    /// not reachable, 3 permission denied.
    Mode {
        /// `observe` (OBSERVE_ONLY; also clears SHUTDOWN) or `aggressive` (needs the pre-flight
        /// checks to pass now; SHUTDOWN must be cleared to observe first).
        #[arg(value_enum)]
        mode: Option<OperatorMode>,
        /// Why (required for a change; stored with the operator_action and mode_changed events).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Operator actions on alerts (over the admin socket).
    Alerts {
        #[command(subcommand)]
        action: AlertsAction,
    },
}

/// Where the admin socket is: `--socket`, else `<server.data_dir>/admin.sock` of the config
/// (with `--data-dir` / `TRADEBAAS_DATA_DIR` applied as for `run`).
#[derive(Debug, Clone, clap::Args)]
pub struct AdminTarget {
    /// The daemon's configuration file (its `server.data_dir` holds the socket).
    #[arg(long, env = "TRADEBAAS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides the config's `server.data_dir` and TRADEBAAS_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The admin socket itself (overrides the config and the data directory).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// `tradebaas alerts …`.
#[derive(Debug, Subcommand)]
pub enum AlertsAction {
    /// Acknowledge an open or recent alert by its `alert_id` (see `/api/alerts` or `/health`).
    /// Exit codes as for `mode`.
    Ack {
        /// The alert's `alert_id`.
        id: String,
        /// Why (optional; stored with the operator_action event).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        target: AdminTarget,
    },
}

/// The data directory of a `state` command.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArg {
    /// Data directory (store `tradebaas.db`, backups in `backups/`).
    #[arg(long, env = "TRADEBAAS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// `tradebaas state …`.
#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Verify the store (schema, the event chain after its last verified checkpoint, state,
    /// snapshots; with --full: quick_check and the whole chain from seq 1); print the report as
    /// JSON; exit 0 when ok, 1 when there are problems.
    Verify {
        #[command(flatten)]
        dir: DataDirArg,
        /// Walk the whole chain and run `PRAGMA quick_check` (cost grows with history).
        #[arg(long)]
        full: bool,
    },
    /// Print the state map, the events and the snapshots as JSON.
    Export {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// List the backups, newest first, each with its verification.
    Backups {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Measure durable writes on this disk: commit `--count` synthetic state changes (each with
    /// its event, fsynced) to the store in DIR and print latency percentiles. Takes the
    /// single-instance lock, so it refuses a directory a daemon is using; use a scratch DIR.
    BenchWrites {
        #[command(flatten)]
        dir: DataDirArg,
        /// Number of commits; 0 = until interrupted.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Print `ack <seq> <n>` after each commit is durable (used by the crash-atomicity test).
        #[arg(long)]
        acks: bool,
    },
}
