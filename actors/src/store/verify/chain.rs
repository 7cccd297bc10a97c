//! The streaming walk of the event chain: `for_each_event_*` and `ChainVerifier`.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use crate::store::archive::{archive_entries, covered};
use crate::store::{EventRow, GENESIS_HASH, chain_hash};

use super::*;

/// Streams the events with a seq above `after`, oldest first, into `f` (by primary key; one
/// row in memory at a time).
pub(crate) fn for_each_event_after(
    conn: &Connection,
    after: u64,
    f: impl FnMut(EventRow),
) -> rusqlite::Result<()> {
    for_each_event_in(conn, after, u64::MAX, f)
}

/// Streams the events with `after < seq <= through`, oldest first, into `f`.
pub(crate) fn for_each_event_in(
    conn: &Connection,
    after: u64,
    through: u64,
    mut f: impl FnMut(EventRow),
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT seq, event_id, ts, kind, payload, prev_hash, hash FROM events \
         WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
    )?;
    let bound = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut rows = stmt.query([bound(after), bound(through)])?;
    while let Some(r) = rows.next()? {
        f(EventRow::from_row(r)?);
    }
    Ok(())
}

/// Verifies the event chain one row at a time, oldest first: seq continuous from 1, unique ids,
/// recomputed hashes, `prev_hash` links, parseable and non-decreasing timestamps, JSON payloads.
/// Used by [`verify`] and by the integrity checks (`crate::checks`), which also look at
/// [`ChainVerifier::newest_ts`] (timestamps in the future).
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_seq: u64,
    pub(super) prev_hash: String,
    prev_ts: Option<DateTime<Utc>>,
    /// The ids seen, for a bounded walk; `None` for a full walk, where [`duplicate_ids`] asks
    /// the index instead (an id set of a year of events is hundreds of MB).
    pub(super) ids: Option<HashSet<String>>,
    /// Events seen.
    pub events: u64,
    /// The last event's seq.
    pub last_seq: u64,
    /// The newest timestamp seen.
    pub newest_ts: Option<DateTime<Utc>>,
    /// What is wrong, at most [`MAX_LISTED_PROBLEMS`] listed (then one "more" line).
    pub problems: Vec<String>,
    /// Seq ranges moved to archives: a live-only walk accepts a gap inside them (their links
    /// are checked by the merged walk of `verify --full`).
    pub(super) archived: Vec<(u64, u64)>,
    /// Gaps accepted because archives cover them.
    pub gaps_archived: u64,
    /// The previous row was archived: the next row's link cannot be checked in a live walk.
    pub(super) link_unknown: bool,
}

/// The archived seq ranges, sorted (empty before schema 3).
pub(super) fn archived_ranges(conn: &Connection) -> rusqlite::Result<Vec<(u64, u64)>> {
    Ok(archive_entries(conn)?
        .into_iter()
        .map(|e| (e.first_seq, e.last_seq))
        .collect())
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    /// Before the first event.
    pub fn new() -> Self {
        Self {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
            prev_ts: None,
            ids: Some(HashSet::new()),
            events: 0,
            last_seq: 0,
            newest_ts: None,
            problems: Vec::new(),
            archived: Vec::new(),
            gaps_archived: 0,
            link_unknown: false,
        }
    }

    /// Before the first event, without an id set (uniqueness is checked by [`duplicate_ids`]).
    pub(super) fn untracked() -> Self {
        Self {
            ids: None,
            ..Self::new()
        }
    }

    /// After the verified event `seq` with `hash` and timestamp `ts`.
    pub fn resume(seq: u64, hash: String, ts: &str) -> Self {
        let prev_ts = DateTime::parse_from_rfc3339(ts)
            .ok()
            .map(|t| t.with_timezone(&Utc));
        Self {
            expected_seq: seq.saturating_add(1),
            prev_hash: hash,
            prev_ts,
            last_seq: seq,
            newest_ts: prev_ts,
            ..Self::new()
        }
    }

    /// The hash of the last event pushed (of the checkpoint for a resumed walk with none yet).
    pub fn last_hash(&self) -> &str {
        &self.prev_hash
    }

    pub(super) fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_LISTED_PROBLEMS {
            self.problems.push(p);
        } else if self.problems.len() == MAX_LISTED_PROBLEMS {
            self.problems.push("… more problems not listed".into());
        }
    }

    /// Checks the next event (rows must come in stored `seq` order).
    pub fn push(&mut self, row: &EventRow) {
        let seq = row.seq;
        self.events += 1;
        let across_archive =
            seq > self.expected_seq && covered(&self.archived, self.expected_seq, seq - 1);
        if across_archive {
            self.gaps_archived += 1;
        } else if seq != self.expected_seq {
            self.problem(format!(
                "event seq {seq}: expected seq {} (gap or reorder)",
                self.expected_seq
            ));
        }
        if let Some(ids) = &mut self.ids
            && !ids.insert(row.event_id.clone())
        {
            self.problem(format!(
                "event seq {seq}: duplicate event id {}",
                row.event_id
            ));
        }
        if !across_archive
            && !std::mem::take(&mut self.link_unknown)
            && row.prev_hash != self.prev_hash
        {
            self.problem(format!(
                "event seq {seq}: prev_hash does not link to the previous event's hash"
            ));
        }
        if chain_hash(
            &row.prev_hash,
            seq,
            &row.event_id,
            &row.ts,
            &row.kind,
            &row.payload,
        ) != row.hash
        {
            self.problem(format!(
                "event seq {seq}: stored hash does not match its contents (edited row)"
            ));
        }
        match DateTime::parse_from_rfc3339(&row.ts) {
            Ok(t) => {
                let t = t.with_timezone(&Utc);
                if let Some(p) = self.prev_ts
                    && t < p
                {
                    self.problem(format!(
                        "event seq {seq}: timestamp {} is before the previous event's",
                        row.ts
                    ));
                }
                self.prev_ts = Some(t);
                self.newest_ts = Some(self.newest_ts.map_or(t, |n| n.max(t)));
            }
            Err(e) => self.problem(format!("event seq {seq}: bad timestamp {:?}: {e}", row.ts)),
        }
        if serde_json::from_str::<serde_json::Value>(&row.payload).is_err() {
            self.problem(format!("event seq {seq}: payload is not JSON"));
        }
        self.last_seq = seq;
        self.expected_seq = seq.saturating_add(1);
        self.prev_hash = row.hash.clone();
    }
}
