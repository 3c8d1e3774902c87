//! ledger-svc's own settings (`[service]` in its configuration, `STRONGROOM_SERVICE__*`).

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    /// Longest time between two incremental verifications of a tenant's receipt chain: each
    /// recomputes only the receipts appended since the last verified one, from that link on. The
    /// visits of the tenants are spread over the interval. 100 ms to an hour, default a minute.
    #[serde(default = "default_integrity_interval")]
    pub integrity_interval_ms: u64,
    /// Longest time between two full verifications of a tenant's receipt chain (every receipt from
    /// the first, so an edit of an old transfer is found too). A replica's first visit of a tenant
    /// is a full one. A second to a week, at least `integrity_interval_ms`, default six hours.
    #[serde(default = "default_integrity_full_interval")]
    pub integrity_full_interval_ms: u64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            integrity_interval_ms: default_integrity_interval(),
            integrity_full_interval_ms: default_integrity_full_interval(),
        }
    }
}

fn default_integrity_interval() -> u64 {
    60_000
}

fn default_integrity_full_interval() -> u64 {
    6 * 3_600_000
}

impl LedgerSettings {
    pub fn integrity_interval(&self) -> Duration {
        Duration::from_millis(self.integrity_interval_ms)
    }

    pub fn integrity_full_interval(&self) -> Duration {
        Duration::from_millis(self.integrity_full_interval_ms)
    }
}

impl kit::config::ServiceSettings for LedgerSettings {
    fn validate(&self, _env: kit::config::Environment) -> Result<(), String> {
        kit::config::check_integrity_intervals(self.integrity_interval_ms, self.integrity_full_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use kit::config::{Environment, ServiceSettings};

    use super::*;

    #[test]
    fn the_defaults_verify_every_minute_and_fully_every_six_hours() {
        let s = LedgerSettings::default();
        assert!(s.validate(Environment::Production).is_ok(), "defaults are valid");
        assert_eq!(s.integrity_interval(), Duration::from_secs(60));
        assert_eq!(s.integrity_full_interval(), Duration::from_secs(6 * 3600));
    }

    #[test]
    fn integrity_intervals_are_bounded() {
        let mut s = LedgerSettings::default();
        for bad in [0, 99, 86_400_001] {
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
    }

    #[test]
    fn a_full_pass_is_not_more_frequent_than_an_incremental_one() {
        let s = LedgerSettings { integrity_interval_ms: 120_000, integrity_full_interval_ms: 60_000 };
        assert!(s.validate(Environment::Development).is_err());
    }
}
