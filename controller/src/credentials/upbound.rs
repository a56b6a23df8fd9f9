//! Upbound's org-scoped token exchange, as `up organization token` and
//! up-sdk-go's `service/auth` do it: an Upbound token (a robot token, or a
//! personal access token) is exchanged for a short-lived token that
//! Upbound control planes accept.
//!
//! `POST <endpoint>/apis/tokenexchange.upbound.io/v1alpha1/orgscopedtokens`,
//! form-encoded, `Authorization: Bearer <upbound token>`, with
//! `grant_type`, `subject_token_type`, `subject_token`, two `audience`s and
//! `scope=upbound:org:<org>`; the answer carries `access_token` and
//! `expires_in`.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{CredentialError, Fresh, TokenSource, cut};
use crate::source::{SecretBytes, SecretSource};

/// Upbound's auth service.
pub const DEFAULT_ENDPOINT: &str = "https://auth.upbound.io";
pub const PATH: &str = "/apis/tokenexchange.upbound.io/v1alpha1/orgscopedtokens";
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const SUBJECT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const AUDIENCES: [&str; 2] = ["upbound:spaces:api", "upbound:spaces:controlplanes"];
pub const SCOPE_PREFIX: &str = "upbound:org:";

const WHAT: &str = "Upbound token exchange";

/// The form an exchange posts, in the order up-sdk-go's `url.Values`
/// encodes it (sorted by key).
pub fn form(organization: &str, upbound_token: &str) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for a in AUDIENCES {
        s.append_pair("audience", a);
    }
    s.append_pair("grant_type", GRANT_TYPE);
    s.append_pair("scope", &format!("{SCOPE_PREFIX}{organization}"));
    s.append_pair("subject_token", upbound_token);
    s.append_pair("subject_token_type", SUBJECT_TOKEN_TYPE);
    s.finish()
}

#[derive(Deserialize)]
struct Answer {
    access_token: String,
    expires_in: Option<u64>,
}

/// Exchanges the Upbound token of a secret source for control-plane tokens.
pub struct UpboundExchange {
    http: reqwest::Client,
    url: String,
    endpoint: String,
    organization: String,
    source: Box<dyn SecretSource>,
    /// The Upbound token as last read, and when.
    token: tokio::sync::Mutex<Option<(SecretBytes, tokio::time::Instant)>>,
    reread_after: Duration,
}

