//! What crosses between actors: each actor's message enum, its status and reply types, and the
//! types more than one actor sends or receives (`Alert`, `Severity`, `LinkState`,
//! `RequestError`, `ChecksReport`, …).
//!
//! Boundary: may import `model`, `store` (its error and change types), `mode`, `hooks`, `names`
//! and `clock`; never an actor module. An actor's messages to itself (timers, its tasks'
//! results) are not part of the protocol: they travel as an opaque [`Internal`] that only the
//! actor which made it can open, and are declared privately in the actor's own module.

use std::any::Any;
use std::fmt;

pub mod alert;
pub mod broker;
pub mod checks;
pub mod failsafe;
pub mod heartbeat;
pub mod persister;
pub mod strategy;
pub mod supervisor;

/// An actor's message to itself, opaque to everyone else: `XMsg::Internal(Internal::new(m))`
/// where `m` is the actor's private `InternalMsg`, opened again in its handler. Another actor
/// can neither read nor usefully make one; an `Internal` opened as the wrong type is a
/// programming error, answered with [`ForeignInternal`] (the handler logs and drops it).
pub struct Internal(Box<dyn Any + Send>);

impl Internal {
    pub fn new<T: Any + Send>(msg: T) -> Self {
        Self(Box::new(msg))
    }

    /// The message, if it is a `T`.
    pub fn open<T: Any>(self) -> Result<T, ForeignInternal> {
        self.0
            .downcast::<T>()
            .map(|m| *m)
            .map_err(|_| ForeignInternal {
                expected: std::any::type_name::<T>(),
            })
    }
}

impl fmt::Debug for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Internal(..)")
    }
}

/// An [`Internal`] that does not hold the type its receiver expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an internal message that is not a {expected} (sent by another actor?): dropped")]
pub struct ForeignInternal {
    pub expected: &'static str,
}

/// Every actor's `Actor::handle`, written once: the signature, and the `match` with the arms
/// every actor answers alike: `Internal` opened as the actor's private `InternalMsg` and handed
/// to its `handle_internal(myself, msg, state)` (a foreign one is logged and dropped, see
/// [`ForeignInternal`]), `Status` answered with `state.status()`, `Ping` answered at once (the
/// heartbeat's liveness probe), and, in tests, `Hook` acted on this actor's cell (the
/// supervisor, named `"supervisor"`, has no `Hook`). The actor's own arms are the `match`
/// written last; the compiler still checks that the whole match is exhaustive, and the
/// arguments are expressions, so rustfmt formats the arms as usual. See ADR 0006.
///
/// ```ignore
/// impl Actor for AlertActor {
///     // type Msg, State, Arguments; pre_start, …
///     dispatch!(AlertMsg, "alert", |myself, msg, state| match msg {
///         AlertMsg::Raise(alert) => state.raise(alert),
///     });
/// }
/// ```
macro_rules! dispatch {
    ($Msg:ident, $name:tt, |$myself:ident, $msg:ident, $state:ident| match $m:ident {
        $($arms:tt)*
    } $(,)?) => {
        async fn handle(
            &self,
            $myself: ::ractor::ActorRef<Self::Msg>,
            $msg: Self::Msg,
            $state: &mut Self::State,
        ) -> ::std::result::Result<(), ::ractor::ActorProcessingErr> {
            $crate::protocol::dispatch!(@arms $Msg, $name, $myself, $state, $m, { $($arms)* });
            Ok(())
        }
    };
    (@arms $Msg:ident, "supervisor", $myself:ident, $state:ident, $m:ident, { $($arms:tt)* }) => {
        $crate::protocol::dispatch!(@match $Msg, "supervisor", $myself, $state, $m, { $($arms)* })
    };
    (@arms $Msg:ident, $name:literal, $myself:ident, $state:ident, $m:ident, { $($arms:tt)* }) => {
        $crate::protocol::dispatch!(@match $Msg, $name, $myself, $state, $m, {
            #[cfg(any(test, feature = "test-hooks"))]
            $Msg::Hook(hook) => hook.act(&$myself.get_cell()).await?,
            $($arms)*
        })
    };
    (@match $Msg:ident, $name:literal, $myself:ident, $state:ident, $m:ident, { $($arms:tt)* }) => {
        match $m {
            $Msg::Internal(internal) => match internal.open::<InternalMsg>() {
                Ok(internal) => return handle_internal($myself, internal, $state).await,
                Err(e) => ::tracing::error!(actor = $name, "{e}"),
            },
            $Msg::Status(reply) => {
                let _ = reply.send($state.status());
            }
            $Msg::Ping(reply) => {
                let _ = reply.send(());
            }
            $($arms)*
        }
    };
}
pub(crate) use dispatch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_message_opens_only_as_the_type_it_was_made_from() {
        #[derive(Debug, PartialEq)]
        struct Mine(u32);
        struct Other;
        assert_eq!(Internal::new(Mine(7)).open::<Mine>(), Ok(Mine(7)));
        let e = Internal::new(Mine(7))
            .open::<Other>()
            .map(|_| ())
            .unwrap_err();
        assert!(e.to_string().contains("Other"), "{e}");
        assert_eq!(format!("{:?}", Internal::new(Mine(1))), "Internal(..)");
    }
}
