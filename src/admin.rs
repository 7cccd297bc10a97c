//! The local admin channel: operator actions (`tradebaas mode …`, `tradebaas alerts ack …`) over a
//! Unix stream socket `<data_dir>/admin.sock`, never over the public HTTP API.
//!
//! - The socket is created inside a fresh 0700 directory, set to 0600 and only then renamed into
//!   place, so there is no moment at which another user could connect; a stale socket from an
//!   earlier run is replaced (safe: the daemon holds the data-directory lock).
//! - Every connection's peer is checked with `SO_PEERCRED`: the daemon's own uid and the uids in
//!   `[admin] allowed_uids` are allowed, anyone else gets a refusal (and a `warn` log).
//! - Protocol: one JSON request line, one JSON response line (see [`Request`], [`Response`]); a
//!   line longer than [`MAX_REQUEST_BYTES`] or malformed JSON gets an error response.
//! - Every operator action, accepted or refused, is committed as an `operator_action` event with
//!   its reason, the peer's uid and the outcome. `status` is a question, not an action: not recorded.
//!
//! This module changes nothing itself: mode changes go to the fail-safe (`SetMode`), acknowledgements
//! to the alert actor (`Acknowledge`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};
use tradebaas_actors::alert::AlertMsg;
use tradebaas_actors::broker::BrokerStatus;
use tradebaas_actors::checks::{self, ChecksArgs, ChecksReport};
use tradebaas_actors::failsafe::{FailSafeMsg, FailSafeStatus};
use tradebaas_actors::health::{self, Reply};
use tradebaas_actors::mode::TradingMode;
use tradebaas_actors::names::{ChildName, Names};
use tradebaas_actors::persister::{PersisterStatus, commit_change};
use tradebaas_actors::store::Change;

/// The socket's file name inside the data directory.
pub const SOCKET_NAME: &str = "admin.sock";
/// The longest request line accepted (newline excluded).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// How long a client has to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an actor has to answer a status question.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an action (a commit through the persister included) may take.
const ACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Uids allowed on the admin socket besides the daemon's own (which is always allowed).
    /// The socket file is 0600, so another uid also needs the file mode opened up to connect.
    pub allowed_uids: Vec<u32>,
}

impl AdminConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (i, uid) in self.allowed_uids.iter().enumerate() {
            if *uid == u32::MAX {
                return Err(format!(
                    "allowed_uids[{i}] is 4294967295, which is no user ((uid_t)-1)"
                ));
            }
            if self.allowed_uids[..i].contains(uid) {
                return Err(format!("allowed_uids[{i}]: uid {uid} is listed twice"));
            }
        }
        Ok(())
    }
}

/// The socket path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// A mode an operator may ask for (SHUTDOWN is only entered by a trigger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OperatorMode {
    /// OBSERVE_ONLY: no new entries (clears SHUTDOWN).
    Observe,
    /// AGGRESSIVE: entries allowed; needs the pre-flight checks to pass.
    Aggressive,
}

impl OperatorMode {
    fn trading_mode(self) -> TradingMode {
        match self {
            OperatorMode::Observe => TradingMode::ObserveOnly,
            OperatorMode::Aggressive => TradingMode::Aggressive,
        }
    }
}

/// One request line, e.g. `{"command":"mode","mode":"observe","reason":"maintenance done"}`,
/// `{"command":"alerts_ack","alert_id":"0192…","reason":"seen"}` or `{"command":"status"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Change the trading mode; `reason` must not be empty.
    Mode { mode: OperatorMode, reason: String },
    /// Acknowledge an open or recent alert.
    AlertsAck {
        alert_id: String,
        #[serde(default)]
        reason: Option<String>,
    },
    /// The mode, why, and the open alerts.
    Status {},
}

impl Request {
    /// The action name in the `operator_action` event.
    fn action(&self) -> &'static str {
        match self {
            Request::Mode { .. } => "mode",
            Request::AlertsAck { .. } => "alerts_ack",
            Request::Status {} => "status",
        }
    }

    fn args(&self) -> Value {
        match self {
            Request::Mode { mode, .. } => json!({ "mode": mode }),
            Request::AlertsAck { alert_id, .. } => json!({ "alert_id": alert_id }),
            Request::Status {} => json!({}),
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Request::Mode { reason, .. } => Some(reason),
            Request::AlertsAck { reason, .. } => reason.as_deref(),
            Request::Status {} => None,
        }
    }
}

