//! Supervision behaviour with probe children; time is paused, so backoff delays are exact.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use ractor::{call_t, cast};
use tokio::time::{advance, sleep};

use super::*;
use crate::hooks::TestHook;
use ractor::RpcReplyPort;

/// A child that records its starts and stops and acts out test hooks.
struct Probe;

struct ProbeArgs {
    name: ChildName,
    starts: Arc<AtomicU32>,
    log: Arc<Mutex<Vec<String>>>,
    fail_start: Arc<AtomicU32>,
}

enum ProbeMsg {
    Hook(TestHook),
    Ping(RpcReplyPort<()>),
}

struct ProbeState {
    name: ChildName,
    log: Arc<Mutex<Vec<String>>>,
}

impl Actor for Probe {
    type Msg = ProbeMsg;
    type State = ProbeState;
    type Arguments = ProbeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        if args
            .fail_start
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("refusing to start".into());
        }
        args.starts.fetch_add(1, Ordering::SeqCst);
        args.log
            .lock()
            .unwrap()
            .push(format!("start {}", args.name));
        Ok(ProbeState {
            name: args.name,
            log: args.log,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProbeMsg::Hook(hook) => hook.act(&myself.get_cell()).await,
            ProbeMsg::Ping(reply) => {
                let _ = reply.send(());
                Ok(())
            }
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state
            .log
            .lock()
            .unwrap()
            .push(format!("stop {}", state.name));
        Ok(())
    }
}

struct Harness {
    sup: ActorRef<SupervisorMsg>,
    names: Names,
    starts: HashMap<ChildName, Arc<AtomicU32>>,
    fail_start: HashMap<ChildName, Arc<AtomicU32>>,
    log: Arc<Mutex<Vec<String>>>,
    escalations: Arc<Mutex<Vec<Escalation>>>,
    metrics: Metrics,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The restart-intensity window and the backoff cap of these tests.
const WINDOW: Duration = Duration::from_secs(60);
const CAP: Duration = Duration::from_secs(5);

fn policy(restart: RestartType, max_restarts: u32) -> ChildPolicy {
    ChildPolicy::for_tests(restart, max_restarts, WINDOW, CAP)
}

async fn harness(strategy: SupervisionStrategy, policies: &[(ChildName, ChildPolicy)]) -> Harness {
    let names = Names::with_prefix(format!("sup{}-", NEXT.fetch_add(1, Ordering::SeqCst)));
    let log = Arc::new(Mutex::new(Vec::new()));
    let escalations = Arc::new(Mutex::new(Vec::new()));
    let mut starts = HashMap::new();
    let mut fail_start = HashMap::new();
    let mut children = Vec::new();
    for (name, policy) in policies {
        let count = Arc::new(AtomicU32::new(0));
        let refuse = Arc::new(AtomicU32::new(0));
        starts.insert(*name, Arc::clone(&count));
        fail_start.insert(*name, Arc::clone(&refuse));
        let log = Arc::clone(&log);
        let name = *name;
        let start: StartFn = Arc::new(move |reg: String, sup: ActorCell| {
            let args = ProbeArgs {
                name,
                starts: Arc::clone(&count),
                log: Arc::clone(&log),
                fail_start: Arc::clone(&refuse),
            };
            Box::pin(async move {
                Probe::spawn_linked(Some(reg), Probe, args, sup)
                    .await
                    .map(|(r, _)| r.get_cell())
            })
        });
        children.push(ChildSpec {
            name,
            policy: *policy,
            start,
        });
    }
    let metrics = Metrics::new().unwrap();
    let esc = Arc::clone(&escalations);
    let (sup, _) = RootSupervisor::spawn(
        Some(names.supervisor()),
        RootSupervisor,
        SupervisorArgs {
            names: names.clone(),
            strategy,
            children,
            metrics: metrics.clone(),
            on_escalation: Arc::new(move |e| esc.lock().unwrap().push(e)),
        },
    )
    .await
    .unwrap();
    Harness {
        sup,
        names,
        starts,
        fail_start,
        log,
        escalations,
        metrics,
    }
}

impl Harness {
    fn hook(&self, child: ChildName, hook: TestHook) {
        let probe: ActorRef<ProbeMsg> = self.names.lookup(child).expect("child running");
        cast!(probe, ProbeMsg::Hook(hook)).unwrap();
    }

    fn starts(&self, child: ChildName) -> u32 {
        self.starts[&child].load(Ordering::SeqCst)
    }

    async fn status(&self) -> SupervisorStatus {
        call_t!(self.sup, SupervisorMsg::Status, 1000).unwrap()
    }

    async fn child(&self, child: ChildName) -> ChildReport {
        self.status().await.child(child).unwrap().clone()
    }

