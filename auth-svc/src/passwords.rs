//! Password hashing: argon2id with OWASP's parameters (m = 19 MiB, t = 2, p = 1) on a bounded
//! pool of blocking threads. Legacy bcrypt hashes verify and are flagged for upgrade. When every
//! worker is busy and the queue is full, callers get RESOURCE_EXHAUSTED at once instead of
//! piling up memory (each hash holds 19 MiB).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use kit::ApiError;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

pub const MIN_LENGTH: usize = 12;
pub const MAX_LENGTH: usize = 1024;

fn argon2() -> Argon2<'static> {
    #[allow(clippy::expect_used)] // constant, valid parameters
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP argon2id parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Wrong,
    Right,
    /// Right, and the stored hash should be replaced by an argon2id hash.
    RightNeedsUpgrade,
}

/// A bounded pool for password hashing; cheap to clone.
#[derive(Clone, Debug)]
pub struct Hasher {
    workers: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    queue: usize,
    /// A hash of a random password, verified for unknown accounts so they cost the same time.
    dummy: Arc<String>,
}

fn busy() -> ApiError {
    kit::metrics::Metrics::global().event("password_hash_overload");
    ApiError::resource_exhausted("TOO_MANY_LOGINS", "too many logins in progress, retry shortly")
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

fn hash_now(password: &[u8]) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ApiError::internal(&e))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::internal(&e))?;
    argon2().hash_password(password, &salt).map(|h| h.to_string()).map_err(|e| ApiError::internal(&e))
}

fn verify_now(password: &[u8], stored: &str) -> Verdict {
    if stored.starts_with("$2") {
        return match bcrypt::verify(password, stored) {
            Ok(true) => Verdict::RightNeedsUpgrade,
            _ => Verdict::Wrong,
        };
    }
    let Ok(parsed) = PasswordHash::new(stored) else { return Verdict::Wrong };
    if argon2().verify_password(password, &parsed).is_err() {
        return Verdict::Wrong;
    }
    // An argon2 hash with weaker (older) parameters is upgraded too.
    let current = parsed.algorithm.as_str() == "argon2id"
        && Params::try_from(&parsed).is_ok_and(|p| p.m_cost() >= 19 * 1024 && p.t_cost() >= 2);
    if current { Verdict::Right } else { Verdict::RightNeedsUpgrade }
}

impl Hasher {
    pub fn new(workers: usize, queue: usize) -> Result<Self, ApiError> {
        let mut random = Zeroizing::new([0u8; 32]);
        getrandom::fill(random.as_mut()).map_err(|e| ApiError::internal(&e))?;
        let dummy = hash_now(random.as_ref())?;
        Ok(Self {
            workers: Arc::new(Semaphore::new(workers.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            queue,
            dummy: Arc::new(dummy),
        })
    }

    async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
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
        tokio::task::spawn_blocking(move || {
            let out = job();
            drop(permit);
            out
        })
        .await
        .map_err(|e| ApiError::internal(&e))
    }

    /// An argon2id hash of `password` (PHC string).
    pub async fn hash(&self, password: Zeroizing<String>) -> Result<String, ApiError> {
        self.run(move || hash_now(password.as_bytes())).await?
    }

    /// Checks `password` against `stored`; with no stored hash (unknown account, no password)
    /// the same work is done against a dummy hash and the answer is `Wrong`.
    pub async fn verify(&self, password: Zeroizing<String>, stored: Option<String>) -> Result<Verdict, ApiError> {
        let dummy = self.dummy.clone();
        self.run(move || match stored {
            Some(hash) => verify_now(password.as_bytes(), &hash),
            None => {
                let _ = verify_now(password.as_bytes(), &dummy);
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
