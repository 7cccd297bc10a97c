//! Counters of what the exchange saw and did, and the [`PaperStats`] snapshot tests read.
//! Hot counters are atomics so the tick path never takes a lock for them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

/// Longest method name recorded as is; longer (or past [`MAX_METHODS`]) ones count as `<other>`.
const MAX_METHOD_LEN: usize = 64;
/// Distinct method names recorded; protects the map from clients inventing names.
const MAX_METHODS: usize = 256;
/// Connection times kept for `accepted_at` / `refused_at`.
const MAX_TIMES: usize = 10_000;
/// Distinct order labels counted (as many as orders are kept); later new labels count as
/// `<other>`, so a long paper run cannot grow the map without bound.
const MAX_LABELS: usize = 10_000;

/// A snapshot of the exchange's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PaperStats {
    /// TCP connections accepted and served (refused ones excluded).
    pub connections_accepted: u64,
    /// TCP connections closed at once because of [`super::FaultControl::refuse_for`].
    pub connections_refused: u64,
    /// Connections currently open.
    pub active_connections: usize,
    /// When each refused attempt happened (the last 10,000), for measuring client backoff.
    pub refused_at: Vec<Instant>,
    /// When each accepted connection arrived (the last 10,000).
    pub accepted_at: Vec<Instant>,
    /// Requests received per method (parseable requests only).
    pub requests_by_method: BTreeMap<String, u64>,
    /// `private/buy` and `private/sell` requests received per `label` param (unlabelled ones are
    /// not counted), whatever became of them: how often a client sent an order with one label.
    pub order_requests_by_label: BTreeMap<String, u64>,
    /// Ticker notifications written to connections.
    pub ticks_sent: u64,
    /// Ticker notifications skipped because a connection lagged behind.
    pub ticks_dropped_lagging: u64,
    /// Heartbeat `test_request`s sent.
    pub test_requests_sent: u64,
    /// `test_request`s answered with `public/test` in time.
    pub test_requests_answered: u64,
    /// Connections closed because a `test_request` went unanswered.
    pub closed_for_missed_heartbeat: u64,
    /// Requests answered with a parse / invalid-request / unknown-method / invalid-params error,
    /// plus binary frames and frames the WebSocket layer rejected.
    pub malformed_requests: u64,
}

impl PaperStats {
    /// The `paper/stats` result: instants become milliseconds since `origin` (exchange start).
    pub(crate) fn to_json(&self, origin: Instant) -> Value {
        let offsets = |times: &[Instant]| -> Vec<f64> {
            times
                .iter()
                .map(|t| t.saturating_duration_since(origin).as_secs_f64() * 1000.0)
                .collect()
        };
        json!({
            "connections_accepted": self.connections_accepted,
            "connections_refused": self.connections_refused,
            "active_connections": self.active_connections,
            "refused_at": offsets(&self.refused_at),
            "accepted_at": offsets(&self.accepted_at),
            "requests_by_method": self.requests_by_method,
            "order_requests_by_label": self.order_requests_by_label,
            "ticks_sent": self.ticks_sent,
            "ticks_dropped_lagging": self.ticks_dropped_lagging,
            "test_requests_sent": self.test_requests_sent,
            "test_requests_answered": self.test_requests_answered,
            "closed_for_missed_heartbeat": self.closed_for_missed_heartbeat,
            "malformed_requests": self.malformed_requests,
        })
    }
}

#[derive(Debug, Default)]
struct Lists {
    refused_at: Vec<Instant>,
    accepted_at: Vec<Instant>,
    requests_by_method: BTreeMap<String, u64>,
    order_requests_by_label: BTreeMap<String, u64>,
}

/// The live counters behind [`PaperStats`].
#[derive(Debug, Default)]
pub(crate) struct StatsCounters {
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub active_connections: AtomicUsize,
    pub ticks_sent: AtomicU64,
    pub ticks_dropped_lagging: AtomicU64,
    pub test_requests_sent: AtomicU64,
    pub test_requests_answered: AtomicU64,
    pub closed_for_missed_heartbeat: AtomicU64,
    pub malformed_requests: AtomicU64,
    lists: Mutex<Lists>,
}

