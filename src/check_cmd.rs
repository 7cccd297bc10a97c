//! `tradebaas check`: the offline subset of the start-up checks (every check but `exchange`;
//! capital checked for consistency, not compared with the exchange) on the configured data
//! directory's store, opened read-only. It takes no lock and writes nothing, so it runs beside a
//! running daemon. Prints the same report the daemon shows in `/health`.

use tradebaas_actors::checks::{ChecksReport, run_offline};

use crate::config::Config;

/// Runs the offline checks for `config` and prints the report (text, or JSON with `json`).
/// Returns the exit code: 0 when every check passed, 1 otherwise.
pub fn run(config: &Config, json: bool) -> i32 {
    let path = crate::state_cmd::store_path(&config.server.data_dir);
    let report = run_offline(&path, &config.checks);
    print(&report, &path, json);
    if report.passed { 0 } else { 1 }
}

fn print(report: &ChecksReport, path: &std::path::Path, json: bool) {
    use std::io::Write;
    let text = if json {
        match serde_json::to_string_pretty(report) {
            Ok(text) => format!("{text}\n"),
            Err(e) => {
                eprintln!("tradebaas: cannot encode the report: {e}");
                return;
            }
        }
    } else {
        format!("store {}\n{}", path.display(), report.render_text())
    };
    // A closed pipe (`| head`) is not worth a panic; the exit code still tells the verdict.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
