//! The `strategy` actor: hosts one instance per configured strategy and feeds it ticker data.
//!
//! Each instance has a [`Lifecycle`] and a durable [`StrategyRecord`] (state key
//! `strategy.<id>`). A transition is committed through the `state-persister` — the
//! `lifecycle.transition` event and the new record in one transaction — and only once the commit
//! is durable does the in-memory lifecycle change; an illegal transition is refused. On start
//! (`post_start`) the actor re-reads every `strategy.*` record and restores its instances.
//!
//! Ticks never change the lifecycle. The broker sends every ticker here, so the tick path is kept
//! cheap: one hash lookup, a few counters, no allocation and no logging per tick. A transition
//! awaits its commit inside the handler, so ticks queue behind it for the length of one fsync;
//! that keeps transitions strictly ordered and is rare next to ticks.
//!
//! For the entry path (ADR 0005) the actor also keeps the account equity per currency, refreshed
//! in the background, and arms cancel-on-disconnect ahead of entries while every instance is
//! flat (and disarms it while one is not).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use signal::Strategy as _;
use tracing::{debug, error, info, warn};

use crate::client;
use crate::metrics::Metrics;
pub use crate::model::{
    Decision, Intent, Lifecycle, PositionData, RECORD_KEY_PREFIX, Side, StrategyRecord, Ticker,
    TransitionData, record_key,
};
use crate::names::Names;
use crate::protocol::Internal;
use crate::protocol::dispatch;
pub use crate::protocol::strategy::{StrategyInstanceStatus, StrategyMsg, StrategyStatus};
use crate::store::Change;
use crate::task::AbortOnDrop;
use instance::Instance;

pub mod exec;
pub mod guards;
mod instance;
mod orphans;
mod records;
pub mod signal;

/// What the Strategy sends itself, wrapped in [`StrategyMsg::Internal`].
pub(crate) enum InternalMsg {
    /// A `private/get_account_summary` answer (or why there is none) for the equity
    /// cache.
    Equity {
        currency: String,
        reading: Result<exec::EquityReading, String>,
    },
    /// A helper task (an order-path job, the orphan sweep) panicked
    /// ([`crate::task::spawn_helper`]): fail, to be restarted; the restarted actor resumes from
    /// the stored records, as after a crash.
    TaskPanicked(String),
    /// Periodic re-check of instances with work outstanding.
    Check,
    /// A job of instance `id` ended.
    JobDone {
        id: String,
        outcome: exec::JobOutcome,
    },
    /// Instrument specs from `public/get_instruments`.
    Specs(HashMap<String, guards::InstrumentSpec>),
}

impl From<InternalMsg> for StrategyMsg {
    fn from(m: InternalMsg) -> Self {
        StrategyMsg::Internal(Internal::new(m))
    }
}

/// How long a transition waits for its commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one start-up load waits for the persister.
const LOAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Start-up load attempts.
const LOAD_ATTEMPTS: u32 = 3;
/// Pause between load attempts.
const LOAD_RETRY_DELAY: Duration = Duration::from_millis(200);

/// One configured strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyEntry {
    pub id: String,
    /// E.g. `BTC-PERPETUAL`.
    pub instrument: String,
    /// Parameters of the built-in example strategy (moving-average crossover on the mark price).
    /// An example of the runtime, not an edge.
    #[serde(default)]
    pub ma_cross: signal::MaCrossConfig,
}

/// What the strategy actor is spawned with.
#[derive(Clone)]
pub struct StrategyArgs {
    pub names: Names,
    pub strategies: Vec<StrategyEntry>,
    pub metrics: Metrics,
    /// `[execution]`.
    pub execution: exec::ExecutionConfig,
    /// Order labels are `<label_prefix>-<id>-<seq>[-leg]`.
    pub label_prefix: String,
}

impl StrategyArgs {
    /// Default execution settings and the default label prefix (tests, tools).
    pub fn new(names: Names, strategies: Vec<StrategyEntry>, metrics: Metrics) -> Self {
        Self {
            names,
            strategies,
            metrics,
            execution: exec::ExecutionConfig::default(),
            label_prefix: crate::recovery::RecoveryConfig::default().label_prefix,
        }
    }
}

/// The strategy actor.
pub struct StrategyActor;

