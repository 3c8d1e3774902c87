//! gateway binary.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kit::bin::server_main::<gateway::GatewayConfig, _, _, _>("gateway", gateway::run)
}
