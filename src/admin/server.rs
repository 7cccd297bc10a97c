//! The admin socket: bind (0600, renamed into place), serve, one connection (peer check, one
//! request line, one response line), and the `operator_action` record of every action.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};
use tradebaas_actors::checks::ChecksArgs;
use tradebaas_actors::client::commit_change;
use tradebaas_actors::names::Names;
use tradebaas_actors::store::Change;

use super::actions::handle;
use super::*;

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