/// The strategy actor's state.
pub struct StrategyState {
    names: Names,
    execution: exec::ExecutionConfig,
    label_prefix: String,
    metrics: Metrics,
    specs: HashMap<String, guards::InstrumentSpec>,
    entry_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Entries started (see [`exec::Exec::entries`]).
    entries: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Equity per settlement currency, for sizing (ADR 0005).
    equity: HashMap<String, exec::EquityReading>,
    /// Currencies whose equity is being fetched.
    equity_fetching: HashSet<String>,
    /// The task setting cancel-on-disconnect for the flat / not-flat state, if running.
    cod_task: Option<AbortOnDrop>,
    /// The orphan sweep running, if any.
    sweep: Option<AbortOnDrop>,
    orphans_cancelled: std::sync::Arc<std::sync::atomic::AtomicU64>,
    _check: Option<AbortOnDrop>,
    instances: Vec<Instance>,
    /// Instrument → indices into `instances`.
    by_instrument: HashMap<String, Vec<usize>>,
    records_loaded: bool,
    load_error: Option<String>,
    ticks_received: u64,
    last_tick_at: Option<DateTime<Utc>>,
}

impl StrategyState {
    fn new(args: StrategyArgs) -> Self {
        let StrategyArgs {
            names,
            strategies,
            metrics,
            execution,
            label_prefix,
        } = args;
        let mut by_instrument: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in strategies.iter().enumerate() {
            by_instrument
                .entry(s.instrument.clone())
                .or_default()
                .push(i);
        }
        Self {
            names,
            execution,
            label_prefix,
            metrics,
            specs: HashMap::new(),
            entry_lock: std::sync::Arc::new(tokio::sync::Mutex::new(())),
            entries: std::sync::Arc::default(),
            equity: HashMap::new(),
            equity_fetching: HashSet::new(),
            cod_task: None,
            sweep: None,
            orphans_cancelled: std::sync::Arc::default(),
            _check: None,
            instances: strategies
                .into_iter()
                .map(|entry| Instance {
                    record: StrategyRecord::idle(entry.id.clone()),
                    logic: match signal::MaCross::new(&entry.instrument, entry.ma_cross.clone()) {
                        Ok(l) => Some(l),
                        Err(e) => {
                            error!(actor = "strategy", id = %entry.id, error = %e, "strategy config invalid; it only tracks data");
                            None
                        }
                    },
                    entry,
                    stored: false,
                    restored: false,
                    ticks: 0,
                    last_mark_price: None,
                    signals: 0,
                    last_decision: None,
                    last_decision_at: None,
                    job: None,
                    last_refusal: None,
                    last_error: None,
                })
                .collect(),
            by_instrument,
            records_loaded: false,
            load_error: None,
            ticks_received: 0,
            last_tick_at: None,
        }
    }

    fn on_tick(&mut self, myself: &ActorRef<StrategyMsg>, ticker: &Ticker) {
        self.ticks_received += 1;
        self.last_tick_at = Some(crate::clock::now());
        let Some(indices) = self.by_instrument.get(ticker.instrument_name.as_str()) else {
            return;
        };
        // Disjoint field borrows: no clone of the index list on the tick path, and `jobs` only
        // allocates on the rare tick that leads to work.
        let mut jobs = Vec::new();
        for &i in indices {
            let Some(instance) = self.instances.get_mut(i) else {
                continue;
            };
            let Some(decision) = instance.on_tick(ticker) else {
                continue;
            };
            // A busy instance records the decision but does not act on it.
            if instance.job.is_none()
                && let Some(job) = instance.job_for(decision)
            {
                jobs.push((i, job));
            }
        }
        for (i, job) in jobs {
            self.spawn_job(myself, i, job);
        }
    }

