//! systemd service notifications (the `sd_notify` protocol): `READY=1`, `STOPPING=1`,
//! `WATCHDOG=1` and `STATUS=…` datagrams to the socket systemd names in `NOTIFY_SOCKET`.
//!
//! The daemon reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` once at start-up and
//! builds one [`SdNotifier`]; everything else gets a clone in its arguments. Nothing here reads
//! the environment, so tests point a notifier at a socket of their own (environment variables are
//! process-global and tests run in parallel).
//!
//! Messages are formatted by the `sd-notify` crate ([`NotifyState`]); the datagram is sent here
//! because the crate only sends to the socket named in the environment. The socket is
//! non-blocking: a notification never blocks an actor. A failed notification is logged at `warn`
//! once per notifier and is never fatal.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use sd_notify::NotifyState;
use tracing::{debug, warn};

/// Where systemd listens and how often it expects `WATCHDOG=1`. Cheap to clone (shared).
#[derive(Clone)]
pub struct SdNotifier {
    inner: Arc<Inner>,
}

struct Inner {
    /// `NOTIFY_SOCKET`: a path, or `@name` for an abstract socket.
    socket: OsString,
    /// `WATCHDOG_USEC` (when `WATCHDOG_PID` is unset or this process).
    watchdog: Option<Duration>,
    /// Whether a failure was already logged at `warn`.
    warned: AtomicBool,
}

impl std::fmt::Debug for SdNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdNotifier")
            .field("socket", &self.inner.socket)
            .field("watchdog", &self.inner.watchdog)
            .finish()
    }
}

impl SdNotifier {
    /// A notifier for `socket` (`NOTIFY_SOCKET`), with the watchdog interval systemd expects
    /// (`WATCHDOG_USEC`), if any.
    pub fn new(socket: impl Into<OsString>, watchdog: Option<Duration>) -> Self {
        Self {
            inner: Arc::new(Inner {
                socket: socket.into(),
                watchdog: watchdog.filter(|d| !d.is_zero()),
                warned: AtomicBool::new(false),
            }),
        }
    }

    /// The watchdog interval systemd enforces, when `WatchdogSec=` is set.
    pub fn watchdog(&self) -> Option<Duration> {
        self.inner.watchdog
    }

    /// `READY=1` (start-up, recovery included, has finished) with a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STOPPING=1` (shutdown has started) with a status line.
    pub fn stopping(&self, status: &str) {
        self.notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// `WATCHDOG=1` with a status line. Only the heartbeat sends it, after a round in which every
    /// actor answered.
    pub fn watchdog_ok(&self, status: &str) {
        self.notify(&[NotifyState::Watchdog, NotifyState::Status(status)]);
    }

    /// A `STATUS=` line only.
    pub fn status(&self, status: &str) {
        self.notify(&[NotifyState::Status(status)]);
    }

    /// Sends `states`, one per line, in one datagram. Failures are logged (at `warn` the first
    /// time, then at `debug`), never returned: systemd not listening must not stop the daemon.
    pub fn notify(&self, states: &[NotifyState<'_>]) {
        let mut msg = String::new();
        for s in states {
            // Writing to a String cannot fail; a status line must not break the protocol.
            let line = s.to_string().replace('\n', " ");
            let _ = writeln!(msg, "{line}");
        }
        if let Err(e) = self.send(msg.as_bytes()) {
            if self.inner.warned.swap(true, Ordering::Relaxed) {
                debug!(socket = ?self.inner.socket, error = %e, "sd_notify failed");
            } else {
                warn!(
                    socket = ?self.inner.socket,
                    error = %e,
                    "sd_notify failed (further failures are logged at debug); systemd may \
                     consider the service not ready or restart it on its watchdog"
                );
            }
        }
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        let socket = &self.inner.socket;
        let bytes = socket.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            #[cfg(target_os = "linux")]
            {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.connect_addr(&addr)?;
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = name;
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "abstract notify sockets exist only on Linux",
                ));
            }
        } else {
            sock.connect(PathBuf::from(socket))?;
        }
        let sent = sock.send(msg)?;
        if sent == msg.len() {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::WriteZero, "incomplete write"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (tempfile::TempDir, PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (dir, path, sock)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_ready_stopping_and_watchdog_datagrams() {
        let (_dir, path, sock) = listener();
        let n = SdNotifier::new(&path, Some(Duration::from_secs(30)));
        assert_eq!(n.watchdog(), Some(Duration::from_secs(30)));
        n.ready("recovered");
        assert_eq!(recv(&sock), "READY=1\nSTATUS=recovered\n");
        n.watchdog_ok("round 1\nall answered");
        assert_eq!(recv(&sock), "WATCHDOG=1\nSTATUS=round 1 all answered\n");
        n.stopping("bye");
        assert_eq!(recv(&sock), "STOPPING=1\nSTATUS=bye\n");
    }

    #[test]
    fn abstract_sockets_are_reached() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("tradebaas-test-{}", fastrand::u64(..));
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        SdNotifier::new(format!("@{name}"), None).status("hello");
        assert_eq!(recv(&sock), "STATUS=hello\n");
    }

    #[test]
    fn a_missing_socket_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let n = SdNotifier::new(dir.path().join("absent.sock"), Some(Duration::ZERO));
        assert_eq!(n.watchdog(), None, "WATCHDOG_USEC=0 means no watchdog");
        n.ready("x");
        n.ready("x"); // logged once at warn, then debug; never panics
        assert!(n.inner.warned.load(Ordering::Relaxed));
    }
}
