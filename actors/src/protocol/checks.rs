//! The start-up / integrity checks' outcome, as the runner reports it to the fail-safe and health:
//! one `Check` per check, gathered in a `ChecksReport`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// At start-up, before the strategy may act.
    Startup,
    /// Every `[checks] interval`.
    Periodic,
    /// Asked for (e.g. before an operator sets AGGRESSIVE).
    OnDemand,
    /// `tradebaas check`: the store only, no exchange.
    Offline,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    /// What was checked, or what is wrong.
    pub detail: String,
}

impl Check {
    pub(crate) fn pass(name: &str, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed: true,
            detail: detail.into(),
        }
    }

    pub(crate) fn fail(name: &str, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed: false,
            detail: detail.into(),
        }
    }

    pub(crate) fn from_problems(name: &str, ok: impl Into<String>, problems: &[String]) -> Self {
        if problems.is_empty() {
            Self::pass(name, ok)
        } else {
            Self::fail(name, problems.join("; "))
        }
    }
}

/// A run of the checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChecksReport {
    pub kind: RunKind,
    pub at: DateTime<Utc>,
    /// Every check passed.
    pub passed: bool,
    pub took_ms: u64,
    pub checks: Vec<Check>,
}

impl ChecksReport {
    pub(crate) fn new(
        kind: RunKind,
        at: DateTime<Utc>,
        checks: Vec<Check>,
        took: Duration,
    ) -> Self {
        Self {
            kind,
            at,
            passed: checks.iter().all(|c| c.passed),
            took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            checks,
        }
    }

    /// The names of the failed checks, in report order.
    pub fn failed(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The check called `name`, if it ran.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The human report `tradebaas check` prints: one line per check, then the verdict.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let verdict = if c.passed { "PASS" } else { "FAIL" };
            out.push_str(&format!("{verdict}  {:<16} {}\n", c.name, c.detail));
        }
        if self.passed {
            out.push_str(&format!("all {} checks passed\n", self.checks.len()));
        } else {
            out.push_str(&format!("FAILED: {}\n", self.failed().join(", ")));
        }
        out
    }
}