    /// Lets the runtime process what is queued without moving the clock much.
    async fn settle(&self) {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        sleep(Duration::from_millis(1)).await;
    }
}

const ALL: [ChildName; 3] = [
    ChildName::Alert,
    ChildName::StatePersister,
    ChildName::FailSafe,
];

#[tokio::test(start_paused = true)]
async fn children_start_in_order() {
    let h = harness(
        SupervisionStrategy::OneForOne,
        &ALL.map(|c| (c, policy(RestartType::Permanent, 3))),
    )
    .await;
    h.settle().await;
    assert_eq!(
        *h.log.lock().unwrap(),
        ["start alert", "start state-persister", "start fail-safe"]
    );
    let status = h.status().await;
    assert!(
        status
            .children
            .iter()
            .all(|c| c.state == ChildState::Running)
    );
}

#[tokio::test(start_paused = true)]
async fn panicking_child_is_restarted_with_backoff() {
    let h = harness(
        SupervisionStrategy::OneForOne,
        &[(ChildName::Heartbeat, policy(RestartType::Permanent, 5))],
    )
    .await;
    h.settle().await;
    for (round, expected_delay_ms) in [100u64, 200, 400].into_iter().enumerate() {
        h.hook(ChildName::Heartbeat, TestHook::Panic("boom".into()));
        h.settle().await;
        let report = h.child(ChildName::Heartbeat).await;
        assert_eq!(report.state, ChildState::Restarting);
        assert_eq!(report.restarts, round as u64 + 1);
        assert!(
            report
                .last_failure
                .as_ref()
                .unwrap()
                .reason
                .contains("boom")
        );
        // Not before the delay …
        advance(Duration::from_millis(expected_delay_ms - 10)).await;
        h.settle().await;
        assert_eq!(h.starts(ChildName::Heartbeat), round as u32 + 1);
        // … and right after it.
        advance(Duration::from_millis(20)).await;
        h.settle().await;
        assert_eq!(h.starts(ChildName::Heartbeat), round as u32 + 2);
        assert_eq!(
            h.child(ChildName::Heartbeat).await.state,
            ChildState::Running
        );
    }
    let rendered = h.metrics.render().unwrap();
    assert!(rendered.contains("tradebaas_actor_restarts_total{actor=\"heartbeat\"} 3"));
}

#[tokio::test(start_paused = true)]
async fn a_restarted_child_is_reachable_by_name() {
    let h = harness(
        SupervisionStrategy::OneForOne,
        &[(ChildName::Strategy, policy(RestartType::Permanent, 5))],
    )
    .await;
    h.settle().await;
    let before: ActorRef<ProbeMsg> = h.names.lookup(ChildName::Strategy).unwrap();
    h.hook(ChildName::Strategy, TestHook::Fail("bad state".into()));
    h.settle().await;
    advance(Duration::from_millis(150)).await;
    h.settle().await;
    let after: ActorRef<ProbeMsg> = h.names.lookup(ChildName::Strategy).unwrap();
    assert_ne!(before.get_id(), after.get_id());
    call_t!(after, ProbeMsg::Ping, 100).unwrap();
}

#[tokio::test(start_paused = true)]
async fn transient_child_that_exits_normally_is_not_restarted() {
    let h = harness(
        SupervisionStrategy::OneForOne,
        &[(ChildName::Alert, policy(RestartType::Transient, 5))],
    )
    .await;
    h.settle().await;
    h.hook(ChildName::Alert, TestHook::Exit);
    h.settle().await;
    advance(Duration::from_secs(10)).await;
    h.settle().await;
    let report = h.child(ChildName::Alert).await;
    assert_eq!(report.state, ChildState::Stopped);
    assert_eq!(report.restarts, 0);
    assert_eq!(h.starts(ChildName::Alert), 1);
}

#[tokio::test(start_paused = true)]
async fn transient_child_that_panics_is_restarted() {
    let h = harness(
        SupervisionStrategy::OneForOne,
        &[(ChildName::Alert, policy(RestartType::Transient, 5))],
    )
    .await;
    h.settle().await;
    h.hook(ChildName::Alert, TestHook::Panic("boom".into()));
    h.settle().await;
    advance(Duration::from_millis(150)).await;
    h.settle().await;
    assert_eq!(h.starts(ChildName::Alert), 2);
}

#[tokio::test(start_paused = true)]
async fn temporary_child_is_never_restarted() {
    let h = harness(
        SupervisionStrategy::OneForOne,
        &[(ChildName::Alert, policy(RestartType::Temporary, 5))],
    )
    .await;
    h.settle().await;
    h.hook(ChildName::Alert, TestHook::Panic("boom".into()));
    h.settle().await;
    advance(Duration::from_secs(10)).await;
    h.settle().await;
    assert_eq!(h.starts(ChildName::Alert), 1);
    assert_eq!(h.child(ChildName::Alert).await.state, ChildState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn exceeding_intensity_escalates_once_and_leaves_the_child_stopped() {
    let h = harness(
        SupervisionStrategy::OneForOne,
        &[
            (ChildName::Alert, policy(RestartType::Permanent, 2)),
            (ChildName::Strategy, policy(RestartType::Permanent, 2)),
        ],
    )
    .await;
    h.settle().await;
    for _ in 0..3 {
        h.hook(ChildName::Strategy, TestHook::Panic("crash loop".into()));
        h.settle().await;
        advance(Duration::from_secs(1)).await;
        h.settle().await;
    }
    let report = h.child(ChildName::Strategy).await;
    assert_eq!(report.state, ChildState::Escalated);
    assert_eq!(report.restarts, 2);
    let escalations = h.escalations.lock().unwrap().clone();
    assert_eq!(escalations.len(), 1);
    assert_eq!(escalations[0].child, ChildName::Strategy);
    assert_eq!(escalations[0].restarts_in_window, 3);
    assert!(escalations[0].reason.contains("crash loop"));
    // No further restart, and the sibling is untouched.
    advance(Duration::from_secs(120)).await;
    h.settle().await;
    assert_eq!(h.starts(ChildName::Strategy), 3);
    assert!(h.names.lookup::<ProbeMsg>(ChildName::Strategy).is_none());
    assert_eq!(h.child(ChildName::Alert).await.state, ChildState::Running);
    assert_eq!(h.starts(ChildName::Alert), 1);
}

#[tokio::test(start_paused = true)]
async fn a_child_that_fails_to_start_is_retried_under_its_policy() {
    let h = harness(
        SupervisionStrategy::OneForOne,
        &[(ChildName::StatePersister, policy(RestartType::Permanent, 5))],
    )
    .await;
    h.settle().await;
    h.fail_start[&ChildName::StatePersister].store(2, Ordering::SeqCst);
    h.hook(ChildName::StatePersister, TestHook::Panic("disk".into()));
    h.settle().await;
    // Restart 1 (after 100 ms) fails in pre_start, restart 2 (200 ms later) too, restart 3 works.
    for step in [100u64, 200, 400] {
        advance(Duration::from_millis(step + 1)).await;
        h.settle().await;
    }
    let report = h.child(ChildName::StatePersister).await;
    assert_eq!(report.state, ChildState::Running);
    assert_eq!(report.restarts, 3);
    assert_eq!(h.starts(ChildName::StatePersister), 2);
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
    let h = harness(
        SupervisionStrategy::RestForOne,
        &ALL.map(|c| (c, policy(RestartType::Permanent, 3))),
    )
    .await;
    h.settle().await;
    h.log.lock().unwrap().clear();
    h.hook(ChildName::StatePersister, TestHook::Panic("boom".into()));
    h.settle().await;
    advance(Duration::from_millis(150)).await;
    h.settle().await;
    assert_eq!(
        *h.log.lock().unwrap(),
        ["stop fail-safe", "start state-persister", "start fail-safe"]
    );
    assert_eq!(h.starts(ChildName::Alert), 1);
    // Only the child that failed counts a restart.
    assert_eq!(h.child(ChildName::StatePersister).await.restarts, 1);
    assert_eq!(h.child(ChildName::FailSafe).await.restarts, 0);
}

#[tokio::test(start_paused = true)]
async fn stop_children_stops_in_the_given_order_and_restarts_nothing() {
    let h = harness(
        SupervisionStrategy::OneForOne,
        &ALL.map(|c| (c, policy(RestartType::Permanent, 3))),
    )
    .await;
    h.settle().await;
    h.log.lock().unwrap().clear();
    let mut reverse = ALL.to_vec();
    reverse.reverse();
    let reports = call_t!(h.sup, SupervisorMsg::StopChildren, 5000, reverse.clone()).unwrap();
    assert_eq!(reports.iter().map(|r| r.child).collect::<Vec<_>>(), reverse);
    assert!(reports.iter().all(|r| r.outcome == "stopped"));
    assert_eq!(
        *h.log.lock().unwrap(),
        ["stop fail-safe", "stop state-persister", "stop alert"]
    );
    advance(Duration::from_secs(10)).await;
    h.settle().await;
    assert!(ALL.iter().all(|c| h.starts(*c) == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_child_is_killed_after_its_shutdown_timeout() {
    let mut p = policy(RestartType::Permanent, 3);
    p.shutdown_timeout = Duration::from_millis(50);
    let h = harness(SupervisionStrategy::OneForOne, &[(ChildName::Heartbeat, p)]).await;
    while h.starts(ChildName::Heartbeat) == 0 {
        sleep(Duration::from_millis(1)).await;
    }
    let probe: ActorRef<ProbeMsg> = h.names.lookup(ChildName::Heartbeat).unwrap();
    // The hook blocks the child's handler for 600 ms; its stop must not wait for that.
    cast!(
        probe,
        ProbeMsg::Hook(TestHook::Wedge(Duration::from_millis(600)))
    )
    .unwrap();
    sleep(Duration::from_millis(20)).await;
    let reports = call_t!(
        h.sup,
        SupervisorMsg::StopChildren,
        5000,
        vec![ChildName::Heartbeat]
    )
    .unwrap();
    assert_eq!(reports[0].child, ChildName::Heartbeat);
    assert_eq!(reports[0].outcome, "killed");
    assert!(reports[0].duration_ms < 400, "{:?}", reports[0]);
}
