//! The `chain.verified` checkpoint: the newest verified point of the event chain, and where a
//! walk of a given `Scope` starts.

use rusqlite::Connection;
use serde::Serialize;

use crate::store::{EventRow, chain_hash};

use super::*;

/// The state key holding the newest verified point of the event chain ([`Checkpoint`]).
pub const CHECKPOINT_KEY: &str = "chain.verified";

/// "Every event up to `seq` was verified, and the event at `seq` has `hash`": where a start-up
/// verification resumes. Written with the `run.started` event once the store verified at open,
/// and as a `chain.checkpoint` event by the periodic integrity check after it verified the tail.
/// It protects itself: the event it names must still have that hash (an edit anywhere before it
/// changes every later hash, and the rows after it must link to it), and a checkpoint naming an
/// event that no longer exists is a finding (rows were deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    /// When it was verified (RFC 3339).
    pub at: String,
}

impl Checkpoint {
    /// A checkpoint at `seq`/`hash`, verified now.
    pub fn now(seq: u64, hash: String) -> Self {
        Self {
            seq,
            hash,
            at: crate::clock::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// How much of the event chain a verification walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `PRAGMA quick_check` and every event from seq 1 (`tradebaas state verify --full`, the
    /// periodic check's background slices): cost grows with history.
    Full,
    /// The events after the stored [`Checkpoint`] only, no `quick_check` (start-up, backups):
    /// cost independent of history. Without a checkpoint it is [`Scope::Full`].
    Tail,
}

/// Reads the stored checkpoint: `Ok(None)` when there is none; an unreadable one is an error
/// (a finding, not a reason to trust less or more).
pub(super) fn read_checkpoint(conn: &Connection) -> Result<Option<Checkpoint>, String> {
    let text: Option<String> = conn
        .query_row(
            "SELECT value FROM state WHERE key = ?1",
            [CHECKPOINT_KEY],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e.to_string()),
        })?;
    text.map(|t| {
        serde_json::from_str::<Checkpoint>(&t)
            .map_err(|e| format!("state key {CHECKPOINT_KEY:?} is not a checkpoint: {e}"))
    })
    .transpose()
}

/// The stored event at `seq`, by primary key: its hash when its contents still hash to it
/// (`Err` text when not: an edited row), and its timestamp.
pub(super) fn event_at(
    conn: &Connection,
    seq: u64,
) -> rusqlite::Result<Option<(Result<String, String>, String)>> {
    conn.query_row(
        "SELECT seq, event_id, ts, kind, payload, prev_hash, hash FROM events WHERE seq = ?1",
        [i64::try_from(seq).unwrap_or(i64::MAX)],
        |r| {
            let row = EventRow::from_row(r)?;
            let own = chain_hash(
                &row.prev_hash,
                row.seq,
                &row.event_id,
                &row.ts,
                &row.kind,
                &row.payload,
            );
            let hash = if own == row.hash {
                Ok(row.hash)
            } else {
                Err(format!(
                    "event seq {seq}: stored hash does not match its contents (edited row)"
                ))
            };
            Ok((hash, row.ts))
        },
    )
    .map(Some)
    .or_else(|e| match e {
        rusqlite::Error::QueryReturnedNoRows => Ok(None),
        e => Err(e),
    })
}

/// Where a walk of the chain starts: a verifier resumed after the checkpoint, or from seq 1 when
/// there is none (`None` when the checkpoint itself is wrong: the problem is in `problems`).
pub(super) fn start_point(
    conn: &Connection,
    scope: Scope,
    problems: &mut Vec<String>,
) -> rusqlite::Result<(Option<ChainVerifier>, Option<u64>)> {
    if scope == Scope::Full {
        return Ok((Some(ChainVerifier::untracked()), None));
    }
    let cp = match read_checkpoint(conn) {
        Ok(Some(cp)) => cp,
        Ok(None) => return Ok((Some(ChainVerifier::untracked()), None)),
        Err(e) => {
            problems.push(e);
            return Ok((None, None));
        }
    };
    if cp.seq == 0 {
        return Ok((Some(ChainVerifier::new()), Some(0)));
    }
    match event_at(conn, cp.seq)? {
        Some((Ok(hash), ts)) if hash == cp.hash => {
            Ok((Some(ChainVerifier::resume(cp.seq, hash, &ts)), Some(cp.seq)))
        }
        Some((Err(edited), _)) => {
            problems.push(edited);
            Ok((None, Some(cp.seq)))
        }
        Some(_) => {
            problems.push(format!(
                "event seq {}: its hash is not the one verified at {} (edited row)",
                cp.seq, cp.at
            ));
            Ok((None, Some(cp.seq)))
        }
        None => {
            problems.push(format!(
                "event seq {} was verified at {} and no longer exists (events deleted)",
                cp.seq, cp.at
            ));
            Ok((None, Some(cp.seq)))
        }
    }
}
