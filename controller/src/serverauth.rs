//! Credentials for the robot server, kept inside the private network: a
//! bearer token read from a secret source and re-read to follow rotation,
//! or a Google ID token per server ([`GcpIdTokens`]).

mod gcp_id_token;

pub use gcp_id_token::{GcpIdTokens, METADATA_HOST_ENV};

use std::sync::Arc;
use std::time::Duration;

use robot_api::AuthHeader;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::source::{SecretSource, SourceError};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}: the token is not valid in an HTTP header (control characters?)")]
    Invalid(String),
}

impl TokenError {
    /// Whether a later read may succeed without a human.
    pub fn is_transient(&self) -> bool {
        matches!(self, TokenError::Source(e) if e.is_transient())
    }
}

/// A bearer token that follows its source.
pub struct BearerToken {
    source: Box<dyn SecretSource>,
    header: AuthHeader,
    /// Signalled when the server answers 401: re-read at once.
    pub refused: Arc<Notify>,
}

impl BearerToken {
    /// Reads the token once; a failure here is a configuration error.
    pub async fn load(source: Box<dyn SecretSource>) -> Result<Self, TokenError> {
        let token = Self {
            source,
            header: AuthHeader::default(),
            refused: Arc::new(Notify::new()),
        };
        token.refresh().await?;
        Ok(token)
    }

    pub fn header(&self) -> AuthHeader {
        self.header.clone()
    }

    async fn refresh(&self) -> Result<(), TokenError> {
        let fetched = self.source.fetch().await?;
        let text = std::str::from_utf8(fetched.bytes.expose())
            .map_err(|_| TokenError::Invalid(self.source.uri().to_owned()))?;
        self.header
            .set_bearer(text)
            .map_err(|_| TokenError::Invalid(self.source.uri().to_owned()))
    }

    /// Re-reads every `interval` and after a 401, until `stop`.
    pub async fn keep_fresh(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
                _ = self.refused.notified() => {
                    // Let a burst of 401s settle into one read.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "cannot re-read the robot server token; keeping the current one");
            }
        }
    }
}
