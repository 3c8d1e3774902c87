//! Password hashing: argon2id with OWASP's parameters (m = 19 MiB, t = 2, p = 1) on a fixed set of
//! hashing threads. Legacy bcrypt hashes verify and are flagged for upgrade. When every worker is
//! busy and the queue is full, callers get RESOURCE_EXHAUSTED at once instead of piling up memory.
//!
//! Each worker owns its 19 MiB of argon2 working memory for its whole life and reuses it from hash
//! to hash: allocating it per hash cost the kernel a page fault and a zeroed page for every 4 KiB
//! (about a third of a login's CPU besides the hash itself). The blocks are a one-way function of
//! the password and salt, no more revealing than the stored hash; they are zeroized when the
//! worker stops.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use kit::ApiError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use zeroize::Zeroizing;

use crate::error::AuthError;

pub const MIN_LENGTH: usize = 12;
pub const MAX_LENGTH: usize = 1024;

fn params() -> Params {
    #[allow(clippy::expect_used)] // constant, valid parameters
    Params::new(19 * 1024, 2, 1, None).expect("OWASP argon2id parameters")
}

/// A worker's argon2 working memory, reused from hash to hash and zeroized when dropped.
pub struct Memory(Zeroizing<Vec<Block>>);

impl Memory {
    /// Memory for the OWASP parameters (19 MiB).
    pub fn new() -> Self {
        Self(Zeroizing::new(vec![Block::default(); params().block_count()]))
    }
}

impl Default for Memory {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs argon2 in the worker's `memory`, or in a one-off allocation for a stored hash with a
/// larger memory cost than a worker holds.
fn argon2_into(
    a: &Argon2<'_>,
    memory: &mut Memory,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    let needed = a.params().block_count();
    if needed <= memory.0.len() {
        return a.hash_password_into_with_memory(password, salt, out, &mut memory.0[..]);
    }
    let mut larger = Zeroizing::new(vec![Block::default(); needed]);
    a.hash_password_into_with_memory(password, salt, out, &mut larger[..])
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Wrong,
    Right,
    /// Right, and the stored hash should be replaced by an argon2id hash.
    RightNeedsUpgrade,
}

type Job = Box<dyn FnOnce(&mut Memory) + Send>;

/// A bounded pool for password hashing; cheap to clone. Its threads stop when the last clone is
/// dropped.
#[derive(Clone)]
pub struct Hasher {
    workers: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    queue: usize,
    jobs: mpsc::Sender<(Job, OwnedSemaphorePermit)>,
    /// A hash of a random password, verified for unknown accounts so they cost the same time.
    dummy: Arc<String>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").field("queue", &self.queue).finish_non_exhaustive()
    }
}

fn busy() -> ApiError {
    kit::metrics::Metrics::global().event("password_hash_overload");
    AuthError::TooManyLogins.into()
}

pub fn check_policy(password: &str) -> Result<(), ApiError> {
    let len = password.chars().count();
    if len < MIN_LENGTH {
        return Err(ApiError::invalid_field("password", format!("must be at least {MIN_LENGTH} characters")));
    }
    if password.len() > MAX_LENGTH {
        return Err(ApiError::invalid_field("password", format!("must be at most {MAX_LENGTH} bytes")));
    }
    Ok(())
}

