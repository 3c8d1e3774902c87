//! A throw-away PostgreSQL cluster of one's own (feature `testing`): `initdb` into a temporary
//! directory, a server on a free loopback port with its socket in that directory, stopped and
//! removed on drop. `strongroom dev up` runs on one when no `DATABASE_URL` is given; tests that
//! must restart PostgreSQL itself (not just cut connections) run on one so that they disturb no
//! other test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running cluster; stopped (`pg_ctl stop -m fast`) and deleted when dropped.
pub struct LocalPostgres {
    dir: tempfile::TempDir,
    pg_ctl: PathBuf,
    as_postgres_user: bool,
    port: u16,
    options: String,
}

impl std::fmt::Debug for LocalPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPostgres").field("dir", &self.dir.path()).field("port", &self.port).finish()
    }
}

/// A PostgreSQL server binary: on PATH, or in Debian's versioned directory.
pub fn binary(name: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path().join("bin").join(name)).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    versions.sort();
    versions.pop().ok_or_else(|| format!("{name} not found: install PostgreSQL (deploy/setup.sh) or set DATABASE_URL"))
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// initdb and pg_ctl refuse to run as root; run them as `postgres` then.
fn command(binary: &Path, as_postgres_user: bool) -> Command {
    if as_postgres_user {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(binary);
        c
    } else {
        Command::new(binary)
    }
}

fn id_of_postgres(flag: &str) -> Result<u32, String> {
    let out = Command::new("id").args([flag, "postgres"]).output().map_err(|e| format!("id {flag} postgres: {e}"))?;
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| "no postgres user".to_owned())
}

/// A free port below Linux's ephemeral range (32768–60999): binds to port 0 elsewhere (tests'
/// servers, clients) never pick it, so it stays free while the cluster restarts.
fn free_port() -> Result<u16, String> {
    for _ in 0..200 {
        let mut raw = [0u8; 2];
        getrandom::fill(&mut raw).map_err(|e| format!("random port: {e}"))?;
        let port = 20_000 + u16::from_le_bytes(raw) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port in 20000–31999".to_owned())
}

impl LocalPostgres {
    /// Creates and starts a cluster with `fsync=off` (it is thrown away; a crash of PostgreSQL alone
    /// loses nothing the kernel already holds, so commits stay durable across a server crash
    /// unless `options` turn `synchronous_commit` off). `options` are further server settings,
    /// e.g. `-c max_connections=200`.
    pub fn start(options: &str) -> Result<Self, String> {
        let initdb = binary("initdb")?;
        let pg_ctl = binary("pg_ctl")?;
        let dir = tempfile::Builder::new()
            .prefix("strongroom-pg-")
            .tempdir()
            .map_err(|e| format!("temporary cluster directory: {e}"))?;
        let as_postgres_user = running_as_root();
        if as_postgres_user {
            let (uid, gid) = (id_of_postgres("-u")?, id_of_postgres("-g")?);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(|e| format!("chown: {e}"))?;
        }
        let out = command(&initdb, as_postgres_user)
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Self::serve(dir, pg_ctl, as_postgres_user, options)
    }

    /// Starts a cluster whose data directory is already in `dir` (`dir/data`, e.g. restored from a
    /// backup; owned by `postgres` when running as root) on a free port, with the settings of
    /// [`Self::start`]; stopped and removed on drop like one this made.
    pub fn start_existing(dir: tempfile::TempDir, options: &str) -> Result<Self, String> {
        let pg_ctl = binary("pg_ctl")?;
        let as_postgres_user = running_as_root();
        if as_postgres_user {
            let (uid, gid) = (id_of_postgres("-u")?, id_of_postgres("-g")?);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(|e| format!("chown: {e}"))?;
        }
        Self::serve(dir, pg_ctl, as_postgres_user, options)
    }

    /// Starts the server on `dir/data` on a free port.
    fn serve(dir: tempfile::TempDir, pg_ctl: PathBuf, as_postgres_user: bool, options: &str) -> Result<Self, String> {
        let port = free_port()?;
        let options =
            format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {options}", dir.path().display());
        let cluster = Self { dir, pg_ctl, as_postgres_user, port, options };
        cluster.pg_start()?;
        Ok(cluster)
    }

    /// Whether this PostgreSQL ships the loadable module `name` (e.g. `pg_stat_statements`).
    pub fn has_module(name: &str) -> bool {
        let Ok(pg_ctl) = binary("pg_ctl") else { return false };
        let real = std::fs::canonicalize(&pg_ctl).unwrap_or(pg_ctl);
        real.parent()
            .and_then(|bin| bin.parent())
            .is_some_and(|root| root.join("lib").join(format!("{name}.so")).is_file())
    }

    /// The superuser's URL (trust authentication, loopback only).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The directory holding the cluster (`data/`), its socket and its log (`postgres.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn pg_start(&self) -> Result<(), String> {
        let log = self.dir.path().join("postgres.log");
        let out = command(&self.pg_ctl, self.as_postgres_user)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-o")
            .arg(&self.options)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("pg_ctl start: {e}"))?;
        if !out.status.success() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "PostgreSQL did not start: {} {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                tail.lines().last().unwrap_or("")
            ));
        }
        Ok(())
    }

    fn pg_stop(&self, mode: &str) -> Result<(), String> {
        let status = command(&self.pg_ctl, self.as_postgres_user)
            .arg("stop")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", mode, "-w", "-t", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("pg_ctl stop: {e}"))?;
        if status.success() { Ok(()) } else { Err(format!("pg_ctl stop -m {mode} failed")) }
    }

    /// Stops the server the way a crash would (`-m immediate`: no checkpoint, every connection
    /// cut; the next start replays the WAL), then starts it again on the same port.
    pub fn crash_and_restart(&self) -> Result<(), String> {
        self.pg_stop("immediate")?;
        self.pg_start()
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.pg_stop("fast") {
            eprintln!("{e} for {}", self.dir.path().display());
        }
    }
}
