//! ledger-svc binary.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kit::bin::service_main("ledger", ledger_svc::run)
}
