//! Log output: human-readable lines by default, one JSON object per line with `--log-format
//! json` (event fields flattened to top-level keys, so `supervisor`, `child`, `event`, `reason`,
//! `restart_count` and `next_delay_ms` are keys of their own). Logs go to stderr, which systemd's
//! journal and Kubernetes both collect.
//!
//! The daemon's subscriber also counts ERROR-level events ([`ErrorCounter`] →
//! `tradebaas_errors_total`), from which the heartbeat derives the error rate per minute.

use prometheus::IntCounter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// A `tracing` layer that counts ERROR-level events (those the filter lets through).
pub struct ErrorCounter(pub IntCounter);

impl<S: Subscriber> Layer<S> for ErrorCounter {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() == Level::ERROR {
            self.0.inc();
        }
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `filter`. Safe to call twice
/// (the second call is ignored).
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    init_counting(format, filter, None)
}

/// [`init`], and every ERROR-level event increments `errors` (`tradebaas_errors_total`).
pub fn init_counting(
    format: LogFormat,
    filter: &str,
    errors: Option<IntCounter>,
) -> Result<(), String> {
    let env_filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v)
            .map_err(|e| format!("environment variable RUST_LOG: invalid filter {v:?}: {e}"))?,
        _ => EnvFilter::try_new(filter)
            .map_err(|e| format!("key `logging.filter`: invalid filter {filter:?}: {e}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let counter = errors.map(ErrorCounter);
    let result = match format {
        LogFormat::Text => builder.with_ansi(false).finish().with(counter).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(counter)
            .try_init(),
    };
    // Already installed (tests calling twice): keep the first.
    let _ = result;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::{error, info, warn};

    #[test]
    fn error_events_are_counted() {
        let counter = IntCounter::new("tradebaas_errors_total", "ERROR-level log events").unwrap();
        let subscriber = tracing_subscriber::registry().with(ErrorCounter(counter.clone()));
        tracing::subscriber::with_default(subscriber, || {
            info!("fine");
            warn!("hm");
            error!(reason = "x", "broken");
            error!("broken again");
        });
        assert_eq!(counter.get(), 2);
    }
}
