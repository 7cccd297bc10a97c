//! `tradebaas paper-exchange`: the paper exchange as a standalone server until SIGTERM/SIGINT.

use std::net::SocketAddr;

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

use crate::daemon::exit;
use crate::paper_exchange::{PaperConfig, PaperExchange};

/// Serves until a signal; returns the exit code.
pub async fn run(config: PaperConfig, listen: SocketAddr) -> i32 {
    let exchange = match PaperExchange::start(config, listen).await {
        Ok(x) => x,
        Err(e) => {
            error!("cannot start the paper exchange on {listen}: {e}");
            return exit::CONFIG;
        }
    };
    info!(url = %exchange.url(), "paper exchange listening");
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            error!("cannot install signal handlers");
            return exit::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    exchange.shutdown().await;
    info!("paper exchange stopped");
    exit::OK
}
