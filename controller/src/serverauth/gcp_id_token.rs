//! `--server-auth gcp-id-token`: a Google ID token per robot server, for a
//! server on Cloud Run behind IAM. The token comes from the metadata
//! server (`GCE_METADATA_HOST` overrides its host, as in Google's
//! libraries), its audience is the server's origin, and it is cached until
//! shortly before it expires.
//!
//! google-cloud-auth has an ID-token credential for the metadata server,
//! but it indexes the token's claims without checking (a token without
//! `exp` panics its refresh task, and then the caller) and gives up for
//! good after one permanent error; with `panic = "abort"` a bad answer
//! would end the process. The protocol is one documented GET, so it is
//! spoken here, with every failure an error.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::HeaderValue;
use robot_api::{AuthorizationError, AuthorizationFuture, Authorizer};

/// Google's libraries read this to find the metadata server.
pub const METADATA_HOST_ENV: &str = "GCE_METADATA_HOST";
const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";
const IDENTITY_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/identity";

/// Refresh this long before `exp`, so a token never expires in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
/// When `exp` cannot be read: Google ID tokens live an hour.
const UNKNOWN_EXPIRY_REFRESH: Duration = Duration::from_secs(45 * 60);
/// A token the server refused is dropped, but not more often than this
/// (a burst of 401s must not become a burst of metadata requests).
const MIN_TOKEN_AGE_TO_DROP: Duration = Duration::from_secs(5);

pub struct GcpIdTokens {
    http: reqwest::Client,
    /// `http://<host[:port]>`.
    metadata: String,
    cache: Mutex<HashMap<String, Cached>>,
    /// One fetch at a time: a burst of reconciles waits for one token.
    fetching: tokio::sync::Mutex<()>,
}

struct Cached {
    header: HeaderValue,
    fetched: Instant,
    refresh_at: Instant,
}

impl fmt::Debug for GcpIdTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let audiences: Vec<String> = self
            .cache
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("GcpIdTokens")
            .field("metadata", &self.metadata)
            .field("cached_audiences", &audiences)
            .finish_non_exhaustive()
    }
}

impl GcpIdTokens {
    /// The metadata server from `GCE_METADATA_HOST`, else Google's default.
    pub fn from_env() -> Result<Self, String> {
        Self::new(std::env::var(METADATA_HOST_ENV).ok().as_deref())
    }

    pub fn new(metadata_host: Option<&str>) -> Result<Self, String> {
        let host = metadata_host
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .unwrap_or(DEFAULT_METADATA_HOST);
        let metadata = format!("http://{host}");
        let parsed = url::Url::parse(&metadata)
            .map_err(|e| format!("{METADATA_HOST_ENV}={host:?} is not a host[:port]: {e}"))?;
        if parsed.path() != "/" || parsed.query().is_some() || !parsed.username().is_empty() {
            return Err(format!(
                "{METADATA_HOST_ENV}={host:?} must be a host[:port] only"
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            // The metadata server is link-local: never through a proxy.
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self {
            http,
            metadata,
            cache: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    fn cached(&self, audience: &str) -> Option<HeaderValue> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(audience)
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.header.clone())
    }

    async fn token(&self, audience: &str) -> Result<HeaderValue, AuthorizationError> {
        if let Some(header) = self.cached(audience) {
            return Ok(header);
        }
        let _one_at_a_time = self.fetching.lock().await;
        if let Some(header) = self.cached(audience) {
            return Ok(header);
        }
        let jwt = self.fetch(audience).await?;
        let mut header = HeaderValue::from_str(&format!("Bearer {jwt}")).map_err(|_| {
            self.error(
                false,
                "answered something that is not a token (characters not allowed in a header)",
            )
        })?;
        header.set_sensitive(true);
        let now = Instant::now();
        let refresh_at = now + refresh_after(expires_in(&jwt, SystemTime::now()));
        tracing::debug!(audience, valid_for = ?refresh_at - now, "fetched a Google ID token");
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(
            audience.to_owned(),
            Cached {
                header: header.clone(),
                fetched: now,
                refresh_at,
            },
        );
        Ok(header)
    }

    async fn fetch(&self, audience: &str) -> Result<String, AuthorizationError> {
        let response = self
            .http
            .get(format!("{}{IDENTITY_PATH}", self.metadata))
            .query(&[("audience", audience), ("format", "full")])
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|e| self.error(true, &format!("did not answer: {}", chain(&e))))?;
        let status = response.status();
        if !status.is_success() {
            let hint = match status.as_u16() {
                404 => " (no service account attached to this workload?)",
                403 => " (the Metadata-Flavor header was refused?)",
                _ => "",
            };
            return Err(self.error(
                status.is_server_error() || status.as_u16() == 429,
                &format!("answered {status}{hint}"),
            ));
        }
        let body = response
            .text()
            .await
            .map_err(|e| self.error(true, &format!("broke off its answer: {}", chain(&e))))?;
        let jwt = body.trim();
        if jwt.split('.').count() != 3 || jwt.len() < 20 {
            return Err(self.error(false, "answered something that is not a JWT"));
        }
        Ok(jwt.to_owned())
    }

    fn error(&self, transient: bool, what: &str) -> AuthorizationError {
        AuthorizationError {
            message: format!(
                "cannot get a Google ID token: the metadata server at {} {what}",
                self.metadata
            ),
            transient,
        }
    }
}

impl Authorizer for GcpIdTokens {
    fn authorization<'a>(&'a self, audience: &'a str) -> AuthorizationFuture<'a> {
        Box::pin(async move { self.token(audience).await.map(Some) })
    }

    fn refused(&self, audience: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache
            .get(audience)
            .is_some_and(|c| c.fetched.elapsed() >= MIN_TOKEN_AGE_TO_DROP)
        {
            tracing::info!(
                audience,
                "the robot server refused our ID token; fetching a new one"
            );
            cache.remove(audience);
        }
    }
}

/// How long until the JWT's `exp` (read, not verified: the token is ours
/// to send, not to trust). `None` when it has no readable `exp`.
fn expires_in(jwt: &str, now: SystemTime) -> Option<Duration> {
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<u64>,
    }
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let exp = serde_json::from_slice::<Claims>(&bytes).ok()?.exp?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(exp.saturating_sub(now)))
}

