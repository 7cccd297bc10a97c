//! The blocking admin client the CLI uses: one request, one response.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

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