    /// Starts `job` for instance `i` unless execution is off or the instance is busy.
    fn spawn_job(&mut self, myself: &ActorRef<StrategyMsg>, i: usize, job: exec::Job) {
        if !self.execution.enabled {
            return;
        }
        let ex = exec::Exec {
            names: self.names.clone(),
            config: self.execution.clone(),
            prefix: self.label_prefix.clone(),
            metrics: self.metrics.clone(),
            entry_lock: self.entry_lock.clone(),
            entries: self.entries.clone(),
            me: myself.clone(),
        };
        let specs = &self.specs;
        let equity = &self.equity;
        let Some(instance) = self.instances.get_mut(i) else {
            return;
        };
        if instance.job.is_some() {
            return;
        }
        let snap = exec::Snapshot {
            id: instance.entry.id.clone(),
            instrument: instance.entry.instrument.clone(),
            record: instance.record.clone(),
            spec: specs.get(&instance.entry.instrument).cloned(),
            mark: instance.last_mark_price,
            last_refusal: instance.last_refusal.clone(),
            equity: equity
                .get(exec::currency_of(&instance.entry.instrument))
                .copied(),
        };
        let name = job.name();
        let id = snap.id.clone();
        let me = myself.clone();
        let task = crate::task::spawn_helper(
            myself,
            "job",
            |r| InternalMsg::TaskPanicked(r).into(),
            async move {
                let outcome = exec::run(ex, snap, job).await;
                let _ = me.send_message(InternalMsg::JobDone { id, outcome }.into());
            },
        );
        instance.job = Some((name, crate::clock::now(), AbortOnDrop(task)));
    }

    /// Starts the job each idle instance with outstanding work needs; keeps the equity cache
    /// and cancel-on-disconnect in step.
    fn check(&mut self, myself: &ActorRef<StrategyMsg>) {
        if !self.records_loaded {
            return;
        }
        self.refresh_equity(myself, false);
        self.maintain_cancel_on_disconnect(myself);
        for i in 0..self.instances.len() {
            let job = self
                .instances
                .get(i)
                .filter(|inst| inst.job.is_none())
                .and_then(Instance::pending_job);
            if let Some(job) = job {
                self.spawn_job(myself, i, job);
            }
        }
    }

    /// Fetches the equity of every currency traded whose reading is missing or at least half
    /// `equity_max_age` old (every one with `force`), unless a fetch is running already.
    fn refresh_equity(&mut self, myself: &ActorRef<StrategyMsg>, force: bool) {
        let max_age = self.execution.equity_max_age;
        if !self.execution.enabled || max_age.is_zero() {
            return;
        }
        let mut currencies: Vec<&str> = self
            .instances
            .iter()
            .map(|i| exec::currency_of(&i.entry.instrument))
            .collect();
        currencies.sort_unstable();
        currencies.dedup();
        for currency in currencies {
            let due = force
                || self
                    .equity
                    .get(currency)
                    .is_none_or(|r| r.at.elapsed() >= max_age / 2);
            if !due || self.equity_fetching.contains(currency) {
                continue;
            }
            self.equity_fetching.insert(currency.to_string());
            let names = self.names.clone();
            let me = myself.clone();
            let currency = currency.to_string();
            // Not kept: it ends with its one request (bounded by the broker's request timeout).
            let _ = crate::task::spawn_helper(
                myself,
                "equity",
                |r| InternalMsg::TaskPanicked(r).into(),
                async move {
                    let reading = exec::fetch_equity(&names, &currency).await;
                    let _ = me.send_message(InternalMsg::Equity { currency, reading }.into());
                },
            );
        }
    }

    /// Cancel-on-disconnect armed while every instance is flat (IDLE or ANALYZING, nothing held
    /// or in flight), so that an entry finds it armed; off otherwise, so that
    /// a disconnect never takes the protective orders of a position (ADR 0004, ADR 0005). Set
    /// under the entry lock, and skipped when an entry started since this was decided.
    fn maintain_cancel_on_disconnect(&mut self, myself: &ActorRef<StrategyMsg>) {
        if !self.execution.enabled || !self.execution.cancel_on_disconnect {
            return;
        }
        if self.cod_task.as_ref().is_some_and(|t| !t.0.is_finished()) {
            return;
        }
        // An entry job arms and disarms for itself (it may not hold the lock yet).
        if self
            .instances
            .iter()
            .any(|i| matches!(i.job, Some(("enter", _, _))))
        {
            return;
        }
        let flat = self.instances.iter().all(|i| {
            matches!(i.record.lifecycle, Lifecycle::Idle | Lifecycle::Analyzing)
                && i.record.position.is_none()
                && i.record.intents_in_flight.is_empty()
        });
        let started = self.entries.load(std::sync::atomic::Ordering::Relaxed);
        let entries = self.entries.clone();
        let lock = self.entry_lock.clone();
        let names = self.names.clone();
        let task = crate::task::spawn_helper(
            myself,
            "cod",
            |r| InternalMsg::TaskPanicked(r).into(),
            async move {
                // An entry holds the lock: it arms and disarms for itself.
                let Ok(_one_change_at_a_time) = lock.try_lock() else {
                    return;
                };
                if entries.load(std::sync::atomic::Ordering::Relaxed) != started {
                    return;
                }
                if let Err(e) = client::set_cancel_on_disconnect(&names, flat).await {
                    debug!(actor = "strategy", armed = flat, error = %e, "cancel-on-disconnect not changed; the next check tries again");
                }
            },
        );
        self.cod_task = Some(AbortOnDrop(task));
    }

