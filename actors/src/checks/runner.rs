//! The runs: the store read on a blocking thread, the exchange asked through the broker, the
//! start-up, periodic, on-demand and offline runs, and the periodic checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracing::{error, info, warn};

use super::act::{
    act_on_periodic, failed_details, raise, report_to_failsafe, resolve, restrict, startup_alert,
};
use super::{
    Check, ChecksConfig, ChecksReport, EVENT_LOG, RunKind, STARTUP_ALERT_KEY, evaluate_store,
    exchange, local_capital, newest_with_capital, unreadable_store,
};
use crate::client;
use crate::names::Names;
use crate::protocol::broker::RequestError;
use crate::store::{
    CHECKPOINT_KEY, Change, Checkpoint, IntegrityFacts, Scope, read_integrity_facts, verify_slice,
};

/// Bound on the exchange questions of one run, whatever the broker's own timeouts.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the store on a blocking thread (never on an async worker). The daemon reads it once
/// right after opening the store, before any actor can write (the fail-safe rewrites an
/// unreadable mode as SHUTDOWN, for one), and hands the result to [`startup`].
pub async fn read_facts(path: PathBuf) -> Result<IntegrityFacts, String> {
    match tokio::task::spawn_blocking(move || read_integrity_facts(&path, Scope::Tail)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the reading thread failed: {e}")),
    }
}

/// The offline subset (every check but `exchange`; capital not compared with the exchange) on
/// the store at `path`, read-only: what `tradebaas check` prints. Blocking.
pub fn run_offline(path: &Path, config: &ChecksConfig) -> ChecksReport {
    let started = Instant::now();
    let now = crate::clock::now();
    let checks = match read_integrity_facts(path, Scope::Tail) {
        Ok(facts) => evaluate_store(&facts, None, config, now),
        Err(e) => unreadable_store(&e.to_string()),
    };
    ChecksReport::new(RunKind::Offline, now, checks, started.elapsed())
}

/// What a runner needs.
#[derive(Debug, Clone)]
pub struct ChecksArgs {
    /// The store file (`<data_dir>/tradebaas.db`).
    pub store_path: PathBuf,
    pub config: ChecksConfig,
}

async fn ask_exchange(names: &Names, method: &str, params: Value) -> Result<Value, String> {
    // A check that runs during a reconnect waits for the next session (a second or so) rather
    // than fail, and restrict trading, for that.
    match client::request_when_connected(names, method, params, EXCHANGE_TIMEOUT).await {
        Some(Ok(v)) => Ok(v),
        Some(Err(RequestError::NotConnected)) => Err(format!(
            "not connected to the exchange for {} s",
            EXCHANGE_TIMEOUT.as_secs()
        )),
        Some(Err(e)) => Err(e.to_string()),
        None => Err(format!("no answer within {} s", EXCHANGE_TIMEOUT.as_secs())),
    }
}

/// Every check, online: the store checks plus `exchange`, with the newest snapshot's equity
/// compared to a fresh `private/get_account_summary` per currency (through the broker). Never
/// blocks an actor: the store is read on a blocking thread, the exchange asked through
/// [`crate::client::request`]. This is the function to call before allowing AGGRESSIVE: allow it
/// only when the report's `passed` is true.
pub async fn run_online(names: &Names, args: &ChecksArgs, kind: RunKind) -> ChecksReport {
    let started = Instant::now();
    let facts = read_facts(args.store_path.clone()).await;
    run_with_facts(names, args, kind, facts, started).await
}

/// [`run_online`] on store facts read already.
async fn run_with_facts(
    names: &Names,
    args: &ChecksArgs,
    kind: RunKind,
    facts: Result<IntegrityFacts, String>,
    started: Instant,
) -> ChecksReport {
    let sent = crate::clock::now();
    let time = ask_exchange(names, "public/get_time", json!({})).await;
    let exchange_check = exchange(time, sent, crate::clock::now(), args.config.clock_skew);
    let now = crate::clock::now();
    let mut checks = match &facts {
        Ok(facts) => {
            let mut fresh = BTreeMap::new();
            let currencies = newest_with_capital(&facts.snapshots)
                .ok()
                .and_then(|w| w.found)
                .and_then(|(_, p)| local_capital(&p).ok())
                .map(|l| l.equity.into_keys().collect::<Vec<_>>())
                .unwrap_or_default();
            for currency in currencies {
                let answer = if exchange_check.passed {
                    ask_exchange(
                        names,
                        "private/get_account_summary",
                        json!({ "currency": currency }),
                    )
                    .await
                } else {
                    Err("exchange unreachable, see `exchange`".into())
                };
                fresh.insert(currency, answer);
            }
            evaluate_store(facts, Some(&fresh), &args.config, now)
        }
        Err(e) => unreadable_store(e),
    };
    checks.push(exchange_check);
    ChecksReport::new(kind, now, checks, started.elapsed())
}

