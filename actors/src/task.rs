//! Task ownership helpers.

use tokio::task::JoinHandle;

/// Owns a spawned task and aborts it when dropped, so a task never outlives the actor state
/// (or the attempt) it was spawned for.
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
