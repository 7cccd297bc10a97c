//! The heartbeat's round decisions as a pure state machine: what one finished round
//! ([`RoundBook::on_round`]) changes (beats, round trips, who is silent, absent or escalated, the
//! mode seen) and what must be done about it, returned as [`Effect`]s: log, declare a child
//! wedged (the actor restricts to OBSERVE_ONLY and alerts), resolve its alert, and the systemd
//! line (`WATCHDOG=1` only when every expected child answered).
//!
//! No actor, no I/O, no clock reads (`at` is passed in); imports only data types (`names`,
//! `mode`) and the per-child [`Misses`](super::rules::Misses).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::rules::{Misses, Verdict};
use crate::mode::TradingMode;
use crate::names::ChildName;

/// How one ping went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PingOutcome {
    /// Answered after this long.
    Answered(Duration),
    /// No actor runs under that name.
    Absent,
    /// No answer within `ping_timeout`.
    TimedOut,
    /// The message could not be delivered or the actor dropped it.
    Failed,
}

impl PingOutcome {
    pub(super) fn describe(self) -> &'static str {
        match self {
            PingOutcome::Answered(_) => "answered",
            PingOutcome::Absent => "not running",
            PingOutcome::TimedOut => "no answer within the ping timeout",
            PingOutcome::Failed => "ping not delivered",
        }
    }
}

/// What the actor must do after a round, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A child the supervisor newly reports escalated (warn).
    Escalated(ChildName),
    /// A silent child answers again (info).
    AnswersAgain(ChildName),
    /// A child newly does not answer (warn).
    Silent(ChildName, PingOutcome),
    /// `child` missed `rounds` consecutive rounds: restrict to OBSERVE_ONLY and alert.
    Wedged {
        child: ChildName,
        outcome: PingOutcome,
        rounds: u32,
    },
    /// Resolve `child`'s heartbeat alert, for this reason.
    Resolve { child: ChildName, why: &'static str },
    /// Tell systemd: `feed` → `WATCHDOG=1` with this status line, else the status line only.
    Systemd { feed: bool, status: String },
}

/// What the heartbeat knows from its rounds.
#[derive(Debug, Default)]
pub struct RoundBook {
    beats: u64,
    last_beat_at: Option<DateTime<Utc>>,
    round_trip_ms: BTreeMap<String, f64>,
    unanswered: BTreeSet<ChildName>,
    absent: Vec<String>,
    escalated: BTreeSet<ChildName>,
    /// The mode the fail-safe reported in the last round.
    mode: Option<TradingMode>,
    misses: Misses,
}

impl RoundBook {
    /// Rounds completed.
    pub fn beats(&self) -> u64 {
        self.beats
    }

    pub fn last_beat_at(&self) -> Option<DateTime<Utc>> {
        self.last_beat_at
    }

    /// Round trip of each child that answered the last round.
    pub fn round_trip_ms(&self) -> &BTreeMap<String, f64> {
        &self.round_trip_ms
    }

    /// Children that do not answer (escalated ones excluded).
    pub fn unanswered(&self) -> &BTreeSet<ChildName> {
        &self.unanswered
    }

    /// Of the last round's silent children, the ones not running at all.
    pub fn absent(&self) -> &[String] {
        &self.absent
    }

    /// Children the supervisor reported escalated in the last round.
    pub fn escalated(&self) -> &BTreeSet<ChildName> {
        &self.escalated
    }

    /// The mode the fail-safe reported in the last round.
    pub fn mode(&self) -> Option<TradingMode> {
        self.mode
    }

    /// Takes in one finished round: `threshold` consecutive misses declare a child wedged.
    pub fn on_round(
        &mut self,
        pings: Vec<(ChildName, PingOutcome)>,
        escalated: BTreeSet<ChildName>,
        mode: Option<TradingMode>,
        threshold: u32,
        at: DateTime<Utc>,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.beats += 1;
        self.last_beat_at = Some(at);
        self.mode = mode;
        self.round_trip_ms.clear();
        self.absent.clear();
        for child in escalated.difference(&self.escalated) {
            out.push(Effect::Escalated(*child));
        }
        self.escalated = escalated;
        for (child, outcome) in pings {
            let answered = matches!(outcome, PingOutcome::Answered(_));
            if !answered && self.escalated.contains(&child) {
                // Stopped for good on purpose: its `escalation:<child>` alert is the one root
                // cause, so a wedge declared before it escalated is resolved, not repeated.
                self.unanswered.remove(&child);
                if self.misses.observe(child, true, threshold) == Verdict::Recovered {
                    out.push(Effect::Resolve {
                        child,
                        why: "escalated: its escalation alert takes over",
                    });
                }
                continue;
            }
            match outcome {
                PingOutcome::Answered(rtt) => {
                    self.round_trip_ms
                        .insert(child.as_str().to_string(), rtt.as_secs_f64() * 1000.0);
                    if self.unanswered.remove(&child) {
                        out.push(Effect::AnswersAgain(child));
                    }
                }
                other => {
                    if other == PingOutcome::Absent {
                        self.absent.push(child.as_str().to_string());
                    }
                    if self.unanswered.insert(child) {
                        out.push(Effect::Silent(child, other));
                    }
                }
            }
            match self.misses.observe(child, answered, threshold) {
                Verdict::Steady => {}
                Verdict::Wedged(rounds) => out.push(Effect::Wedged {
                    child,
                    outcome,
                    rounds,
                }),
                Verdict::Recovered => out.push(Effect::Resolve {
                    child,
                    why: "wedged actor answers again",
                }),
            }
        }
        out.push(self.systemd());
        out
    }

    /// The systemd side of a round: `WATCHDOG=1` only when every child answered.
    fn systemd(&self) -> Effect {
        let mode = self.mode.map_or("unknown", TradingMode::as_str);
        if self.unanswered.is_empty() {
            let slowest = self.round_trip_ms.values().copied().fold(0.0, f64::max);
            let escalated = if self.escalated.is_empty() {
                String::new()
            } else {
                let names: Vec<&str> = self.escalated.iter().map(|c| c.as_str()).collect();
                format!("; escalated (stopped, see /health): {}", names.join(", "))
            };
            Effect::Systemd {
                feed: true,
                status: format!(
                    "mode {mode}; heartbeat round {}: all {} actors answered (slowest {slowest:.1} ms){escalated}",
                    self.beats,
                    self.round_trip_ms.len()
                ),
            }
        } else {
            let silent: Vec<&str> = self.unanswered.iter().map(|c| c.as_str()).collect();
            Effect::Systemd {
                feed: false,
                status: format!(
                    "mode {mode}; heartbeat round {}: no answer from {}; watchdog not fed",
                    self.beats,
                    silent.join(", ")
                ),
            }
        }
    }
}

#[cfg(test)]
#[path = "round_tests.rs"]
mod tests;