/// An argon2id hash of `password` (PHC string) with a fresh random salt, computed in `memory`.
pub fn hash_in(memory: &mut Memory, password: &[u8]) -> Result<String, ApiError> {
    let mut raw_salt = [0u8; 16];
    getrandom::fill(&mut raw_salt).map_err(|e| ApiError::internal(&e))?;
    let salt = SaltString::encode_b64(&raw_salt).map_err(|e| ApiError::internal(&e))?;
    let params = params();
    let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let hash = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        argon2_into(&a, memory, password, &raw_salt, out).map_err(Into::into)
    })
    .map_err(|e| ApiError::internal(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| ApiError::internal(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(hash),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the argon2 PHC string `parsed`, computed in `memory`; the outputs
/// are compared in constant time.
fn argon2_matches(memory: &mut Memory, password: &[u8], parsed: &PasswordHash<'_>) -> bool {
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(parsed.algorithm), Params::try_from(parsed)) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut raw_salt = [0u8; 64];
    let Ok(raw_salt) = salt.decode_b64(&mut raw_salt) else { return false };
    let a = Argon2::new(algorithm, version, params);
    Output::init_with(expected.len(), |out| argon2_into(&a, memory, password, raw_salt, out).map_err(Into::into))
        .is_ok_and(|computed| computed == expected)
}

fn verify_in(memory: &mut Memory, password: &[u8], stored: &str) -> Verdict {
    if stored.starts_with("$2") {
        return match bcrypt::verify(password, stored) {
            Ok(true) => Verdict::RightNeedsUpgrade,
            _ => Verdict::Wrong,
        };
    }
    let Ok(parsed) = PasswordHash::new(stored) else { return Verdict::Wrong };
    if !argon2_matches(memory, password, &parsed) {
        return Verdict::Wrong;
    }
    // An argon2 hash with weaker (older) parameters is upgraded too.
    let current = parsed.algorithm == Algorithm::Argon2id.ident()
        && Params::try_from(&parsed).is_ok_and(|p| p.m_cost() >= 19 * 1024 && p.t_cost() >= 2);
    if current { Verdict::Right } else { Verdict::RightNeedsUpgrade }
}

/// One hashing thread: takes jobs until every [`Hasher`] is gone.
fn work(jobs: Arc<Mutex<mpsc::Receiver<(Job, OwnedSemaphorePermit)>>>) {
    let mut memory: Option<Memory> = None;
    loop {
        let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((job, permit)) = next else { return };
        job(memory.get_or_insert_with(Memory::new));
        drop(permit);
    }
}

impl Hasher {
    /// `workers` hashing threads (each holding 19 MiB once it has hashed) and at most `queue`
    /// callers waiting for one.
    pub fn new(workers: usize, queue: usize) -> Result<Self, ApiError> {
        let workers = workers.max(1);
        let (jobs, rx) = mpsc::channel();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || work(rx))
                .map_err(|e| ApiError::internal(&e))?;
        }
        let mut random = Zeroizing::new([0u8; 32]);
        getrandom::fill(random.as_mut()).map_err(|e| ApiError::internal(&e))?;
        let dummy = hash_in(&mut Memory::new(), random.as_ref())?;
        Ok(Self {
            workers: Arc::new(Semaphore::new(workers)),
            waiting: Arc::new(AtomicUsize::new(0)),
            queue,
            jobs,
            dummy: Arc::new(dummy),
        })
    }

    async fn run<T: Send + 'static>(&self, job: impl FnOnce(&mut Memory) -> T + Send + 'static) -> Result<T, ApiError> {
        let permit = match self.workers.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(busy());
                }
                let p = self.workers.clone().acquire_owned().await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                p.map_err(|_| busy())?
            }
        };
        // A permit means a worker is free (each holds its permit until its job is done).
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = tx.send(job(memory));
        });
        self.jobs.send((job, permit)).map_err(|_| ApiError::internal(&"password hashing threads stopped"))?;
        rx.await.map_err(|_| ApiError::internal(&"password hashing thread failed"))
    }

    /// An argon2id hash of `password` (PHC string).
    pub async fn hash(&self, password: Zeroizing<String>) -> Result<String, ApiError> {
        self.run(move |memory| hash_in(memory, password.as_bytes())).await?
    }

    /// Checks `password` against `stored`; with no stored hash (unknown account, no password)
    /// the same work is done against a dummy hash and the answer is `Wrong`.
    pub async fn verify(&self, password: Zeroizing<String>, stored: Option<String>) -> Result<Verdict, ApiError> {
        let dummy = self.dummy.clone();
        self.run(move |memory| match stored {
            Some(hash) => verify_in(memory, password.as_bytes(), &hash),
            None => {
                let _ = verify_in(memory, password.as_bytes(), &dummy);
                Verdict::Wrong
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn argon2id_round_trip_with_owasp_parameters() {
        let hasher = Hasher::new(2, 8).expect("hasher");
        let hash = hasher.hash(Zeroizing::new("correct horse battery".into())).await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        let right = hasher.verify(Zeroizing::new("correct horse battery".into()), Some(hash.clone())).await;
        assert_eq!(right.expect("verify"), Verdict::Right);
        let wrong = hasher.verify(Zeroizing::new("correct horse battery!".into()), Some(hash)).await;
        assert_eq!(wrong.expect("verify"), Verdict::Wrong);
        let unknown = hasher.verify(Zeroizing::new("anything at all".into()), None).await;
        assert_eq!(unknown.expect("verify"), Verdict::Wrong);
    }

    /// Hashes made in reused memory are the crate's own hashes: each side verifies the other's,
    /// and stored hashes with less or more memory than a worker holds verify too.
    #[test]
    fn reused_memory_agrees_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let mut memory = Memory::new();
        let ours = hash_in(&mut memory, b"correct horse battery").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(Argon2::default().verify_password(b"correct horse battery", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"correct horse battery!", &parsed).is_err());

        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        for (m, t, verdict) in
            [(19 * 1024, 2, Verdict::Right), (4096, 1, Verdict::RightNeedsUpgrade), (24 * 1024, 2, Verdict::Right)]
        {
            let params = Params::new(m, t, 1, None).expect("params");
            let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(b"legacy password 1", &salt)
                .expect("hash")
                .to_string();
            assert_eq!(verify_in(&mut memory, b"legacy password 1", &theirs), verdict, "m={m} t={t}");
            assert_eq!(verify_in(&mut memory, b"legacy password 2", &theirs), Verdict::Wrong, "m={m} t={t}");
        }
        // The worker's own memory was not replaced by the larger one-off allocation.
        assert_eq!(memory.0.len(), params().block_count());
    }

    #[tokio::test]
    async fn bcrypt_hashes_verify_and_ask_for_an_upgrade() {
        let hasher = Hasher::new(1, 8).expect("hasher");
        let legacy = bcrypt::hash("legacy password 1", 4).expect("bcrypt");
        let v = hasher.verify(Zeroizing::new("legacy password 1".into()), Some(legacy.clone())).await;
        assert_eq!(v.expect("verify"), Verdict::RightNeedsUpgrade);
        let v = hasher.verify(Zeroizing::new("legacy password 2".into()), Some(legacy)).await;
        assert_eq!(v.expect("verify"), Verdict::Wrong);
    }

    #[tokio::test]
    async fn a_full_pool_answers_resource_exhausted() {
        let hasher = Hasher::new(1, 0).expect("hasher");
        let busy = hasher.clone();
        let first = tokio::spawn(async move { busy.hash(Zeroizing::new("aaaaaaaaaaaaaaaa".into())).await });
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let second = hasher.hash(Zeroizing::new("bbbbbbbbbbbbbbbb".into())).await;
        assert_eq!(second.expect_err("pool full").code, kit::ErrorCode::ResourceExhausted);
        first.await.expect("join").expect("first hash");
    }

    #[test]
    fn policy_needs_twelve_characters() {
        assert!(check_policy("short").is_err());
        assert!(check_policy("twelve chars").is_ok());
    }
}
