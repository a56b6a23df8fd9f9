//! Where secrets come from: the control plane's kubeconfig and the robot
//! server's token. One trait, implementations chosen by URI:
//!
//! | URI | source | access it needs |
//! |---|---|---|
//! | `/path`, `file:///path` | a file (a mounted secret volume) | read on the file |
//! | `env:VAR` | an environment variable (platform-injected secret) | - |
//! | `aws-secretsmanager://<id or ARN>?region=&versionStage=&versionId=&jsonKey=` | AWS Secrets Manager | `secretsmanager:GetSecretValue` on the one secret (+ `kms:Decrypt` for a customer-managed key) |
//! | `gcp-secretmanager://projects/<p>/secrets/<s>/versions/<v\|latest>?jsonKey=` | Google Secret Manager | `roles/secretmanager.secretAccessor` on the one secret |
//!
//! `jsonKey=K` reads the string under `K` of a secret that is a JSON object.
//! Query parameters are checked: an unknown or repeated one is an error.
//!
//! A source returns bytes and a version; it never interprets them, and
//! neither its errors nor its `Debug` output ever contain them.

mod aws;
mod env;
mod file;
mod gcp;
mod json_key;
mod query;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub use aws::AwsSecretsManagerSource;
pub use env::EnvSource;
pub use file::FileSource;
pub use gcp::{ENDPOINT_ENV as GCP_ENDPOINT_ENV, GcpSecretManagerSource};
pub use json_key::JsonKeySource;

/// Secret bytes. `Debug` prints only the length; memory is zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(zeroize::Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(zeroize::Zeroizing::new(bytes))
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// What a source fetched.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub bytes: SecretBytes,
    /// The source's version of the secret, when it has one (for logs).
    pub version: Option<String>,
}

impl Fetched {
    /// What a source read, refused when it is empty or only whitespace (a
    /// secret created without a value, a file truncated mid-rotation).
    pub fn non_empty(
        bytes: Vec<u8>,
        version: Option<String>,
        source_uri: &str,
    ) -> Result<Fetched, SourceError> {
        // Wrapped first, so that refused bytes are wiped too.
        let bytes = SecretBytes::new(bytes);
        if bytes.expose().iter().all(u8::is_ascii_whitespace) {
            return Err(SourceError::Empty {
                source_uri: source_uri.to_owned(),
            });
        }
        Ok(Fetched { bytes, version })
    }
}

/// Why a source could not deliver. Messages name the source (its URI),
/// never the secret.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{source_uri}: the secret does not exist{}", where_(.place))]
    NotFound {
        source_uri: String,
        /// Where it was looked for, when the URI does not say (a region).
        place: Option<String>,
    },
    #[error("{source_uri}: permission denied: {detail}")]
    PermissionDenied { source_uri: String, detail: String },
    #[error("{source_uri}: the secret is empty")]
    Empty { source_uri: String },
    #[error("{source_uri}: {detail}")]
    Invalid { source_uri: String, detail: String },
    #[error("{source_uri}: cannot read the secret: {detail}")]
    Unavailable { source_uri: String, detail: String },
    #[error("invalid source {uri:?}: {detail}")]
    BadUri { uri: String, detail: String },
}

fn where_(place: &Option<String>) -> String {
    place.as_ref().map(|p| format!(" {p}")).unwrap_or_default()
}

impl SourceError {
    /// [`SourceError::NotFound`] for a source whose URI says it all.
    pub fn not_found(source_uri: &str) -> Self {
        SourceError::NotFound {
            source_uri: source_uri.to_owned(),
            place: None,
        }
    }

    /// Retrying may help (network, throttling); the others need a human.
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Unavailable { .. })
    }
}

/// An error and its causes, each once: for transport failures, which
/// carry addresses and reasons, never content.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Fetched, SourceError>> + Send + 'a>>;

/// A place a secret can be read from, again and again (rotation).
pub trait SecretSource: Send + Sync + fmt::Debug {
    /// The URI, safe to log.
    fn uri(&self) -> &str;
    fn fetch(&self) -> FetchFuture<'_>;
}

/// Picks the source for `uri`.
pub fn parse(uri: &str) -> Result<Box<dyn SecretSource>, SourceError> {
    let bad = |detail: &str| SourceError::BadUri {
        uri: uri.to_owned(),
        detail: detail.to_owned(),
    };
    if let Some(var) = uri.strip_prefix("env:") {
        if var.is_empty() {
            return Err(bad("env: needs a variable name, as in env:KUBECONFIG_DATA"));
        }
        return Ok(Box::new(EnvSource::new(var)));
    }
    if let Some(path) = uri.strip_prefix("file://") {
        if path.is_empty() {
            return Err(bad(
                "file:// needs a path, as in file:///var/run/secrets/kubeconfig",
            ));
        }
        return Ok(Box::new(FileSource::new(uri, path)));
    }
    if uri.starts_with(aws::SCHEME) {
        return aws::parse(uri);
    }
    if uri.starts_with(gcp::SCHEME) {
        return gcp::parse(uri);
    }
    if let Some((scheme, _)) = uri.split_once("://") {
        return Err(bad(&format!(
            "unknown scheme {scheme:?}; use a path, file://, env:, aws-secretsmanager:// or gcp-secretmanager://"
        )));
    }
    if uri.trim().is_empty() {
        return Err(bad("empty"));
    }
    Ok(Box::new(FileSource::new(uri, uri)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_pick_their_source() {
        assert_eq!(parse("env:KC").unwrap().uri(), "env:KC");
        assert_eq!(parse("file:///x/y").unwrap().uri(), "file:///x/y");
        assert_eq!(parse("/x/y").unwrap().uri(), "/x/y");
        for (bad, needle) in [
            ("ftp://x", "unknown scheme \"ftp\""),
            ("env:", "variable name"),
            ("file://", "needs a path"),
            ("", "empty"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn secret_bytes_never_print() {
        let s = SecretBytes::new(b"token-abc".to_vec());
        assert_eq!(format!("{s:?}"), "SecretBytes(<9 bytes redacted>)");
    }
}
