//! auth-svc: tenants, identities, tokens.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kit::bin::service_main("auth", auth_svc::run)
}
