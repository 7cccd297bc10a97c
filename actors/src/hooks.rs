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
            TestHook::Exit => {
                myself.stop(None);
                Ok(())
            }
        }
    }
}
