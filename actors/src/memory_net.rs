//! In-process byte streams that stand in for loopback TCP: what a deterministic simulation (the
//! whole tree against the paper exchange on one paused tokio runtime) connects over. A socket's
//! readiness comes from the kernel, and a paused clock auto-advances while the runtime waits for
//! it; a [`tokio::io::duplex`] pipe wakes its reader directly, so simulated time only moves when
//! every task is idle. A listener is bound to a name; `memory://<name>/…` URLs dial it.
//!
//! A leaf: imports nothing of the crate.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

/// Bytes buffered in each direction of a connection.
const PIPE_BYTES: usize = 1 << 20;

/// The URL scheme that dials a [`Listener`].
pub const SCHEME: &str = "memory://";

/// Each name's listener: its binding id (so a stale listener's drop cannot unbind a newer one)
/// and where its connections go.
type Registry = HashMap<String, (u64, mpsc::UnboundedSender<DuplexStream>)>;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

static LISTENERS: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

fn listeners() -> MutexGuard<'static, Registry> {
    LISTENERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A bound name; connections to it arrive at [`Listener::accept`]. Dropping it unbinds the name.
#[derive(Debug)]
pub struct Listener {
    name: String,
    id: u64,
    incoming: mpsc::UnboundedReceiver<DuplexStream>,
}

impl Listener {
    /// Binds `name`; `AddrInUse` if a live listener has it.
    pub fn bind(name: &str) -> io::Result<Listener> {
        let mut map = listeners();
        if map.get(name).is_some_and(|(_, tx)| !tx.is_closed()) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{SCHEME}{name} is already bound"),
            ));
        }
        let (tx, incoming) = mpsc::unbounded_channel();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        map.insert(name.to_owned(), (id, tx));
        Ok(Listener {
            name: name.to_owned(),
            id,
            incoming,
        })
    }

    /// The bound name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next connection (None once unbound).
    pub async fn accept(&mut self) -> Option<DuplexStream> {
        self.incoming.recv().await
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut map = listeners();
        if map.get(&self.name).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.name);
        }
    }
}

/// Connects to the listener bound to `name`; `ConnectionRefused` if there is none.
pub fn connect(name: &str) -> io::Result<DuplexStream> {
    let (client, server) = tokio::io::duplex(PIPE_BYTES);
    let map = listeners();
    match map.get(name) {
        Some((_, tx)) if tx.send(server).is_ok() => Ok(client),
        _ => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("nothing listens on {SCHEME}{name}"),
        )),
    }
}

/// The listener name in a `memory://<name>/path` URL (None for any other URL).
pub fn name_of(url: &str) -> Option<&str> {
    let rest = url.strip_prefix(SCHEME)?;
    let name = rest.split(['/', '?']).next().unwrap_or(rest);
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_connection_reaches_the_bound_listener_and_unbinding_refuses() {
        let mut listener = Listener::bind("mn-test-a").unwrap();
        assert_eq!(
            Listener::bind("mn-test-a").unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        let mut client = connect("mn-test-a").unwrap();
        let mut server = listener.accept().await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        drop(listener);
        assert_eq!(
            connect("mn-test-a").unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
        // A new binding after a drop works, and an old listener's drop leaves it bound.
        let first = Listener::bind("mn-test-b").unwrap();
        drop(first);
        let _second = Listener::bind("mn-test-b").unwrap();
        assert!(connect("mn-test-b").is_ok());
    }

    #[test]
    fn urls_name_their_listener() {
        assert_eq!(name_of("memory://paper/ws/api/v2"), Some("paper"));
        assert_eq!(name_of("memory://paper"), Some("paper"));
        assert_eq!(name_of("memory:///x"), None);
        assert_eq!(name_of("ws://127.0.0.1:1/ws"), None);
    }
}
