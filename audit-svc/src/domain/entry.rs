//! An audit entry's canonical bytes: RFC 8785 (JCS) JSON of its stored fields — `seq`,
//! `event_id`, `occurred_at` (RFC 3339, UTC, microseconds), `service`, `actor`, `action`,
//! `resource`, `outcome`, `request_id`, `trace_id`, `details`. These bytes are the Merkle leaf and
//! the hash-chain input; anyone holding an export can recompute them.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::merkle::{Hash, chain_hash, leaf_hash};

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: u64,
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub service: String,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub outcome: String,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub details: Value,
}

pub fn format_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl Entry {
    pub fn to_json(&self) -> Value {
        json!({
            "seq": self.seq,
            "event_id": self.event_id.to_string(),
            "occurred_at": format_time(&self.occurred_at),
            "service": self.service,
            "actor": self.actor,
            "action": self.action,
            "resource": self.resource,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "details": self.details,
        })
    }

    /// RFC 8785 canonical JSON.
    pub fn canonical(&self) -> Vec<u8> {
        // Serializing a `serde_json::Value` cannot fail.
        serde_jcs::to_vec(&self.to_json()).unwrap_or_default()
    }

    /// `(canonical bytes, leaf hash, chain link)` given the previous link.
    pub fn seal(&self, previous_chain: &Hash) -> (Vec<u8>, Hash, Hash) {
        let canonical = self.canonical();
        let leaf = leaf_hash(&canonical);
        let chain = chain_hash(previous_chain, &leaf);
        (canonical, leaf, chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_is_sorted_compact_and_stable() {
        let e = Entry {
            seq: 7,
            event_id: Uuid::nil(),
            occurred_at: DateTime::from_timestamp(1_700_000_000, 123_456_000).expect("time"),
            service: "vault".into(),
            actor: "user:u1".into(),
            action: "vault.secret.reveal".into(),
            resource: "secret/a".into(),
            outcome: "success".into(),
            request_id: None,
            trace_id: Some("abc".into()),
            details: json!({ "z": 1, "a": "é" }),
        };
        let text = String::from_utf8(e.canonical()).expect("utf8");
        assert_eq!(
            text,
            r#"{"action":"vault.secret.reveal","actor":"user:u1","details":{"a":"é","z":1},"event_id":"00000000-0000-0000-0000-000000000000","occurred_at":"2023-11-14T22:13:20.123456Z","outcome":"success","request_id":null,"resource":"secret/a","seq":7,"service":"vault","trace_id":"abc"}"#
        );
        let (_, leaf, chain) = e.seal(&[0u8; 32]);
        assert_ne!(leaf, chain);
    }
}
