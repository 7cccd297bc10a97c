//! Restart policy: what the root supervisor does when a child exits. Pure logic, no actors.
//!
//! OTP semantics: a *permanent* child is always restarted, a *transient* one only after an
//! abnormal exit, a *temporary* one never. More than `max_restarts` restarts within `within`
//! is an escalation. The delay before a restart grows with the number of restarts still inside
//! the window, so a child that stays up for a whole window starts again from the initial delay.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::names::ChildName;
pub use crate::protocol::supervisor::{RestartType, SupervisionStrategy};

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// It stopped by itself without an error.
    Normal,
    /// It panicked, returned an error, failed to start, or was killed.
    Abnormal,
}

impl RestartType {
    /// Whether this exit calls for a restart.
    pub fn restarts_after(self, exit: ExitKind) -> bool {
        match self {
            RestartType::Permanent => true,
            RestartType::Transient => exit == ExitKind::Abnormal,
            RestartType::Temporary => false,
        }
    }
}

/// The policy of one child, from `[supervisor.children.<name>]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChildPolicy {
    /// permanent | transient | temporary.
    pub restart: RestartType,
    /// Restart intensity: at most this many restarts within `within`; one more escalates.
    pub max_restarts: u32,
    /// The intensity window.
    #[serde(with = "humantime_serde")]
    pub within: Duration,
    /// Delay before each restart.
    pub backoff: Backoff,
    /// How long a graceful stop may take before the child is killed.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for ChildPolicy {
    fn default() -> Self {
        Self {
            restart: RestartType::Permanent,
            max_restarts: 5,
            within: Duration::from_secs(60),
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(10),
                multiplier: 2.0,
                jitter: 0.1,
            },
            shutdown_timeout: Duration::from_secs(2),
        }
    }
}

impl ChildPolicy {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.within.is_zero() {
            return Err("within must be greater than 0".into());
        }
        if self.shutdown_timeout.is_zero() {
            return Err("shutdown_timeout must be greater than 0".into());
        }
        self.backoff.validate().map_err(|e| format!("backoff.{e}"))
    }
}

/// `[supervisor]`: the strategy and one policy per child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// one_for_one | rest_for_one.
    pub strategy: SupervisionStrategy,
    /// Per-child policies.
    pub children: ChildPolicies,
}

/// `[supervisor.children.<name>]`, one table per child; a typo in a name is a config error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct ChildPolicies {
    pub alert: ChildPolicy,
    pub state_persister: ChildPolicy,
    pub fail_safe: ChildPolicy,
    pub heartbeat: ChildPolicy,
    pub broker_connection: ChildPolicy,
    pub strategy: ChildPolicy,
}

impl ChildPolicies {
    /// The policy of one child.
    pub fn get(&self, child: ChildName) -> &ChildPolicy {
        match child {
            ChildName::Alert => &self.alert,
            ChildName::StatePersister => &self.state_persister,
            ChildName::FailSafe => &self.fail_safe,
            ChildName::Heartbeat => &self.heartbeat,
            ChildName::BrokerConnection => &self.broker_connection,
            ChildName::Strategy => &self.strategy,
        }
    }

    /// The policy of one child, mutable (tests and overrides).
    pub fn get_mut(&mut self, child: ChildName) -> &mut ChildPolicy {
        match child {
            ChildName::Alert => &mut self.alert,
            ChildName::StatePersister => &mut self.state_persister,
            ChildName::FailSafe => &mut self.fail_safe,
            ChildName::Heartbeat => &mut self.heartbeat,
            ChildName::BrokerConnection => &mut self.broker_connection,
            ChildName::Strategy => &mut self.strategy,
        }
    }
}

impl SupervisorConfig {
    /// Checks every child policy; the error names `children.<name>.<field>`.
    pub fn validate(&self) -> Result<(), String> {
        for child in ChildName::START_ORDER {
            self.children
                .get(child)
                .validate()
                .map_err(|e| format!("children.{child}.{e}"))?;
        }
        Ok(())
    }
}

/// What to do about a child that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after `delay`; `restarts_in_window` includes this restart.
    Restart {
        delay: Duration,
        restarts_in_window: u32,
    },
    /// Leave it stopped: its restart type does not call for a restart.
    Leave,
    /// It has restarted too often: stop restarting and escalate.
    Escalate { restarts_in_window: u32 },
}

/// The restart times of one child inside its intensity window.
#[derive(Debug, Clone, Default)]
pub struct RestartHistory {
    restarts: VecDeque<Instant>,
}