/// When to fetch again: shortly before expiry; halfway for a token that
/// lives less than twice the margin; every 45 minutes when unknown.
fn refresh_after(expires_in: Option<Duration>) -> Duration {
    match expires_in {
        None => UNKNOWN_EXPIRY_REFRESH,
        Some(left) if left > EXPIRY_MARGIN * 2 => left - EXPIRY_MARGIN,
        Some(left) => left / 2,
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", enc(r#"{"alg":"RS256"}"#), enc(claims))
    }

    #[test]
    fn expiry_is_read_from_the_token() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let token = jwt(r#"{"aud":"https://x","exp":1003600}"#);
        assert_eq!(expires_in(&token, now), Some(Duration::from_secs(3600)));
        assert_eq!(
            refresh_after(expires_in(&token, now)),
            Duration::from_secs(3300)
        );
        assert_eq!(expires_in(&jwt(r#"{"aud":"x"}"#), now), None);
        assert_eq!(expires_in("not.a-jwt!.x", now), None);
        assert_eq!(expires_in("nodots", now), None);
        assert_eq!(refresh_after(None), Duration::from_secs(45 * 60));
        assert_eq!(
            refresh_after(Some(Duration::from_secs(60))),
            Duration::from_secs(30)
        );
        // Already expired: fetch again at once.
        let old = jwt(r#"{"exp":10}"#);
        assert_eq!(refresh_after(expires_in(&old, now)), Duration::ZERO);
    }

    #[test]
    fn the_metadata_host_is_checked() {
        assert_eq!(
            GcpIdTokens::new(None).unwrap().metadata,
            "http://metadata.google.internal"
        );
        assert_eq!(
            GcpIdTokens::new(Some("127.0.0.1:8089")).unwrap().metadata,
            "http://127.0.0.1:8089"
        );
        for bad in ["host/path", "host?x=1", "a b"] {
            assert!(GcpIdTokens::new(Some(bad)).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_metadata_server_is_a_transient_error_naming_it() {
        // Nothing listens on port 9 of loopback.
        let tokens = GcpIdTokens::new(Some("127.0.0.1:9")).unwrap();
        let e = tokens.token("http://robots:9090").await.unwrap_err();
        assert!(e.transient, "{e}");
        assert!(
            e.to_string()
                .starts_with("cannot get a Google ID token: the metadata server at http://127.0.0.1:9 did not answer"),
            "{e}"
        );
    }
}
