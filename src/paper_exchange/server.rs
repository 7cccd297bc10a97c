//! The exchange's long-running tasks: the accept loop (with connection refusal) that spawns one
//! connection task per client and waits for them at shutdown, and the market task that advances
//! the random walk in batches sized by elapsed time × rate.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{Instrument, debug, info_span, warn};

use super::connection;
use super::shared::{Shared, now_instant};

/// Where the exchange listens: a TCP socket, or an in-process name (`memory://<name>`).
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Memory(tradebaas_actors::memory_net::Listener),
}

impl Listener {
    /// The next connection and a peer name for the logs.
    async fn accept(&mut self) -> std::io::Result<(connection::Stream, String)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                // Loopback latency matters more than packet count here.
                let _ = stream.set_nodelay(true);
                Ok((Box::new(stream), peer.to_string()))
            }
            Listener::Memory(listener) => match listener.accept().await {
                Some(stream) => Ok((Box::new(stream), format!("memory://{}", listener.name()))),
                // Never: the listener holds the name until it is dropped.
                None => std::future::pending().await,
            },
        }
    }
}

/// Accepts connections until shutdown, then waits for every connection task to end.
pub(crate) async fn run_accept(shared: Arc<Shared>, mut listener: Listener) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if shared.lock_faults().refusing(Instant::now()) {
                        shared.stats.refused(now_instant());
                        debug!(%peer, "fault: connection refused before the handshake");
                        drop(stream);
                        continue;
                    }
                    shared.stats.accepted(now_instant());
                    let id = shared.next_connection_id();
                    let span = info_span!("paper_conn", conn_id = id);
                    connections.spawn(
                        connection::run(Arc::clone(&shared), stream, peer, id).instrument(span),
                    );
                }
                Err(err) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    warn!(%err, "paper exchange accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// The timer period of the market task: one tick per wake-up at low rates, never faster than
/// 1 ms (high rates are produced in batches) nor slower than 10 s. A slow market wakes only when
/// it has a tick to send: a simulation of weeks on paused time at a tick every 20 s costs 60 k
/// wake-ups, not the 12 M of a fixed 100 ms timer.
pub(crate) fn market_period(ticks_per_second: f64) -> Duration {
    Duration::from_secs_f64((1.0 / ticks_per_second).clamp(0.001, 10.0))
}

/// Advances the market at `ticks_per_second` per instrument until shutdown.
pub(crate) async fn run_market(shared: Arc<Shared>) {
    let rate = shared.config.ticks_per_second;
    let instruments = shared.instruments.len();
    // A late wake-up (busy machine, paused runtime) produces at most 100 ms worth of ticks (at
    // low rates at most two, so a wake-up a little late still sends the tick it is due).
    let max_backlog = (rate * 0.1).max(2.0);
    let mut carry = vec![0.0f64; instruments];
    let mut counts = vec![0u32; instruments];
    let mut timer = tokio::time::interval(market_period(rate));
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = timer.tick() => {}
        }
        let now = Instant::now();
        let elapsed = now.duration_since(last).as_secs_f64();
        last = now;
        for pending in carry.iter_mut() {
            *pending = (*pending + elapsed * rate).min(max_backlog);
        }
        // Generate in chunks and yield between them: one long synchronous batch would hold
        // the engine lock and starve the connection tasks (and a client on the same runtime)
        // that are meant to drain the ticks.
        loop {
            let mut any = false;
            for (pending, count) in carry.iter_mut().zip(counts.iter_mut()) {
                let whole = pending.floor().min(f64::from(CHUNK));
                *pending -= whole;
                // `whole` is at most CHUNK.
                *count = whole as u32;
                any |= *count > 0;
            }
            if !any {
                break;
            }
            shared.advance_market(&counts);
            tokio::task::yield_now().await;
        }
    }
}

/// Most ticks per instrument generated under one engine lock.
const CHUNK: u32 = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_period_is_clamped() {
        assert_eq!(market_period(10.0), Duration::from_millis(100));
        assert_eq!(market_period(1.0), Duration::from_secs(1));
        assert_eq!(market_period(0.05), Duration::from_secs(10));
        assert_eq!(market_period(50_000.0), Duration::from_millis(1));
        assert_eq!(market_period(500.0), Duration::from_millis(2));
    }
}