impl RestartHistory {
    /// Restarts still inside the window at `now`.
    pub fn in_window(&mut self, now: Instant, within: Duration) -> u32 {
        while let Some(first) = self.restarts.front() {
            if now.saturating_duration_since(*first) >= within {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        u32::try_from(self.restarts.len()).unwrap_or(u32::MAX)
    }

    /// Decides about an exit at `now`, recording the restart if there is one. `unit` is the
    /// random draw for the jitter, in `[0, 1)`.
    pub fn decide(
        &mut self,
        policy: &ChildPolicy,
        exit: ExitKind,
        now: Instant,
        unit: f64,
    ) -> Decision {
        if !policy.restart.restarts_after(exit) {
            return Decision::Leave;
        }
        let before = self.in_window(now, policy.within);
        if before >= policy.max_restarts {
            return Decision::Escalate {
                restarts_in_window: before + 1,
            };
        }
        self.restarts.push_back(now);
        Decision::Restart {
            delay: policy.backoff.delay_with(before, unit),
            restarts_in_window: before + 1,
        }
    }
}

#[cfg(test)]
impl ChildPolicy {
    /// A policy for tests: `max_restarts` in `within`, restarts 100 ms apart doubling up to
    /// `backoff_cap`, 1 s to stop.
    pub(crate) fn for_tests(
        restart: RestartType,
        max_restarts: u32,
        within: Duration,
        backoff_cap: Duration,
    ) -> Self {
        Self {
            restart,
            max_restarts,
            within,
            backoff: Backoff::fixed_ratio(Duration::from_millis(100), backoff_cap, 2.0),
            shutdown_timeout: Duration::from_secs(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The restart-intensity window and the backoff cap of these tests.
    const WINDOW: Duration = Duration::from_secs(10);
    const CAP: Duration = Duration::from_secs(1);

    fn policy(restart: RestartType, max_restarts: u32) -> ChildPolicy {
        ChildPolicy::for_tests(restart, max_restarts, WINDOW, CAP)
    }

    #[test]
    fn restart_types_follow_otp() {
        use ExitKind::*;
        use RestartType::*;
        assert!(Permanent.restarts_after(Normal) && Permanent.restarts_after(Abnormal));
        assert!(!Transient.restarts_after(Normal) && Transient.restarts_after(Abnormal));
        assert!(!Temporary.restarts_after(Normal) && !Temporary.restarts_after(Abnormal));
    }

    #[test]
    fn delays_grow_then_intensity_escalates() {
        let p = policy(RestartType::Permanent, 3);
        let mut h = RestartHistory::default();
        let t0 = Instant::now();
        let delays: Vec<Decision> = (0..4)
            .map(|i| h.decide(&p, ExitKind::Abnormal, t0 + Duration::from_millis(i), 0.0))
            .collect();
        assert_eq!(
            delays,
            [
                Decision::Restart {
                    delay: Duration::from_millis(100),
                    restarts_in_window: 1
                },
                Decision::Restart {
                    delay: Duration::from_millis(200),
                    restarts_in_window: 2
                },
                Decision::Restart {
                    delay: Duration::from_millis(400),
                    restarts_in_window: 3
                },
                Decision::Escalate {
                    restarts_in_window: 4
                },
            ]
        );
    }

    #[test]
    fn a_quiet_window_resets_the_backoff() {
        let p = policy(RestartType::Permanent, 3);
        let mut h = RestartHistory::default();
        let t0 = Instant::now();
        h.decide(&p, ExitKind::Abnormal, t0, 0.0);
        h.decide(&p, ExitKind::Abnormal, t0, 0.0);
        let later = t0 + Duration::from_secs(11);
        assert_eq!(
            h.decide(&p, ExitKind::Abnormal, later, 0.0),
            Decision::Restart {
                delay: Duration::from_millis(100),
                restarts_in_window: 1
            }
        );
    }

    #[test]
    fn zero_intensity_escalates_at_first_failure() {
        let p = policy(RestartType::Permanent, 0);
        let mut h = RestartHistory::default();
        assert_eq!(
            h.decide(&p, ExitKind::Abnormal, Instant::now(), 0.0),
            Decision::Escalate {
                restarts_in_window: 1
            }
        );
    }

    #[test]
    fn transient_normal_exit_is_left_alone() {
        let p = policy(RestartType::Transient, 3);
        let mut h = RestartHistory::default();
        assert_eq!(
            h.decide(&p, ExitKind::Normal, Instant::now(), 0.0),
            Decision::Leave
        );
        assert_eq!(h.in_window(Instant::now(), p.within), 0);
    }
}
