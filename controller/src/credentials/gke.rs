//! A Google access token from Application Default Credentials, as
//! `gke-gcloud-auth-plugin --use_application_default_credentials` gets it
//! (scopes cloud-platform and userinfo.email): on Cloud Run, the metadata
//! server's token of the service's account. The library caches and
//! refreshes it; a fresh copy is asked for each minute.

use std::time::Duration;

use futures::future::BoxFuture;
use google_cloud_auth::credentials::{AccessTokenCredentials, Builder};
use tokio::sync::OnceCell;

use super::{CredentialError, Fresh, TokenSource, cut};

const WHAT: &str = "Google access token";
pub const SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
];

#[derive(Default)]
pub struct GkeTokens {
    credentials: OnceCell<AccessTokenCredentials>,
}

impl GkeTokens {
    fn error(detail: String, transient: bool) -> CredentialError {
        CredentialError {
            what: WHAT,
            detail,
            transient,
        }
    }
}

impl TokenSource for GkeTokens {
    fn what(&self) -> &'static str {
        WHAT
    }

    fn fetch(&self) -> BoxFuture<'_, Result<Fresh, CredentialError>> {
        Box::pin(async move {
            let credentials = self
                .credentials
                .get_or_try_init(|| async {
                    Builder::default()
                        .with_scopes(SCOPES)
                        .build_access_token_credentials()
                        .map_err(|e| {
                            Self::error(
                                format!(
                                    "no Application Default Credentials: {}",
                                    cut(&e.to_string(), 300)
                                ),
                                false,
                            )
                        })
                })
                .await?;
            let token = credentials.access_token().await.map_err(|e| {
                Self::error(
                    format!("cannot get an access token: {}", cut(&e.to_string(), 300)),
                    true,
                )
            })?;
            Ok(Fresh {
                token: zeroize::Zeroizing::new(token.token),
                lifetime: Duration::from_secs(60),
            })
        })
    }
}
