//! The fail-safe's decisions as a pure state machine: which trading mode follows from the current
//! one and an [`Event`] (the stored mode loaded, a trigger, an operator's change, a restriction,
//! a finding of the watch, a change to AGGRESSIVE confirmed), and what must be done about it,
//! returned as [`Effect`]s (store this change, raise or resolve that alert, answer the caller,
//! log this).
//!
//! It owns the mode, whether the stored mode was loaded, whether recovery finished, the trigger
//! count and the generation that keeps a stale change to AGGRESSIVE from being applied. It does
//! no I/O, talks to no actor and reads no clock (`now` is passed in); the actor in
//! `failsafe.rs` carries the effects out. It imports only data types (`mode`, `store::Change`,
//! `alert::Alert`, the watch's `Finding`).
//!
//! The latches it keeps: SHUTDOWN is left only by an operator's `SetMode`, to OBSERVE_ONLY
//! first; `Restrict` and the watch only ever tighten the mode; a change to AGGRESSIVE applies
//! only once stored and only if nothing changed the mode meanwhile.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::triggers::{self, Action, Finding};
use super::{DISK_ALERT_KEY, InitialMode, MODE_KEY, StoredMode};
use crate::mode::TradingMode;
use crate::protocol::alert::Alert;
use crate::protocol::alert::Severity;
use crate::store::Change;

/// What happened, as the fail-safe's decisions see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A read of the stored mode starts (attempts count from 1).
    Load { attempt: u32 },
    /// The read answered: the stored `"mode"` value, if any, or why the store could not be read.
    Loaded {
        attempt: u32,
        result: Result<Option<Value>, String>,
    },
    /// This run's start-up recovery has finished (or was found finished in the store).
    RecoveryFinished,
    /// A fail-safe trigger: latch SHUTDOWN.
    Trigger { trigger: String, reason: String },
    /// An operator's (or internal) change to `mode`.
    SetMode { mode: TradingMode, reason: String },
    /// Restrict to at most `mode` (never clears SHUTDOWN).
    Restrict { mode: TradingMode, reason: String },
    /// The commit of a change to AGGRESSIVE (see [`Effect::PersistThenApply`]) finished.
    Loosened {
        change: Loosening,
        result: Result<(), String>,
    },
    /// A condition of the watch started.
    Finding(Finding),
    /// A condition of the watch stopped holding.
    Ended(&'static str),
}

/// What the actor must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Commit `change` through the persister. `answer`: the caller's reply gets the outcome.
    Persist { change: Change, answer: bool },
    /// Commit `change` (to a mode that allows entries) and feed the outcome back as
    /// [`Event::Loosened`] with `pending`; the mode changes only then.
    PersistThenApply {
        change: Change,
        pending: Loosening,
        answer: bool,
    },
    /// Answer the caller now.
    Reply(Result<(), String>),
    /// Raise this alert.
    Raise(Alert),
    /// Resolve the alert with this key.
    Resolve(String),
    /// Resolve every open `failsafe:*` alert (SHUTDOWN was cleared by the operator).
    ResolveShutdownAlerts,
    /// Send ourselves [`Event::Load`] for `attempt`, now or after `delay`.
    ScheduleLoad {
        attempt: u32,
        delay: Option<Duration>,
    },
    /// Read the stored mode (answered with [`Event::Loaded`]).
    ReadStore { attempt: u32 },
    /// Log this.
    Log(Note),
}

/// A change to a mode that allows entries, waiting for its commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Loosening {
    /// The machine's generation when the change was asked for: applied only if unchanged.
    pub generation: u64,
    pub to: TradingMode,
    pub reason: String,
    pub changed_at: DateTime<Utc>,
}

