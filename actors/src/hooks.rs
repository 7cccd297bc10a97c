//! Test-only ways to make an actor misbehave. Compiled only with the `test-hooks` feature, which
//! tests enable and a release build never does: no HTTP route or CLI command reaches them.

use std::time::Duration;

use ractor::ActorProcessingErr;

/// A misbehaviour to act out inside an actor's message handler.
#[derive(Debug, Clone)]
pub enum TestHook {
    /// Panic with this message (a supervisor sees `ActorFailed`).
    Panic(String),
    /// Return an error from the handler (also `ActorFailed`).
    Fail(String),
    /// Block the handler for this long (the actor stops answering).
    Wedge(Duration),
    /// Wait in the handler on a blocking task that sleeps this long: the actor stops answering
    /// while the runtime's workers stay free (a handler stuck in a blocking call done right, e.g.
    /// on a hung disk). A kill ends the handler, not the blocking thread, so dropping the runtime
    /// would wait for it.
    Block(Duration),
    /// Stop normally (a supervisor sees `ActorTerminated` without a reason).
    Exit,
}

impl TestHook {
    /// Acts the hook out; `myself` is the actor's cell, used by `Exit`.
    pub async fn act(self, myself: &ractor::ActorCell) -> Result<(), ActorProcessingErr> {
        match self {
            TestHook::Panic(msg) => panic!("{msg}"),
            TestHook::Fail(msg) => Err(msg.into()),
            TestHook::Wedge(d) => {
                // Deliberately blocks the actor's task like a wedged handler would.
                std::thread::sleep(d);
                Ok(())
            }
            TestHook::Block(d) => {
                let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
                Ok(())
            }
            TestHook::Exit => {
                myself.stop(None);
                Ok(())
            }
        }
    }
}

/// The environment variable naming the hooks a test asks of the real binary (read once, and
/// only by a binary built with the `test-hooks` feature; see [`crate::test_points`]).
pub const ENV: &str = "TRADEBAAS_TEST_HOOKS";

/// One hook of the real binary. `TRADEBAAS_TEST_HOOKS` is a comma-separated list of:
/// - `panic:<point>`: panic when the daemon passes the named point ([`crate::test_points::point`]);
/// - `panic_once:<point>`: the same, the first time only (a task that recovers from it);
/// - `wedge:<child>`: on SIGUSR1, wedge the child's handler for an hour on a blocking task
///   ([`TestHook::Block`]: its mailbox stops; the runtime's workers stay free);
/// - `escalate:<child>`: on SIGUSR1, make the child panic each time it runs until the supervisor
///   escalates it (past its restart intensity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessHook {
    Panic(String),
    /// `panic_once:<point>`: panic the first time the point is passed, then never again.
    PanicOnce(String),
    Wedge(crate::names::ChildName),
    Escalate(crate::names::ChildName),
}

/// Parses `TRADEBAAS_TEST_HOOKS`; an unknown entry is a test bug and panics at once.
pub fn parse(spec: &str) -> Vec<ProcessHook> {
    use crate::names::ChildName;
    let child = |name: &str| {
        ChildName::START_ORDER
            .into_iter()
            .find(|c| c.as_str() == name)
            .unwrap_or_else(|| panic!("{ENV}: no child named {name:?}"))
    };
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| match entry.split_once(':') {
            Some(("panic", point)) => ProcessHook::Panic(point.to_owned()),
            Some(("panic_once", point)) => ProcessHook::PanicOnce(point.to_owned()),
            Some(("wedge", c)) => ProcessHook::Wedge(child(c)),
            Some(("escalate", c)) => ProcessHook::Escalate(child(c)),
            _ => panic!("{ENV}: unknown hook {entry:?}"),
        })
        .collect()
}

/// The hooks of this process, from the environment (once).
pub fn configured() -> &'static [ProcessHook] {
    static HOOKS: std::sync::OnceLock<Vec<ProcessHook>> = std::sync::OnceLock::new();
    HOOKS.get_or_init(|| std::env::var(ENV).map(|s| parse(&s)).unwrap_or_default())
}

/// Sends `hook` to the running instance of `child`; whether it was delivered.
pub fn send(names: &crate::names::Names, child: crate::names::ChildName, hook: TestHook) -> bool {
    use crate::client::tell;
    use crate::names::ChildName;
    use crate::protocol::{alert, broker, failsafe, heartbeat, persister, strategy};
    match child {
        ChildName::Alert => tell(names, alert::AlertMsg::Hook(hook)),
        ChildName::StatePersister => tell(names, persister::PersisterMsg::Hook(hook)),
        ChildName::FailSafe => tell(names, failsafe::FailSafeMsg::Hook(hook)),
        ChildName::Heartbeat => tell(names, heartbeat::HeartbeatMsg::Hook(hook)),
        ChildName::BrokerConnection => tell(names, broker::BrokerMsg::Hook(hook)),
        ChildName::Strategy => tell(names, strategy::StrategyMsg::Hook(hook)),
    }
}

/// Whether the supervisor reports `child` escalated.
async fn escalated(names: &crate::names::Names, child: crate::names::ChildName) -> bool {
    use crate::supervisor::{ChildState, SupervisorMsg};
    let Some(supervisor) = ractor::ActorRef::<SupervisorMsg>::where_is(names.supervisor()) else {
        return false;
    };
    matches!(
        supervisor.call(SupervisorMsg::Status, Some(Duration::from_secs(1))).await,
        Ok(ractor::rpc::CallResult::Success(s))
            if s.child(child).is_some_and(|c| c.state == ChildState::Escalated)
    )
}

/// Acts out the configured child hooks on the first SIGUSR1 (a task; returns at once).
pub fn install(names: &crate::names::Names) {
    let hooks: Vec<ProcessHook> = configured()
        .iter()
        .filter(|h| !matches!(h, ProcessHook::Panic(_) | ProcessHook::PanicOnce(_)))
        .cloned()
        .collect();
    if hooks.is_empty() {
        return;
    }
    let mut usr1 =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(e) => panic!("{ENV}: cannot install the SIGUSR1 handler: {e}"),
        };
    let names = names.clone();
    tracing::warn!(hooks = ?hooks, "test hooks armed: they act on SIGUSR1");
    tokio::spawn(async move {
        usr1.recv().await;
        for hook in hooks {
            tracing::warn!(hook = ?hook, "test hook acting");
            match hook {
                ProcessHook::Wedge(child) => {
                    send(&names, child, TestHook::Block(Duration::from_secs(3600)));
                }
                ProcessHook::Escalate(child) => {
                    let names = names.clone();
                    tokio::spawn(async move {
                        while !escalated(&names, child).await {
                            send(&names, child, TestHook::Panic("test hook: escalate".into()));
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    });
                }
                ProcessHook::Panic(_) | ProcessHook::PanicOnce(_) => {}
            }
        }
    });
}

/// Panics when `TRADEBAAS_TEST_HOOKS` names `point` (`panic:<point>`).
pub fn point(point: &str) {
    static FIRED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    for h in configured() {
        match h {
            ProcessHook::Panic(p) if p == point => panic!("test hook: panic at {point}"),
            ProcessHook::PanicOnce(p) if p == point => {
                let mut fired = FIRED
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if !fired.iter().any(|f| f == point) {
                    fired.push(point.to_owned());
                    drop(fired);
                    panic!("test hook: panic at {point}");
                }
            }
            _ => {}
        }
    }
}
