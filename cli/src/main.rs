//! `strongroom`, the operator's CLI: development PKI, the whole constellation on one machine, and
//! tenant administration over mTLS with the operator certificate.
#![forbid(unsafe_code)]

mod audit;
mod backup;
mod bench;
mod bench_audit;
mod bench_auth;
mod dev;
mod ledger;
mod lifecycle;
mod migrate;
mod ops;
mod prometheus;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "strongroom", version, about = "Strongroom operator CLI")]
struct Cli {
    #[command(flatten)]
    conn: ops::ConnectArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Development certificate authority and workload certificates.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Local development.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
    /// Creates the database roles and brings the `control` schema and every tenant's schema up to
    /// this build, for all four services (idempotent; run before starting or upgrading services).
    /// Needs the administrative URL (`--admin-url` or STRONGROOM_DATABASE__ADMIN_URL); the
    /// services never hold it.
    Migrate {
        /// A service's runtime URL (`postgres://strongroom_<service>:<password>@…`): its role's
        /// password is set to the one in the URL. Repeatable, or comma-separated in the variable.
        #[arg(
            long = "login-url",
            env = "STRONGROOM_MIGRATE_LOGIN_URLS",
            value_delimiter = ',',
            hide_env_values = true
        )]
        login_urls: Vec<String>,
    },
    /// Tenant administration.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// The audit trail: export, and offline verification of an export.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The ledger: verification of a tenant's receipt chain.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Physical backups of the whole cluster with pgBackRest: encrypted repository (its passphrase
    /// sealed under the vault's master key), WAL archiving through a spool, point-in-time restore.
    Backup {
        /// The deployment's backup settings (`[backup]`, `[kms]`; see docs/operations.md).
        #[arg(long = "backup-config", env = "STRONGROOM_BACKUP_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Benchmarks against a running `strongroom dev up` (loopback only, bounded in time).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Writes a tenant's log up to its latest checkpoint as JSON Lines.
    Export {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verifies an export offline against the tenant's verifier key (`GET /v1/audit/verifier-key`),
    /// or a terminated tenant's bundle (`--bundle DIR --identity FILE`): the manifest's signature,
    /// every file's digest, and the whole log up to the final checkpoint.
    Verify {
        #[arg(long, required_unless_present = "bundle", requires = "verifier_key")]
        export: Option<PathBuf>,
        #[arg(long)]
        verifier_key: Option<String>,
        /// A bundle fetched with `strongroom tenant export`.
        #[arg(long, conflicts_with = "export", requires = "identity")]
        bundle: Option<PathBuf>,
        /// The recipient's age identity file (`AGE-SECRET-KEY-1…`).
        #[arg(long)]
        identity: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum BackupCommand {
    /// Seals a new repository passphrase (once), creates the repository and the stanza, and prints
    /// the `archive_command` PostgreSQL needs.
    Init,
    /// Pushes the WAL segments waiting in the spool into the repository (every `--watch` seconds
    /// until interrupted, or once).
    Archive {
        #[arg(long)]
        watch: Option<u64>,
    },
    /// Takes a backup and waits until the WAL it needs is in the repository.
    Run {
        #[arg(long = "type", default_value = "full")]
        kind: String,
    },
    /// The backups in the repository and the WAL range it holds (JSON).
    List,
    /// Removes the backups no longer needed to restore any point of the retention window.
    Expire,
    /// Reads every backup file and WAL segment in the repository and checks their checksums.
    Verify,
    /// Restores the cluster as it was at `--to` into a new data directory (start PostgreSQL on it).
    Restore {
        /// RFC 3339, e.g. 2026-12-07T16:37:32Z.
        #[arg(long)]
        to: String,
        #[arg(long)]
        into: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum LedgerCommand {
    /// Recomputes every receipt from the stored transfers and checks the chain and signatures; or,
    /// offline, the ledger part of a terminated tenant's bundle (`--bundle DIR --identity FILE`:
    /// also every balance replayed from the transfers, and debits equal to credits per ledger).
    Verify {
        #[arg(long, required_unless_present = "bundle")]
        tenant: Option<String>,
        #[arg(long, default_value_t = 0)]
        from_seq: u64,
        /// A bundle fetched with `strongroom tenant export` (its manifest's signature is checked by
        /// `strongroom audit verify --bundle`).
        #[arg(long, conflicts_with = "tenant", requires = "identity")]
        bundle: Option<PathBuf>,
        /// The recipient's age identity file (`AGE-SECRET-KEY-1…`).
        #[arg(long)]
        identity: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Password logins next to the raw argon2id rate, refresh grants, and `GET /v1/me` and a 50-user
    /// `GET /v1/users` page through the gateway (start `dev up` with `STRONGROOM_DEV_RATE_LIMITS=off`, or the gateway's per-IP limits
    /// are what gets measured).
    Auth {
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds per phase (1–120).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Users to add to the benchmark's tenant first (each with a role and a group), as an
        /// established tenant's directory holds them; written in the `dev up` database directly.
        #[arg(long, default_value_t = 0)]
        directory: usize,
    },
    /// Ledger transfers/s and latency: single transfers over gRPC and the gateway, 8,190-transfer
    /// batches, uniform and hot-account, next to a pgbench simple-update ceiling.
    Ledger {
        #[arg(long, default_value = "demo")]
        tenant: String,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds per phase (1–120).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Accounts of the uniform workload.
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        /// Phases to run, comma-separated: grpc, gateway, batches, pgbench (default: all).
        #[arg(long, value_delimiter = ',', default_value = "grpc,gateway,batches,pgbench")]
        phases: Vec<ledger::BenchPhase>,
    },
    /// Transit encrypt/decrypt over mTLS gRPC, next to the in-process AEAD rate.
    Vault {
        #[arg(long, default_value = "demo")]
        tenant: String,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds per phase (1–120).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// Audit appends (one tenant, many tenants, checkpoints on), verification speed, proof latency.
    Audit {
        #[arg(long, default_value = "demo")]
        tenant: String,
        /// Extra tenants `bench_01`… for the many-tenant phase (created if missing; 0 skips it).
        #[arg(long, default_value_t = 8)]
        tenants: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Events per AppendBatch (1–1000).
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Seconds per append phase (1–120).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Entries of the generated export the offline verifier is timed on (0 skips it).
        #[arg(long, default_value_t = 1_000_000)]
        verify_entries: u64,
    },
}

#[derive(Subcommand, Debug)]
enum PkiCommand {
    /// Writes a development CA and one certificate per service (plus `operator`) under DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum DevCommand {
    /// Brings the whole constellation up on this machine until SIGINT/SIGTERM.
    Up {
        #[arg(long, default_value = ".strongroom/dev")]
        dir: PathBuf,
        /// Also run Prometheus (the `prometheus` binary: on PATH, or unpacked by deploy/setup.sh)
        /// on a loopback port, scraping every process each second with the alert rules loaded.
        #[arg(long)]
        observability: bool,
        /// Also archive WAL and keep an encrypted pgBackRest repository under DIR/backups (its
        /// passphrase sealed by the dev HSM token), pushed every 5 s; needs the cluster dev up
        /// starts (no DATABASE_URL).
        #[arg(long)]
        backups: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TenantCommand {
    /// Registers a tenant and creates its schema for every service, in one transaction, with the
    /// administrative URL (`--admin-url` or STRONGROOM_DATABASE__ADMIN_URL; idempotent). With
    /// `--owner-email`, also creates the tenant's first owner and prints their generated password
    /// once (only when the tenant has no user yet).
    Create {
        slug: String,
        #[arg(long)]
        owner_email: Option<String>,
    },
    /// Rotates the tenant's access-token signing key now (auth-svc also rotates it by itself every
    /// `service.signing_key_rotate_after_secs`): the new key is published at once and signs after
    /// `service.signing_key_publish_ahead_secs`; the old one stays published until its last token
    /// has expired.
    RotateSigningKey { slug: String },
    /// Rotates the key of the tenant's email blind index: indexes every user under a new key
    /// version, then retires the old one and deletes its index (an old backup's index can no
    /// longer be matched to addresses). Logins go on meanwhile; an interrupted rotation resumes.
    RotateEmailIndexKey { slug: String },
    /// Suspends a tenant: every service refuses its tokens (TENANT_SUSPENDED) until reactivated.
    Suspend {
        slug: String,
        /// Why (1–500 characters; audited).
        #[arg(long)]
        reason: String,
    },
    /// Reactivates a suspended tenant.
    Reactivate { slug: String },
    /// Terminates a tenant: it is refused everywhere at once, and every service writes its part of
    /// the export bundle, each file encrypted with age to `--recipient`; follows the export until
    /// its manifest is signed (a progress bar on a terminal, plain lines otherwise).
    Terminate {
        slug: String,
        /// The age X25519 public key (`age1…`) the bundle is encrypted to (the tenant's).
        #[arg(long)]
        recipient: String,
        /// Why (1–500 characters; recorded in the tenant's last audit entry).
        #[arg(long)]
        reason: String,
        /// Return once terminated, without following the export.
        #[arg(long)]
        no_wait: bool,
    },
    /// A terminated tenant's termination and export progress (JSON).
    Status {
        slug: String,
        /// Follow the export until its manifest is signed.
        #[arg(long)]
        wait: bool,
    },
    /// Fetches a terminated tenant's signed export bundle into DIR (`manifest.json`,
    /// `manifest.sig`, `<part>/<file>.age`), checking every file against the manifest.
    Export {
        slug: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Deletes a terminated tenant after its export window (or earlier with `--purge-now`, once
    /// its bundle was fetched): its Redis keys, its rows in `control`, its schema with its keys;
    /// keeps a tombstone and prints it. With `--due` instead of a slug: every tenant whose window
    /// has ended. Needs the administrative URL and the Redis URL.
    Purge {
        #[arg(required_unless_present = "due")]
        slug: Option<String>,
        #[arg(long, conflicts_with = "slug")]
        due: bool,
        #[arg(long)]
        purge_now: bool,
        /// Redis, where the tenant's rate-limit buckets and revocation markers are.
        #[arg(long, env = "STRONGROOM_REDIS_URL", hide_env_values = true)]
        redis_url: Option<String>,
        /// The erasure journal (docs/operations.md): the purge is written there, signed with the
        /// operator certificate, so that no restore brings the tenant back. Without it,
        /// `strongroom dev up --backups`'s.
        #[arg(long, env = "STRONGROOM_ERASURE_JOURNAL")]
        journal: Option<std::path::PathBuf>,
    },
    /// The tombstone of a purged tenant (JSON).
    Tombstone { slug: String },
}

/// The recipient's age identity from its file.
fn read_identity(path: Option<&std::path::Path>) -> anyhow::Result<age::x25519::Identity> {
    let path = path.ok_or_else(|| anyhow::anyhow!("--identity is required with --bundle"))?;
    let text = secrecy::SecretString::from(
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
    );
    kit::export::parse_identity(secrecy::ExposeSecret::expose_secret(&text))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    kit::tls::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strongroom: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Pki { command: PkiCommand::Init { dir } } => {
                kit::pki::init_dir(&dir)?;
                println!(
                    "wrote development CA and certificates for {} to {}",
                    kit::pki::DEV_IDENTITIES.join(", "),
                    dir.display()
                );
                Ok(())
            }
            Command::Dev { command: DevCommand::Up { dir, observability, backups } } => {
                dev::up(&dir, observability, backups).await
            }
            Command::Audit { command: AuditCommand::Export { tenant, out } } => {
                kit::TenantSlug::parse(&tenant).map_err(|e| anyhow::anyhow!("{e}"))?;
                let endpoints = cli.conn.resolve()?;
                let n = audit::export(&endpoints, &tenant, &out).await?;
                println!("exported {n} entries and the latest checkpoint to {}", out.display());
                Ok(())
            }
            Command::Audit { command: AuditCommand::Verify { bundle: Some(bundle), identity, .. } } => {
                let identity = read_identity(identity.as_deref())?;
                let (_, manifest) = audit::bundle_manifest(&bundle)?;
                match audit::verify_bundle(&bundle, &identity)? {
                    audit::Verdict::Valid { entries } => {
                        println!(
                            "valid: bundle of {} signed by {}; {entries} entries, chain, Merkle root and final checkpoint verified",
                            manifest.slug, manifest.verifier_key
                        );
                        Ok(())
                    }
                    audit::Verdict::Mismatch { seq, reason } => {
                        Err(anyhow::anyhow!("first mismatch at seq {seq}: {reason}"))
                    }
                }
            }
            Command::Audit { command: AuditCommand::Verify { export, verifier_key, .. } } => {
                let (export, verifier_key) = export
                    .zip(verifier_key)
                    .ok_or_else(|| anyhow::anyhow!("--export and --verifier-key, or --bundle and --identity"))?;
                match audit::verify(&export, &verifier_key)? {
                    audit::Verdict::Valid { entries } => {
                        println!("valid: {entries} entries, chain, Merkle root and checkpoint signature verified");
                        Ok(())
                    }
                    audit::Verdict::Mismatch { seq, reason } => {
                        Err(anyhow::anyhow!("first mismatch at seq {seq}: {reason}"))
                    }
                }
            }
            Command::Bench { command: BenchCommand::Auth { concurrency, seconds, directory } } => {
                let endpoints = cli.conn.resolve()?;
                let opts = bench::Options {
                    dev_dir: cli.conn.dev_dir.clone(),
                    tenant: String::new(),
                    concurrency: concurrency.clamp(1, 256),
                    duration: std::time::Duration::from_secs(seconds.clamp(1, 120)),
                    size: 0,
                };
                bench_auth::auth(&opts, &endpoints, directory.min(10_000_000)).await
            }
            Command::Bench { command: BenchCommand::Vault { tenant, concurrency, seconds, size } } => {
                let opts = bench::Options {
                    dev_dir: cli.conn.dev_dir.clone(),
                    tenant,
                    concurrency: concurrency.clamp(1, 1024),
                    duration: std::time::Duration::from_secs(seconds.clamp(1, 120)),
                    size: size.clamp(1, 1024 * 1024),
                };
                bench::vault(&opts).await
            }
            Command::Bench {
                command: BenchCommand::Audit { tenant, tenants, concurrency, batch, seconds, verify_entries },
            } => {
                kit::TenantSlug::parse(&tenant).map_err(|e| anyhow::anyhow!("{e}"))?;
                let opts = bench_audit::Options {
                    endpoints: cli.conn.resolve()?,
                    tenant,
                    tenants: tenants.min(64),
                    concurrency: concurrency.clamp(1, 256),
                    batch: batch.clamp(1, 1000),
                    duration: std::time::Duration::from_secs(seconds.clamp(1, 120)),
                    verify_entries: verify_entries.min(10_000_000),
                };
                bench_audit::run(&opts).await
            }
            Command::Ledger { command: LedgerCommand::Verify { bundle: Some(bundle), identity, .. } } => {
                let identity = read_identity(identity.as_deref())?;
                println!("{}", ledger::verify_bundle(&bundle, &identity)?);
                Ok(())
            }
            Command::Ledger { command: LedgerCommand::Verify { tenant, from_seq, .. } } => {
                let tenant = tenant.unwrap_or_default();
                kit::TenantSlug::parse(&tenant).map_err(|e| anyhow::anyhow!("{e}"))?;
                let endpoints = cli.conn.resolve()?;
                ledger::verify(&endpoints, &tenant, from_seq).await
            }
            Command::Bench { command: BenchCommand::Ledger { tenant, concurrency, seconds, accounts, phases } } => {
                let opts = ledger::BenchOptions {
                    dev_dir: cli.conn.dev_dir.clone(),
                    tenant,
                    concurrency: concurrency.clamp(1, 1024),
                    duration: std::time::Duration::from_secs(seconds.clamp(1, 120)),
                    accounts: accounts.clamp(2, 100_000),
                    phases,
                };
                ledger::bench(&opts).await
            }
            Command::Backup { config, command } => {
                let cfg = backup::BackupConfig::load(&config)?;
                let out = match command {
                    BackupCommand::Init => backup::init(&cfg)?,
                    BackupCommand::Archive { watch } => {
                        let watch = watch.map(|s| std::time::Duration::from_secs(s.clamp(1, 3600)));
                        serde_json::json!({ "pushed": backup::archive(&cfg, watch).await? })
                    }
                    BackupCommand::Run { kind } => backup::run(&cfg, &kind).await?,
                    BackupCommand::List => backup::list(&cfg)?,
                    BackupCommand::Expire => backup::expire(&cfg)?,
                    BackupCommand::Verify => backup::verify(&cfg)?,
                    BackupCommand::Restore { to, into } => backup::restore(&cfg, &to, &into).await?,
                };
                println!("{out}");
                Ok(())
            }
            Command::Migrate { login_urls } => {
                let admin_url = cli.conn.admin_url()?;
                let logins: Vec<secrecy::SecretString> = login_urls.into_iter().map(Into::into).collect();
                println!("{}", serde_json::to_string(&migrate::run(&admin_url, &logins).await?)?);
                Ok(())
            }
            Command::Tenant { command: TenantCommand::Create { slug, owner_email } } => {
                let endpoints = cli.conn.resolve()?;
                let tenant = ops::create_tenant(&endpoints, &slug, owner_email.as_deref()).await?;
                println!("{}", serde_json::to_string(&tenant)?);
                Ok(())
            }
            Command::Tenant { command: TenantCommand::Suspend { slug, reason } } => {
                kit::TenantSlug::parse(&slug).map_err(|e| anyhow::anyhow!("{e}"))?;
                let endpoints = cli.conn.resolve()?;
                println!("{}", serde_json::to_string(&ops::set_tenant_status(&endpoints, &slug, Some(reason)).await?)?);
                Ok(())
            }
            Command::Tenant { command: TenantCommand::Reactivate { slug } } => {
                kit::TenantSlug::parse(&slug).map_err(|e| anyhow::anyhow!("{e}"))?;
                let endpoints = cli.conn.resolve()?;
                println!("{}", serde_json::to_string(&ops::set_tenant_status(&endpoints, &slug, None).await?)?);
                Ok(())
            }
            Command::Tenant { command: TenantCommand::Terminate { slug, recipient, reason, no_wait } } => {
                kit::TenantSlug::parse(&slug).map_err(|e| anyhow::anyhow!("{e}"))?;
                let endpoints = cli.conn.resolve()?;
                let t = lifecycle::terminate(&endpoints, &slug, &recipient, &reason, !no_wait).await?;
                println!("{}", serde_json::to_string(&t)?);
                Ok(())
            }
            Command::Tenant { command: TenantCommand::Status { slug, wait } } => {
                kit::TenantSlug::parse(&slug).map_err(|e| anyhow::anyhow!("{e}"))?;
                let endpoints = cli.conn.resolve()?;
                println!("{}", serde_json::to_string(&lifecycle::termination(&endpoints, &slug, wait).await?)?);
                Ok(())
            }
            Command::Tenant { command: TenantCommand::Export { slug, out } } => {
                kit::TenantSlug::parse(&slug).map_err(|e| anyhow::anyhow!("{e}"))?;
                let endpoints = cli.conn.resolve()?;
                println!("{}", serde_json::to_string(&lifecycle::export(&endpoints, &slug, &out).await?)?);
                Ok(())
            }
            Command::Tenant { command: TenantCommand::Purge { slug, due, purge_now, redis_url, journal } } => {
                let admin_url = cli.conn.admin_url()?;
                let redis_url = redis_url.or_else(|| cli.conn.dev_redis_url()).map(secrecy::SecretString::from);
                let journal = journal.or_else(|| cli.conn.dev_value("journal").map(std::path::PathBuf::from));
                let journal = lifecycle::operator_journal(journal.as_deref(), &cli.conn.tls())?;
                if due {
                    let purged = lifecycle::purge_due(&admin_url, redis_url.as_ref(), journal.as_ref()).await?;
                    println!("{}", serde_json::json!({ "purged": purged }));
                } else {
                    let slug = slug.unwrap_or_default();
                    let tombstone =
                        lifecycle::purge(&admin_url, redis_url.as_ref(), &slug, purge_now, journal.as_ref()).await?;
                    println!("{}", serde_json::to_string(&tombstone)?);
                }
                Ok(())
            }
            Command::Tenant { command: TenantCommand::Tombstone { slug } } => {
                let slug = kit::TenantSlug::parse(&slug).map_err(|e| anyhow::anyhow!("{e}"))?;
                let admin_url = cli.conn.admin_url()?;
                let tombstone = migrate::migrator(&admin_url)?
                    .tombstone(&slug)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("tenant {slug} has no tombstone (not purged)"))?;
                println!("{}", serde_json::to_string(&tombstone)?);
                Ok(())
            }
            Command::Tenant { command: TenantCommand::RotateSigningKey { slug } } => {
                kit::TenantSlug::parse(&slug).map_err(|e| anyhow::anyhow!("{e}"))?;
                let endpoints = cli.conn.resolve()?;
                println!("{}", serde_json::to_string(&ops::rotate_signing_key(&endpoints, &slug).await?)?);
                Ok(())
            }
            Command::Tenant { command: TenantCommand::RotateEmailIndexKey { slug } } => {
                kit::TenantSlug::parse(&slug).map_err(|e| anyhow::anyhow!("{e}"))?;
                let endpoints = cli.conn.resolve()?;
                println!("{}", serde_json::to_string(&ops::rotate_email_index_key(&endpoints, &slug).await?)?);
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strongroom: {e:#}");
            ExitCode::FAILURE
        }
    }
}
