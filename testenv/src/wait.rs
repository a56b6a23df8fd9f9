//! Polling for a condition, with a deadline that names what was awaited.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::Error;

/// Polls `f` until it yields `Some`, at short and then growing intervals
/// (10 ms up to 250 ms), failing with an error naming `what` after `timeout`.
pub async fn wait_for<F, Fut, T>(what: &str, timeout: Duration, mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(10);
    loop {
        if let Some(value) = f().await {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                after: timeout,
            });
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value() {
        let mut calls = 0;
        let value = wait_for("three calls", Duration::from_secs(5), || {
            calls += 1;
            let ready = calls >= 3;
            async move { ready.then_some(calls) }
        })
        .await
        .expect("ready");
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn names_what_timed_out() {
        let error = wait_for("the impossible", Duration::from_millis(30), || async {
            None::<()>
        })
        .await
        .expect_err("never ready");
        assert!(error.to_string().contains("the impossible"), "{error}");
    }
}
