//! Kill -9 at any instant on the order path. The real binary trades on a paper exchange that
//! outlives it (this test process hosts the exchange, so positions, orders and per-label call
//! counts persist across the daemon's deaths) and is SIGKILLed at many random instants: during
//! start-up and recovery, right after a signal, while an entry is in flight (its answer dropped
//! after the exchange accepted it, or held back), with a position open, while a leg closes it,
//! and with a leg closing it while the daemon is down. It is restarted after every kill.
//!
//! Across all runs: every entry label reaches the exchange at most once (`private/buy` and
//! `private/sell` requests per label, counted by the exchange), the store verifies after every
//! kill, and after a last restart without a kill every position is protected by both of its legs
//! for its full size, or closed, with no stray order of ours left.
//!
//! Seeded: the seed is printed; `TRADEBAAS_CHAOS_SEED=<n>` replays the same plan (the
//! instants are the same, what the daemon was doing at them depends on the machine).
//! `TRADEBAAS_CHAOS_KILLS=<n>` sets the number of kills (default [`DEFAULT_KILLS`]).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{Daemon, cli, fetch, poll, wait_ready};
use serde_json::Value;
use tradebaas::paper_exchange::PaperExchange;

const ID: &str = "x";
const INSTRUMENT: &str = "BTC-PERPETUAL";
const CLIENT: &str = "chaos-test";
const SECRET: &str = "chaos-test-secret-0123456789";
/// About a minute on a loaded 2-core machine.
const DEFAULT_KILLS: usize = 40;
/// The longest answer the exchange is told to hold back.
const MAX_HOLD: Duration = Duration::from_millis(2500);
/// How long any one wait of the test may take before it is a failure (generous: loaded CI).
const WAIT: Duration = Duration::from_secs(30);

/// `tradebaas run` on `data` with `config`, logged in to the test's paper exchange.
fn start(data: &Path, config: &Path) -> Daemon {
    let env = [
        ("DERIBIT_CLIENT_ID", CLIENT),
        ("DERIBIT_CLIENT_SECRET", SECRET),
    ];
    Daemon::start(data, config, &env)
}

/// `/health` (200 or 503) as JSON, or None while the daemon does not answer.
async fn health(base: &str) -> Option<Value> {
    let (_, body) = fetch(base, "/health").await.ok()?;
    Some(body).filter(|b| !b.is_null())
}

/// The instance `ID` in a `/health` answer (Null if absent).
fn instance(health: &Value) -> Value {
    health["actors"]["strategy"]["strategies"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["id"] == ID))
        .cloned()
        .unwrap_or(Value::Null)
}

/// What the daemon was doing, as `/health` says: `LIFECYCLE[/job]`, or `starting`.
fn phase_of(health: Option<&Value>) -> String {
    let Some(i) = health.map(instance).filter(|i| !i.is_null()) else {
        return "starting".into();
    };
    let lifecycle = i["lifecycle"].as_str().unwrap_or("?").to_owned();
    match i["job"].as_str() {
        Some(job) => format!("{lifecycle}/{job}"),
        None => lifecycle,
    }
}

/// Polls `/health` until it answers JSON on which `pred` holds.
async fn wait_health(base: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let answered = |_, h: &Value| h.is_object() && pred(h);
    poll(base, "/health", WAIT, answered, || format!("never {what}"))
        .await
        .1
}