/// Why a request was not carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The peer's uid is not allowed.
    Forbidden,
    /// Not a valid request line.
    BadRequest,
    /// Understood and refused (a failed pre-flight check, SHUTDOWN → AGGRESSIVE, unknown alert).
    Refused,
    /// An actor needed for it did not answer.
    Unavailable,
}

/// One response line: `{"ok":true,"message":"…","data":{…}}` or
/// `{"ok":false,"error":"refused","message":"…","problems":[…]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// Set when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Refusal>,
    /// For the operator, one line.
    pub message: String,
    /// Each failed pre-flight check, when that is why AGGRESSIVE was refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Details (the acknowledged alert, the status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl Response {
    fn ok(message: impl Into<String>, data: Option<Value>) -> Response {
        Response {
            ok: true,
            error: None,
            message: message.into(),
            problems: Vec::new(),
            data,
        }
    }

    fn refused(error: Refusal, message: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(error),
            message: message.into(),
            problems: Vec::new(),
            data: None,
        }
    }
}

/// Whether `peer_uid` may use the admin socket of a daemon running as `own_uid`.
pub fn authorize(peer_uid: u32, own_uid: u32, config: &AdminConfig) -> Result<(), String> {
    if peer_uid == own_uid || config.allowed_uids.contains(&peer_uid) {
        Ok(())
    } else {
        Err(format!(
            "uid {peer_uid} may not use the admin socket: only the daemon's user (uid {own_uid}) \
             and the uids in `admin.allowed_uids` may"
        ))
    }
}

/// Parses one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|_| "the request is not UTF-8".to_string())?;
    serde_json::from_str(text.trim()).map_err(|e| format!("not a valid request: {e}"))
}

/// What the server needs to carry out requests.
#[derive(Clone)]
pub struct AdminContext {
    pub names: Names,
    pub config: AdminConfig,
    /// The store file and `[checks]`: the pre-flight runs the full check set on demand.
    pub checks: ChecksArgs,
}

/// The bound admin socket, before it serves.
pub struct BoundAdmin {
    listener: UnixListener,
    path: PathBuf,
    own_uid: u32,
}

