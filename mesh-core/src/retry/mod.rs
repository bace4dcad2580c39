//! Placeholder until the retry module lands (temporary, replaced on merge).

use std::time::Duration;

/// Placeholder.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RetryOn(pub String);

/// Placeholder.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffConfig {
    /// Base.
    pub base: Duration,
    /// Max.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
        }
    }
}
