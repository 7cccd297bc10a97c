//! The six children of the root supervisor and the registry names they run under.
//!
//! A child's name is its ractor registry name, its key in health output and its `actor` label in
//! metrics. Peers reach each other by name ([`Names::get`]), never by a stored `ActorRef`, so a
//! message sent after a restart reaches the new instance.

use std::fmt;

use ractor::{ActorRef, Message};
use serde::{Deserialize, Serialize};

/// One child of the root supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChildName {
    Alert,
    StatePersister,
    FailSafe,
    Heartbeat,
    BrokerConnection,
    Strategy,
}

impl ChildName {
    /// Start order; the supervisor stops them in reverse.
    pub const START_ORDER: [ChildName; 6] = [
        ChildName::Alert,
        ChildName::StatePersister,
        ChildName::FailSafe,
        ChildName::Heartbeat,
        ChildName::BrokerConnection,
        ChildName::Strategy,
    ];

    /// The stable name: registry name, health key and metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChildName::Alert => "alert",
            ChildName::StatePersister => "state-persister",
            ChildName::FailSafe => "fail-safe",
            ChildName::Heartbeat => "heartbeat",
            ChildName::BrokerConnection => "broker-connection",
            ChildName::Strategy => "strategy",
        }
    }

    /// Position in [`Self::START_ORDER`].
    pub fn index(self) -> usize {
        Self::START_ORDER
            .iter()
            .position(|c| *c == self)
            .unwrap_or_default()
    }
}

impl fmt::Display for ChildName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A child's message type, tied to the name the child runs under: what makes
/// [`Names::get`] typed. Implemented next to each message enum in `crate::protocol`.
pub trait Child: Message {
    const NAME: ChildName;
}

/// Registry names of one daemon instance.
///
/// The registry is process-wide. The daemon runs with an empty prefix, so the names are exactly
/// `alert`, `state-persister`, …; tests that run several trees in one process give each a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names with a prefix (tests); `Names::default()` is the daemon's.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The registry name of a child.
    pub fn of(&self, child: ChildName) -> String {
        format!("{}{}", self.prefix, child.as_str())
    }

    /// The registry name of the root supervisor.
    pub fn supervisor(&self) -> String {
        format!("{}supervisor", self.prefix)
    }

    /// The current instance of child `C`, found by the name its message type is tied to
    /// ([`Child`]): `names.get::<AlertMsg>()`. What production code uses.
    pub fn get<C: Child>(&self) -> Option<ActorRef<C>> {
        ActorRef::<C>::where_is(self.of(C::NAME))
    }

    /// The current instance under `child`'s name, as whatever message type `M` the caller says:
    /// untyped, so only for test probes and hooks that stand in for a child. Everything else
    /// uses [`Names::get`], where the compiler ties the name to the message type.
    pub fn lookup<M: Message>(&self, child: ChildName) -> Option<ActorRef<M>> {
        ActorRef::<M>::where_is(self.of(child))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_names_are_exact() {
        let names = Names::default();
        let all: Vec<String> = ChildName::START_ORDER
            .iter()
            .map(|c| names.of(*c))
            .collect();
        assert_eq!(
            all,
            [
                "alert",
                "state-persister",
                "fail-safe",
                "heartbeat",
                "broker-connection",
                "strategy"
            ]
        );
        assert_eq!(names.supervisor(), "supervisor");
    }

    #[test]
    fn serde_uses_the_registry_name() {
        let json = serde_json::to_string(&ChildName::StatePersister).unwrap();
        assert_eq!(json, "\"state-persister\"");
    }
}