    /// After a (re)connect: instrument specs, then orphan cleanup, in one background task.
    fn on_connected(&mut self, myself: &ActorRef<StrategyMsg>, conn: u64) {
        if !self.execution.enabled {
            return;
        }
        let mut currencies: Vec<String> = self
            .instances
            .iter()
            .map(|i| exec::currency_of(&i.entry.instrument).to_string())
            .collect();
        currencies.sort();
        currencies.dedup();
        let names = self.names.clone();
        let prefix = self.label_prefix.clone();
        let me = myself.clone();
        let counter = self.orphans_cancelled.clone();
        let task = crate::task::spawn_helper(
            myself,
            "sweep",
            |r| InternalMsg::TaskPanicked(r).into(),
            async move {
                let specs = orphans::fetch_specs(&names, &currencies).await;
                let _ = me.send_message(InternalMsg::Specs(specs).into());
                let cancelled = orphans::sweep(&names, &me, &prefix, &currencies, conn).await;
                counter.fetch_add(cancelled, std::sync::atomic::Ordering::Relaxed);
            },
        );
        self.sweep = Some(AbortOnDrop(task));
        self.check(myself);
    }

    /// `(strategy id, intent seq)` of every order label the records refer to.
    fn owned(&self) -> HashSet<(String, u64)> {
        let mut owned = HashSet::new();
        for i in &self.instances {
            let r = &i.record;
            let labels = r
                .intents_in_flight
                .iter()
                .map(|intent| intent.label.as_str())
                .chain(r.position.iter().flat_map(|p| {
                    p.protective_orders
                        .iter()
                        .map(String::as_str)
                        .chain(p.entry_label.as_deref())
                }));
            for label in labels {
                if let Some(parsed) = crate::orders::labels::parse_label(&self.label_prefix, label)
                {
                    owned.insert((parsed.strategy_id, parsed.intent_seq));
                }
            }
        }
        owned
    }

    /// After a committed transition: a fill (POSITION_OPEN) or a finished trade (IDLE) changes
    /// the account, so its equity is fetched again; cancel-on-disconnect follows the new state.
    fn after_transition(&mut self, myself: &ActorRef<StrategyMsg>, to: Lifecycle) {
        if matches!(to, Lifecycle::PositionOpen | Lifecycle::Idle) {
            self.refresh_equity(myself, true);
        }
        self.maintain_cancel_on_disconnect(myself);
    }

    fn status(&self) -> StrategyStatus {
        StrategyStatus {
            active: self.instances.len(),
            strategies: self
                .instances
                .iter()
                .map(|i| StrategyInstanceStatus {
                    id: i.entry.id.clone(),
                    instrument: i.entry.instrument.clone(),
                    lifecycle: i.record.lifecycle,
                    position: i.record.position.clone(),
                    intents_in_flight: i.record.intents_in_flight.len(),
                    restored: i.restored,
                    updated_at: i.stored.then_some(i.record.updated_at),
                    ticks: i.ticks,
                    last_mark_price: i.last_mark_price,
                    signals: i.signals,
                    last_decision: i.last_decision.clone(),
                    last_decision_at: i.last_decision_at,
                    job: i.job.as_ref().map(|(name, _, _)| *name),
                    job_started_at: i.job.as_ref().map(|(_, at, _)| *at),
                    last_refusal: i.last_refusal.clone(),
                    last_error: i.last_error.clone(),
                    next_intent_seq: i.record.next_intent_seq,
                })
                .collect(),
            records_loaded: self.records_loaded,
            load_error: self.load_error.clone(),
            ticks_received: self.ticks_received,
            last_tick_at: self.last_tick_at,
            execution_enabled: self.execution.enabled,
            instrument_specs: {
                let mut v: Vec<String> = self.specs.keys().cloned().collect();
                v.sort();
                v
            },
            orphans_cancelled: self
                .orphans_cancelled
                .load(std::sync::atomic::Ordering::Relaxed),
            equity_age_ms: self
                .equity
                .iter()
                .map(|(c, r)| {
                    let age = u64::try_from(r.at.elapsed().as_millis()).unwrap_or(u64::MAX);
                    (c.clone(), age)
                })
                .collect(),
        }
    }
}

