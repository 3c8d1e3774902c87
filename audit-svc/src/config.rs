//! audit-svc's own settings (`[service]` in its configuration, `STRONGROOM_SERVICE__*`).

use std::time::Duration;

use kit::config::within;
use serde::Deserialize;

/// Bounds of `service.checkpoint_interval_ms`.
const INTERVAL_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;
/// Bounds of `service.sweep_interval_ms`.
const SWEEP_MS: std::ops::RangeInclusive<u64> = 1000..=3_600_000;
/// Bounds of `service.signals_interval_ms`.
const SIGNALS_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;

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
    /// Time between two incremental verifications of a tenant's log (60 s unless configured):
    /// each checks only the entries appended since the previous one, continuing from the chain
    /// link it verified last. Visits of different tenants are spread over the interval.
    #[serde(default = "default_integrity_interval")]
    pub integrity_interval_ms: u64,
    /// Time between two full verifications of a tenant's log (6 h unless configured): every
    /// entry from the first, and the Merkle nodes above them. No shorter than
    /// `integrity_interval_ms`. A replica starts with a full pass of every tenant.
    #[serde(default = "default_integrity_full_interval")]
    pub integrity_full_interval_ms: u64,
    /// Time between two measurements of every tenant's audit pipeline (15 s unless configured):
    /// outbox backlog, age of its oldest record, age of the oldest entry no signed checkpoint
    /// covers (`strongroom_audit_*` on `/metrics`). Each tenant costs one read-only transaction
    /// per interval.
    #[serde(default = "default_signals_interval")]
    pub signals_interval_ms: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            checkpoint_interval_ms: default_checkpoint_interval(),
            sweep_interval_ms: default_sweep_interval(),
            integrity_interval_ms: default_integrity_interval(),
            integrity_full_interval_ms: default_integrity_full_interval(),
            signals_interval_ms: default_signals_interval(),
        }
    }
}

fn default_checkpoint_interval() -> u64 {
    1000
}

fn default_sweep_interval() -> u64 {
    10_000
}

fn default_integrity_interval() -> u64 {
    60_000
}

fn default_integrity_full_interval() -> u64 {
    6 * 3_600_000
}

fn default_signals_interval() -> u64 {
    15_000
}

impl AuditSettings {
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms)
    }

    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }

    /// `(incremental, full)` intervals of the continuous verification.
    pub fn integrity_intervals(&self) -> (Duration, Duration) {
        (Duration::from_millis(self.integrity_interval_ms), Duration::from_millis(self.integrity_full_interval_ms))
    }

    pub fn signals_interval(&self) -> Duration {
        Duration::from_millis(self.signals_interval_ms)
    }
}

impl kit::config::ServiceSettings for AuditSettings {
    fn validate(&self, _env: kit::config::Environment) -> Result<(), String> {
        within("checkpoint_interval_ms", self.checkpoint_interval_ms, INTERVAL_MS)?;
        within("sweep_interval_ms", self.sweep_interval_ms, SWEEP_MS)?;
        within("signals_interval_ms", self.signals_interval_ms, SIGNALS_MS)?;
        kit::config::check_integrity_intervals(self.integrity_interval_ms, self.integrity_full_interval_ms)
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

    #[test]
    fn signals_interval_is_bounded() {
        let mut s = AuditSettings::default();
        assert_eq!(s.signals_interval(), Duration::from_secs(15));
        for bad in [0, 99, 3_600_001] {
            s.signals_interval_ms = bad;
            assert!(s.validate(Environment::Production).is_err(), "{bad} ms accepted");
        }
        s.signals_interval_ms = 100;
        assert!(s.validate(Environment::Production).is_ok());
    }

    #[test]
    fn integrity_intervals_are_bounded_and_the_full_one_is_the_longer() {
        let mut s = AuditSettings::default();
        assert_eq!(s.integrity_intervals(), (Duration::from_secs(60), Duration::from_secs(6 * 3600)));
        for bad in [0, 99, 3_600_001] {
            s.integrity_interval_ms = bad;
            assert!(s.validate(Environment::Production).is_err(), "{bad} ms accepted");
        }
        s.integrity_interval_ms = 100;
        for bad in [0, 999, 604_800_001] {
            s.integrity_full_interval_ms = bad;
            assert!(s.validate(Environment::Production).is_err(), "{bad} ms accepted");
        }
        s.integrity_full_interval_ms = 1000;
        assert!(s.validate(Environment::Production).is_ok());
        s.integrity_interval_ms = 2000;
        assert!(s.validate(Environment::Production).is_err(), "a full pass more often than an incremental one");
    }
}
