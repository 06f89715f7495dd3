//! Retries of a stage after a transient error.

use std::future::Future;

use crate::Error;

/// Whether an error may go away on its own: a transient stage error (a
/// source database that did not answer), or, somewhere in its chain, a
/// connection that was refused, reset, aborted or timed out.
pub fn is_transient(err: &Error) -> bool {
    err.is_transient()
}

/// Whether `err`'s chain holds an I/O error of a connection that may come
/// back.
pub(crate) fn io_transient(err: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::*;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | TimedOut | Interrupted
            )
        }) {
            return true;
        }
        next = e.source();
    }
    false
}

/// Runs `stage` until it succeeds, fails for good, or has been retried
/// `retries` times after transient errors, waiting 1, 2, 4, … (at most 30)
/// seconds in between. Every stage writes exactly once, so a retry redoes
/// only what did not commit.
pub async fn with_retries<T, F>(retries: u32, name: &str, mut stage: impl FnMut() -> F) -> Result<T, Error>
where
    F: Future<Output = Result<T, Error>>,
{
    let mut tries = 0;
    loop {
        match stage().await {
            Err(err) if tries < retries && is_transient(&err) => {
                tries += 1;
                let wait = std::time::Duration::from_secs((1u64 << (tries - 1).min(5)).min(30));
                tracing::warn!(
                    "stage {name}: {}; a transient error, retry {tries} of {retries} in {} s",
                    crate::error::chain(&err),
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
            }
            outcome => return outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Error {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        Error::Stage {
            stage: crate::Stage::Ingest,
            source: Box::new(crate::StageError::Storage(storage::Error::Io { path: "x".into(), source: io })),
        }
    }

    #[tokio::test]
    async fn a_transient_error_is_retried_and_a_lasting_one_is_not() {
        let mut calls = 0;
        let out = with_retries(3, "ingest", || {
            calls += 1;
            let fail = calls < 3;
            async move { if fail { Err(refused()) } else { Ok(calls) } }
        })
        .await;
        assert_eq!(out.unwrap(), 3, "two transient failures, then success");

        let mut calls = 0;
        let out: Result<(), Error> = with_retries(3, "silver", || {
            calls += 1;
            async { Err(Error::Request("bad flag".into())) }
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls, 1, "a user error is not retried");

        let mut calls = 0;
        let out: Result<(), Error> = with_retries(2, "ingest", || {
            calls += 1;
            async { Err(refused()) }
        })
        .await;
        assert!(is_transient(&out.unwrap_err()));
        assert_eq!(calls, 3, "the first try and two retries");
    }
}
