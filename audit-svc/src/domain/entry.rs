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
    use chrono::Datelike;
    // The same text as the format string below for every four-digit year, without parsing the
    // format on each call (the sequencer formats one per entry).
    if (0..=9999).contains(&t.year()) {
        return t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    }
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Appends `,"key":value` (or `{"key":value` for the first key) to `out`, the value written by the
/// RFC 8785 serializer. False if it cannot be serialized (never for the entry's field types).
fn field<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, key: &[u8], value: &T) -> bool {
    out.extend_from_slice(key);
    serde_jcs::to_writer(&mut *out, value).is_ok()
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
    ///
    /// The top-level keys are fixed ASCII names, so their canonical order is fixed: they are
    /// written in that order, each value by the RFC 8785 serializer, without first building and
    /// sorting a copy of the entry as a JSON object (the sequencer does this once per entry; the
    /// copy was most of its CPU). `canonical_via_value` is the plain definition, and a test holds
    /// the two equal.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        let mut id = Uuid::encode_buffer();
        let event_id: &str = self.event_id.hyphenated().encode_lower(&mut id);
        let ok = field(&mut out, br#"{"action":"#, self.action.as_str())
            && field(&mut out, br#","actor":"#, self.actor.as_str())
            && field(&mut out, br#","details":"#, &self.details)
            && field(&mut out, br#","event_id":"#, event_id)
            && field(&mut out, br#","occurred_at":"#, format_time(&self.occurred_at).as_str())
            && field(&mut out, br#","outcome":"#, self.outcome.as_str())
            && field(&mut out, br#","request_id":"#, &self.request_id)
            && field(&mut out, br#","resource":"#, self.resource.as_str())
            && field(&mut out, br#","seq":"#, &self.seq)
            && field(&mut out, br#","service":"#, self.service.as_str())
            && field(&mut out, br#","trace_id":"#, &self.trace_id);
        if !ok {
            return self.canonical_via_value();
        }
        out.push(b'}');
        out
    }

    /// RFC 8785 canonical JSON, by definition: the entry as a JSON object, canonicalized.
    pub fn canonical_via_value(&self) -> Vec<u8> {
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
    use proptest::prelude::*;

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

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The direct encoder writes exactly the bytes of the definition, for any field values:
        /// any Unicode (control characters, astral planes), any JSON details, any sequence
        /// number (past 2^53 too), any instant with a four-digit year or not.
        #[test]
        fn the_direct_encoder_writes_the_canonical_bytes_of_the_definition(
            seq in any::<u64>(),
            id in any::<u128>(),
            secs in -65_000_000_000i64..260_000_000_000i64,
            nanos in 0u32..1_000_000_000,
            texts in proptest::collection::vec(any::<String>(), 5),
            request_id in proptest::option::of(any::<String>()),
            trace_id in proptest::option::of(any::<String>()),
            details in json_value(),
        ) {
            let Some(occurred_at) = DateTime::from_timestamp(secs, nanos) else { return Ok(()) };
            let e = Entry {
                seq,
                event_id: Uuid::from_u128(id),
                occurred_at,
                service: texts[0].clone(),
                actor: texts[1].clone(),
                action: texts[2].clone(),
                resource: texts[3].clone(),
                outcome: texts[4].clone(),
                request_id,
                trace_id,
                details,
            };
            prop_assert_eq!(e.canonical(), e.canonical_via_value());
            prop_assert_eq!(format_time(&occurred_at), occurred_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
        }
    }
}