/// What the actor logs, one variant per log line.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// Recovery finished; entries follow the mode (info).
    Recovered,
    /// The mode changed (error when to SHUTDOWN, warn otherwise).
    ModeChanged {
        from: TradingMode,
        to: TradingMode,
        reason: String,
        trigger: Option<String>,
    },
    /// A change to `to` could not be stored and is refused (warn).
    ChangeRefused { to: TradingMode, error: String },
    /// A trigger while already in SHUTDOWN (error).
    TriggeredAgain { trigger: String, reason: String },
    /// The watch's heartbeat finding restricts to OBSERVE_ONLY (error).
    RestrictingToObserveOnly { trigger: String, reason: String },
    /// Disk space is below the floor (warn).
    DiskLow { trigger: String, reason: String },
    /// A condition of the watch ended; its alert is resolved (info).
    ConditionEnded {
        trigger: &'static str,
        key: &'static str,
    },
    /// A read of the stored mode failed; another follows (warn).
    LoadRetry {
        attempt: u32,
        attempts: u32,
        error: String,
    },
    /// The last read failed; the mode stays as it is (error).
    LoadGaveUp {
        attempts: u32,
        error: String,
        mode: TradingMode,
    },
    /// The stored mode was read after a trigger latched SHUTDOWN (info).
    KeptShutdown {
        initial_mode: TradingMode,
        initial_mode_reason: String,
    },
    /// The stored mode was read and applies (info).
    StoredLoaded {
        mode: TradingMode,
        reason: String,
        initial_mode: TradingMode,
        initial_mode_reason: String,
    },
    /// Nothing was stored: the initial mode applies (info).
    NothingStored { initial: InitialMode },
}

/// How much a mode restricts trading: AGGRESSIVE < OBSERVE_ONLY < SHUTDOWN.
pub fn strictness(mode: TradingMode) -> u8 {
    match mode {
        TradingMode::Aggressive => 0,
        TradingMode::ObserveOnly => 1,
        TradingMode::Shutdown => 2,
    }
}

/// The fail-safe's decision state.
#[derive(Debug, Clone)]
pub struct ModeMachine {
    /// The resolved mode for a first start (nothing stored).
    initial: InitialMode,
    load_attempts: u32,
    load_retry_delay: Duration,
    mode: TradingMode,
    loaded: bool,
    /// This run's start-up recovery has finished.
    recovered: bool,
    /// A load is under way (false once loaded or given up).
    loading: bool,
    reason: String,
    changed_at: Option<DateTime<Utc>>,
    /// The mode this run started in, and why.
    initial_mode: TradingMode,
    initial_mode_reason: String,
    triggers: u64,
    last_trigger: Option<String>,
    /// Bumped on every in-memory change; a pending change to AGGRESSIVE applies only if unchanged.
    generation: u64,
}

impl ModeMachine {
    /// The state before the store is read: OBSERVE_ONLY, not loaded, a load under way (the
    /// actor's first [`Event::Load`] is already on its way).
    pub fn new(initial: InitialMode, load_attempts: u32, load_retry_delay: Duration) -> Self {
        let initial_mode = initial.mode;
        let initial_mode_reason = format!(
            "{}; not applied yet: the store is being read (a stored mode takes precedence)",
            initial.reason
        );
        Self {
            initial,
            load_attempts,
            load_retry_delay,
            mode: TradingMode::ObserveOnly,
            loaded: false,
            recovered: false,
            loading: true,
            reason: "starting: the stored mode is not loaded yet".into(),
            changed_at: None,
            initial_mode,
            initial_mode_reason,
            triggers: 0,
            last_trigger: None,
            generation: 0,
        }
    }

    pub fn mode(&self) -> TradingMode {
        self.mode
    }

    pub fn loaded(&self) -> bool {
        self.loaded
    }

