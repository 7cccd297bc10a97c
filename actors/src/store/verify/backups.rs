//! The backups directory: names, listing, counting and pruning.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use crate::store::StoreError;

use super::*;

/// The name of a backup taken at `at`: `tradebaas-YYYYmmddTHHMMSSmmmZ.db` (sorts by time).
pub fn backup_file_name(at: DateTime<Utc>) -> String {
    format!("tradebaas-{}.db", at.format("%Y%m%dT%H%M%S%3fZ"))
}

fn parse_backup_name(name: &str) -> Option<DateTime<Utc>> {
    let stamp = name.strip_prefix("tradebaas-")?.strip_suffix("Z.db")?;
    NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%3f")
        .ok()
        .map(|n| n.and_utc())
}

/// A file in the backups directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupInfo {
    pub path: PathBuf,
    /// From the file name.
    pub taken_at: DateTime<Utc>,
    pub size_bytes: u64,
    /// The verification of the file ([`verify`]).
    pub verified: VerifyReport,
}

pub(super) fn backup_paths(dir: &Path) -> Vec<(PathBuf, DateTime<Utc>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            parse_backup_name(&name).map(|t| (e.path(), t))
        })
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    out
}

/// The backups in `dir`, newest first, each verified. A missing directory has none.
pub fn list_backups(dir: &Path) -> Vec<BackupInfo> {
    // A backup's archived rows are in the data directory's archives (sealed, append-only).
    let archives = dir
        .parent()
        .map_or_else(|| PathBuf::from("archives"), |d| d.join("archives"));
    backup_paths(dir)
        .into_iter()
        .map(|(path, taken_at)| BackupInfo {
            size_bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
            verified: verify_with_archives(&path, Scope::Full, &archives),
            path,
            taken_at,
        })
        .collect()
}

/// How many backups `dir` holds (by name; not verified).
pub fn backup_count(dir: &Path) -> usize {
    backup_paths(dir).len()
}

/// Deletes all but the newest `keep` backups in `dir`, and `.partial` leftovers of interrupted
/// backups; returns how many backups remain. Only the backup writer may call it.
pub fn prune_backups(dir: &Path, keep: usize) -> Result<usize, StoreError> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("tradebaas-") && name.ends_with(".db.partial") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let all = backup_paths(dir);
    for (path, _) in all.iter().skip(keep) {
        std::fs::remove_file(path).map_err(|e| StoreError::Sqlite {
            path: path.clone(),
            reason: format!("cannot delete an old backup: {e}"),
        })?;
    }
    Ok(all.len().min(keep))
}
