//! Wall-clock time for everything the daemon stamps or compares with a stored time (events,
//! snapshots, retention's age, "snapshot due"). In a release build it is `Utc::now()`. A
//! simulation on paused tokio time (a test compressing weeks into seconds) installs a simulated
//! epoch with [`simulate_from`]; from then on the wall clock is that epoch plus the time tokio's
//! clock has advanced, so a daily snapshot is due after a simulated day.
//!
//! A leaf: imports nothing of the crate.

use chrono::{DateTime, Utc};

/// Now, on the wall clock (simulated when a simulation installed an epoch).
pub fn now() -> DateTime<Utc> {
    #[cfg(any(test, feature = "test-hooks"))]
    if let Some((epoch, at)) = SIMULATED.get() {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(*at);
        return *epoch + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX);
    }
    Utc::now()
}

#[cfg(any(test, feature = "test-hooks"))]
static SIMULATED: std::sync::OnceLock<(DateTime<Utc>, tokio::time::Instant)> =
    std::sync::OnceLock::new();

/// Test-only: from now on the wall clock reads `epoch` plus the time tokio's clock advances
/// (call on the paused runtime the simulation runs on; once per process). False if an epoch was
/// installed before.
#[cfg(any(test, feature = "test-hooks"))]
pub fn simulate_from(epoch: DateTime<Utc>) -> bool {
    SIMULATED.set((epoch, tokio::time::Instant::now())).is_ok()
}