    pub fn recovered(&self) -> bool {
        self.recovered
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn changed_at(&self) -> Option<DateTime<Utc>> {
        self.changed_at
    }

    pub fn initial_mode(&self) -> TradingMode {
        self.initial_mode
    }

    pub fn initial_mode_reason(&self) -> &str {
        &self.initial_mode_reason
    }

    pub fn triggers(&self) -> u64 {
        self.triggers
    }

    pub fn last_trigger(&self) -> Option<&str> {
        self.last_trigger.as_deref()
    }

    /// Fail-closed permission check before any entry: Ok only once the stored mode was loaded,
    /// recovery finished, and the mode is AGGRESSIVE.
    pub fn allow_entry(&self) -> Result<(), String> {
        if !self.loaded {
            return Err(
                "the stored trading mode has not been loaded yet; entries are refused".into(),
            );
        }
        if !self.recovered {
            return Err("start-up recovery has not finished; entries are refused".into());
        }
        if !self.mode.allows_entries() {
            return Err(format!(
                "trading mode is {} ({}); entries are refused",
                self.mode, self.reason
            ));
        }
        Ok(())
    }

    /// Decides what `event` changes and what must be done; `now` stamps any change.
    pub fn on(&mut self, event: Event, now: DateTime<Utc>) -> Vec<Effect> {
        let mut out = Vec::new();
        match event {
            Event::Load { attempt } => {
                self.loading = true;
                out.push(Effect::ReadStore { attempt });
            }
            Event::Loaded { attempt, result } => self.on_loaded(attempt, result, now, &mut out),
            Event::RecoveryFinished => {
                if !self.recovered {
                    out.push(Effect::Log(Note::Recovered));
                }
                self.recovered = true;
            }
            Event::Trigger { trigger, reason } => {
                self.trigger(trigger, reason, true, now, &mut out);
            }
            Event::SetMode { mode, reason } => self.set_mode(mode, reason, now, &mut out),
            Event::Restrict { mode, reason } => {
                if !self.loaded || strictness(mode) > strictness(self.mode) {
                    self.set_mode(mode, reason, now, &mut out);
                } else if strictness(mode) < strictness(self.mode) {
                    // Already stricter (e.g. SHUTDOWN): nothing to do.
                    out.push(Effect::Reply(Ok(())));
                } else {
                    // Same mode: restate it anyway. This bumps the generation, so a loosening
                    // still being stored (e.g. the initial AGGRESSIVE) is not applied after us.
                    self.restrict(mode, reason, None, true, now, &mut out);
                }
            }
            Event::Loosened {
                change:
                    Loosening {
                        generation,
                        to,
                        reason,
                        changed_at,
                    },
                result,
            } => {
                let outcome = match result {
                    Err(e) => {
                        out.push(Effect::Log(Note::ChangeRefused {
                            to,
                            error: e.clone(),
                        }));
                        Err(format!("{to} not stored, mode stays {}: {e}", self.mode))
                    }
                    Ok(()) if generation != self.generation => Err(format!(
                        "the mode changed to {} while {to} was being stored; not applied",
                        self.mode
                    )),
                    Ok(()) => {
                        out.push(Effect::Log(Note::ModeChanged {
                            from: self.mode,
                            to,
                            reason: reason.clone(),
                            trigger: None,
                        }));
                        self.mode = to;
                        self.reason = reason;
                        self.changed_at = Some(changed_at);
                        self.generation += 1;
                        Ok(())
                    }
                };
                out.push(Effect::Reply(outcome));
            }
            Event::Finding(finding) => self.act_on(finding, now, &mut out),
            Event::Ended(trigger) => {
                let key = match trigger {
                    triggers::DISK_LOW => DISK_ALERT_KEY,
                    "heartbeat_missing" => "heartbeat:missing",
                    _ => return out,
                };
                out.push(Effect::Log(Note::ConditionEnded { trigger, key }));
                out.push(Effect::Resolve(key.into()));
            }
        }
        out
    }

    /// The `mode_changed` event plus the `"mode"` state write.
    fn mode_change(
        from: TradingMode,
        to: TradingMode,
        reason: &str,
        trigger: Option<&str>,
        changed_at: DateTime<Utc>,
    ) -> Change {
        let mut event = json!({ "from": from, "to": to, "reason": reason });
        if let Some(t) = trigger {
            event["trigger"] = json!(t);
        }
        Change::event("mode_changed", event).set(
            MODE_KEY,
            json!({ "mode": to, "reason": reason, "changed_at": changed_at }),
        )
    }

    /// A change that does not loosen trading: in memory at once, then stored.
    fn restrict(
        &mut self,
        to: TradingMode,
        reason: String,
        trigger: Option<&str>,
        answer: bool,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        let from = self.mode;
        self.mode = to;
        self.changed_at = Some(now);
        self.generation += 1;
        out.push(Effect::Log(Note::ModeChanged {
            from,
            to,
            reason: reason.clone(),
            trigger: trigger.map(str::to_owned),
        }));
        let change = Self::mode_change(from, to, &reason, trigger, now);
        self.reason = reason;
        out.push(Effect::Persist { change, answer });
    }

    /// A change to a mode that allows entries: stored first, applied when the commit is
    /// confirmed ([`Event::Loosened`]).
    fn loosen(
        &self,
        to: TradingMode,
        reason: String,
        answer: bool,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        let change = Self::mode_change(self.mode, to, &reason, None, now);
        out.push(Effect::PersistThenApply {
            change,
            pending: Loosening {
                generation: self.generation,
                to,
                reason,
                changed_at: now,
            },
            answer,
        });
    }

    fn set_mode(
        &mut self,
        mode: TradingMode,
        reason: String,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        if !self.loaded {
            let mut why =
                "the stored trading mode has not been loaded yet; try again shortly".to_string();
            if !self.loading {
                why.push_str(" (loading it again now)");
                self.loading = true;
                out.push(Effect::ScheduleLoad {
                    attempt: 1,
                    delay: None,
                });
            }
            out.push(Effect::Reply(Err(why)));
            return;
        }
        if mode == self.mode {
            out.push(Effect::Reply(Ok(())));
            return;
        }
        if self.mode == TradingMode::Shutdown && mode == TradingMode::Aggressive {
            out.push(Effect::Reply(Err(
                "SHUTDOWN is cleared to OBSERVE_ONLY first, then to AGGRESSIVE".into(),
            )));
            return;
        }
        if mode.allows_entries() {
            self.loosen(mode, reason, true, now, out);
        } else {
            let clears_shutdown = self.mode == TradingMode::Shutdown;
            self.restrict(mode, reason, None, true, now, out);
            if clears_shutdown {
                out.push(Effect::ResolveShutdownAlerts);
            }
        }
    }

    fn trigger(
        &mut self,
        trigger: String,
        reason: String,
        answer: bool,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        self.triggers += 1;
        self.last_trigger = Some(trigger.clone());
        let previous = self.mode;
        out.push(Effect::Raise(trigger_alert(&trigger, &reason, previous)));
        if previous == TradingMode::Shutdown {
            // Already latched: keep the first cause as the reason, but put this one on record.
            out.push(Effect::Log(Note::TriggeredAgain {
                trigger: trigger.clone(),
                reason: reason.clone(),
            }));
            let change = Change::event(
                "failsafe_triggered",
                json!({ "trigger": trigger, "reason": reason, "mode": TradingMode::Shutdown }),
            );
            out.push(Effect::Persist { change, answer });
        } else {
            let text = format!("{trigger}: {reason}");
            self.restrict(
                TradingMode::Shutdown,
                text,
                Some(&trigger),
                answer,
                now,
                out,
            );
        }
    }

    /// Applies one finding of the watch.
    fn act_on(&mut self, finding: Finding, now: DateTime<Utc>, out: &mut Vec<Effect>) {
        match finding.action {
            Action::Alert => {
                out.push(Effect::Log(Note::DiskLow {
                    trigger: finding.trigger.to_owned(),
                    reason: finding.reason.clone(),
                }));
                out.push(Effect::Raise(disk_alert(&finding)));
            }
            Action::Shutdown => {
                self.trigger(finding.trigger.to_owned(), finding.reason, false, now, out);
            }
            Action::ObserveOnly => {
                self.triggers += 1;
                self.last_trigger = Some(finding.trigger.to_owned());
                out.push(Effect::Log(Note::RestrictingToObserveOnly {
                    trigger: finding.trigger.to_owned(),
                    reason: finding.reason.clone(),
                }));
                out.push(Effect::Raise(heartbeat_alert(&finding, self.mode)));
                if strictness(TradingMode::ObserveOnly) > strictness(self.mode) {
                    let reason = format!("{}: {}", finding.trigger, finding.reason);
                    self.restrict(
                        TradingMode::ObserveOnly,
                        reason,
                        Some(finding.trigger),
                        false,
                        now,
                        out,
                    );
                }
            }
        }
    }

    fn on_loaded(
        &mut self,
        attempt: u32,
        result: Result<Option<Value>, String>,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        if self.loaded {
            return;
        }
        let stored = match result {
            Ok(stored) => stored,
            Err(e) => {
                let attempts = self.load_attempts;
                if attempt < attempts {
                    out.push(Effect::Log(Note::LoadRetry {
                        attempt,
                        attempts,
                        error: e,
                    }));
                    out.push(Effect::ScheduleLoad {
                        attempt: attempt + 1,
                        delay: Some(self.load_retry_delay),
                    });
                } else {
                    self.loading = false;
                    self.reason = format!("stored trading mode could not be loaded: {e}");
                    self.initial_mode = self.mode;
                    self.initial_mode_reason = format!(
                        "the store could not be read, so neither a stored mode nor the configured \
                         initial mode {} was applied: {e}",
                        self.initial.mode
                    );
                    out.push(Effect::Log(Note::LoadGaveUp {
                        attempts,
                        error: e,
                        mode: self.mode,
                    }));
                }
                return;
            }
        };
        self.loaded = true;
        self.loading = false;
        let initial = self.initial.clone();
        if self.mode == TradingMode::Shutdown {
            // A trigger arrived before the load finished; it is newer and already stored.
            self.initial_mode = TradingMode::Shutdown;
            self.initial_mode_reason = format!(
                "a fail-safe trigger latched SHUTDOWN before the stored mode was read ({})",
                self.reason
            );
            out.push(Effect::Log(Note::KeptShutdown {
                initial_mode: self.initial_mode,
                initial_mode_reason: self.initial_mode_reason.clone(),
            }));
            return;
        }
        match stored.map(serde_json::from_value::<StoredMode>) {
            Some(Ok(s)) => {
                // Recovery: what the store says wins over the configuration.
                self.initial_mode = s.mode;
                self.initial_mode_reason = format!(
                    "the stored mode takes precedence over the configured initial mode {} ({}); \
                     stored: {} ({})",
                    initial.mode, initial.reason, s.mode, s.reason
                );
                out.push(Effect::Log(Note::StoredLoaded {
                    mode: s.mode,
                    reason: s.reason.clone(),
                    initial_mode: self.initial_mode,
                    initial_mode_reason: self.initial_mode_reason.clone(),
                }));
                if s.mode != self.mode {
                    self.generation += 1;
                }
                self.mode = s.mode;
                self.reason = s.reason;
                self.changed_at = s.changed_at;
            }
            Some(Err(e)) => {
                // Fail closed: an unreadable mode might have been SHUTDOWN.
                let reason = format!("stored trading mode is unreadable ({e}); latched for safety");
                self.initial_mode = TradingMode::Shutdown;
                self.initial_mode_reason = format!(
                    "{reason}; the configured initial mode {} is not applied",
                    initial.mode
                );
                out.push(Effect::Raise(trigger_alert(
                    "unreadable_mode",
                    &reason,
                    self.mode,
                )));
                self.restrict(
                    TradingMode::Shutdown,
                    reason,
                    Some("unreadable_mode"),
                    false,
                    now,
                    out,
                );
            }
            None => {
                self.initial_mode = initial.mode;
                self.initial_mode_reason = initial.reason.clone();
                let reason = format!("initial mode (nothing stored): {}", initial.reason);
                out.push(Effect::Log(Note::NothingStored {
                    initial: initial.clone(),
                }));
                if initial.mode.allows_entries() {
                    self.loosen(initial.mode, reason, false, now, out);
                } else {
                    self.restrict(initial.mode, reason, None, false, now, out);
                }
            }
        }
    }
}

/// The CRITICAL alert of a fail-safe trigger (SHUTDOWN).
fn trigger_alert(trigger: &str, reason: &str, previous: TradingMode) -> Alert {
    Alert {
        key: format!("failsafe:{trigger}"),
        severity: Severity::Critical,
        title: "Fail-safe triggered: trading is SHUTDOWN".into(),
        message: format!("fail-safe trigger {trigger}: {reason}"),
        root_cause: reason.to_string(),
        recommended_action: "Find and fix the cause, then set the mode to OBSERVE_ONLY and, \
                             once satisfied, to AGGRESSIVE"
            .into(),
        metadata: json!({ "trigger": trigger, "previous_mode": previous }),
    }
}

/// The WARNING alert of the disk below its floor.
fn disk_alert(finding: &Finding) -> Alert {
    Alert {
        key: DISK_ALERT_KEY.into(),
        severity: Severity::Warning,
        title: "Disk space below the floor: free space before writes fail".into(),
        message: finding.reason.clone(),
        root_cause: finding.reason.clone(),
        recommended_action: "Free space on the data directory's filesystem (old \
                             backups, logs) or grow it; trading goes on, but once \
                             writes fail the fail-safe latches SHUTDOWN \
                             (event_log_failing)"
            .into(),
        metadata: json!({ "trigger": finding.trigger }),
    }
}

/// The CRITICAL alert of a lost heartbeat (OBSERVE_ONLY).
fn heartbeat_alert(finding: &Finding, previous: TradingMode) -> Alert {
    Alert {
        key: format!(
            "heartbeat:{}",
            finding.trigger.trim_start_matches("heartbeat_")
        ),
        severity: Severity::Critical,
        title: "Heartbeat lost: trading is OBSERVE_ONLY".into(),
        message: finding.reason.clone(),
        root_cause: finding.reason.clone(),
        recommended_action: "Read the heartbeat and supervisor logs for a wedged or \
                             crashed actor; once /health is healthy, set the mode \
                             with `tradebaas mode aggressive --reason …`"
            .into(),
        metadata: json!({ "trigger": finding.trigger, "previous_mode": previous }),
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
