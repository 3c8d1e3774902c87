//! Signing with a workload's own per-tenant key in vault-svc. vault-svc creates no key
//! implicitly: the first time it answers that the key does not exist, its owner creates it
//! (`CreateSigningKey`, idempotent and audited) and asks again.

use proto::vault::v1 as pb;
use proto::vault::v1::signing_service_client::SigningServiceClient;

use crate::client::{Channel, with_context};
use crate::error::ApiError;

fn missing(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::NotFound && ApiError::from_status(status).reason == "SIGNING_KEY_NOT_FOUND"
}

async fn create(
    client: &mut SigningServiceClient<Channel>,
    tenant: &str,
    key_name: &str,
) -> Result<pb::CreateSigningKeyResponse, tonic::Status> {
    let req = pb::CreateSigningKeyRequest { key_name: key_name.to_owned() };
    let created = client.create_signing_key(with_context(tonic::Request::new(req), Some(tenant), None, None)).await?;
    Ok(created.into_inner())
}

/// Signs `message` for `tenant` with the caller's key `key_name`, creating the key if it is missing.
pub async fn sign(
    client: &SigningServiceClient<Channel>,
    tenant: &str,
    key_name: &str,
    message: Vec<u8>,
) -> Result<pb::SignResponse, tonic::Status> {
    let mut client = client.clone();
    let request = || {
        let req = pb::SignRequest { key_name: key_name.to_owned(), message: message.clone() };
        with_context(tonic::Request::new(req), Some(tenant), None, None)
    };
    match client.sign(request()).await {
        Err(status) if missing(&status) => {
            create(&mut client, tenant, key_name).await?;
            Ok(client.sign(request()).await?.into_inner())
        }
        other => Ok(other?.into_inner()),
    }
}

/// The active public key of the caller's key `key_name` for `tenant`, creating the key if it is
/// missing.
pub async fn active_public_key(
    client: &SigningServiceClient<Channel>,
    tenant: &str,
    key_name: &str,
    request_id: Option<&str>,
) -> Result<pb::GetPublicKeyResponse, tonic::Status> {
    let mut client = client.clone();
    let req = pb::GetPublicKeyRequest { key_name: key_name.to_owned(), version: 0 };
    match client.get_public_key(with_context(tonic::Request::new(req), Some(tenant), request_id, None)).await {
        Err(status) if missing(&status) => {
            let created = create(&mut client, tenant, key_name).await?;
            Ok(pb::GetPublicKeyResponse {
                public_key: created.public_key,
                key_version: created.key_version,
                algorithm: "Ed25519".into(),
            })
        }
        other => Ok(other?.into_inner()),
    }
}