/// Runs the binary with `args` to completion: (exit code, stdout, stderr).
async fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = cli(args).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tradebaas state verify` on the data directory: Ok, or the report.
async fn verify_store(data: &Path) -> Result<(), String> {
    let data = data.display().to_string();
    let (code, out, err) = run(&["state", "verify", "--data-dir", &data]).await;
    if code == Some(0) {
        Ok(())
    } else {
        Err(format!("exit {code:?}: {out}{err}"))
    }
}

/// The lifecycle the store holds for `ID` (read-only; no daemon running).
fn stored_lifecycle(data: &Path) -> String {
    match tradebaas::state_cmd::export(&tradebaas::state_cmd::store_path(data)) {
        Ok(e) => e
            .state
            .get(&format!("strategy.{ID}"))
            .and_then(|r| r["lifecycle"].as_str())
            .unwrap_or("none")
            .to_owned(),
        Err(e) => format!("unreadable: {e}"),
    }
}

/// Ready, recovery done, and AGGRESSIVE (an operator re-enables trading after a recovery that
/// restricted it, through the admin socket and its pre-flight checks).
async fn ready_and_aggressive(base: &str, data: &Path) {
    wait_health(base, "ready", |_| true).await;
    wait_ready(base, WAIT).await;
    let deadline = Instant::now() + WAIT;
    let mode = health(base).await.map(|h| h["mode"].clone());
    if mode == Some(Value::from("AGGRESSIVE")) {
        return;
    }
    assert_ne!(
        mode,
        Some(Value::from("SHUTDOWN")),
        "the daemon latched SHUTDOWN"
    );
    let mut last = String::new();
    while Instant::now() < deadline {
        let reason = "chaos test: trading again after a kill -9";
        let data = data.display().to_string();
        let args = [
            "mode",
            "aggressive",
            "--reason",
            reason,
            "--data-dir",
            &data,
        ];
        let (code, out, err) = run(&args).await;
        if code == Some(0) {
            return;
        }
        last = format!("exit {code:?}: {out}{err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("AGGRESSIVE was never allowed again: {last}");
}

/// Entry labels (`tb-x-<seq>`, no leg suffix) and how often each was sent.
fn entry_requests(paper: &PaperExchange) -> BTreeMap<String, u64> {
    let prefix = format!("tb-{ID}-");
    paper
        .stats()
        .order_requests_by_label
        .into_iter()
        .filter(|(label, _)| {
            label
                .strip_prefix(&prefix)
                .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect()
}

fn exchange_size(paper: &PaperExchange) -> f64 {
    paper
        .positions()
        .iter()
        .find(|p| p["instrument_name"] == INSTRUMENT)
        .and_then(|p| p["size"].as_f64())
        .unwrap_or(0.0)
}

/// Whether the exchange and the daemon agree that the position is protected or closed: an open
/// position has exactly its two legs resting (reduce-only, full size, the exit side), a flat one
/// none; no other order of ours rests. Err says what is wrong.
fn protected_or_closed(paper: &PaperExchange, inst: &Value) -> Result<String, String> {
    if !inst["job"].is_null() {
        return Err(format!("a job is running: {}", inst["job"]));
    }
    let size = exchange_size(paper);
    let ours: Vec<Value> = paper
        .open_orders()
        .into_iter()
        .filter(|o| o["label"].as_str().is_some_and(|l| l.starts_with("tb-")))
        .collect();
    match inst["lifecycle"].as_str() {
        Some("POSITION_OPEN") => {
            let p = &inst["position"];
            let amount = p["size"].as_f64().unwrap_or(0.0);
            let (sign, exit) = match p["direction"].as_str() {
                Some("buy") => (1.0, "sell"),
                _ => (-1.0, "buy"),
            };
            if (size - sign * amount).abs() > 1e-9 {
                return Err(format!(
                    "the daemon holds {sign}×{amount}, the exchange {size}"
                ));
            }
            let legs: Vec<&str> = p["protective_orders"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if legs.len() != 2 {
                return Err(format!("legs recorded: {legs:?}"));
            }
            for (label, kind) in [(legs[0], "stop_market"), (legs[1], "limit")] {
                let resting: Vec<&Value> = ours.iter().filter(|o| o["label"] == label).collect();
                let [leg] = resting.as_slice() else {
                    return Err(format!(
                        "{} resting orders {label}: {resting:?}",
                        resting.len()
                    ));
                };
                if leg["reduce_only"] != true
                    || leg["amount"].as_f64() != Some(amount)
                    || leg["direction"] != exit
                    || leg["order_type"] != kind
                {
                    return Err(format!("leg {label} does not protect the position: {leg}"));
                }
            }
            if ours.len() != 2 {
                return Err(format!("stray orders of ours besides the legs: {ours:?}"));
            }
            Ok(format!("position {size} protected by {legs:?}"))
        }
        Some("ANALYZING" | "IDLE") => {
            if size.abs() > 1e-9 {
                return Err(format!("the daemon is flat, the exchange holds {size}"));
            }
            if !ours.is_empty() {
                return Err(format!("orders of ours rest while flat: {ours:?}"));
            }
            Ok("flat".into())
        }
        other => Err(format!("lifecycle {other:?}")),
    }
}

/// Where a round aims its kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aim {
    /// Within the first moments after the process starts: store open, recovery, resolving what
    /// the previous run left in flight, orphans.
    Startup,
    /// At a random instant after the price crosses (signal, guards, commits, entry, check).
    AfterSignal,
    /// Just after the entry reached the exchange (its answer maybe held or dropped).
    EntryInFlight,
    /// While the exchange sits on the answer to a request of the order path.
    HeldAnswer,
    /// With the position open and its legs resting (or being put back).
    PositionOpen,
    /// Just after the price hit a leg: the daemon finds the fill and closes the trade.
    LegFilling,
    /// The kill first, then a leg closes the position while the daemon is down.
    LegFillsWhileDown,
}

/// Both order methods (an entry is a buy or a sell; legs and closes the other side).
const ORDER: &str = "private/buy|sell";
/// Requests made while entering (SIGNAL_DETECTED → ENTERING_POSITION → POSITION_OPEN).
const ENTRY_PATH: [&str; 5] = [
    ORDER,
    ORDER,
    "private/enable_cancel_on_disconnect",
    "private/disable_cancel_on_disconnect",
    "private/get_order_state_by_label",
];
/// Requests made while a position is open or closing.
const POSITION_PATH: [&str; 5] = [
    ORDER,
    "private/get_open_orders_by_instrument",
    "private/get_order_state_by_label",
    "private/cancel_by_label",
    "private/get_position",
];

/// What the exchange is told to do wrong with the next request of one method.
#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    /// Executed, then the connection is closed without an answer.
    DropAfterAccept(&'static str),
    /// Executed, the answer held back this long (the connection reads nothing meanwhile).
    Hold(&'static str, Duration),
}

fn methods(method: &'static str) -> Vec<&'static str> {
    if method == ORDER {
        vec!["private/buy", "private/sell"]
    } else {
        vec![method]
    }
}

fn arm(paper: &PaperExchange, fault: Fault) {
    match fault {
        Fault::None => {}
        Fault::DropAfterAccept(m) => {
            for method in methods(m) {
                paper.faults().drop_after_accept(method, 1);
            }
        }
        Fault::Hold(m, d) => {
            for method in methods(m) {
                paper.faults().hold_after_accept(method, 1, d);
            }
        }
    }
}

fn hold(rng: &mut fastrand::Rng) -> Duration {
    Duration::from_millis(rng.u64(200..=MAX_HOLD.as_millis() as u64))
}

fn pick_fault(rng: &mut fastrand::Rng, path: &[&'static str]) -> Fault {
    let method = path[rng.usize(..path.len())];
    match rng.u8(0..3) {
        0 => Fault::None,
        1 => Fault::DropAfterAccept(method),
        _ => Fault::Hold(method, hold(rng)),
    }
}

/// Requests the exchange received for `method` (both order methods for [`ORDER`]).
fn received(paper: &PaperExchange, method: &'static str) -> u64 {
    let stats = paper.stats();
    methods(method)
        .iter()
        .map(|m| stats.requests_by_method.get(*m).copied().unwrap_or(0))
        .sum()
}

/// Waits (up to `within`) until the exchange has received more than `before` requests of
/// `method`: the held request is being held.
async fn until_received(
    paper: &PaperExchange,
    method: &'static str,
    before: u64,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    while received(paper, method) <= before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Moves the price away and back so the 2-tick average crosses the 3-tick one (a signal at
/// either move), in the background so the kill can land before, between or after the moves.
fn cross(paper: &Arc<PaperExchange>, mark: f64, up: bool) -> tokio::task::JoinHandle<()> {
    let paper = Arc::clone(paper);
    let away = if up { mark * 0.998 } else { mark * 1.002 };
    tokio::spawn(async move {
        paper.set_price(INSTRUMENT, away);
        tokio::time::sleep(Duration::from_millis(300)).await;
        paper.set_price(INSTRUMENT, mark);
    })
}

/// A price through the stop-loss (`stop`) or the take-profit of the open position `p`.
fn through_leg(p: &Value, stop: bool) -> f64 {
    let long = p["direction"] == "buy";
    if stop {
        let s = p["stop_price"].as_f64().unwrap();
        if long { s * 0.999 } else { s * 1.001 }
    } else {
        let t = p["take_profit_price"].as_f64().unwrap();
        if long { t * 1.001 } else { t * 0.999 }
    }
}

fn millis(rng: &mut fastrand::Rng, max: u64) -> Duration {
    Duration::from_millis(rng.u64(0..=max))
}

/// One kill, for the log and the coverage assertion.
#[derive(Debug)]
struct Kill {
    aim: Aim,
    fault: Fault,
    /// `/health` just before the SIGKILL.
    seen: String,
    /// The store just after it.
    stored: String,
}

fn config(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("tradebaas.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[broker]
url = "{url}"
heartbeat_interval = "1s"
request_timeout = "2s"

[broker.reconnect]
backoff = {{ initial = "100ms", max = "400ms", multiplier = 2.0, jitter = 0.1 }}

[fail_safe]
initial_mode = "AGGRESSIVE"

[heartbeat]
interval = "1s"

[recovery]
timeout = "10s"

[execution]
check_interval = "100ms"
not_found_grace = "300ms"
resolve_timeout = "10s"

[execution.retry]
max_attempts = 5
backoff = {{ initial = "50ms", max = "500ms", multiplier = 2.0, jitter = 0.1 }}

[[strategies]]
id = "{ID}"
instrument = "{INSTRUMENT}"

[strategies.ma_cross]
fast = 2
slow = 3
stop_distance_pct = 0.5
take_profit_pct = 1.0
min_ticks_between_signals = 0
"#
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_instants_sends_each_entry_once_and_leaves_every_position_protected() {
    let seed = std::env::var("TRADEBAAS_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let kills = std::env::var("TRADEBAAS_CHAOS_KILLS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(DEFAULT_KILLS);
    eprintln!("chaos: seed {seed}, {kills} kills (replay: TRADEBAAS_CHAOS_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();

    let paper = Arc::new(
        common::paper_exchange(|c| {
            c.seed = Some(seed);
            c.ticks_per_second = 20.0;
        })
        .await,
    );
    paper.add_credentials(CLIENT, SECRET);
    // The test moves the price; nothing else does.
    paper.pause_market(true);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &paper.url());
    let data = dir.path().join("data");

    let mut log: Vec<Kill> = Vec::new();
    let mut pending: Option<tokio::task::JoinHandle<()>> = None;
    for round in 0..kills {
        if let Some(moves) = pending.take() {
            moves.await.unwrap();
        }
        paper.faults().clear();
        // Something left in flight by the last kill: often kill again while it is recovered.
        let in_flight = log.last().is_some_and(|k| {
            matches!(
                k.stored.as_str(),
                "SIGNAL_DETECTED" | "ENTERING_POSITION" | "CLOSING"
            )
        });
        let mut daemon = start(&data, &config);
        let base = daemon.serving(WAIT).await;
        let mut fault = Fault::None;
        let mut after_kill: Option<f64> = None;
        let aim;
        if rng.u8(0..8) == 0 || (in_flight && rng.bool()) {
            aim = Aim::Startup;
            tokio::time::sleep(millis(&mut rng, 600)).await;
        } else {
            ready_and_aggressive(&base, &data).await;
            // Settled: no job, and either watching the market (enough ticks for the averages)
            // or holding a position.
            let h = wait_health(&base, "settled in ANALYZING or POSITION_OPEN", |h| {
                let i = instance(h);
                i["job"].is_null()
                    && i["last_mark_price"].is_f64()
                    && ((i["lifecycle"] == "ANALYZING" && i["ticks"].as_u64() >= Some(4))
                        || i["lifecycle"] == "POSITION_OPEN")
            })
            .await;
            let i = instance(&h);
            // Whatever the last kill interrupted, the restarted daemon protects or closes it.
            let deadline = Instant::now() + WAIT;
            loop {
                let i = instance(&health(&base).await.unwrap_or(Value::Null));
                match protected_or_closed(&paper, &i) {
                    Ok(_) => break,
                    Err(why) => assert!(
                        Instant::now() < deadline,
                        "after restart {round} the position is neither protected nor closed: \
                         {why}\ninstance: {i:#}\nkills: {log:#?}\nlog:\n{}",
                        daemon.log_tail(150)
                    ),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mark = i["last_mark_price"].as_f64().unwrap();
            if i["lifecycle"] == "ANALYZING" {
                let before_entries = entry_requests(&paper).len();
                match rng.u8(0..3) {
                    0 => {
                        aim = Aim::AfterSignal;
                        fault = pick_fault(&mut rng, &ENTRY_PATH);
                        arm(&paper, fault);
                        pending = Some(cross(&paper, mark, rng.bool()));
                        // The signal comes with the move back (300 ms), or with the first
                        // move when the averages were already apart.
                        tokio::time::sleep(Duration::from_millis(200) + millis(&mut rng, 600))
                            .await;
                    }
                    1 => {
                        aim = Aim::EntryInFlight;
                        fault = match rng.u8(0..3) {
                            0 => Fault::None,
                            1 => Fault::DropAfterAccept(ORDER),
                            _ => Fault::Hold(ORDER, hold(&mut rng)),
                        };
                        arm(&paper, fault);
                        pending = Some(cross(&paper, mark, rng.bool()));
                        let deadline = Instant::now() + Duration::from_secs(5);
                        while entry_requests(&paper).len() == before_entries
                            && Instant::now() < deadline
                        {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        let window = match fault {
                            Fault::Hold(_, d) => d.as_millis() as u64,
                            _ => 60,
                        };
                        tokio::time::sleep(millis(&mut rng, window)).await;
                    }
                    _ => {
                        aim = Aim::HeldAnswer;
                        let method = ENTRY_PATH[rng.usize(..ENTRY_PATH.len())];
                        let d = hold(&mut rng);
                        fault = Fault::Hold(method, d);
                        let before = received(&paper, method);
                        arm(&paper, fault);
                        if method == "private/get_order_state_by_label" {
                            // An entry looks itself up only when its answer was lost.
                            arm(&paper, Fault::DropAfterAccept(ORDER));
                        }
                        pending = Some(cross(&paper, mark, rng.bool()));
                        until_received(&paper, method, before, Duration::from_secs(3)).await;
                        tokio::time::sleep(millis(&mut rng, d.as_millis() as u64)).await;
                    }
                }
            } else {
                let p = &i["position"];
                // Faults now hit checks, leg re-placements and closes (reduce-only: re-sent
                // freely).
                // Most rounds with a position end it, so that there are many entries.
                match rng.u8(0..5) {
                    0 => {
                        aim = Aim::PositionOpen;
                        fault = pick_fault(&mut rng, &POSITION_PATH);
                        arm(&paper, fault);
                        tokio::time::sleep(millis(&mut rng, 500)).await;
                    }
                    1 | 2 => {
                        aim = Aim::LegFilling;
                        fault = pick_fault(&mut rng, &POSITION_PATH);
                        arm(&paper, fault);
                        paper.set_price(INSTRUMENT, through_leg(p, rng.bool()));
                        tokio::time::sleep(millis(&mut rng, 300)).await;
                    }
                    3 => {
                        aim = Aim::HeldAnswer;
                        let method = POSITION_PATH[rng.usize(..POSITION_PATH.len())];
                        let d = hold(&mut rng);
                        fault = Fault::Hold(method, d);
                        let before = received(&paper, method);
                        arm(&paper, fault);
                        // Only the check's cheap path runs while both legs rest.
                        if method != "private/get_open_orders_by_instrument" || rng.bool() {
                            paper.set_price(INSTRUMENT, through_leg(p, rng.bool()));
                        }
                        until_received(&paper, method, before, Duration::from_secs(3)).await;
                        tokio::time::sleep(millis(&mut rng, d.as_millis() as u64)).await;
                    }
                    _ => {
                        aim = Aim::LegFillsWhileDown;
                        after_kill = Some(through_leg(p, rng.bool()));
                    }
                }
            }
        }
        let seen = phase_of(health(&base).await.as_ref());
        daemon.kill();
        log.push(Kill {
            aim,
            fault,
            seen,
            stored: String::new(),
        });
        if let Some(price) = after_kill {
            paper.set_price(INSTRUMENT, price);
        }
        if let Err(e) = verify_store(&data).await {
            panic!(
                "after kill {round} ({:?}) the store does not verify: {e}\nlog:\n{}",
                log.last(),
                daemon.log_tail(80)
            );
        }
        let k = log.last_mut().unwrap();
        k.stored = stored_lifecycle(&data);
        eprintln!(
            "chaos: kill {round:2} aimed {:?} fault {:?}: saw {}, stored {} (t = {:.1}s)",
            k.aim,
            k.fault,
            k.seen,
            k.stored,
            started.elapsed().as_secs_f64()
        );
        let sent = entry_requests(&paper);
        let twice: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "after kill {round} an entry was sent more than once: {twice:?}\nkills: {log:#?}\nlog:\n{}",
            daemon.log_tail(120)
        );
    }
    if let Some(moves) = pending.take() {
        moves.await.unwrap();
    }

    // A last start without a kill: it must settle with every position protected or closed.
    paper.faults().clear();
    let mut daemon = start(&data, &config);
    let base = daemon.serving(WAIT).await;
    let deadline = Instant::now() + WAIT;
    let mut agreed_since: Option<Instant> = None;
    let verdict = loop {
        let h = health(&base).await.unwrap_or(Value::Null);
        let i = instance(&h);
        match protected_or_closed(&paper, &i) {
            // Held for longer than any held answer could still change it.
            Ok(v) if agreed_since.is_some_and(|t| t.elapsed() > MAX_HOLD) => break v,
            Ok(_) => {
                agreed_since.get_or_insert_with(Instant::now);
            }
            Err(why) => {
                agreed_since = None;
                assert!(
                    Instant::now() < deadline,
                    "after the last restart the position is not protected or closed: {why}\n\
                     instance: {i:#}\nexchange orders: {:#?}\nkills: {log:#?}\nlog:\n{}",
                    paper.open_orders(),
                    daemon.log_tail(150)
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let unprotected = daemon.lines_with("position unprotected");
    assert_eq!(
        daemon.terminate(WAIT),
        Some(0),
        "SIGTERM:\n{}",
        daemon.log_tail(40)
    );
    verify_store(&data)
        .await
        .unwrap_or_else(|e| panic!("the store does not verify at the end: {e}"));

    let sent = entry_requests(&paper);
    let entries_on_exchange = |label: &str| {
        paper
            .all_orders()
            .iter()
            .filter(|o| o["label"] == label)
            .count()
    };
    for (label, n) in &sent {
        assert_eq!(*n, 1, "entry {label} was sent {n} times");
        assert!(
            entries_on_exchange(label) <= 1,
            "entry {label} is on the exchange more than once"
        );
    }
    // A phase is what /health said just before the kill, or what the store held just after
    // (a commit can land between the two).
    let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
    for k in &log {
        *phases.entry(k.seen.as_str()).or_default() += 1;
        if !k.seen.starts_with(k.stored.as_str()) {
            *phases.entry(k.stored.as_str()).or_default() += 1;
        }
    }
    eprintln!(
        "chaos: {} kills in {:.1}s, {} entries sent (each once), end: {verdict}; kills by phase: \
         {phases:?}; unprotected-rollback lines in the last run: {}",
        log.len(),
        started.elapsed().as_secs_f64(),
        sent.len(),
        unprotected.len()
    );
    if kills >= 10 {
        assert!(
            phases.len() >= 3,
            "the kills hit too few phases: {phases:?}"
        );
        assert!(
            sent.len() >= kills / 6,
            "too few entries to say anything: {} in {kills} rounds",
            sent.len()
        );
    } else if kills >= 2 {
        assert!(
            phases.len() >= 2,
            "the kills hit one phase only: {phases:?}"
        );
    }
}
