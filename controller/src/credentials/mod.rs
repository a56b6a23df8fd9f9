//! Control-plane credentials the controller gets natively, for the exec
//! plugins real control planes hand out (the kubeconfig's plugin is
//! recognised in [`crate::kubeconfig`] and never run):
//! - [`upbound`]: Upbound's org-scoped token exchange (`up organization token`);
//! - [`eks`]: an EKS token, a presigned STS GetCallerIdentity
//!   (`aws eks get-token`, `aws-iam-authenticator token`);
//! - [`gke`]: a Google access token from Application Default Credentials
//!   (`gke-gcloud-auth-plugin`).
//!
//! Each is a [`TokenSource`]; [`CachedToken`] keeps the current token,
//! refreshes it at 80% of its lifetime (so no request carries an expired
//! one), shares one refresh among concurrent requests, and drops a token
//! the control plane refused so the next request gets a fresh one.

pub mod eks;
pub mod gke;
pub mod upbound;

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use futures::future::BoxFuture;
use http::HeaderValue;

/// Refresh when this much of a token's lifetime has gone.
const REFRESH_AT: f64 = 0.8;
/// A token this young that the control plane refuses is not dropped again
/// (a burst of 401s must not become a burst of exchanges).
const MIN_AGE_TO_DROP: Duration = Duration::from_secs(2);

/// Why a credential could not be had. Messages name the mechanism and the
/// place, never a token.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct CredentialError {
    pub what: &'static str,
    pub detail: String,
    /// Retrying later may help (network, 5xx).
    pub transient: bool,
}

/// A token and how long it lives.
pub struct Fresh {
    pub token: zeroize::Zeroizing<String>,
    pub lifetime: Duration,
}

/// Mints tokens.
pub trait TokenSource: Send + Sync {
    /// What this is, for messages: `Upbound token exchange`.
    fn what(&self) -> &'static str;
    /// A new token.
    fn fetch(&self) -> BoxFuture<'_, Result<Fresh, CredentialError>>;
}

struct Current {
    header: HeaderValue,
    obtained: Instant,
    lifetime: Duration,
    /// Refused by the control plane: not to be used again.
    dropped: bool,
}

/// The current token of a [`TokenSource`], refreshed ahead of its expiry.
pub struct CachedToken {
    source: Box<dyn TokenSource>,
    current: Mutex<Option<Current>>,
    /// One refresh at a time: a burst of requests waits for one token.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("source", &self.source.what())
            .finish_non_exhaustive()
    }
}