/// An on-demand run (e.g. the admin socket before it allows AGGRESSIVE): [`run_online`] with
/// [`RunKind::OnDemand`], its report shown in `/health`. It changes no mode and raises no alert:
/// the caller refuses AGGRESSIVE unless `passed`.
pub async fn on_demand(names: &Names, args: &ChecksArgs) -> ChecksReport {
    let report = run_online(names, args, RunKind::OnDemand).await;
    report_to_failsafe(names, &report);
    if !report.passed {
        warn!(failed = ?report.failed(), "on-demand checks failed");
    }
    report
}

/// The start-up run (after recovery, before the fail-safe hears that recovery finished): the
/// store checks on `facts` (read with [`read_facts`] when the store was opened, before the tree
/// started) and the online checks now; shows the report in `/health`, and on any failure
/// restricts trading to OBSERVE_ONLY and raises one CRITICAL `startup_checks` alert naming each
/// failed check.
pub async fn startup(
    names: &Names,
    args: &ChecksArgs,
    facts: Result<IntegrityFacts, String>,
) -> ChecksReport {
    let report = run_with_facts(names, args, RunKind::Startup, facts, Instant::now()).await;
    report_to_failsafe(names, &report);
    if report.passed {
        info!(took_ms = report.took_ms, "startup checks passed");
        resolve(names, STARTUP_ALERT_KEY);
    } else {
        let failed = report.failed();
        error!(failed = ?failed, details = %failed_details(&report), "startup checks failed: trading is OBSERVE_ONLY");
        restrict(
            names,
            &format!("startup checks failed: {}", failed.join(", ")),
        )
        .await;
        raise(names, startup_alert(&report));
    }
    report
}

/// Runs the checks every `config.interval` (the first one an interval after the call), for as
/// long as the task lives. Each run verifies the events since the stored checkpoint (as at
/// start) plus the next `full_verify_slice` events of the whole chain (a full pass over many
/// runs; its findings fail `event_log`), and, when `event_log` passed, moves the checkpoint to
/// the newest verified event (a `chain.checkpoint` event through the persister), so the next
/// start verifies at most about an interval of events.
pub async fn periodic(names: Names, args: ChecksArgs) {
    let mut cursor: u64 = 0;
    loop {
        tokio::time::sleep(args.config.interval).await;
        let started = Instant::now();
        let facts = read_facts(args.store_path.clone()).await;
        let head = facts
            .as_ref()
            .ok()
            .map(|f| (f.chain.last_seq, f.chain.last_hash().to_owned()));
        let mut report = run_with_facts(&names, &args, RunKind::Periodic, facts, started).await;
        let path = args.store_path.clone();
        let slice_len = args.config.full_verify_slice;
        let from = cursor;
        match tokio::task::spawn_blocking(move || verify_slice(&path, from, slice_len)).await {
            Ok(Ok(slice)) => {
                cursor = if slice.done { 0 } else { slice.through };
                if slice.problems.is_empty() {
                    if slice.done {
                        info!(
                            through = slice.through,
                            "full chain verification pass complete"
                        );
                    }
                } else {
                    fail_event_log(
                        &mut report,
                        &format!(
                            "full-chain slice after seq {}: {}",
                            slice.after,
                            slice.problems.join("; ")
                        ),
                    );
                }
            }
            Ok(Err(e)) => fail_event_log(&mut report, &format!("full-chain slice: {e}")),
            Err(e) => fail_event_log(&mut report, &format!("full-chain slice thread: {e}")),
        }
        if report.passed {
            info!(took_ms = report.took_ms, "integrity checks passed");
        }
        if report.get(EVENT_LOG).is_some_and(|c| c.passed)
            && let Some((seq, hash)) = head
        {
            advance_checkpoint(&names, seq, hash);
        }
        act_on_periodic(&names, &report).await;
    }
}

/// Marks `event_log` failed in `report` with `detail` added.
pub(super) fn fail_event_log(report: &mut ChecksReport, detail: &str) {
    match report.checks.iter_mut().find(|c| c.name == EVENT_LOG) {
        Some(c) if c.passed => *c = Check::fail(EVENT_LOG, detail),
        Some(c) => c.detail = format!("{}; {detail}", c.detail),
        None => report.checks.push(Check::fail(EVENT_LOG, detail)),
    }
    report.passed = false;
}

/// Stores `seq`/`hash` as the verified checkpoint (with a `chain.checkpoint` event), through
/// the persister like every other write.
fn advance_checkpoint(names: &Names, seq: u64, hash: String) {
    use crate::protocol::persister::PersisterMsg;
    let cp = Checkpoint::now(seq, hash);
    let change = Change::event(
        "chain.checkpoint",
        json!({ "seq": cp.seq, "hash": cp.hash }),
    )
    .set(CHECKPOINT_KEY, cp.to_value());
    match names.get::<PersisterMsg>() {
        Some(p) => {
            if p.send_message(PersisterMsg::Commit {
                change,
                reply: None,
            })
            .is_err()
            {
                warn!("chain checkpoint not stored: the persister stopped");
            }
        }
        None => warn!("chain checkpoint not stored: the persister is not running"),
    }
}
