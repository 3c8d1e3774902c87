//! vault-svc binary.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kit::bin::service_main("vault", vault_svc::run)
}
