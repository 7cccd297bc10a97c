//! What a run's outcome does: the report to the fail-safe (shown in `/health`), the
//! restriction to OBSERVE_ONLY, the `startup_checks` and `integrity:<check>` alerts, and the
//! `capital_inconsistent` trigger.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracing::{error, warn};

use super::{
    CAPITAL, CAPITAL_TRIGGER, Check, ChecksReport, STARTUP_ALERT_KEY, integrity_alert_key,
};
use crate::names::Names;
use crate::protocol::alert::Alert;
use crate::protocol::alert::Severity;
use crate::protocol::failsafe::FailSafeMsg;

pub(super) use crate::client::{raise, resolve};

/// Hands the report to the fail-safe, which shows it in `/health` and `/ready`.
pub(super) fn report_to_failsafe(names: &Names, report: &ChecksReport) {
    match names.get::<FailSafeMsg>() {
        Some(f) => {
            let _ = f.send_message(FailSafeMsg::ChecksReported(report.clone()));
        }
        None => warn!("fail-safe not running; the checks report is not shown in /health"),
    }
}

pub use crate::client::restrict;

pub(super) fn failed_details(report: &ChecksReport) -> Value {
    Value::Object(
        report
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| (c.name.clone(), Value::String(c.detail.clone())))
            .collect(),
    )
}

/// The CRITICAL `startup_checks` alert for a failed start-up run.
pub fn startup_alert(report: &ChecksReport) -> Alert {
    let failed = report.failed();
    let details = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect::<Vec<_>>()
        .join(" | ");
    Alert {
        key: STARTUP_ALERT_KEY.into(),
        severity: Severity::Critical,
        title: format!("start-up checks failed: {}", failed.join(", ")),
        message: format!(
            "failed start-up checks: {}; trading is OBSERVE_ONLY",
            failed.join(", ")
        ),
        root_cause: details,
        recommended_action: "Read each failed check in /health (actors.fail-safe.checks) or run \
                             `tradebaas check --config FILE`; docs/OPERATIONS.md \"Startup \
                             checks\" says what each failure means and what to do. Set the mode \
                             to AGGRESSIVE only once the checks pass."
            .into(),
        metadata: json!({ "failed": failed, "details": failed_details(report), "at": report.at }),
    }
}

pub(super) fn integrity_alert(check: &Check, at: DateTime<Utc>) -> Alert {
    Alert {
        key: integrity_alert_key(&check.name),
        severity: Severity::Critical,
        title: format!("data integrity check `{}` failed", check.name),
        message: format!(
            "integrity check {} failed: {}; trading is OBSERVE_ONLY",
            check.name, check.detail
        ),
        root_cause: check.detail.clone(),
        recommended_action: "See docs/OPERATIONS.md \"Startup checks\" for this check; run \
                             `tradebaas check --config FILE` for the store's report. The alert \
                             resolves when the check passes again; the mode stays until an \
                             operator changes it."
            .into(),
        metadata: json!({ "check": check.name, "detail": check.detail, "at": at }),
    }
}

/// Acts on one periodic report: a failed check restricts trading to OBSERVE_ONLY, logs its
/// details and raises `integrity:<check>`; a failed `capital` instead fires the fail-safe
/// trigger `capital_inconsistent` (SHUTDOWN; the fail-safe raises its alert). Passing checks
/// resolve their `integrity:<check>` alert, and a fully passing run `startup_checks`.
pub async fn act_on_periodic(names: &Names, report: &ChecksReport) {
    report_to_failsafe(names, report);
    let mut restrict_for = BTreeSet::new();
    for check in &report.checks {
        if check.passed {
            resolve(names, integrity_alert_key(&check.name));
            continue;
        }
        error!(check = %check.name, detail = %check.detail, "data integrity check failed");
        if check.name == CAPITAL {
            match names.get::<FailSafeMsg>() {
                Some(f) => {
                    let _ = f.send_message(FailSafeMsg::Trigger {
                        trigger: CAPITAL_TRIGGER.into(),
                        reason: check.detail.clone(),
                        reply: None,
                    });
                }
                None => error!("fail-safe not running: capital_inconsistent not triggered"),
            }
        } else {
            restrict_for.insert(check.name.as_str());
            raise(names, integrity_alert(check, report.at));
        }
    }
    if report.passed {
        resolve(names, STARTUP_ALERT_KEY);
    }
    if !restrict_for.is_empty() {
        let names_list = restrict_for.into_iter().collect::<Vec<_>>().join(", ");
        restrict(names, &format!("data integrity check failed: {names_list}")).await;
    }
}
