//! The single retry helper: exponential backoff for errors that say they are retryable.
//!
//! Every remote call goes through [`retry`] and every endless backoff loop through [`Backoff`], so the policy (attempts, delays) is set in one
//! place by configuration (`retries`), and tests can make it fast.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::StorageError;

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

/// An error that says whether another attempt may succeed, and how it reads once the
/// attempts have run out. Each layer's error type answers for itself ([`StorageError`]: a
/// remote error the service marks retryable, an interrupted or timed-out I/O), so that moving
/// an error to another exit code never changes what is retried.
pub trait Retryable: fmt::Display {
    /// Whether another attempt may succeed.
    fn is_retryable(&self) -> bool;
    /// This error after `attempts` attempts, all failed (the message says so).
    fn gave_up(self, attempts: u32) -> Self;
}

impl Retryable for StorageError {
    fn is_retryable(&self) -> bool {
        StorageError::is_retryable(self)
    }

    fn gave_up(self, attempts: u32) -> Self {
        match self {
            StorageError::Remote { op, key, message, retryable: true } => {
                let message = format!("{message} (gave up after {attempts} attempts)");
                StorageError::Remote { op, key, message, retryable: true }
            }
            e => e,
        }
    }
}

/// Exponential backoff: the delays of one retry loop, doubled after each failure up to a
/// bound, back to the start after a success. [`retry`] uses it for requests; the daemons'
/// loops (the receiver's reconnects, its uploader) use it directly, because they retry
/// forever rather than within a budget.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays from `base`, doubling, never above `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max, next: base }
    }

    /// The delay to wait now; the one after it is doubled.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// After a success: the next failure waits the base delay again.
    pub fn reset(&mut self) {
        self.next = self.base;
    }
}

impl From<RetryPolicy> for Backoff {
    fn from(p: RetryPolicy) -> Self {
        Backoff::new(p.base_delay, p.max_delay)
    }
}

/// Runs `op` until it succeeds, fails with an error that is not retryable, or the retries of
/// `policy` run out; then returns the last error, [`Retryable::gave_up`] if it was retried.
pub async fn retry<T, E, F, Fut>(policy: RetryPolicy, what: &str, mut op: F) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::from(policy);
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < policy.retries => {
                attempt += 1;
                let delay = backoff.next_delay();
                tracing::info!(error = %e, attempt, retries = policy.retries, "{what} failed, retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
            Err(e) if e.is_retryable() && attempt > 0 => return Err(e.gave_up(attempt + 1)),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faulty::FaultyStorage;
    use crate::memory::MemoryStorage;
    use crate::{ObjectKey, Storage};
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

    #[test]
    fn backoff_doubles_to_its_bound_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let d: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn says_how_often_it_tried() {
        let s = FaultyStorage::new(Arc::new(MemoryStorage::new()));
        let k = ObjectKey::new("k").unwrap();
        s.fail_next(10);
        let e = retry(fast(2), "head", || s.head(&k)).await.unwrap_err();
        assert!(e.to_string().contains("gave up after 3 attempts"), "{e}");
    }
}
