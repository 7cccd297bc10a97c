//! Read-only readers for the integrity checks: one bounded `Slice` of the full walk, and the
//! `IntegrityFacts` (chain, snapshots, state) from one read transaction.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::store::archive::covered;
use crate::store::{SCHEMA_VERSION, SnapshotRow, StoreError};

use super::*;

/// One bounded slice of a full walk of the chain ([`verify_slice`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slice {
    /// The slice covered `after < seq <= through`.
    pub after: u64,
    pub through: u64,
    pub events: u64,
    /// It reached the newest event: the pass is complete (`quick_check` and the id
    /// uniqueness ran too); the next slice starts again at seq 1.
    pub done: bool,
    pub problems: Vec<String>,
}

/// Verifies at most `max` events after seq `after`, linked to the stored event at `after`
/// (which the previous slice verified), read-only. The periodic integrity check walks the whole
/// chain this way, a slice per run, so an edited old row is found within
/// `ceil(events / max)` runs without any run reading the whole log. The last slice of a pass
/// also runs `PRAGMA quick_check` and the duplicate-id query.
pub fn verify_slice(path: &Path, after: u64, max: u64) -> Result<Slice, StoreError> {
    let err = |e: rusqlite::Error| StoreError::Sqlite {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut conn = open_read_only(path).map_err(err)?;
    let tx = conn.transaction().map_err(err)?;
    let mut problems = Vec::new();
    let ranges = archived_ranges(&tx).map_err(err)?;
    let mut chain = if after == 0 {
        ChainVerifier::new()
    } else {
        match event_at(&tx, after).map_err(err)? {
            Some((Ok(hash), ts)) => ChainVerifier::resume(after, hash, &ts),
            Some((Err(edited), _)) => {
                problems.push(edited);
                ChainVerifier::new()
            }
            // Archived since the last slice: the walk goes on from the next live row.
            None if covered(&ranges, after, after) => {
                let mut c = ChainVerifier::resume(after, String::new(), "");
                c.link_unknown = true;
                c
            }
            None => {
                problems.push(format!(
                    "event seq {after} (where the last slice ended) no longer exists (events deleted)"
                ));
                ChainVerifier::new()
            }
        }
    };
    chain.archived = ranges;
    let through = after.saturating_add(max.max(1));
    for_each_event_in(&tx, after, through, |row| chain.push(&row)).map_err(err)?;
    let head: i64 = tx
        .query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))
        .map_err(err)?;
    let done = chain.last_seq >= u64::try_from(head).unwrap_or_default();
    if done {
        match quick_check(&tx) {
            Ok(lines) if lines == ["ok"] => {}
            Ok(lines) => problems.extend(lines.into_iter().map(|l| format!("quick_check: {l}"))),
            Err(e) => problems.push(format!("quick_check failed: {e}")),
        }
        duplicate_ids(&tx, &mut problems).map_err(err)?;
        rows_outside_chain(&tx, &mut problems).map_err(err)?;
    }
    problems.append(&mut chain.problems);
    Ok(Slice {
        after,
        through: chain.last_seq,
        events: chain.events,
        done,
        problems,
    })
}

/// What the integrity checks (`crate::checks`) read from a store: the verified event chain, the
/// snapshots and the raw state values, all from one read transaction (a consistent view even
/// while the daemon commits).
#[derive(Debug, Clone)]
pub struct IntegrityFacts {
    pub path: String,
    /// The walk: the events after `checkpoint_seq` for [`Scope::Tail`], all for [`Scope::Full`].
    pub chain: ChainVerifier,
    /// What was walked (a tail without a stored checkpoint is a full walk).
    pub scope: Scope,
    /// The checkpoint the walk resumed from.
    pub checkpoint_seq: Option<u64>,
    /// Oldest first.
    pub snapshots: Vec<SnapshotRow>,
    /// Every state key with its stored text (not parsed: an unreadable value is a finding).
    pub state: BTreeMap<String, String>,
}

/// Reads [`IntegrityFacts`] from the store at `path`, read-only (no lock, no migration, no
/// write): safe beside a running daemon. The event chain is streamed, never held in memory;
/// with [`Scope::Tail`] only the events after the stored [`Checkpoint`] are read.
pub fn read_integrity_facts(path: &Path, scope: Scope) -> Result<IntegrityFacts, StoreError> {
    let err = |e: rusqlite::Error| StoreError::Sqlite {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    if !path.exists() {
        return Err(StoreError::Sqlite {
            path: path.to_path_buf(),
            reason: "no such file".into(),
        });
    }
    let mut conn = open_read_only(path).map_err(err)?;
    let tx = conn.transaction().map_err(err)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("schema version {version}: not an initialised TradeBaas store"),
        });
    }
    let mut problems = Vec::new();
    let (start, checkpoint_seq) = start_point(&tx, scope, &mut problems).map_err(err)?;
    let scope = if checkpoint_seq.is_some() {
        scope
    } else {
        Scope::Full
    };
    let mut chain = match start {
        Some(mut chain) => {
            chain.archived = archived_ranges(&tx).map_err(err)?;
            for_each_event_after(&tx, checkpoint_seq.unwrap_or(0), |row| chain.push(&row))
                .map_err(err)?;
            chain
        }
        // The checkpoint itself is wrong: nothing after it can be trusted to link.
        None => ChainVerifier::untracked(),
    };
    if scope == Scope::Full {
        duplicate_ids(&tx, &mut problems).map_err(err)?;
    }
    rows_outside_chain(&tx, &mut problems).map_err(err)?;
    // The id set is only needed while walking; the report must not keep it alive.
    chain.ids = None;
    for p in problems {
        chain.problem(p);
    }
    let snapshots = if version >= 2 {
        crate::store::read_snapshots(&tx).map_err(err)?
    } else {
        Vec::new()
    };
    let mut state = BTreeMap::new();
    {
        let mut stmt = tx
            .prepare("SELECT key, value FROM state ORDER BY key")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(err)?;
        for row in rows {
            let (k, v) = row.map_err(err)?;
            state.insert(k, v);
        }
    }
    drop(tx);
    Ok(IntegrityFacts {
        path: path.display().to_string(),
        chain,
        scope,
        checkpoint_seq,
        snapshots,
        state,
    })
}
