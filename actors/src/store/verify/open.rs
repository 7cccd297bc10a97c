//! Opening the store for the daemon with recovery: verify, move a failed file aside (never
//! deleted), restore the newest backup that verifies, else start fresh; `OpenReport`.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::store::{SCHEMA_VERSION, Store, StoreError};

use super::*;

/// What [`open_verified`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OpenReport {
    /// A new, empty store was created (none existed, or nothing good was left).
    pub created: bool,
    /// The backup copied into place.
    pub restored_from: Option<String>,
    /// Where the failed store was moved (`<name>.corrupt-<UTC>`; never deleted).
    pub moved_aside: Option<String>,
    /// Why the store was moved aside.
    pub reason: Option<String>,
    /// The previous run did not stop cleanly (no `run.stopped`).
    pub crashed: bool,
}

impl OpenReport {
    /// The store was moved aside (and maybe restored): start in OBSERVE_ONLY and raise a
    /// CRITICAL alert.
    pub fn degraded(&self) -> bool {
        self.moved_aside.is_some() || self.restored_from.is_some()
    }
}

pub(super) fn companions(path: &Path) -> [PathBuf; 2] {
    let with = |suffix: &str| {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    [with("-wal"), with("-shm")]
}

/// Renames the store (and its `-wal`/`-shm`) to `<name>.corrupt-<UTC>`; returns the new name.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stamp = crate::clock::now().format("%Y%m%dT%H%M%SZ");
    let mut target = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{}.corrupt-{stamp}-{n}", path.display()));
        n += 1;
    }
    let io = |e: std::io::Error| StoreError::Sqlite {
        path: path.to_path_buf(),
        reason: format!(
            "cannot move the failed store aside to {}: {e}",
            target.display()
        ),
    };
    if path.exists() {
        std::fs::rename(path, &target).map_err(io)?;
    }
    for (from, to) in companions(path).iter().zip(companions(&target).iter()) {
        if from.exists() {
            std::fs::rename(from, to).map_err(io)?;
        }
    }
    Ok(target)
}

/// Copies `backup` to `path` (through a temporary file and a rename, fsynced).
fn restore(backup: &Path, path: &Path) -> Result<(), StoreError> {
    let io = |e: std::io::Error| StoreError::Sqlite {
        path: path.to_path_buf(),
        reason: format!("cannot restore {}: {e}", backup.display()),
    };
    let tmp = PathBuf::from(format!("{}.restoring", path.display()));
    std::fs::copy(backup, &tmp).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Opens the store at `path` for the daemon, recovering from a damaged file:
///
/// - missing → a fresh store (`created`);
/// - fails [`verify`] (not a database, empty, truncated, quick_check, broken chain, edited row) →
///   moved aside (never deleted), the newest backup in `backups_dir` that verifies is copied in
///   place (`restored_from`), else a fresh store;
/// - written by a newer binary → [`StoreError::TooNew`] (nothing is moved: refuse to start).
///
/// Then records the start of the run (see [`Store::begin_run`]) and reports whether the previous
/// run crashed. When [`OpenReport::degraded`], start in OBSERVE_ONLY and raise a CRITICAL alert.
/// A file that holds no committed TradeBaas data at all: zero bytes, or an SQLite database with
/// `user_version` 0 and no schema objects. Anything unreadable is not blank (it is corrupt).
fn is_blank(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(m) if m.len() == 0 => return true,
        Ok(_) => {}
        Err(_) => return false,
    }
    let Ok(conn) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return false;
    };
    let version: Result<i64, _> = conn.query_row("PRAGMA user_version", [], |r| r.get(0));
    let objects: Result<i64, _> =
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0));
    matches!((version, objects), (Ok(0), Ok(0)))
}

pub fn open_verified(path: &Path, backups_dir: &Path) -> Result<(Store, OpenReport), StoreError> {
    let mut report = OpenReport::default();
    // The head this open verified: stored as the chain's checkpoint with `run.started`.
    let mut verified: Option<(u64, String)> = None;
    let failure = if path.exists() && is_blank(path) && backup_paths(backups_dir).is_empty() {
        // The very first initialisation was interrupted before its first commit (the schema is
        // created in one transaction): nothing was ever stored, so there is nothing to lose or
        // restore. Initialise it in place instead of raising a false CRITICAL alert.
        tracing::warn!(
            store = %path.display(),
            "store exists but was never initialised (first start interrupted); initialising it"
        );
        report.created = true;
        None
    } else if path.exists() {
        let check = verify_tail(path);
        if check.too_new() {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: check.schema_version.unwrap_or_default(),
                supported: SCHEMA_VERSION,
            });
        }
        if check.ok {
            verified = check.last_hash.clone().map(|h| (check.last_seq, h));
            tracing::info!(store = %path.display(), scope = ?check.scope, checkpoint_seq = ?check.checkpoint_seq, events = check.events, "store chain verified");
        }
        (!check.ok).then(|| check.summary())
    } else if companions(path).iter().any(|c| c.exists()) {
        // A WAL without its database would be replayed into a new, empty file: never open it.
        Some("the store file is missing but its -wal/-shm exist (deleted while in use?)".into())
    } else {
        report.created = true;
        None
    };
    let accepted_in_place = failure.is_none() && !report.created;
    if let Some(reason) = failure {
        verified = recover(path, backups_dir, reason, &mut report)?;
    }
    let opened = Store::open(path).and_then(|mut store| {
        let crashed = store.begin_run(verified.clone())?;
        Ok((store, crashed))
    });
    let (store, crashed) = match opened {
        Ok(pair) => pair,
        // The start-up verification reads only the tail and skips `quick_check`: damage it
        // did not read (a broken page under the state table or an index, say) can still fail
        // the open. When the full verification confirms the file is damaged, it is moved aside
        // like any failed store instead of refusing to start.
        Err(e) if accepted_in_place && !matches!(e, StoreError::TooNew { .. }) => {
            let full = verify(path);
            if full.ok {
                return Err(e);
            }
            let reason = format!("{e} (full verification: {})", full.summary());
            verified = recover(path, backups_dir, reason, &mut report)?;
            let mut store = Store::open(path)?;
            let crashed = store.begin_run(verified)?;
            (store, crashed)
        }
        Err(e) => return Err(e),
    };
    report.crashed = crashed;
    Ok((store, report))
}

/// Moves the failed store aside and restores the newest backup that verifies (else leaves no
/// file: a fresh store is created); returns the restored head, the checkpoint for `begin_run`.
fn recover(
    path: &Path,
    backups_dir: &Path,
    reason: String,
    report: &mut OpenReport,
) -> Result<Option<(u64, String)>, StoreError> {
    let aside = move_aside(path)?;
    tracing::error!(
        store = %path.display(),
        moved_aside = %aside.display(),
        reason = %reason,
        "the store failed verification and was moved aside"
    );
    report.moved_aside = Some(aside.display().to_string());
    report.reason = Some(reason);
    let good = backup_paths(backups_dir).into_iter().find_map(|(p, _)| {
        let r = verify_tail(&p);
        r.ok.then(|| (p, r.last_hash.map(|h| (r.last_seq, h))))
    });
    match good {
        Some((backup, head)) => {
            restore(&backup, path)?;
            tracing::warn!(store = %path.display(), backup = %backup.display(), "store restored from backup");
            report.restored_from = Some(backup.display().to_string());
            Ok(head)
        }
        None => {
            tracing::warn!(store = %path.display(), "no backup verifies; starting with a fresh store");
            report.created = true;
            Ok(None)
        }
    }
}
