//! `event_log` (the hash chain and timestamps) and `snapshots` (order, timestamps, payloads). Pure.

use chrono::{DateTime, Utc};
use std::time::Duration;

use super::{Check, EVENT_LOG, SNAPSHOTS};
use serde_json::Value;

use crate::store::{IntegrityFacts, Scope, SnapshotRow};

/// `event_log`: the chain verification plus timestamps not later than `now + skew`.
pub fn event_log(facts: &IntegrityFacts, now: DateTime<Utc>, skew: Duration) -> Check {
    let chain = &facts.chain;
    let mut problems = chain.problems.clone();
    let limit = now + chrono::Duration::from_std(skew).unwrap_or(chrono::Duration::MAX);
    if let Some(newest) = chain.newest_ts
        && newest > limit
    {
        problems.push(format!(
            "newest event timestamp {} is in the future (now {}, clock_skew {})",
            newest.to_rfc3339(),
            now.to_rfc3339(),
            format_args!("{skew:?}")
        ));
    }
    let walked = match (facts.scope, facts.checkpoint_seq) {
        (Scope::Tail, Some(cp)) => {
            format!("{} events after the checkpoint at seq {cp}", chain.events)
        }
        _ => format!("{} events", chain.events),
    };
    Check::from_problems(
        EVENT_LOG,
        format!("{walked}, last seq {}, hash chain intact", chain.last_seq),
        &problems,
    )
}

/// `snapshots`: unique ids and times, strictly chronological, not in the future beyond `skew`,
/// each recorded after the previous one's event and not after the last event, payloads JSON
/// objects.
pub fn snapshots(rows: &[SnapshotRow], last_seq: u64, now: DateTime<Utc>, skew: Duration) -> Check {
    let limit = now + chrono::Duration::from_std(skew).unwrap_or(chrono::Duration::MAX);
    let mut problems = Vec::new();
    let mut prev: Option<(i64, DateTime<Utc>, u64)> = None;
    for row in rows {
        let id = row.id;
        let taken_at = match DateTime::parse_from_rfc3339(&row.taken_at) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => {
                problems.push(format!(
                    "snapshot {id}: bad taken_at {:?}: {e}",
                    row.taken_at
                ));
                continue;
            }
        };
        if let Some((pid, pt, pseq)) = prev {
            if id <= pid {
                problems.push(format!("snapshot {id}: id not after the previous {pid}"));
            }
            if taken_at <= pt {
                problems.push(format!(
                    "snapshot {id}: taken_at {} is not after the previous one ({})",
                    row.taken_at,
                    pt.to_rfc3339()
                ));
            }
            if row.event_seq <= pseq {
                problems.push(format!(
                    "snapshot {id}: event seq {} is not after the previous snapshot's {pseq}",
                    row.event_seq
                ));
            }
        }
        if taken_at > limit {
            problems.push(format!(
                "snapshot {id}: taken_at {} is in the future",
                row.taken_at
            ));
        }
        if row.event_seq > last_seq {
            problems.push(format!(
                "snapshot {id}: event seq {} is past the last event ({last_seq})",
                row.event_seq
            ));
        }
        if !serde_json::from_str::<Value>(&row.payload).is_ok_and(|v| v.is_object()) {
            problems.push(format!("snapshot {id}: payload is not a JSON object"));
        }
        prev = Some((id, taken_at, row.event_seq));
    }
    let ok = match rows.last() {
        Some(r) => format!("{} snapshots, newest {}", rows.len(), r.taken_at),
        None => "no snapshots yet".into(),
    };
    Check::from_problems(SNAPSHOTS, ok, &problems)
}
