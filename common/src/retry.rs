//! The single retry helper: exponential backoff for errors that say they are retryable.
//!
//! Every remote call goes through [`retry`], so the policy (attempts, delays) is set in one
//! place by configuration (`retries`), and tests can make it fast.

use std::future::Future;
use std::time::Duration;

use crate::storage::StorageError;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first one.
    pub retries: u32,
    /// Delay before the first retry; doubled each time.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { retries: 4, base_delay: Duration::from_millis(250), max_delay: Duration::from_secs(5) }
    }
}

impl RetryPolicy {
    /// A policy with `retries` retries and the default delays.
    pub fn with_retries(retries: u32) -> Self {
        RetryPolicy { retries, ..Default::default() }
    }
}

/// Runs `op` until it succeeds, fails with a non-retryable error, or the retries run out.
pub async fn retry<T, F, Fut>(policy: RetryPolicy, what: &str, mut op: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let mut delay = policy.base_delay;
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < policy.retries => {
                attempt += 1;
                tracing::info!(error = %e, attempt, retries = policy.retries, "{what} failed, retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(policy.max_delay);
            }
            Err(StorageError::Remote { op, key, message, retryable: true }) if attempt > 0 => {
                let message = format!("{message} (gave up after {} attempts)", attempt + 1);
                return Err(StorageError::Remote { op, key, message, retryable: true });
            }
            Err(e) => return Err(e),
        }
    }
}

/// One attempt's failure for [`retry_attempts`]: the failure, and whether another attempt may
/// succeed (a download cut off in the middle: yes; a damaged object: no).
pub type Attempt = (crate::exit::Failure, bool);

/// Like [`retry`], for operations larger than one request (a download read to its end and
/// checked): runs `op` again after a failure it marks retryable, within the same policy.
pub async fn retry_attempts<T, F, Fut>(policy: RetryPolicy, what: &str, mut op: F) -> Result<T, crate::exit::Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    let mut delay = policy.base_delay;
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err((f, true)) if attempt < policy.retries => {
                attempt += 1;
                tracing::info!(error = %f, attempt, retries = policy.retries, "{what} failed, retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(policy.max_delay);
            }
            Err((f, true)) if attempt > 0 => {
                return Err(crate::exit::Failure::msg(f.kind, format!("{f} (gave up after {} attempts)", attempt + 1)))
            }
            Err((f, _)) => return Err(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::faulty::FaultyStorage;
    use crate::storage::memory::MemoryStorage;
    use crate::storage::{ObjectKey, Storage};
    use std::sync::Arc;

    fn fast(retries: u32) -> RetryPolicy {
        RetryPolicy { retries, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2) }
    }

    #[tokio::test]
    async fn retries_transient_failures_then_succeeds() {
        let s = FaultyStorage::new(Arc::new(MemoryStorage::new()));
        let k = ObjectKey::new("k").unwrap();
        s.fail_next(2);
        let r = retry(fast(3), "head", || s.head(&k)).await;
        assert!(r.unwrap_err().is_not_found(), "after two faults the real answer comes through");
        assert_eq!(s.calls(), 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_budget() {
        let s = FaultyStorage::new(Arc::new(MemoryStorage::new()));
        let k = ObjectKey::new("k").unwrap();
        s.fail_next(10);
        let r = retry(fast(2), "head", || s.head(&k)).await;
        assert!(r.unwrap_err().is_retryable());
        assert_eq!(s.calls(), 3);
    }

    #[tokio::test]
    async fn never_retries_not_found() {
        let s = FaultyStorage::new(Arc::new(MemoryStorage::new()));
        let k = ObjectKey::new("k").unwrap();
        let _ = retry(fast(5), "head", || s.head(&k)).await;
        assert_eq!(s.calls(), 1);
    }
}