/// Increments an atomic counter (statistics only: relaxed ordering is enough).
pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Counts `key` in `map`; a new key longer than `max_len`, or past `max_keys` keys, counts as
/// `<other>`.
fn count_bounded(map: &mut BTreeMap<String, u64>, key: &str, max_len: usize, max_keys: usize) {
    let known = map.contains_key(key);
    let key = if known || (key.len() <= max_len && map.len() < max_keys) {
        key
    } else {
        "<other>"
    };
    match map.get_mut(key) {
        Some(count) => *count += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

fn push_bounded(times: &mut Vec<Instant>, at: Instant) {
    if times.len() >= MAX_TIMES {
        times.remove(0);
    }
    times.push(at);
}

impl StatsCounters {
    fn lists(&self) -> std::sync::MutexGuard<'_, Lists> {
        self.lists
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records an accepted connection.
    pub fn accepted(&self, at: Instant) {
        bump(&self.connections_accepted, 1);
        push_bounded(&mut self.lists().accepted_at, at);
    }

    /// Records a refused connection.
    pub fn refused(&self, at: Instant) {
        bump(&self.connections_refused, 1);
        push_bounded(&mut self.lists().refused_at, at);
    }

    /// Records one request for `method`.
    pub fn request(&self, method: &str) {
        let mut lists = self.lists();
        count_bounded(
            &mut lists.requests_by_method,
            method,
            MAX_METHOD_LEN,
            MAX_METHODS,
        );
    }

    /// Records one `private/buy` or `private/sell` request with `label`.
    pub fn order_request(&self, label: &str) {
        let mut lists = self.lists();
        // Deribit labels are at most 64 characters; a longer one is not ours to track.
        count_bounded(&mut lists.order_requests_by_label, label, 64, MAX_LABELS);
    }

    /// A consistent-enough snapshot (counters are read one by one).
    pub fn snapshot(&self) -> PaperStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let lists = self.lists();
        PaperStats {
            connections_accepted: load(&self.connections_accepted),
            connections_refused: load(&self.connections_refused),
            active_connections: self.active_connections.load(Ordering::Relaxed),
            refused_at: lists.refused_at.clone(),
            accepted_at: lists.accepted_at.clone(),
            requests_by_method: lists.requests_by_method.clone(),
            order_requests_by_label: lists.order_requests_by_label.clone(),
            ticks_sent: load(&self.ticks_sent),
            ticks_dropped_lagging: load(&self.ticks_dropped_lagging),
            test_requests_sent: load(&self.test_requests_sent),
            test_requests_answered: load(&self.test_requests_answered),
            closed_for_missed_heartbeat: load(&self.closed_for_missed_heartbeat),
            malformed_requests: load(&self.malformed_requests),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_method_names_cannot_grow_the_map_without_bound() {
        let stats = StatsCounters::default();
        for i in 0..1_000 {
            stats.request(&format!("x/{i}"));
        }
        stats.request(&"y".repeat(100));
        let snapshot = stats.snapshot();
        assert!(snapshot.requests_by_method.len() <= MAX_METHODS + 1);
        assert!(snapshot.requests_by_method["<other>"] > 0);
    }

    #[test]
    fn order_requests_are_counted_per_label_within_a_bound() {
        let stats = StatsCounters::default();
        stats.order_request("tb-x-0");
        stats.order_request("tb-x-0");
        stats.order_request("tb-x-0-sl");
        for i in 0..MAX_LABELS + 10 {
            stats.order_request(&format!("l{i}"));
        }
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.order_requests_by_label["tb-x-0"], 2);
        assert_eq!(snapshot.order_requests_by_label["tb-x-0-sl"], 1);
        assert!(snapshot.order_requests_by_label.len() <= MAX_LABELS + 1);
        assert!(snapshot.order_requests_by_label["<other>"] >= 10);
        let json = snapshot.to_json(Instant::now());
        assert_eq!(json["order_requests_by_label"]["tb-x-0"], 2);
    }

    #[test]
    fn stats_json_gives_offsets_in_ms() {
        let origin = Instant::now();
        let stats = PaperStats {
            refused_at: vec![origin + std::time::Duration::from_millis(1500)],
            ..PaperStats::default()
        };
        let v = stats.to_json(origin);
        assert_eq!(v["refused_at"][0].as_f64().unwrap().round(), 1500.0);
    }
}
