//! Where the daemon lets a test make the real binary misbehave (`TRADEBAAS_TEST_HOOKS`, see
//! [`crate::hooks`]). Built without the `test-hooks` feature (every release build) these do
//! nothing and read nothing.

use crate::names::Names;

/// Arms the child hooks (they act on SIGUSR1). Call once the tree is started.
pub fn install(names: &Names) {
    #[cfg(any(test, feature = "test-hooks"))]
    crate::hooks::install(names);
    #[cfg(not(any(test, feature = "test-hooks")))]
    let _ = names;
}

/// A named point in the daemon's own tasks where `panic:<name>` panics.
pub fn point(name: &'static str) {
    #[cfg(any(test, feature = "test-hooks"))]
    crate::hooks::point(name);
    #[cfg(not(any(test, feature = "test-hooks")))]
    let _ = name;
}
