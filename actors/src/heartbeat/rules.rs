//! The heartbeat's pure rules: the sliding error window and the per-child run of missed rounds
//! that declares a wedge once and its recovery once. No actor, no I/O, no clock reads (the
//! caller passes `now`); imports only `names::ChildName`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::names::ChildName;

/// Counts a monotonically growing total (here `tradebaas_errors_total`) over a sliding window,
/// from samples taken every round. Pure: the caller passes the clock.
#[derive(Debug)]
pub struct ErrorWindow {
    span: Duration,
    /// (when, total); the front is the newest sample at or before `now - span` (the baseline).
    pub(super) samples: VecDeque<(Instant, u64)>,
}

impl ErrorWindow {
    /// A window of `span` (the heartbeat uses 60 s).
    pub fn new(span: Duration) -> Self {
        Self {
            span,
            samples: VecDeque::new(),
        }
    }

    /// Records `total` at `now`; returns how much it grew within the last `span` (since the
    /// first sample while the window is younger than `span`).
    pub fn record(&mut self, now: Instant, total: u64) -> u64 {
        self.samples.push_back((now, total));
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= self.span)
        {
            self.samples.pop_front();
        }
        let base = self.samples.front().map_or(total, |(_, b)| *b);
        total.saturating_sub(base)
    }

    /// The growth within the window scaled to one minute.
    pub fn per_minute(&mut self, now: Instant, total: u64) -> f64 {
        let count = self.record(now, total) as f64;
        let secs = self.span.as_secs_f64();
        if secs > 0.0 { count * 60.0 / secs } else { 0.0 }
    }
}

/// What a round means for one child's run of misses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do.
    Steady,
    /// It just reached the threshold of consecutive misses (this many): restrict and alert.
    Wedged(u32),
    /// It answers again after having been declared wedged: resolve the alert.
    Recovered,
}

/// Consecutive misses per child and which children are declared wedged. Pure.
#[derive(Debug, Default)]
pub struct Misses {
    runs: BTreeMap<ChildName, u32>,
    wedged: BTreeSet<ChildName>,
}

impl Misses {
    /// Records one round's outcome for `child`; `threshold` consecutive misses declare it
    /// wedged (once per episode).
    pub fn observe(&mut self, child: ChildName, answered: bool, threshold: u32) -> Verdict {
        if answered {
            self.runs.remove(&child);
            return if self.wedged.remove(&child) {
                Verdict::Recovered
            } else {
                Verdict::Steady
            };
        }
        let run = self.runs.entry(child).or_insert(0);
        *run = run.saturating_add(1);
        if *run >= threshold && self.wedged.insert(child) {
            Verdict::Wedged(*run)
        } else {
            Verdict::Steady
        }
    }
}