impl CachedToken {
    pub fn new(source: Box<dyn TokenSource>) -> Self {
        Self {
            source,
            current: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn what(&self) -> &'static str {
        self.source.what()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token, unless it is due for a refresh.
    fn usable(&self, fresh_only: bool) -> Option<HeaderValue> {
        let current = self.lock();
        let c = current.as_ref().filter(|c| !c.dropped)?;
        let age = c.obtained.elapsed();
        let limit = if fresh_only {
            c.lifetime.mul_f64(REFRESH_AT)
        } else {
            c.lifetime
        };
        (age < limit).then(|| c.header.clone())
    }

    /// The `Authorization` header for the next request.
    pub async fn header(&self) -> Result<HeaderValue, CredentialError> {
        if let Some(h) = self.usable(true) {
            return Ok(h);
        }
        let _one = self.refreshing.lock().await;
        if let Some(h) = self.usable(true) {
            return Ok(h);
        }
        match self.source.fetch().await {
            Ok(fresh) => {
                let mut header = HeaderValue::from_str(&format!("Bearer {}", fresh.token.as_str()))
                    .map_err(|_| CredentialError {
                        what: self.source.what(),
                        detail: "answered something that is not a token (characters not allowed in a header)"
                            .into(),
                        transient: false,
                    })?;
                header.set_sensitive(true);
                *self.lock() = Some(Current {
                    header: header.clone(),
                    obtained: Instant::now(),
                    lifetime: fresh.lifetime.max(Duration::from_secs(1)),
                    dropped: false,
                });
                tracing::debug!(
                    source = self.source.what(),
                    lifetime_s = fresh.lifetime.as_secs(),
                    "control-plane token refreshed"
                );
                Ok(header)
            }
            Err(e) => match self.usable(false) {
                // Not expired yet: keep using it, try again next request.
                Some(h) => {
                    tracing::warn!(error = %e, "cannot refresh the control-plane token; using the current one until it expires");
                    Ok(h)
                }
                None => Err(e),
            },
        }
    }

    /// The control plane refused `header`: the next request gets a new one.
    pub fn refused(&self, header: &HeaderValue) {
        let mut current = self.lock();
        if let Some(c) = current.as_mut()
            && c.header == *header
            && c.obtained.elapsed() >= MIN_AGE_TO_DROP
        {
            c.dropped = true;
        }
    }
}

/// At most `max` bytes of a remote party's text, for an error message.
pub(crate) fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... (cut)", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Counting {
        n: Arc<AtomicU32>,
        lifetime: Duration,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    impl TokenSource for Counting {
        fn what(&self) -> &'static str {
            "test source"
        }
        fn fetch(&self) -> BoxFuture<'_, Result<Fresh, CredentialError>> {
            Box::pin(async move {
                if self.fail.load(Ordering::SeqCst) {
                    return Err(CredentialError {
                        what: "test source",
                        detail: "down".into(),
                        transient: true,
                    });
                }
                let n = self.n.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(Fresh {
                    token: zeroize::Zeroizing::new(format!("t{n}")),
                    lifetime: self.lifetime,
                })
            })
        }
    }

    fn cached(
        lifetime: Duration,
    ) -> (
        CachedToken,
        Arc<AtomicU32>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        let n = Arc::new(AtomicU32::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        (
            CachedToken::new(Box::new(Counting {
                n: n.clone(),
                lifetime,
                fail: fail.clone(),
            })),
            n,
            fail,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn refreshed_at_eighty_percent_and_shared() {
        let (c, n, _) = cached(Duration::from_secs(10));
        let first = c.header().await.unwrap();
        assert_eq!(first, "Bearer t1");
        assert!(first.is_sensitive());
        let all = futures::future::join_all((0..20).map(|_| c.header())).await;
        assert!(all.iter().all(|h| h.as_ref().unwrap() == "Bearer t1"));
        assert_eq!(n.load(Ordering::SeqCst), 1, "one fetch for many requests");
        tokio::time::advance(Duration::from_millis(7900)).await;
        assert_eq!(c.header().await.unwrap(), "Bearer t1");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(
            c.header().await.unwrap(),
            "Bearer t2",
            "refreshed before expiry"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_token_until_it_expires() {
        let (c, _, fail) = cached(Duration::from_secs(10));
        c.header().await.unwrap();
        fail.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(c.header().await.unwrap(), "Bearer t1");
        tokio::time::advance(Duration::from_secs(2)).await;
        let e = c.header().await.unwrap_err();
        assert!(e.to_string().contains("test source: down"), "{e}");
        fail.store(false, Ordering::SeqCst);
        assert_eq!(c.header().await.unwrap(), "Bearer t2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_token_is_replaced_but_not_in_a_storm() {
        let (c, n, _) = cached(Duration::from_secs(600));
        let t1 = c.header().await.unwrap();
        // Refused at once: too young to drop (another cause is likelier).
        c.refused(&t1);
        assert_eq!(c.header().await.unwrap(), t1);
        tokio::time::advance(Duration::from_secs(3)).await;
        c.refused(&t1);
        let t2 = c.header().await.unwrap();
        assert_eq!(t2, "Bearer t2");
        // A stale refusal of the old token changes nothing.
        tokio::time::advance(Duration::from_secs(3)).await;
        c.refused(&t1);
        assert_eq!(c.header().await.unwrap(), t2);
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }
}
