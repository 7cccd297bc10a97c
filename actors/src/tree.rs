//! Builds the supervision tree: the root supervisor with its six children, each started from a
//! [`StartFn`] that rebuilds the child's arguments from configuration on every restart.
//!
//! The escalation hook lives here because it is the one place that knows all three peers it
//! must reach: it raises a CRITICAL alert, latches the fail-safe into SHUTDOWN and asks the
//! persister to flush. Each of those is a message to an actor by name, sent from a task so the
//! supervisor never waits on a peer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorRef, SpawnErr};
use serde_json::json;
use tracing::{error, info, warn};

use crate::alert::{Alert, AlertActor, AlertArgs, AlertConfig, AlertMsg, Severity};
use crate::broker::{BrokerActor, BrokerArgs, BrokerConfig, Credentials};
use crate::failsafe::{FailSafeActor, FailSafeArgs, FailSafeConfig, FailSafeMsg, InitialMode};
use crate::health::HealthConfig;
use crate::heartbeat::{HeartbeatActor, HeartbeatArgs, HeartbeatConfig};
use crate::metrics::Metrics;
use crate::names::{ChildName, Names};
use crate::notify::SdNotifier;
use crate::persister::{PersisterActor, PersisterArgs, PersisterMsg, StoreConfig};
use crate::strategy::exec::ExecutionConfig;
use crate::strategy::{StrategyActor, StrategyArgs, StrategyEntry};
use crate::supervisor::policy::SupervisorConfig;
use crate::supervisor::{
    ChildSpec, Escalation, EscalationHook, RootSupervisor, StartFn, SupervisorArgs, SupervisorMsg,
};

/// Everything the six children are built from.
#[derive(Clone)]
pub struct TreeConfig {
    pub supervisor: SupervisorConfig,
    pub alert: AlertConfig,
    /// The SQLite store file.
    pub store_path: PathBuf,
    /// Where verified backups go.
    pub backups_dir: PathBuf,
    /// `[store]`: backup interval and retention.
    pub store: StoreConfig,
    pub fail_safe: FailSafeConfig,
    /// The fail-safe's mode for a first start, resolved from `fail_safe.initial_mode` and the
    /// exchange in use (by the daemon's configuration, `tradebaas::config`).
    pub initial_mode: InitialMode,
    /// `[health]`: the fail-safe's `unhealthy` trigger applies the same rules as `/health`.
    pub health: HealthConfig,
    pub heartbeat: HeartbeatConfig,
    /// systemd notifications (`NOTIFY_SOCKET`, `WATCHDOG_USEC`), read once by the daemon; the
    /// heartbeat feeds the watchdog through it. `None` outside systemd.
    pub notifier: Option<SdNotifier>,
    pub broker: BrokerConfig,
    /// The resolved exchange URL (`paper` already replaced by the embedded exchange's).
    pub broker_url: String,
    pub credentials: Option<Credentials>,
    pub strategies: Vec<StrategyEntry>,
    /// `[execution]`.
    pub execution: ExecutionConfig,
    /// Order label prefix (`[recovery] label_prefix`).
    pub label_prefix: String,
}

/// How long the escalation hook waits for each peer.
const ESCALATION_STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// One child's start function: spawn `actor` with `args()` linked to the supervisor.
fn start_fn<A, F>(actor: F, args: A::Arguments) -> StartFn
where
    A: Actor,
    F: Fn() -> A + Send + Sync + 'static,
    A::Arguments: Clone + Sync,
{
    Arc::new(move |name: String, supervisor: ActorCell| {
        let actor = actor();
        let args = args.clone();
        Box::pin(async move {
            Actor::spawn_linked(Some(name), actor, args, supervisor)
                .await
                .map(|(r, _)| r.get_cell())
        })
    })
}

