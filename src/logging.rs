//! Log output: human-readable lines by default, one JSON object per line with `--log-format
//! json` (event fields flattened to top-level keys, so `supervisor`, `child`, `event`, `reason`,
//! `restart_count` and `next_delay_ms` are keys of their own). Logs go to stderr, which systemd's
//! journal and Kubernetes both collect.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `filter`. Safe to call twice
/// (the second call is ignored).
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let env_filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v)
            .map_err(|e| format!("environment variable RUST_LOG: invalid filter {v:?}: {e}"))?,
        _ => EnvFilter::try_new(filter)
            .map_err(|e| format!("key `logging.filter`: invalid filter {filter:?}: {e}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    // Already installed (tests calling twice): keep the first.
    let _ = result;
    Ok(())
}
