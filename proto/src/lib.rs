//! Strongroom's gRPC contracts, generated from `proto/strongroom/**`. Only the contract lives here:
//! no behaviour, no I/O.

#![allow(clippy::derive_partial_eq_without_eq, missing_docs)]

/// Encoded `FileDescriptorSet` of every Strongroom package, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/strongroom_descriptor.bin"));

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("strongroom.auth.v1");
    }
}

pub mod vault {
    pub mod v1 {
        tonic::include_proto!("strongroom.vault.v1");
    }
}

pub mod audit {
    pub mod v1 {
        tonic::include_proto!("strongroom.audit.v1");
    }
}

pub mod ledger {
    pub mod v1 {
        tonic::include_proto!("strongroom.ledger.v1");
    }
}
