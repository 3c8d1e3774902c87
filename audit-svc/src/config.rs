//! audit-svc's own settings (`[service]` in its configuration, `STRONGROOM_SERVICE__*`).

use std::time::Duration;

use serde::Deserialize;

/// Bounds of `service.checkpoint_interval_ms`.
const INTERVAL_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;
/// Bounds of `service.sweep_interval_ms`.
const SWEEP_MS: std::ops::RangeInclusive<u64> = 1000..=3_600_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// Least time between two signed checkpoints of a tenant. A log that grew is checkpointed
    /// once this much time has passed since its previous checkpoint; entries appended in between
    /// wait that long for a checkpoint (and so for an inclusion proof).
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_ms: u64,
    /// Longest time between two looks at a tenant's outbox that no wake-up asked for. Services
    /// wake audit-svc after each commit that wrote records; the sweep finds the records whose
    /// wake-up was lost (the writer killed between its commit and its `NOTIFY`). Each tenant costs
    /// one drain transaction per interval while idle.
    #[serde(default = "default_sweep_interval")]
    pub sweep_interval_ms: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { checkpoint_interval_ms: default_checkpoint_interval(), sweep_interval_ms: default_sweep_interval() }
    }
}

fn default_checkpoint_interval() -> u64 {
    1000
}

fn default_sweep_interval() -> u64 {
    10_000
}

impl AuditSettings {
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms)
    }

    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }
}

impl kit::config::ServiceSettings for AuditSettings {
    fn validate(&self, _env: kit::config::Environment) -> Result<(), String> {
        if !INTERVAL_MS.contains(&self.checkpoint_interval_ms) {
            return Err(format!(
                "service.checkpoint_interval_ms must be {}–{}",
                INTERVAL_MS.start(),
                INTERVAL_MS.end()
            ));
        }
        if !SWEEP_MS.contains(&self.sweep_interval_ms) {
            return Err(format!("service.sweep_interval_ms must be {}–{}", SWEEP_MS.start(), SWEEP_MS.end()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kit::config::{Environment, ServiceSettings};

    use super::*;

    #[test]
    fn checkpoint_interval_is_bounded() {
        let mut s = AuditSettings::default();
        assert!(s.validate(Environment::Production).is_ok(), "defaults are valid");
        for bad in [0, 99, 3_600_001] {
            s.checkpoint_interval_ms = bad;
            assert!(s.validate(Environment::Production).is_err(), "{bad} ms accepted");
        }
        s.checkpoint_interval_ms = 100;
        assert!(s.validate(Environment::Production).is_ok());
    }

    #[test]
    fn sweep_interval_is_bounded() {
        let mut s = AuditSettings::default();
        for bad in [0, 999, 3_600_001] {
            s.sweep_interval_ms = bad;
            assert!(s.validate(Environment::Production).is_err(), "{bad} ms accepted");
        }
        s.sweep_interval_ms = 1000;
        assert!(s.validate(Environment::Production).is_ok());
    }
}
