//! Receipt signing and verification. A receipt's hash is written in the batch's own transaction;
//! its Ed25519 signature (vault-svc key `ledger`, which never leaves vault-svc) follows within a
//! moment, off the commit path: the signer signs the newest unsigned receipt of a tenant, and
//! through the chain that signature vouches for every earlier receipt. Verification recomputes
//! every receipt from the stored transfers and resolutions, so an edited, inserted or deleted row
//! breaks the receipt that covered it. The continuous verification ([`crate::integrity`]) continues
//! from the last link it verified ([`verify_after`]).

use std::collections::HashMap;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use kit::client::{Channel, with_context};
use kit::server::Shutdown;
use kit::{ApiError, Db, Tenant, TenantTx};
use proto::vault::v1 as vault;
use proto::vault::v1::signing_service_client::SigningServiceClient;

use crate::batcher::Unsigned;
use crate::domain::receipt::{self, ChainCheck, Link};
use crate::store;

pub const KEY_NAME: &str = "ledger";

fn upstream(e: tonic::Status) -> ApiError {
    ApiError::from_status(&e)
}

/// Signs receipts as they are committed (and, at start, whatever was left unsigned).
pub fn spawn_signer(db: Db, signer: Option<SigningServiceClient<Channel>>, unsigned: Unsigned, shutdown: Shutdown) {
    let Some(signer) = signer else {
        tracing::warn!("upstreams.vault is not configured: receipts stay unsigned");
        return;
    };
    tokio::spawn(async move {
        if let Ok(tenants) = db.tenants().await {
            for t in tenants {
                unsigned.tenants.lock().unwrap_or_else(|e| e.into_inner()).insert(t.id, t);
            }
        }
        loop {
            for tenant in unsigned.take() {
                if let Err(e) = sign_newest(&db, &signer, &tenant).await {
                    if e.reason == "TENANT_TERMINATED" {
                        // Its export signs what is left (`export::LedgerPart::ready`), or nothing can.
                        tracing::info!(tenant = %tenant.slug, "tenant terminated; its receipts are signed by its export");
                        continue;
                    }
                    tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "receipt not signed yet");
                    // Try again on the next round.
                    unsigned.tenants.lock().unwrap_or_else(|e| e.into_inner()).insert(tenant.id, tenant);
                }
            }
            tokio::select! {
                () = shutdown.clone().wait() => return,
                () = unsigned.notify.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            // At most ten signing rounds a second: under load one signature covers many receipts.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

pub(crate) async fn sign_newest(
    db: &Db,
    signer: &SigningServiceClient<Channel>,
    tenant: &Tenant,
) -> Result<(), ApiError> {
    let mut tx = db.begin(tenant).await?;
    let newest = if store::has_tables(&mut tx).await? { store::newest_unsigned(&mut tx).await? } else { None };
    tx.commit().await?;
    let Some((seq, hash)) = newest else { return Ok(()) };
    let message = receipt::signed_message(&hash);
    let signed = kit::signing::sign(signer, tenant.slug.as_str(), KEY_NAME, message).await.map_err(upstream)?;
    let mut tx = db.begin(tenant).await?;
    store::set_signature(&mut tx, seq, &signed.signature, signed.key_version as i32).await?;
    tx.commit().await
}

pub use crate::domain::receipt::Verification;

/// A verification that continues the chain: what it found, and the link the next one may continue
/// from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continued {
    pub verification: Verification,
    /// The newest link vouched for: the newest signed receipt checked before any mismatch (its
    /// signature covers the receipts before it), or without a signer the newest receipt checked.
    /// Receipts after it are checked again, their signatures included once they are signed.
    pub resume: Link,
}

/// Recomputes receipts `from_seq..=head` and checks their chain and signatures.
pub async fn verify(
    db: &Db,
    signer: Option<&SigningServiceClient<Channel>>,
    tenant: &Tenant,
    from_seq: u64,
) -> Result<Verification, ApiError> {
    let mut tx = db.begin(tenant).await?;
    let Some((head_seq, head_hash)) = store::head(&mut tx).await? else {
        tx.commit().await?;
        if from_seq > 1 {
            return Err(ApiError::invalid_field("from_seq", "at most 1: there is no receipt yet"));
        }
        return Ok(Verification::default());
    };
    // Past the newest receipt there is nothing to check, and no previous hash to check it against
    // (a later start used to report a broken chain head).
    if from_seq > head_seq as u64 + 1 {
        return Err(ApiError::invalid_field(
            "from_seq",
            format!("at most {}, one past the newest receipt", head_seq + 1),
        ));
    }
    let seq = (from_seq as i64).max(1);
    let prev = if seq == 1 {
        receipt::GENESIS.to_vec()
    } else {
        store::receipts(&mut tx, seq - 1, 1).await?.first().map(|r| r.hash.clone()).unwrap_or_default()
    };
    let from = Link { seq: seq as u64 - 1, hash: prev };
    let checked = check(&mut tx, signer, tenant, from, (head_seq, head_hash)).await?;
    tx.commit().await?;
    Ok(checked.verification)
}

/// Verifies the receipts appended after `from`, a link verified before ([`Link::genesis`] for the
/// whole chain), trusting nothing stored before it: the first checks against `from`'s hash. `None`
/// for a tenant not provisioned for the ledger (no tables).
pub async fn verify_after(
    db: &Db,
    signer: Option<&SigningServiceClient<Channel>>,
    tenant: &Tenant,
    from: &Link,
) -> Result<Option<Continued>, ApiError> {
    let mut tx = db.begin(tenant).await?;
    if !store::has_tables(&mut tx).await? {
        tx.commit().await?;
        return Ok(None);
    }
    let head = store::head(&mut tx).await?;
    let head_seq = head.as_ref().map_or(0, |(seq, _)| *seq as u64);
    let continued = match head {
        Some(head) if from.seq <= head_seq => check(&mut tx, signer, tenant, from.clone(), head).await?,
        // No receipt yet, and none was verified.
        _ if from.seq == 0 => Continued { verification: Verification::default(), resume: from.clone() },
        // Receipts verified before are gone (row-level deletes are refused: a superuser's doing).
        _ => Continued {
            verification: Verification {
                first_bad_seq: head_seq + 1,
                problem: "receipt is missing".into(),
                ..Verification::default()
            },
            resume: from.clone(),
        },
    };
    tx.commit().await?;
    Ok(Some(continued))
}

/// Recomputes the receipts after `from` up to the head and checks their chain and signatures.
async fn check(
    tx: &mut TenantTx,
    signer: Option<&SigningServiceClient<Channel>>,
    tenant: &Tenant,
    from: Link,
    (head_seq, head_hash): (i64, Vec<u8>),
) -> Result<Continued, ApiError> {
    const PAGE: i64 = 500;
    let mut chain = ChainCheck::new(from, signer.is_some());
    let mut keys: HashMap<i32, VerifyingKey> = HashMap::new();
    while chain.next_seq() <= head_seq {
        let seq = chain.next_seq();
        let rows = store::receipts(tx, seq, PAGE).await?;
        let Some(last) = rows.last().map(|r| r.seq.min(head_seq)) else {
            chain.missing();
            break;
        };
        let mut entries = store::receipt_entries(tx, seq, last).await?;
        for r in rows.iter().filter(|r| r.seq <= head_seq) {
            if r.seq != chain.next_seq() {
                chain.missing();
                break;
            }
            let key = match (chain.key_version(r), signer) {
                (Some(version), Some(signer)) => Some(match keys.get(&version) {
                    Some(k) => *k,
                    None => {
                        let k = public_key(signer, tenant, version).await?;
                        keys.insert(version, k);
                        k
                    }
                }),
                _ => None,
            };
            let (transfers, resolutions) = entries.remove(&r.seq).unwrap_or_default();
            chain.receipt(r, &transfers, &resolutions, key.as_ref());
        }
        if chain.is_broken() {
            break;
        }
    }
    let (verification, resume) = chain.finish(head_seq, &head_hash);
    Ok(Continued { verification, resume })
}

/// Version `version` of the tenant's receipt signing key, from vault-svc.
pub(crate) async fn public_key(
    signer: &SigningServiceClient<Channel>,
    tenant: &Tenant,
    version: i32,
) -> Result<VerifyingKey, ApiError> {
    let req = with_context(
        tonic::Request::new(vault::GetPublicKeyRequest { key_name: KEY_NAME.into(), version: version as u32 }),
        Some(tenant.slug.as_str()),
        None,
        None,
    );
    let key = signer.clone().get_public_key(req).await.map_err(upstream)?.into_inner();
    let bytes: [u8; 32] = key
        .public_key
        .as_slice()
        .try_into()
        .map_err(|_| ApiError::internal(&"vault returned a malformed public key"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| ApiError::internal(&e))
}