/// The six child specs, in start order.
pub fn child_specs(names: &Names, config: &TreeConfig, metrics: &Metrics) -> Vec<ChildSpec> {
    let policy = |c: ChildName| *config.supervisor.children.get(c);
    vec![
        ChildSpec {
            name: ChildName::Alert,
            policy: policy(ChildName::Alert),
            start: start_fn(
                || AlertActor,
                AlertArgs {
                    names: names.clone(),
                    config: config.alert.clone(),
                },
            ),
        },
        ChildSpec {
            name: ChildName::StatePersister,
            policy: policy(ChildName::StatePersister),
            start: start_fn(
                || PersisterActor,
                PersisterArgs {
                    backups_dir: config.backups_dir.clone(),
                    backup_interval: config.store.backup_interval,
                    backups_keep: config.store.backups_keep,
                    disk_free_floor: config.store.disk_free_floor,
                    retention: config.store.retention.clone(),
                    ..PersisterArgs::new(names.clone(), config.store_path.clone(), metrics.clone())
                },
            ),
        },
        ChildSpec {
            name: ChildName::FailSafe,
            policy: policy(ChildName::FailSafe),
            start: start_fn(
                || FailSafeActor,
                FailSafeArgs {
                    names: names.clone(),
                    config: config.fail_safe.clone(),
                    initial: config.initial_mode.clone(),
                    health: config.health.clone(),
                },
            ),
        },
        ChildSpec {
            name: ChildName::Heartbeat,
            policy: policy(ChildName::Heartbeat),
            start: start_fn(
                || HeartbeatActor,
                HeartbeatArgs {
                    notifier: config.notifier.clone(),
                    ..HeartbeatArgs::new(names.clone(), config.heartbeat.clone(), metrics.clone())
                },
            ),
        },
        ChildSpec {
            name: ChildName::BrokerConnection,
            policy: policy(ChildName::BrokerConnection),
            start: start_fn(
                || BrokerActor,
                BrokerArgs {
                    names: names.clone(),
                    config: config.broker.clone(),
                    url: config.broker_url.clone(),
                    credentials: config.credentials.clone(),
                    metrics: metrics.clone(),
                },
            ),
        },
        ChildSpec {
            name: ChildName::Strategy,
            policy: policy(ChildName::Strategy),
            start: start_fn(
                || StrategyActor,
                StrategyArgs {
                    names: names.clone(),
                    strategies: config.strategies.clone(),
                    metrics: metrics.clone(),
                    execution: config.execution.clone(),
                    label_prefix: config.label_prefix.clone(),
                },
            ),
        },
    ]
}

/// The escalation hook: CRITICAL alert, fail-safe to SHUTDOWN, persister flush.
pub fn escalation_hook(names: Names) -> EscalationHook {
    Arc::new(move |escalation: Escalation| {
        let peers = names.clone();
        // Watched: a panic here would leave the escalation without its SHUTDOWN.
        crate::task::spawn_critical(&names, "escalation", async move {
            escalate(&peers, escalation).await
        });
    })
}

async fn escalate(names: &Names, e: Escalation) {
    let child = e.child.as_str();
    let reason = format!(
        "{child} restarted {} times within {}s; last failure: {}",
        e.restarts_in_window,
        e.within.as_secs(),
        e.reason
    );
    match names.get::<AlertMsg>() {
        Some(alert) => {
            let _ = alert.send_message(AlertMsg::Raise(Alert {
                key: format!("escalation:{child}"),
                severity: Severity::Critical,
                title: format!("{child} exceeded its restart intensity"),
                message: reason.clone(),
                root_cause: e.reason.clone(),
                recommended_action: format!(
                    "Trading is in SHUTDOWN. Read the supervisor log for {child}, fix the cause, \
                     then restart the service."
                ),
                metadata: json!({
                    "child": child,
                    "restarts_in_window": e.restarts_in_window,
                    "within_seconds": e.within.as_secs(),
                }),
            }));
        }
        None => error!(
            child,
            "escalation: alert actor not running; alert only logged"
        ),
    }
    match names.get::<FailSafeMsg>() {
        Some(fail_safe) => {
            let outcome = fail_safe
                .call(
                    |reply| FailSafeMsg::Trigger {
                        trigger: "restart_intensity".into(),
                        reason: reason.clone(),
                        reply: Some(reply),
                    },
                    Some(ESCALATION_STEP_TIMEOUT),
                )
                .await;
            match outcome {
                Ok(ractor::rpc::CallResult::Success(Ok(()))) => {
                    info!(child, "escalation: trading mode is SHUTDOWN")
                }
                Ok(ractor::rpc::CallResult::Success(Err(e))) => {
                    error!(child, error = %e, "escalation: SHUTDOWN not persisted")
                }
                _ => error!(child, "escalation: fail-safe did not answer"),
            }
        }
        None => error!(
            child,
            "escalation: fail-safe not running; entries stay blocked (fail closed)"
        ),
    }
    match names.get::<PersisterMsg>() {
        Some(persister) => {
            match persister
                .call(PersisterMsg::Flush, Some(ESCALATION_STEP_TIMEOUT))
                .await
            {
                Ok(ractor::rpc::CallResult::Success(Ok(r))) => {
                    info!(child, last_seq = r.last_seq, "escalation: state flushed")
                }
                _ => warn!(child, "escalation: flush did not complete"),
            }
        }
        None => warn!(child, "escalation: persister not running; nothing to flush"),
    }
}

/// Spawns the root supervisor (registered as `names.supervisor()`) with the six children.
pub async fn start_tree(
    names: Names,
    config: &TreeConfig,
    metrics: Metrics,
) -> Result<ActorRef<SupervisorMsg>, SpawnErr> {
    let children = child_specs(&names, config, &metrics);
    let (supervisor, _) = Actor::spawn(
        Some(names.supervisor()),
        RootSupervisor,
        SupervisorArgs {
            names: names.clone(),
            strategy: config.supervisor.strategy,
            children,
            metrics,
            on_escalation: escalation_hook(names),
        },
    )
    .await?;
    Ok(supervisor)
}
