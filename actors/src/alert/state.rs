//! The alert actor's state: the decision book ([`AlertBook`], pure) plus what only the actor
//! has (the sinks and their tasks, the re-send timer, store failures), and the carrying out of
//! the book's effects (commits through the persister, deliveries, timers, log lines).

use ractor::ActorRef;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::book::{AlertBook, Effect, Event, Note};
use super::sink::{Delivery, Sink};

use crate::client;
use crate::protocol::persister::PersisterMsg;
use crate::secret::Secret;
use crate::store::Change;

use super::*;

/// The alert actor's state.
pub struct AlertState {
    pub(super) args: AlertArgs,
    /// Open alerts, history, counts: every decision.
    pub(super) book: AlertBook,
    /// Enabled external sinks; dropping one stops its task.
    pub(super) sinks: Vec<Sink>,
    /// The Alertmanager re-send timer.
    pub(super) resend: Option<JoinHandle<()>>,
    pub(super) store_failures: u64,
    pub(super) last_store_error: Option<String>,
}

impl Drop for AlertState {
    /// A state dropped without `post_stop` (a panic) must not leave the re-send timer behind;
    /// the sinks stop themselves on drop.
    fn drop(&mut self) {
        if let Some(timer) = self.resend.take() {
            timer.abort();
        }
    }
}

impl AlertState {
    pub(super) fn new(args: AlertArgs) -> Self {
        let book = AlertBook::new(&args.config, LOAD_ATTEMPTS, PENDING_MAX);
        Self {
            args,
            book,
            sinks: Vec::new(),
            resend: None,
            store_failures: 0,
            last_store_error: None,
        }
    }

    /// Asks the book about `event` and carries out its effects; `reply` answers an
    /// acknowledgement.
    pub(super) fn on(
        &mut self,
        myself: &ActorRef<AlertMsg>,
        event: Event,
        mut reply: Option<RpcReplyPort<Result<AlertRecord, AlertError>>>,
    ) {
        let effects = self.book.on(event, Instant::now(), crate::clock::now());
        for effect in effects {
            match effect {
                Effect::Store(change) => self.store(myself, change),
                Effect::Notify(record) => self.notify_sinks(&record),
                Effect::SchedulePersistCounts => {
                    myself.send_after(COUNT_PERSIST_INTERVAL, || InternalMsg::PersistCounts.into());
                }
                Effect::ScheduleLoad { attempt } => {
                    myself.send_after(LOAD_RETRY_DELAY, move || {
                        InternalMsg::Load { attempt }.into()
                    });
                }
                Effect::Reply(result) => {
                    if let Some(reply) = reply.take() {
                        let _ = reply.send(result);
                    }
                }
                Effect::Log(note) => log(note),
            }
        }
    }

    /// Starts a delivery task for every enabled sink.
    pub(super) fn start_sinks(&mut self) {
        let c = &self.args.config;
        if c.alertmanager.enabled {
            self.sinks.push(Sink::start(
                SinkKind::Alertmanager,
                &c.alertmanager.url,
                Ok(Secret::new("/api/v2/alerts")),
                &c.delivery,
            ));
        }
        if c.webhook.enabled {
            self.sinks.push(Sink::start(
                SinkKind::Webhook,
                &c.webhook.url,
                Ok(Secret::new("")),
                &c.delivery,
            ));
        }
        if c.telegram.enabled {
            let var = &c.telegram.token_env;
            // The token only ever lives inside the request path, wrapped in `Secret`.
            let token = c.telegram.token.clone().or_else(|| {
                std::env::var(var)
                    .ok()
                    .filter(|t| !t.trim().is_empty())
                    .map(|t| Secret::new(t.trim()))
            });
            let path = token
                .map(|t| Secret::new(format!("/bot{}/sendMessage", t.expose())))
                .ok_or_else(|| format!("the bot token variable {var} is not set"));
            self.sinks.push(Sink::start(
                SinkKind::Telegram,
                &c.telegram.base_url,
                path,
                &c.delivery,
            ));
        }
    }

    /// Hands a raised or resolved record to every sink (queue only; never waits).
    pub(super) fn notify_sinks(&mut self, record: &AlertRecord) {
        let c = &self.args.config;
        let what = format!(
            "{} {}",
            if record.resolved_at.is_some() {
                "resolved"
            } else {
                "firing"
            },
            record.alert.key
        );
        for sink in &mut self.sinks {
            let body = match sink.kind() {
                SinkKind::Alertmanager => {
                    payload::alertmanager_body([record], c.alertmanager.generator_url.as_deref())
                }
                SinkKind::Webhook => {
                    payload::webhook_v4(record, &c.webhook.receiver, &c.webhook.external_url)
                }
                SinkKind::Telegram => payload::telegram_message(record, &c.telegram.chat_id),
            };
            sink.push(Delivery {
                what: what.clone(),
                body: body.to_string().into(),
            });
        }
    }

    /// Re-sends every open alert to Alertmanager in one request.
    pub(super) fn resend_open(&mut self) {
        let open = self.book.open_records();
        if open.is_empty() {
            return;
        }
        let generator = self.args.config.alertmanager.generator_url.as_deref();
        let n = open.len();
        let body = payload::alertmanager_body(&open, generator).to_string();
        for sink in &mut self.sinks {
            if sink.kind() == SinkKind::Alertmanager {
                sink.push(Delivery {
                    what: format!("re-send of {n} open alert(s)"),
                    body: body.clone().into(),
                });
            }
        }
    }

