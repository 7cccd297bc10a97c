//! What each admin request does: `status`, mode changes through the fail-safe, alert
//! acknowledgements, and the AGGRESSIVE pre-flight.

use serde_json::json;
use tradebaas_actors::alert::AlertMsg;
use tradebaas_actors::broker::BrokerStatus;
use tradebaas_actors::checks::{self, ChecksArgs, ChecksReport};
use tradebaas_actors::client::{Reply, ask};
use tradebaas_actors::failsafe::{FailSafeMsg, FailSafeStatus};
use tradebaas_actors::health;
use tradebaas_actors::mode::TradingMode;
use tradebaas_actors::names::Names;
use tradebaas_actors::persister::PersisterStatus;

use super::*;

pub(super) async fn handle(context: &AdminContext, request: &Request, peer_uid: u32) -> Response {
    match request {
        Request::Status {} => status(&context.names).await,
        Request::Mode { mode, reason } => set_mode(context, *mode, reason, peer_uid).await,
        Request::AlertsAck { alert_id, .. } => acknowledge(&context.names, alert_id).await,
    }
}

async fn status(names: &Names) -> Response {
    let fail_safe = ask(names, FailSafeMsg::Status, ASK_TIMEOUT).await;
    let alerts = ask(names, AlertMsg::Status, ASK_TIMEOUT).await;
    let Reply::Answered(f) = fail_safe else {
        return Response::refused(
            Refusal::Unavailable,
            format!("the fail-safe is {}", fail_safe.describe()),
        );
    };
    let (open, open_critical) = match alerts.answered() {
        Some(a) => (Some(a.open), Some(a.open_critical)),
        None => (None, None),
    };
    let message = format!(
        "mode {} ({}); open alerts: {}",
        f.mode,
        f.reason,
        open.map_or_else(
            || format!("unknown (alert actor {})", alerts.describe()),
            |n| n.to_string()
        )
    );
    Response::ok(
        message,
        Some(json!({
            "mode": f.mode,
            "reason": f.reason,
            "changed_at": f.changed_at,
            "loaded": f.loaded,
            "recovered": f.recovered,
            "open_alerts": open,
            "open_critical_alerts": open_critical,
        })),
    )
}

async fn set_mode(
    context: &AdminContext,
    mode: OperatorMode,
    reason: &str,
    peer_uid: u32,
) -> Response {
    if reason.trim().is_empty() {
        return Response::refused(
            Refusal::BadRequest,
            "a reason is required for a mode change (--reason \"…\")",
        );
    }
    let to = mode.trading_mode();
    // From SHUTDOWN the fail-safe refuses AGGRESSIVE outright: give the operator that answer
    // rather than the pre-flight results.
    let current = ask(&context.names, FailSafeMsg::GetMode, ASK_TIMEOUT).await;
    if to == TradingMode::Aggressive
        && current != Reply::Answered(TradingMode::Shutdown)
        && let Err(problems) = aggressive_preflight(&context.names, &context.checks).await
    {
        let mut r = Response::refused(
            Refusal::Refused,
            format!(
                "AGGRESSIVE refused: {} pre-flight check(s) failed: {}",
                problems.len(),
                problems.join("; ")
            ),
        );
        r.problems = problems;
        return r;
    }
    let answer = ask(
        &context.names,
        |reply| FailSafeMsg::SetMode {
            mode: to,
            reason: format!("operator (uid {peer_uid}): {}", reason.trim()),
            reply,
        },
        ACTION_TIMEOUT,
    )
    .await;
    match answer {
        Reply::Answered(Ok(())) => Response::ok(format!("mode is now {to}"), None),
        Reply::Answered(Err(why)) => {
            Response::refused(Refusal::Refused, format!("{to} refused: {why}"))
        }
        other => Response::refused(
            Refusal::Unavailable,
            format!("the fail-safe is {}; mode unchanged", other.describe()),
        ),
    }
}

async fn acknowledge(names: &Names, alert_id: &str) -> Response {
    let id = alert_id.to_owned();
    let answer = ask(
        names,
        |reply| AlertMsg::Acknowledge {
            alert_id: id,
            reply,
        },
        ACTION_TIMEOUT,
    )
    .await;
    match answer {
        Reply::Answered(Ok(record)) => Response::ok(
            format!(
                "alert {} acknowledged: {}",
                record.alert_id, record.alert.title
            ),
            serde_json::to_value(&record).ok(),
        ),
        Reply::Answered(Err(e)) => Response::refused(Refusal::Refused, e.to_string()),
        other => Response::refused(
            Refusal::Unavailable,
            format!("the alert actor is {}", other.describe()),
        ),
    }
}

/// The checks AGGRESSIVE needs at the moment it is asked for: every actor running and answering,
/// the stored mode loaded and this run's recovery finished, the broker connected and subscribed,
/// store writes not failing, and the store verifying (read-only) from the first event on.
/// `Err` lists each failed check in words for the operator.
pub async fn aggressive_preflight(names: &Names, checks: &ChecksArgs) -> Result<(), Vec<String>> {
    let replies = health::gather(names, ASK_TIMEOUT).await;
    // The same checks as at start-up and hourly (event log, snapshots, capital against the
    // exchange, strategy states, mode, exchange reachable), run now; shown in /health.
    let report = checks::on_demand(names, checks).await;
    let mut problems = Vec::new();
    if let Err(e) = health::readiness(&replies) {
        problems.push(format!("not ready: {e}"));
    }
    problems.extend(preflight_problems(
        &replies.fail_safe,
        &replies.broker,
        &replies.persister,
        Some(&report),
    ));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The fail-safe, broker, persister and store parts of [`aggressive_preflight`] (pure).
pub fn preflight_problems(
    fail_safe: &Reply<FailSafeStatus>,
    broker: &Reply<BrokerStatus>,
    persister: &Reply<PersisterStatus>,
    checks: Option<&ChecksReport>,
) -> Vec<String> {
    let mut problems = Vec::new();
    match fail_safe.answered() {
        Some(f) if !f.loaded => {
            problems.push("fail-safe: the stored trading mode has not been loaded".into())
        }
        Some(f) if !f.recovered => {
            problems.push("fail-safe: this run's start-up recovery has not finished".into())
        }
        Some(_) => {}
        None => problems.push(format!("fail-safe is {}", fail_safe.describe())),
    }
    match broker.answered() {
        Some(b) if b.state == tradebaas_actors::broker::LinkState::Connected => {}
        Some(b) => problems.push(format!(
            "broker is not connected ({})",
            serde_json::to_value(b.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        )),
        None => problems.push(format!("broker-connection is {}", broker.describe())),
    }
    match persister.answered() {
        Some(p) if p.failing_since.is_some() => problems.push(format!(
            "store writes are failing: {}",
            p.last_error.as_deref().unwrap_or("unknown error")
        )),
        Some(_) => {}
        None => problems.push(format!("state-persister is {}", persister.describe())),
    }
    match checks {
        Some(r) => problems.extend(
            r.checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| format!("check {}: {}", c.name, c.detail)),
        ),
        None => problems.push("checks: they did not run".into()),
    }
    problems
}