impl UpboundExchange {
    /// `endpoint` is the auth service's base URL; the Upbound token is read
    /// from `source`, again after `reread_after` and whenever the exchange
    /// refuses it (rotation).
    pub fn new(
        endpoint: &str,
        organization: &str,
        source: Box<dyn SecretSource>,
        reread_after: Duration,
    ) -> Result<Self, String> {
        let base = url::Url::parse(endpoint.trim())
            .map_err(|e| format!("--upbound-auth-endpoint {endpoint:?}: {e}"))?;
        if !matches!(base.scheme(), "https" | "http")
            || base.host_str().is_none()
            || !base.username().is_empty()
            || base.query().is_some()
        {
            return Err(format!(
                "--upbound-auth-endpoint {endpoint:?} must be an https URL without credentials or query"
            ));
        }
        let endpoint = base.as_str().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self {
            url: format!("{endpoint}{PATH}"),
            endpoint,
            http,
            organization: organization.to_owned(),
            source,
            token: tokio::sync::Mutex::new(None),
            reread_after,
        })
    }

    fn error(&self, detail: String, transient: bool) -> CredentialError {
        CredentialError {
            what: WHAT,
            detail,
            transient,
        }
    }

    /// The Upbound token; read again when `force` or when it is old.
    async fn upbound_token(&self, force: bool) -> Result<SecretBytes, CredentialError> {
        let mut token = self.token.lock().await;
        if !force
            && let Some((t, read)) = token.as_ref()
            && read.elapsed() < self.reread_after
        {
            return Ok(t.clone());
        }
        let fetched = self.source.fetch().await.map_err(|e| {
            self.error(
                format!("cannot read the Upbound token: {e}"),
                e.is_transient(),
            )
        })?;
        *token = Some((fetched.bytes.clone(), tokio::time::Instant::now()));
        Ok(fetched.bytes)
    }

    async fn exchange(&self, upbound: &SecretBytes) -> Result<Fresh, Exchange> {
        let token = std::str::from_utf8(upbound.expose())
            .map_err(|_| {
                Exchange::Failed(self.error(
                    format!("the Upbound token from {} is not text", self.source.uri()),
                    false,
                ))
            })?
            .trim();
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(token)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(form(&self.organization, token))
            .send()
            .await
            .map_err(|e| {
                Exchange::Failed(self.error(
                    format!(
                        "cannot reach {}: {}",
                        self.endpoint,
                        crate::source::error_chain(&e)
                    ),
                    true,
                ))
            })?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        // Whatever the service says back is quoted cut, and never with the
        // token in it.
        let said = || {
            cut(
                &String::from_utf8_lossy(&body).replace(token, "<token>"),
                200,
            )
        };
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(Exchange::Refused(self.error(
                format!(
                    "{} refused the Upbound token from {} ({status}): {}",
                    self.endpoint,
                    self.source.uri(),
                    said()
                ),
                false,
            )));
        }
        if !status.is_success() {
            return Err(Exchange::Failed(self.error(
                format!("{} answered {status}: {}", self.endpoint, said()),
                status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS,
            )));
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|_| {
            Exchange::Failed(self.error(
                format!(
                    "{} answered something that is not a token exchange answer",
                    self.endpoint
                ),
                false,
            ))
        })?;
        if answer.access_token.trim().is_empty() {
            return Err(Exchange::Failed(self.error(
                format!("{} answered an empty access_token", self.endpoint),
                false,
            )));
        }
        Ok(Fresh {
            token: zeroize::Zeroizing::new(answer.access_token),
            // Without expires_in: up's own default lifetime is an hour;
            // refreshing after 80% of ten minutes is safe either way.
            lifetime: Duration::from_secs(answer.expires_in.unwrap_or(600).max(1)),
        })
    }
}

enum Exchange {
    Refused(CredentialError),
    Failed(CredentialError),
}

impl TokenSource for UpboundExchange {
    fn what(&self) -> &'static str {
        WHAT
    }

    fn fetch(&self) -> BoxFuture<'_, Result<Fresh, CredentialError>> {
        Box::pin(async move {
            let upbound = self.upbound_token(false).await?;
            match self.exchange(&upbound).await {
                Ok(fresh) => Ok(fresh),
                Err(Exchange::Failed(e)) => Err(e),
                // Refused: the token may have been rotated; read it again.
                Err(Exchange::Refused(_)) => {
                    let upbound = self.upbound_token(true).await?;
                    match self.exchange(&upbound).await {
                        Ok(fresh) => Ok(fresh),
                        Err(Exchange::Failed(e) | Exchange::Refused(e)) => Err(e),
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_is_up_sdk_gos() {
        let f = form("acme", "tok+/=");
        assert_eq!(
            f,
            "audience=upbound%3Aspaces%3Aapi&audience=upbound%3Aspaces%3Acontrolplanes\
             &grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
             &scope=upbound%3Aorg%3Aacme&subject_token=tok%2B%2F%3D\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token"
        );
    }

    #[test]
    fn endpoints_are_checked() {
        let source = || crate::source::parse("env:UP").unwrap();
        assert!(
            UpboundExchange::new(
                "https://auth.upbound.io/",
                "o",
                source(),
                Duration::from_secs(1)
            )
            .is_ok()
        );
        for bad in [
            "auth.upbound.io",
            "ftp://x",
            "https://u:p@x",
            "https://x/?a=b",
        ] {
            assert!(
                UpboundExchange::new(bad, "o", source(), Duration::from_secs(1)).is_err(),
                "{bad}"
            );
        }
    }
}
