//! Retries for the commands: the storage layer's helper ([`retry`], [`Backoff`], the
//! [`Retryable`] trait that each layer's error implements), and [`retry_attempts`] for
//! operations larger than one request, whose failures are already a command's [`Failure`].

pub use storage::retry::*;

use std::future::Future;

use crate::exit::Failure;

/// One attempt's failure for [`retry_attempts`]: the failure, and whether another attempt may
/// succeed (a download cut off in the middle: yes; a damaged object: no).
pub type Attempt = (Failure, bool);

/// [`Attempt`] as a [`Retryable`] error.
struct AttemptError(Failure, bool);

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Retryable for AttemptError {
    fn is_retryable(&self) -> bool {
        self.1
    }

    fn gave_up(self, attempts: u32) -> Self {
        let f = self.0;
        AttemptError(Failure::msg(f.kind, format!("{f} (gave up after {attempts} attempts)")), self.1)
    }
}

/// Like [`retry`], for operations larger than one request (a download read to its end and
/// checked): runs `op` again after a failure it marks retryable, within the same policy.
pub async fn retry_attempts<T, F, Fut>(policy: RetryPolicy, what: &str, mut op: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    retry(policy, what, || {
        let attempt = op();
        async move { attempt.await.map_err(|(f, again)| AttemptError(f, again)) }
    })
    .await
    .map_err(|e| e.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::FailureKind;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    fn fast(retries: u32) -> RetryPolicy {
        RetryPolicy { retries, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2) }
    }

    #[tokio::test]
    async fn retries_only_what_the_attempt_marks_retryable() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry_attempts(fast(3), "x", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err((Failure::msg(FailureKind::Storage, "cut off"), true))
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let f = r.unwrap_err();
        assert_eq!(f.kind, FailureKind::Storage);
        assert!(f.to_string().contains("gave up after 4 attempts"), "{f}");

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = retry_attempts(fast(3), "x", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err((Failure::msg(FailureKind::Corrupt, "damaged"), false))
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(r.unwrap_err().to_string(), "damaged");
    }
}
