//! A string that never prints.

use std::fmt;

/// An API secret or token. `Debug` and `Display` print `[redacted]`; it has no `Serialize`, so it
/// cannot reach health output, the store or a log line by accident. Read it with [`Secret::expose`]
/// at the one place that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("W0H6FJW4IRPZ1MOQ8FP6KMC5RZDUUKXS");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "W0H6FJW4IRPZ1MOQ8FP6KMC5RZDUUKXS");
    }
}