    pub(super) fn status(&self) -> AlertStatus {
        let sinks: Vec<SinkStatus> = self.sinks.iter().map(Sink::status).collect();
        AlertStatus {
            store_failures: self.store_failures,
            last_store_error: self.last_store_error.clone(),
            sinks_failing: sinks.iter().filter(|s| s.failing).count(),
            sinks,
            ..self.book.status()
        }
    }

    /// Commits `change` (as the book prepared it) through the persister. Before the
    /// persister runs (it starts after this actor) the book keeps the change until the load
    /// finds it. Never waits: a task reports the outcome as `Stored`.
    pub(super) fn store(&mut self, myself: &ActorRef<AlertMsg>, change: Change) {
        let Some(persister) = self.args.names.get::<PersisterMsg>() else {
            if self.book.hold_until_loaded(change) {
                return;
            }
            warn!(
                actor = "alert",
                "state-persister not running; alert logged but not stored"
            );
            self.store_failed("the state-persister is not running".into());
            return;
        };
        let (tx, rx) = ractor::concurrency::oneshot();
        if let Err(e) = persister.send_message(PersisterMsg::Commit {
            change,
            reply: Some(tx.into()),
        }) {
            warn!(actor = "alert", error = %e, "could not hand the alert to the state-persister");
            self.store_failed(format!("could not reach the state-persister: {e}"));
            return;
        }
        let me = myself.clone();
        tokio::spawn(async move {
            let outcome = match tokio::time::timeout(COMMIT_TIMEOUT, rx).await {
                Ok(Ok(Ok(_))) => Ok(()),
                Ok(Ok(Err(e))) => Err(e.to_string()),
                Ok(Err(_)) => Err("the state-persister dropped the commit".into()),
                Err(_) => Err(format!(
                    "the state-persister did not commit within {} s",
                    COMMIT_TIMEOUT.as_secs()
                )),
            };
            let _ = me.send_message(InternalMsg::Stored(outcome).into());
        });
    }

    pub(super) fn store_failed(&mut self, error: String) {
        self.store_failures += 1;
        self.last_store_error = Some(error);
    }

    /// Starts one load of the stored alerts in a task that reports back as `Loaded`.
    pub(super) fn start_load(&self, myself: &ActorRef<AlertMsg>, attempt: u32) {
        let names = self.args.names.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let result = client::load_state(&names, LOAD_TIMEOUT)
                .await
                .map(|mut state| state.remove(ALERTS_STATE_KEY));
            let _ = me.send_message(InternalMsg::Loaded { attempt, result }.into());
        });
    }
}

/// Writes the log line the book asked for.
fn log(note: Note) {
    match note {
        Note::Refused { key, title } => error!(
            actor = "alert",
            key = %key,
            title = %title,
            allowed = ?ALLOWED_ALERT_KINDS,
            "alert refused: its key is not an allowed alert kind (a routine event must not be an alert)"
        ),
        Note::Raised(record) => log_raised(&record),
        Note::Repeat {
            alert_id,
            key,
            count,
        } => debug!(
            actor = "alert",
            alert_id,
            key = %key,
            count,
            "repeat of an open alert (deduplicated)"
        ),
        Note::Resolved { alert_id, key } => info!(
            actor = "alert",
            alert = true,
            alert_id = %alert_id,
            key,
            "alert resolved"
        ),
        Note::NothingToResolve { key } => {
            debug!(actor = "alert", key, "resolve for a key with no open alert");
        }
        Note::Acknowledged { alert_id, key } => info!(
            actor = "alert",
            alert_id,
            key = %key,
            "alert acknowledged"
        ),
        Note::HistoryUnreadable { error } => {
            error!(actor = "alert", error = %error, "the stored alert history is unreadable; starting without it");
        }
        Note::LoadRetry { attempt, error } => {
            debug!(actor = "alert", attempt, error = %error, "stored alerts not loaded yet; retrying");
        }
        Note::LoadGaveUp { attempts, error } => {
            error!(actor = "alert", attempts, error = %error, "giving up reloading the stored alerts; history starts empty");
        }
        Note::HistoryLoaded {
            open,
            restored_open,
            superseded,
            recent,
        } => info!(
            actor = "alert",
            open, restored_open, superseded, recent, "alert history loaded"
        ),
    }
}

pub(super) fn log_raised(r: &AlertRecord) {
    let severity = r.alert.severity.as_str();
    // tracing's level is part of the call site, so one call per level, with one field list.
    macro_rules! raised {
        ($level:ident) => {
            $level!(
                actor = "alert",
                alert = true,
                alert_id = %r.alert_id,
                key = %r.alert.key,
                severity,
                title = %r.alert.title,
                root_cause = %r.alert.root_cause,
                recommended_action = %r.alert.recommended_action,
                "{}",
                r.alert.message
            )
        };
    }
    match r.alert.severity {
        Severity::Critical => raised!(error),
        Severity::Warning => raised!(warn),
        Severity::Info => raised!(info),
    }
}
