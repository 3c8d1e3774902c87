//! What vault-svc counts for the on-call (`strongroom_vault_operations_total{operation}`): the
//! operations it did, named once here. Failed KMS/HSM calls are counted where the keyring
//! classifies them ([`crate::keyring`]).

use kit::metrics::Metrics;

/// An operation `strongroom_vault_operations_total` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Data sealed by transit or a stored secret's version written.
    Encrypt,
    /// Data opened by transit or a stored secret revealed.
    Decrypt,
    /// A tenant key unwrapped by the master key, in the KMS/HSM (a keyring cache miss).
    Unwrap,
    /// A subject's or a tenant's keys destroyed.
    Shred,
    /// A retention class's period key destroyed by the retention job (one per key).
    PeriodKeyDestroyed,
}

impl Operation {
    /// Its `operation` label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::Unwrap => "unwrap",
            Self::Shred => "shred",
            Self::PeriodKeyDestroyed => "period_key_destroyed",
        }
    }

    /// Counts one.
    pub fn done(self) {
        Metrics::global().vault_operation(self.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_is_counted_under_its_own_label() {
        let count = |op: Operation| {
            Metrics::global()
                .vault_operations
                .get_or_create(&kit::metrics::OperationLabels { operation: op.name().to_owned() })
                .get()
        };
        let all = [
            Operation::Encrypt,
            Operation::Decrypt,
            Operation::Unwrap,
            Operation::Shred,
            Operation::PeriodKeyDestroyed,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|op| op.name()).collect();
        assert_eq!(names.len(), all.len());
        let before = count(Operation::Shred);
        Operation::Shred.done();
        assert!(count(Operation::Shred) > before);
    }
}
