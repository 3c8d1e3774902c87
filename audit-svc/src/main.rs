//! audit-svc binary.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kit::bin::service_main("audit", audit_svc::run)
}
