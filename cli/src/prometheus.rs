//! The Prometheus `strongroom dev up --observability` runs: where its binary is, the configuration
//! it gets (every process's admin `/metrics` each second, the alert rules of
//! `deploy/prometheus/alerts.yml`), and whether it is ready. It listens on loopback only, never on
//! every interface: the dev stack's metrics name its tenants.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use serde_json::json;

/// The alert rules, as built into this binary; `dev up` writes them next to the configuration.
const ALERTS: &str = include_str!("../../deploy/prometheus/alerts.yml");

fn executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The `prometheus` binary: on PATH, else the one `deploy/setup.sh` unpacked from Debian's package.
pub fn binary() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("prometheus")).find(|p| executable(p)));
    if let Some(found) = on_path.flatten() {
        return Ok(found);
    }
    // As deploy/lib.sh's sr_prometheus_path.
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache"),
    };
    let unpacked = cache.join("strongroom/prometheus/usr/bin/prometheus");
    if executable(&unpacked) {
        return Ok(unpacked);
    }
    bail!("prometheus is neither on PATH nor at {}: run deploy/setup.sh", unpacked.display())
}

/// Writes `dir/prometheus.yml` (YAML's JSON form) and `dir/alerts.yml`: one `strongroom` job that
/// scrapes each `(process, admin address)` every second. The process name is the target's
/// `instance`, so alerts and legends read `auth-svc`, not a port that changes with every run.
pub fn write_config(dir: &Path, targets: &[(String, SocketAddr)]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("alerts.yml"), ALERTS)?;
    let static_configs: Vec<_> = targets
        .iter()
        .map(|(process, addr)| json!({ "targets": [addr.to_string()], "labels": { "instance": process } }))
        .collect();
    let config = json!({
        "global": { "scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s" },
        "rule_files": ["alerts.yml"],
        // No `service` target label: the metrics carry their own (as deploy/prometheus.yml).
        "scrape_configs": [{ "job_name": "strongroom", "metrics_path": "/metrics", "static_configs": static_configs }],
    });
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    Ok(path)
}

/// Starts `binary` with `config`, its data under `dir/data`, listening on `addr`, logging to `log`.
pub fn spawn(binary: &Path, config: &Path, dir: &Path, addr: SocketAddr, log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log)?;
    Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

/// Whether the Prometheus at `addr` answers `/-/ready` with 200 (it has loaded its configuration
/// and rules and serves queries).
pub async fn ready(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if stream.write_all(b"GET /-/ready HTTP/1.0\r\nHost: prometheus\r\n\r\n").await.is_err() {
        return false;
    }
    let mut status = [0u8; 12];
    stream.read_exact(&mut status).await.is_ok() && status.ends_with(b" 200")
}