/// The serving admin socket; [`AdminServer::stop`] closes it and removes the file.
pub struct AdminServer {
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Binds `<data_dir>/admin.sock` with mode 0600 (see the module docs for how). Must run inside a
/// tokio runtime and while the data-directory lock is held.
pub fn bind(data_dir: &Path) -> Result<BoundAdmin, String> {
    let path = socket_path(data_dir);
    let fail =
        |what: &str, e: std::io::Error| format!("admin socket {}: {what}: {e}", path.display());
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => {
            // A previous run's socket (we hold the data-dir lock, so nobody serves it).
            std::fs::remove_file(&path).map_err(|e| fail("cannot remove the stale socket", e))?;
        }
        Ok(_) => {
            return Err(format!(
                "admin socket {}: the path exists and is not a socket; move it away",
                path.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail("cannot inspect the path", e)),
    }
    // Bind inside a private directory, tighten, then rename into place: others can never reach
    // the socket while its mode is still what the umask made it.
    // A short name: the staged path must fit `sun_path` (108 bytes) as well as the final one.
    let private = data_dir.join(format!(".a{:08x}", fastrand::u32(..)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| fail("cannot create a private directory to bind in", e))?;
    let result = (|| {
        let staged = private.join(SOCKET_NAME);
        let listener = UnixListener::bind(&staged).map_err(|e| {
            if staged.as_os_str().len() >= 100 {
                fail(
                    "cannot bind (a Unix socket path must be under 108 bytes: use a shorter \
                     `server.data_dir`)",
                    e,
                )
            } else {
                fail("cannot bind", e)
            }
        })?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail("cannot set mode 0600", e))?;
        let own_uid = std::fs::metadata(&staged)
            .map_err(|e| fail("cannot read the socket's owner", e))?
            .uid();
        std::fs::rename(&staged, &path).map_err(|e| fail("cannot move into place", e))?;
        Ok(BoundAdmin {
            listener,
            path: path.clone(),
            own_uid,
        })
    })();
    let _ = std::fs::remove_dir_all(&private);
    result
}

impl BoundAdmin {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the socket unused (startup failed after binding) and removes its file.
    pub fn discard(self) {
        drop(self.listener);
        let _ = std::fs::remove_file(&self.path);
    }

    /// Starts accepting connections.
    pub fn serve(self, context: AdminContext) -> AdminServer {
        let (tx, mut rx) = oneshot::channel::<()>();
        let BoundAdmin {
            listener,
            path,
            own_uid,
        } = self;
        info!(socket = %path.display(), own_uid, allowed_uids = ?context.config.allowed_uids, "admin: serving operator commands");
        let task = tokio::spawn(async move {
            // Dropping the set at stop aborts the connections still in flight.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let context = context.clone();
                            connections.spawn(connection(stream, own_uid, context));
                        }
                        Err(e) => {
                            warn!(error = %e, "admin: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        AdminServer {
            path,
            stop: Some(tx),
            task,
        }
    }
}

impl AdminServer {
    /// Stops accepting, drops the connections in flight and removes the socket file.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(socket = %self.path.display(), error = %e, "admin: cannot remove the socket file");
        }
    }
}

/// Reads one line of at most [`MAX_REQUEST_BYTES`]; `Err` is the response to send.
async fn read_request_line(stream: &mut UnixStream) -> Result<Vec<u8>, Response> {
    let mut reader = tokio::io::BufReader::new(stream).take(MAX_REQUEST_BYTES as u64 + 1);
    let mut line = Vec::new();
    match tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
        Err(_) => Err(Response::refused(
            Refusal::BadRequest,
            format!("no request line within {} s", READ_TIMEOUT.as_secs()),
        )),
        Ok(Err(e)) => Err(Response::refused(
            Refusal::BadRequest,
            format!("cannot read the request: {e}"),
        )),
        Ok(Ok(_)) => {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            if line.len() > MAX_REQUEST_BYTES {
                return Err(Response::refused(
                    Refusal::BadRequest,
                    format!("the request is longer than {MAX_REQUEST_BYTES} bytes"),
                ));
            }
            Ok(line)
        }
    }
}

async fn connection(mut stream: UnixStream, own_uid: u32, context: AdminContext) {
    let peer_uid = match stream.peer_cred() {
        Ok(cred) => Some(cred.uid()),
        Err(e) => {
            warn!(error = %e, "admin: cannot read the peer's credentials; refused");
            None
        }
    };
    let response = match read_request_line(&mut stream).await {
        Err(response) => response,
        Ok(line) => {
            // The request is read even from a refused peer, so the attempt is on record.
            let parsed = parse_request(&line);
            let allowed = peer_uid
                .ok_or_else(|| "the peer's credentials could not be read".to_string())
                .and_then(|uid| authorize(uid, own_uid, &context.config).map(|()| uid));
            let (response, request) = match (allowed, parsed) {
                (Err(why), parsed) => {
                    warn!(peer_uid, reason = %why, "admin: connection refused");
                    (Response::refused(Refusal::Forbidden, why), parsed.ok())
                }
                (Ok(_), Err(why)) => (Response::refused(Refusal::BadRequest, why), None),
                (Ok(uid), Ok(request)) => (handle(&context, &request, uid).await, Some(request)),
            };
            match request {
                Some(request) if !matches!(request, Request::Status {}) => {
                    record(&context.names, &request, peer_uid, response).await
                }
                _ => response,
            }
        }
    };
    let mut line = serde_json::to_vec(&response).unwrap_or_else(|_| {
        br#"{"ok":false,"error":"unavailable","message":"cannot encode the response"}"#.to_vec()
    });
    line.push(b'\n');
    if let Err(e) = stream.write_all(&line).await {
        warn!(error = %e, "admin: cannot send the response");
    }
    let _ = stream.shutdown().await;
}

/// Commits the `operator_action` event (bounded) and returns the response, which says so when
/// the event could not be stored (the action itself stands: it was carried out or refused).
async fn record(
    names: &Names,
    request: &Request,
    peer_uid: Option<u32>,
    mut response: Response,
) -> Response {
    let outcome = if response.ok { "accepted" } else { "refused" };
    let event = json!({
        "action": request.action(),
        "args": request.args(),
        "reason": request.reason(),
        "peer_uid": peer_uid,
        "outcome": outcome,
        "message": response.message,
        "problems": response.problems,
    });
    info!(
        action = request.action(),
        reason = request.reason().unwrap_or(""),
        peer_uid,
        outcome,
        message = %response.message,
        "admin: operator action"
    );
    if let Err(e) = commit_change(
        names,
        Change::event("operator_action", event),
        ACTION_TIMEOUT,
    )
    .await
    {
        error!(action = request.action(), error = %e, "admin: operator action not recorded in the event log");
        response
            .message
            .push_str(&format!(" (warning: not recorded in the event log: {e})"));
    }
    response
}

async fn handle(context: &AdminContext, request: &Request, peer_uid: u32) -> Response {
    match request {
        Request::Status {} => status(&context.names).await,
        Request::Mode { mode, reason } => set_mode(context, *mode, reason, peer_uid).await,
        Request::AlertsAck { alert_id, .. } => acknowledge(&context.names, alert_id).await,
    }
}

async fn status(names: &Names) -> Response {
    let fail_safe = health::ask(
        names.lookup::<FailSafeMsg>(ChildName::FailSafe),
        FailSafeMsg::Status,
        ASK_TIMEOUT,
    )
    .await;
    let alerts = health::ask(
        names.lookup::<AlertMsg>(ChildName::Alert),
        AlertMsg::Status,
        ASK_TIMEOUT,
    )
    .await;
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
    let current = health::ask(
        context.names.lookup::<FailSafeMsg>(ChildName::FailSafe),
        FailSafeMsg::GetMode,
        ASK_TIMEOUT,
    )
    .await;
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
    let answer = health::ask(
        context.names.lookup::<FailSafeMsg>(ChildName::FailSafe),
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
    let answer = health::ask(
        names.lookup::<AlertMsg>(ChildName::Alert),
        |reply| AlertMsg::Acknowledge {
            alert_id: id,
            reply,
        },
        ACTION_TIMEOUT,
    )
    .await;
    match answer {
        Reply::Answered(Ok(record)) => Response::ok(
            format!("alert {} acknowledged: {}", record.alert_id, record.title),
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

/// Why the client could not get an answer.
#[derive(Debug)]
pub enum ClientError {
    /// No socket at the path: the daemon is not running (or uses another data directory).
    NotRunning(PathBuf),
    /// The socket (or its directory) is not accessible to this user.
    PermissionDenied(PathBuf),
    /// Anything else (connection refused on a stale socket, a broken answer, a timeout).
    Other(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning(p) => write!(
                f,
                "the daemon is not running: no admin socket at {} (check --config / --data-dir, or pass --socket)",
                p.display()
            ),
            ClientError::PermissionDenied(p) => write!(
                f,
                "permission denied on {}: run this as the daemon's user (the socket is 0600)",
                p.display()
            ),
            ClientError::Other(e) => f.write_str(e),
        }
    }
}

/// Sends one request to the socket at `path` and reads the answer (blocking; for the CLI).
pub fn request(path: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let io = |what: &str, e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => ClientError::NotRunning(path.to_path_buf()),
        std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(path.to_path_buf()),
        std::io::ErrorKind::ConnectionRefused => ClientError::Other(format!(
            "the daemon is not running: {} exists but nobody listens on it ({what}: {e})",
            path.display()
        )),
        _ => ClientError::Other(format!("{what} {}: {e}", path.display())),
    };
    let mut stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|e| io("cannot connect to", e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| io("cannot set a timeout on", e))?;
    let mut line = serde_json::to_vec(request)
        .map_err(|e| ClientError::Other(format!("cannot encode the request: {e}")))?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| io("cannot send the request to", e))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .take(1024 * 1024)
        .read_line(&mut answer)
        .map_err(|e| io("no answer from", e))?;
    serde_json::from_str(answer.trim()).map_err(|e| {
        ClientError::Other(format!(
            "the daemon's answer is not a valid response ({e}): {}",
            answer.trim()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_own_uid_and_listed_uids_are_authorized() {
        let none = AdminConfig::default();
        assert_eq!(authorize(1000, 1000, &none), Ok(()));
        let err = authorize(65534, 1000, &none).unwrap_err();
        assert!(
            err.contains("uid 65534") && err.contains("allowed_uids"),
            "{err}"
        );
        let listed = AdminConfig {
            allowed_uids: vec![1001],
        };
        assert_eq!(authorize(1001, 1000, &listed), Ok(()));
        assert!(authorize(1002, 1000, &listed).is_err());
        // Root is not special: it is allowed only as the daemon's own uid or when listed.
        assert!(authorize(0, 1000, &listed).is_err());
    }

    #[test]
    fn config_validation_names_the_field() {
        assert_eq!(AdminConfig::default().validate(), Ok(()));
        let dup = AdminConfig {
            allowed_uids: vec![5, 5],
        };
        assert!(dup.validate().unwrap_err().starts_with("allowed_uids[1]"));
        let bad = AdminConfig {
            allowed_uids: vec![u32::MAX],
        };
        assert!(bad.validate().unwrap_err().starts_with("allowed_uids[0]"));
    }

    #[test]
    fn requests_parse_and_malformed_lines_are_errors() {
        assert_eq!(
            parse_request(br#"{"command":"mode","mode":"observe","reason":"x"}"#),
            Ok(Request::Mode {
                mode: OperatorMode::Observe,
                reason: "x".into()
            })
        );
        assert_eq!(
            parse_request(br#"{"command":"alerts_ack","alert_id":"a1"}"#),
            Ok(Request::AlertsAck {
                alert_id: "a1".into(),
                reason: None
            })
        );
        assert_eq!(
            parse_request(br#"{"command":"status"}"#),
            Ok(Request::Status {})
        );
        for bad in [
            &b""[..],
            b"not json",
            b"\xff\xfe",
            br#"{"command":"mode","mode":"shutdown","reason":"x"}"#,
            br#"{"command":"mode","mode":"observe"}"#,
            br#"{"command":"status","extra":1}"#,
            br#"{"command":"rm -rf"}"#,
            b"[1,2,3]",
        ] {
            assert!(
                parse_request(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn preflight_names_every_failed_check() {
        let fs = FailSafeStatus {
            mode: TradingMode::ObserveOnly,
            loaded: true,
            reason: "test".into(),
            changed_at: None,
            initial_mode: TradingMode::ObserveOnly,
            initial_mode_reason: "test".into(),
            triggers: 0,
            last_trigger: None,
            recovered: false,
            conditions: Vec::new(),
            checks: None,
        };
        let bad_store = ChecksReport {
            kind: checks::RunKind::OnDemand,
            at: chrono::Utc::now(),
            passed: false,
            took_ms: 1,
            checks: vec![
                checks::Check {
                    name: checks::EVENT_LOG.into(),
                    passed: false,
                    detail: "event 2: hash mismatch".into(),
                },
                checks::Check {
                    name: checks::MODE.into(),
                    passed: true,
                    detail: "ok".into(),
                },
            ],
        };
        let problems = preflight_problems(
            &Reply::Answered(fs.clone()),
            &Reply::Unresponsive,
            &Reply::NotRunning,
            Some(&bad_store),
        );
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("recovery has not finished"));
        assert!(problems[1].contains("broker-connection is unresponsive"));
        assert!(problems[2].contains("state-persister is not running"));
        assert!(problems[3].contains("hash mismatch"));
        let unloaded = FailSafeStatus {
            loaded: false,
            ..fs
        };
        let problems = preflight_problems(
            &Reply::Answered(unloaded),
            &Reply::NotRunning,
            &Reply::NotRunning,
            None,
        );
        assert!(problems[0].contains("not been loaded"), "{problems:?}");
        assert!(problems[3].contains("did not run"), "{problems:?}");
    }

    #[tokio::test]
    async fn the_socket_is_0600_replaces_a_stale_one_and_answers_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        // A stale socket from an earlier run.
        let stale = std::os::unix::net::UnixListener::bind(socket_path(dir.path())).unwrap();
        drop(stale);
        let bound = bind(dir.path()).unwrap();
        let meta = std::fs::metadata(bound.path()).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        assert_eq!(leftovers, vec![SOCKET_NAME.to_string()]);
        let path = bound.path().to_path_buf();
        let server = bound.serve(AdminContext {
            names: Names::with_prefix("admin-unit-"),
            config: AdminConfig::default(),
            checks: ChecksArgs {
                store_path: dir.path().join("tradebaas.db"),
                config: Default::default(),
            },
        });
        let exchange = |bytes: Vec<u8>| {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
                s.write_all(&bytes).unwrap();
                let mut answer = String::new();
                s.read_to_string(&mut answer).unwrap();
                serde_json::from_str::<Response>(answer.trim()).unwrap()
            })
        };
        let r = exchange(b"{not json\n".to_vec()).await.unwrap();
        assert_eq!(r.error, Some(Refusal::BadRequest), "{r:?}");
        let mut long = vec![b'x'; MAX_REQUEST_BYTES + 10];
        long.push(b'\n');
        let r = exchange(long).await.unwrap();
        assert!(r.message.contains("longer than"), "{r:?}");
        // No actors under these names: an honest "unavailable", not a panic.
        let r = exchange(b"{\"command\":\"status\"}\n".to_vec())
            .await
            .unwrap();
        assert_eq!(r.error, Some(Refusal::Unavailable), "{r:?}");
        let r =
            exchange(b"{\"command\":\"mode\",\"mode\":\"observe\",\"reason\":\"  \"}\n".to_vec())
                .await
                .unwrap();
        assert!(r.message.contains("reason is required"), "{r:?}");
        server.stop().await;
        assert!(!path.exists(), "the socket file is removed at stop");
    }
}