impl Actor for StrategyActor {
    type Msg = StrategyMsg;
    type State = StrategyState;
    type Arguments = StrategyArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let active = args.strategies.len();
        args.metrics
            .strategies_active
            .set(i64::try_from(active).unwrap_or(i64::MAX));
        info!(
            actor = "strategy",
            active,
            ids = ?args.strategies.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            "strategies configured; loading their stored state"
        );
        if let Err(e) = crate::orders::labels::check_prefix(&args.label_prefix) {
            return Err(ActorProcessingErr::from(e));
        }
        let every = args.execution.check_interval;
        let mut state = StrategyState::new(args);
        state._check = Some(AbortOnDrop::from(
            myself.send_interval(every, || InternalMsg::Check.into()),
        ));
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.load().await;
        // A restart of this actor alone finds the broker connected already: no Connected comes.
        if state.execution.enabled
            && let Some(broker) = state.names.get::<crate::protocol::broker::BrokerMsg>()
            && let Ok(ractor::rpc::CallResult::Success(s)) = broker
                .call(
                    crate::protocol::broker::BrokerMsg::Status,
                    Some(Duration::from_millis(500)),
                )
                .await
            && s.state == crate::protocol::broker::LinkState::Connected
        {
            state.on_connected(&myself, 0);
        }
        Ok(())
    }

    dispatch!(StrategyMsg, "strategy", |myself, msg, state| match msg {
        StrategyMsg::Tickers(tickers) => {
            for ticker in &tickers {
                state.on_tick(&myself, ticker);
            }
        }
        StrategyMsg::Connected { conn } => state.on_connected(&myself, conn),
        StrategyMsg::Owned(reply) => {
            let _ = reply.send(state.owned());
        }
        StrategyMsg::Transition {
            id,
            to,
            reason,
            data,
            reply,
        } => {
            let result = state.transition(&id, to, reason, data).await;
            if result.is_ok() {
                state.after_transition(&myself, to);
            }
            let _ = reply.send(result);
        }
        StrategyMsg::CommitEntry {
            id,
            signal,
            reason,
            intent,
            reply,
        } => {
            let steps = vec![
                (Lifecycle::SignalDetected, signal),
                (Lifecycle::EnteringPosition, reason),
            ];
            let data = TransitionData {
                position: None,
                intents_in_flight: vec![intent],
            };
            let result = state.transition_path(&id, steps, Some(data)).await;
            let _ = reply.send(result);
        }
    });
}

/// The actor's messages to itself ([`InternalMsg`]).
async fn handle_internal(
    myself: ActorRef<StrategyMsg>,
    msg: InternalMsg,
    state: &mut StrategyState,
) -> Result<(), ActorProcessingErr> {
    match msg {
        InternalMsg::TaskPanicked(reason) => return Err(reason.into()),
        InternalMsg::Check => state.check(&myself),
        InternalMsg::JobDone { id, outcome } => {
            if let Some(i) = state.instances.iter_mut().find(|i| i.entry.id == id) {
                i.job = None;
                if outcome.refusal.is_some() {
                    i.last_refusal = outcome.refusal;
                }
                i.last_error = outcome.error;
            }
        }
        InternalMsg::Specs(specs) => {
            for (name, spec) in specs {
                state.specs.insert(name, spec);
            }
        }
        InternalMsg::Equity { currency, reading } => {
            state.equity_fetching.remove(&currency);
            match reading {
                Ok(r) => {
                    // A newer reading (an entry's own) is never replaced by an older one.
                    if state.equity.get(&currency).is_none_or(|old| old.at <= r.at) {
                        state.equity.insert(currency, r);
                    }
                }
                Err(e) => {
                    debug!(actor = "strategy", currency, error = %e, "equity not refreshed; the next check tries again");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
