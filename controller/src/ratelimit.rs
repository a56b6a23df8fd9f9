//! The global bound on calls to the external API (`--max-reconcile-rate`),
//! shared by every reconcile of every kind.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota};

/// A token bucket: `per_second` tokens a second, bursts of up to that many.
pub struct RateLimiter {
    inner: Option<DefaultDirectRateLimiter>,
}

impl RateLimiter {
    /// `0` means unlimited.
    pub fn per_second(per_second: u32) -> Self {
        Self {
            inner: NonZeroU32::new(per_second)
                .map(|n| DefaultDirectRateLimiter::direct(Quota::per_second(n))),
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        if let Some(l) = &self.inner {
            l.until_ready().await;
        }
    }
}
