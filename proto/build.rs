//! Compiles the contracts with protox (pure Rust), so no system `protoc` is needed.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "strongroom/auth/v1/tenants.proto",
        "strongroom/auth/v1/keys.proto",
        "strongroom/auth/v1/identity.proto",
        "strongroom/auth/v1/authn.proto",
        "strongroom/auth/v1/directory.proto",
        "strongroom/auth/v1/appeals.proto",
        "strongroom/auth/v1/privacy.proto",
        "strongroom/auth/v1/oauth.proto",
        "strongroom/auth/v1/passkeys.proto",
        "strongroom/vault/v1/secrets.proto",
        "strongroom/vault/v1/transit.proto",
        "strongroom/vault/v1/keys.proto",
        "strongroom/vault/v1/signing.proto",
        "strongroom/audit/v1/log.proto",
        "strongroom/ledger/v1/ledger.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out.join("strongroom_descriptor.bin");
    fs::write(&descriptor_path, descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_protos(&files, &["."])?;
    Ok(())
}
