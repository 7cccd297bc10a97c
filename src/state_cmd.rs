//! `tradebaas state verify|export|backups`: read-only views of the durable store.
//!
//! Every command opens the store read-only (WAL lets it run beside the daemon) and prints JSON to
//! stdout. Nothing secret is ever stored (invariant 6), so the export has nothing to redact; keep
//! it that way.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};
use tradebaas_actors::store::{
    BackupInfo, EventRow, Scope, SnapshotRow, Store, StoreError, list_backups, verify_scoped,
};

use crate::cli::StateAction;

/// The store file inside a data directory.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tradebaas.db")
}

/// The backups directory inside a data directory.
pub fn backups_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("backups")
}

/// What `state export` prints.
#[derive(Debug, Serialize)]
pub struct Export {
    pub path: String,
    pub schema_version: i64,
    pub state: std::collections::BTreeMap<String, Value>,
    pub events: Vec<EventRow>,
    pub snapshots: Vec<SnapshotRow>,
}

/// Reads everything from the store at `path`, read-only.
pub fn export(path: &Path) -> Result<Export, StoreError> {
    let store = Store::open_read_only(path)?;
    let schema_version = store.schema_version()?;
    Ok(Export {
        path: path.display().to_string(),
        schema_version,
        state: store.state()?,
        events: store.events(0, usize::MAX)?,
        snapshots: if schema_version >= 2 {
            store.snapshots()?
        } else {
            Vec::new()
        },
    })
}

fn print(value: &impl Serialize) -> bool {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            true
        }
        Err(e) => {
            eprintln!("tradebaas: cannot print JSON: {e}");
            false
        }
    }
}

/// Runs a `state` command; returns the exit code (0 ok, 1 problems or failure).
pub fn run(action: &StateAction) -> i32 {
    match action {
        StateAction::Verify { dir, full } => {
            let scope = if *full { Scope::Full } else { Scope::Tail };
            let report = verify_scoped(&store_path(&dir.data_dir), scope);
            if !print(&report) {
                return 1;
            }
            if report.ok {
                0
            } else {
                eprintln!("tradebaas: store has problems: {}", report.summary());
                1
            }
        }
        StateAction::Export { dir } => match export(&store_path(&dir.data_dir)) {
            Ok(e) => {
                if print(&e) {
                    0
                } else {
                    1
                }
            }
            Err(e) => {
                eprintln!("tradebaas: {e}");
                1
            }
        },
        StateAction::BenchWrites { dir, count, acks } => bench_writes(&dir.data_dir, *count, *acks),
        StateAction::Backups { dir } => {
            let backups: Vec<BackupInfo> = list_backups(&backups_dir(&dir.data_dir));
            let all_ok = backups.iter().all(|b| b.verified.ok);
            let out = json!({
                "backups_dir": backups_dir(&dir.data_dir).display().to_string(),
                "count": backups.len(),
                "backups": backups,
            });
            if !print(&out) {
                return 1;
            }
            if all_ok { 0 } else { 1 }
        }
    }
}

/// `state bench-writes`: durable commits on a scratch store, with optional acknowledgements.
fn bench_writes(data_dir: &Path, count: u64, acks: bool) -> i32 {
    use std::io::Write as _;
    use std::time::Instant;

    use tradebaas_actors::store::{Change, DataDirLock, open_verified};

    if let Err(e) = std::fs::create_dir_all(data_dir) {
        eprintln!("tradebaas: cannot create {}: {e}", data_dir.display());
        return 1;
    }
    let _lock = match DataDirLock::acquire(data_dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tradebaas: {e}");
            return 2;
        }
    };
    let (mut store, report) = match open_verified(&store_path(data_dir), &backups_dir(data_dir)) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("tradebaas: {e}");
            return 1;
        }
    };
    if report.degraded() {
        eprintln!("tradebaas: store was restored: {report:?}");
    }
    let mut out = std::io::stdout().lock();
    let mut lat = Vec::new();
    let mut n: u64 = 0;
    while count == 0 || n < count {
        let change = Change::event("bench.write", json!({ "n": n }))
            .set(format!("bench.key{}", n % 16), json!(n));
        let t = Instant::now();
        match store.commit(&change) {
            Ok(c) => {
                lat.push(t.elapsed());
                if acks
                    && writeln!(out, "ack {} {n}", c.seq)
                        .and_then(|()| out.flush())
                        .is_err()
                {
                    return 1;
                }
            }
            Err(e) => {
                eprintln!("tradebaas: commit failed: {e}");
                return 1;
            }
        }
        n += 1;
    }
    let _ = store.mark_clean();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len().saturating_sub(1)) as f64 * p).round() as usize)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    };
    println!(
        "{n} durable commits: p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    0
}
