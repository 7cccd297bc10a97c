//! The `tradebaas` binary.

use std::process::ExitCode;

use clap::Parser;
use tradebaas::admin::{self, Request};
use tradebaas::cli::{AdminTarget, AlertsAction, Cli, Command};
use tradebaas::config::{Config, ConfigError, LogFormat, Overrides};
use tradebaas::daemon::{self, exit};
use tradebaas::{admin_cmd, check_cmd, logging, paper_cmd, state_cmd, status};
use tradebaas_actors::metrics::Metrics;

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}

/// Loads the file (or the built-in default), then the environment, then CLI flags.
fn load(path: Option<&std::path::Path>, overrides: Overrides) -> Result<Config, ConfigError> {
    let mut config = match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    config.apply_env(|k| std::env::var(k).ok())?;
    config.apply(overrides, "command line --")?;
    Ok(config)
}

/// The admin socket of an operator command: `--socket`, else `<server.data_dir>/admin.sock`.
fn admin_socket(target: &AdminTarget) -> Result<std::path::PathBuf, ConfigError> {
    if let Some(socket) = &target.socket {
        return Ok(socket.clone());
    }
    let config = load(
        target.config.as_deref(),
        Overrides {
            data_dir: target.data_dir.clone(),
            ..Overrides::default()
        },
    )?;
    Ok(admin::socket_path(&config.server.data_dir))
}

/// Runs one operator command against the daemon's admin socket.
fn operator(target: &AdminTarget, request: &Request) -> ExitCode {
    match admin_socket(target) {
        Ok(socket) => code(admin_cmd::run(&socket, request)),
        Err(e) => {
            eprintln!("tradebaas: configuration error: {e}");
            code(admin_cmd::exit::UNREACHABLE)
        }
    }
}

/// How long `main` waits for the runtime's tasks once the daemon has finished.
const RUNTIME_STOP: std::time::Duration = std::time::Duration::from_millis(500);

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tradebaas")
        .build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            listen,
            data_dir,
        } => {
            let config = match load(
                config.as_deref(),
                Overrides {
                    listen,
                    data_dir,
                    broker_url: None,
                },
            ) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tradebaas: configuration error: {e}");
                    return code(exit::CONFIG);
                }
            };
            let format = cli.log_format.unwrap_or(config.logging.format);
            // Before logging: the subscriber counts ERROR events into `tradebaas_errors_total`.
            let metrics = match Metrics::new() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("tradebaas: cannot create the metrics registry: {e}");
                    return code(exit::FAILURE);
                }
            };
            if let Err(e) =
                logging::init_counting(format, &config.logging.filter, Some(metrics.errors.clone()))
            {
                eprintln!("tradebaas: configuration error: {e}");
                return code(exit::CONFIG);
            }
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tradebaas: cannot start the async runtime: {e}");
                    return code(exit::FAILURE);
                }
            };
            let limit = config.server.shutdown_timeout;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rt.block_on(daemon::run(config, metrics))
            }));
            let c = match outcome {
                Ok(c) => c,
                Err(_) => {
                    // The daemon's own future panicked (already logged with a backtrace by the
                    // panic hook): stop and flush through the same steps, then exit 1, within
                    // the same hard limit.
                    daemon::arm_hard_deadline(limit);
                    rt.block_on(daemon::emergency_shutdown(limit));
                    exit::FAILURE
                }
            };
            // Dropping the runtime would wait for every worker and blocking task, forever for a
            // wedged one: the state is flushed (or the limit has passed), so wait only briefly.
            rt.shutdown_timeout(RUNTIME_STOP);
            code(c)
        }
        Command::Check {
            config,
            data_dir,
            json,
        } => match load(
            config.as_deref(),
            Overrides {
                data_dir,
                ..Overrides::default()
            },
        ) {
            Ok(c) => code(check_cmd::run(&c, json)),
            Err(e) => {
                eprintln!("tradebaas: configuration error: {e}");
                code(exit::CONFIG)
            }
        },
        Command::CheckConfig { config } => match load(config.as_deref(), Overrides::default()) {
            Ok(c) => {
                let source = config
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "built-in defaults".into());
                // What the file leaves unset stays unset in the TOML below (copying it keeps the
                // exchange-dependent defaults); the comment lines say what they resolve to.
                let resolution = c.resolution_text();
                match toml::to_string(&c) {
                    Ok(text) => println!("# {source}: OK\n{resolution}\n{text}"),
                    Err(_) => println!("# {source}: OK\n{resolution}"),
                }
                code(exit::OK)
            }
            Err(e) => {
                eprintln!("tradebaas: configuration error: {e}");
                code(exit::CONFIG)
            }
        },
        Command::PaperExchange {
            listen,
            config,
            ticks_per_second,
        } => {
            let _ = logging::init(cli.log_format.unwrap_or(LogFormat::Text), "info");
            let mut paper = match load(config.as_deref(), Overrides::default()) {
                Ok(c) => c.paper_exchange,
                Err(e) => {
                    eprintln!("tradebaas: configuration error: {e}");
                    return code(exit::CONFIG);
                }
            };
            if let Some(t) = ticks_per_second {
                paper.ticks_per_second = t;
            }
            if let Err(e) = paper.validate() {
                eprintln!("tradebaas: configuration error: paper_exchange.{e}");
                return code(exit::CONFIG);
            }
            match runtime() {
                Ok(rt) => code(rt.block_on(paper_cmd::run(paper, listen))),
                Err(e) => {
                    eprintln!("tradebaas: cannot start the async runtime: {e}");
                    code(exit::FAILURE)
                }
            }
        }
        Command::State { action } => code(state_cmd::run(&action)),
        Command::Mode {
            mode,
            reason,
            target,
        } => {
            let request = match (mode, reason) {
                (None, _) => Request::Status {},
                (Some(mode), Some(reason)) => Request::Mode { mode, reason },
                (Some(_), None) => {
                    eprintln!(
                        "tradebaas: a mode change needs --reason \"…\" (it is stored with the change)"
                    );
                    return code(admin_cmd::exit::UNREACHABLE);
                }
            };
            operator(&target, &request)
        }
        Command::Alerts {
            action: AlertsAction::Ack { id, reason, target },
        } => operator(
            &target,
            &Request::AlertsAck {
                alert_id: id,
                reason,
            },
        ),
        Command::Status { url } => match runtime() {
            Ok(rt) => code(rt.block_on(status::run(&url))),
            Err(e) => {
                eprintln!("tradebaas: cannot start the async runtime: {e}");
                code(2)
            }
        },
    }
}
