//! Optional bearer-token auth for the robot endpoints.
//!
//! Only the token's SHA-256 digest is kept, and presented tokens are
//! compared by digest in constant time: neither timing nor a memory dump
//! nor a Debug print gives the token away.

use std::fmt;
use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::App;
use crate::error::ApiError;

/// The token clients must present, as a digest.
#[derive(Clone)]
pub struct BearerToken {
    digest: [u8; 32],
}

/// Why a token could not be set up. Never holds the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the auth token is empty")]
    Empty,
    #[error("the auth token holds whitespace or control characters")]
    BadCharacters,
    #[error("the auth token in {path} is empty")]
    EmptyFile { path: PathBuf },
    #[error("the auth token in {path} holds whitespace or control characters inside it")]
    BadCharactersInFile { path: PathBuf },
    #[error("cannot read auth token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("both an auth token file and ROBOT_SERVER_AUTH_TOKEN are set; set one")]
    Both,
}

impl BearerToken {
    /// A token as given; surrounding whitespace (a file's final newline) is
    /// dropped.
    pub fn new(token: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        // Such a token could never arrive intact in an HTTP header.
        if token
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(TokenError::BadCharacters);
        }
        Ok(Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// The token from a file (`--auth-token-file`) or from the token itself
    /// (`ROBOT_SERVER_AUTH_TOKEN`); `None` when neither is set.
    pub fn from_sources(
        file: Option<&Path>,
        value: Option<&str>,
    ) -> Result<Option<Self>, TokenError> {
        match (file, value) {
            (Some(_), Some(_)) => Err(TokenError::Both),
            (None, None) => Ok(None),
            (None, Some(value)) => Self::new(value).map(Some),
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::new(&text).map(Some).map_err(|e| match e {
                    TokenError::Empty => TokenError::EmptyFile {
                        path: path.to_owned(),
                    },
                    _ => TokenError::BadCharactersInFile {
                        path: path.to_owned(),
                    },
                })
            }
        }
    }

    /// Whether an `Authorization` header value carries this token.
    fn accepts(&self, header: &[u8]) -> bool {
        let Some(presented) = bearer_credentials(header) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// The credentials of `Bearer <credentials>`; the scheme is
/// case-insensitive (RFC 9110 section 11.1).
fn bearer_credentials(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"Bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let credentials = rest.trim_ascii();
    (!credentials.is_empty()).then_some(credentials)
}

/// Refuses requests without the configured token with 401.
pub async fn require_token(State(app): State<App>, request: Request, next: Next) -> Response {
    if let Some(token) = &app.inner.auth_token {
        let presented = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
        if !presented.is_some_and(|h| token.accepts(h)) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_is_accepted() {
        let token = BearerToken::new("s3cret\n").unwrap();
        assert!(token.accepts(b"Bearer s3cret"));
        assert!(token.accepts(b"bearer s3cret"));
        assert!(token.accepts(b"BEARER  s3cret "));
        for bad in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret2",
            b"Bearer",
            b"Bearer ",
            b"Basic s3cret",
            b"Bearers3cret",
            b"s3cret",
            b"",
        ] {
            assert!(!token.accepts(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn tokens_never_print() {
        let token = BearerToken::new("s3cret").unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "has space").unwrap();
        let err = BearerToken::from_sources(Some(&path), None).unwrap_err();
        assert!(!err.to_string().contains("has space"), "{err}");
        assert!(err.to_string().contains("token"), "{err}");
    }

    #[test]
    fn sources() {
        assert!(BearerToken::from_sources(None, None).unwrap().is_none());
        assert!(
            BearerToken::from_sources(None, Some("t"))
                .unwrap()
                .is_some()
        );
        assert!(matches!(
            BearerToken::from_sources(Some(Path::new("/x")), Some("t")),
            Err(TokenError::Both)
        ));
        assert!(matches!(
            BearerToken::from_sources(None, Some(" \n")),
            Err(TokenError::Empty)
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "\n").unwrap();
        let err = BearerToken::from_sources(Some(&path), None).unwrap_err();
        assert!(err.to_string().contains(&path.display().to_string()));
        let missing = dir.path().join("missing");
        let err = BearerToken::from_sources(Some(&missing), None).unwrap_err();
        assert!(matches!(err, TokenError::Read { .. }), "{err}");
    }
}
