//! Bearer-token auth for the robot endpoints.
//!
//! Only the token's SHA-256 digest is kept, and presented tokens are
//! compared by digest in constant time: neither timing nor a memory dump
//! nor a Debug print gives the token away.
//!
//! A token file is re-read while serving ([`watch_file`]): a new token is
//! in force a poll after it is written, and the old one refused from then
//! on; a new content that is not a usable token (or a file that cannot be
//! read) leaves the token in force and is logged, without the content.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::App;
use crate::error::ApiError;

/// The shortest token accepted: 32 bytes (`openssl rand -hex 32` gives 64).
pub const MIN_TOKEN_BYTES: usize = 32;

/// A token file larger than this is not a token (and is not read whole).
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// The token clients must present, as a digest.
#[derive(Clone, PartialEq, Eq)]
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
    #[error(
        "the auth token is {len} bytes; at least {MIN_TOKEN_BYTES} are needed (e.g. `openssl rand -hex 32`)"
    )]
    TooShort { len: usize },
    #[error("the auth token in {path} is empty")]
    EmptyFile { path: PathBuf },
    #[error("the auth token in {path} holds whitespace or control characters inside it")]
    BadCharactersInFile { path: PathBuf },
    #[error(
        "the auth token in {path} is {len} bytes; at least {MIN_TOKEN_BYTES} are needed (e.g. `openssl rand -hex 32`)"
    )]
    TooShortInFile { path: PathBuf, len: usize },
    #[error("the auth token file {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes")]
    FileTooLarge { path: PathBuf },
    #[error("cannot read auth token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BearerToken {
    /// A token as given; surrounding whitespace (a file's final newline) is
    /// dropped. At least [`MIN_TOKEN_BYTES`] bytes, none of them
    /// whitespace or control characters.
    pub fn new(token: &str) -> Result<Self, TokenError> {
        Self::from_bytes(token.as_bytes())
    }

    fn from_bytes(token: &[u8]) -> Result<Self, TokenError> {
        let token = token.trim_ascii();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        // Such a token could never arrive intact in an HTTP header (nor
        // could bytes that are not UTF-8 be typed into one reliably).
        if token
            .iter()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            || std::str::from_utf8(token).is_err()
        {
            return Err(TokenError::BadCharacters);
        }
        if token.len() < MIN_TOKEN_BYTES {
            return Err(TokenError::TooShort { len: token.len() });
        }
        Ok(Self {
            digest: Sha256::digest(token).into(),
        })
    }

    /// The token in the file at `path` (`--auth-token-file`).
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        Self::from_file_content(path, &read_token_file(path)?)
    }

    /// The token in `content`, read from the file at `path`; errors name
    /// the file, never the content.
    pub(crate) fn from_file_content(path: &Path, content: &[u8]) -> Result<Self, TokenError> {
        let path = path.to_owned();
        Self::from_bytes(content).map_err(|e| match e {
            TokenError::Empty => TokenError::EmptyFile { path },
            TokenError::TooShort { len } => TokenError::TooShortInFile { path, len },
            _ => TokenError::BadCharactersInFile { path },
        })
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

/// The token in force, replaced when its file changes.
pub(crate) struct TokenCell(RwLock<BearerToken>);

impl TokenCell {
    pub(crate) fn new(token: BearerToken) -> Self {
        Self(RwLock::new(token))
    }

    fn get(&self) -> BearerToken {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `token` in force; false when it already was.
    fn replace(&self, token: BearerToken) -> bool {
        let mut current = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if *current == token {
            return false;
        }
        *current = token;
        true
    }
}

/// Re-reads the token file at `path` every `every`, for ever, and puts a
/// changed token in force. Logs what it did, never the file's content.
pub(crate) async fn watch_file(app: App, path: PathBuf, every: Duration) {
    let Some(cell) = app.inner.auth_token.as_ref() else {
        return;
    };
    let metrics = app.metrics();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // The first tick is now: the file was just read.
    // The digest of the content last seen, good or bad; the last problem
    // reading the file, so that one that lasts is logged once.
    let mut seen: Option<[u8; 32]> = None;
    let mut problem: Option<String> = None;
    loop {
        ticks.tick().await;
        let reading = path.clone();
        let content = match tokio::task::spawn_blocking(move || read_token_file(&reading)).await {
            Ok(content) => content,
            Err(e) => {
                tracing::warn!(error = %e, "the auth token file re-read failed");
                continue;
            }
        };
        let content = match content {
            Ok(content) => {
                problem = None;
                content
            }
            Err(e) => {
                let text = e.to_string();
                if problem.as_ref() != Some(&text) {
                    tracing::warn!(error = %text, "cannot re-read the auth token file; the token in force stays");
                    metrics.token_reload("unreadable");
                    problem = Some(text);
                }
                continue;
            }
        };
        let digest: [u8; 32] = Sha256::digest(&content).into();
        if seen == Some(digest) {
            continue;
        }
        seen = Some(digest);
        match BearerToken::from_file_content(&path, &content) {
            Ok(token) => {
                if cell.replace(token) {
                    tracing::info!(
                        path = %path.display(),
                        "the auth token file changed: its new token is in force, the previous one is refused"
                    );
                    metrics.token_reload("applied");
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "the auth token file's new content is not a usable token; the token in force stays"
                );
                metrics.token_reload("invalid");
            }
        }
    }
}

/// The bytes of a token file, up to a sane size.
pub(crate) fn read_token_file(path: &Path) -> Result<Vec<u8>, TokenError> {
    use std::io::Read;
    let read = |source| TokenError::Read {
        path: path.to_owned(),
        source,
    };
    let mut content = Vec::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_end(&mut content)
        .map_err(read)?;
    if content.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(TokenError::FileTooLarge {
            path: path.to_owned(),
        });
    }
    Ok(content)
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

/// Refuses requests without the token in force with 401.
pub async fn require_token(State(app): State<App>, request: Request, next: Next) -> Response {
    if let Some(cell) = &app.inner.auth_token {
        let token = cell.get();
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

    /// 35 bytes, distinctive enough to look for in output.
    const TOKEN: &str = "s3cret-Unit-Test-Token-0123456789ab";

    #[test]
    fn only_the_exact_token_is_accepted() {
        let token = BearerToken::new(&format!("{TOKEN}\n")).unwrap();
        assert!(token.accepts(format!("Bearer {TOKEN}").as_bytes()));
        assert!(token.accepts(format!("bearer {TOKEN}").as_bytes()));
        assert!(token.accepts(format!("BEARER  {TOKEN} ").as_bytes()));
        let short = &TOKEN[..TOKEN.len() - 1];
        for bad in [
            format!("Bearer {short}"),
            format!("Bearer {TOKEN}2"),
            "Bearer".to_owned(),
            "Bearer ".to_owned(),
            format!("Basic {TOKEN}"),
            format!("Bearer{TOKEN}"),
            TOKEN.to_owned(),
            String::new(),
        ] {
            assert!(!token.accepts(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn tokens_never_print() {
        let token = BearerToken::new(TOKEN).unwrap();
        assert!(!format!("{token:?}").contains(TOKEN));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        for content in [
            "has space-0123456789-0123456789-0123456789",
            "Short-s3cret",
            "\u{7f}control-0123456789-0123456789-0123456789",
        ] {
            std::fs::write(&path, content).unwrap();
            let err = BearerToken::from_file(&path).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains(content.trim()), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("token"), "{text}");
        }
        let err = BearerToken::new("Short-s3cret").unwrap_err();
        assert!(!format!("{err} {err:?}").contains("s3cret"), "{err}");
    }

    /// Fewer than 32 bytes is not a secret worth the name.
    #[test]
    fn short_tokens_are_refused() {
        let at_least = "a".repeat(MIN_TOKEN_BYTES);
        assert!(BearerToken::new(&at_least).is_ok());
        let err = BearerToken::new(&at_least[1..]).unwrap_err();
        assert!(matches!(err, TokenError::TooShort { len: 31 }), "{err}");
        assert!(err.to_string().contains("at least 32"), "{err}");
        // Whitespace around the token does not count.
        assert!(BearerToken::new(&format!("  {}\n", &at_least[1..])).is_err());
    }

    #[test]
    fn files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "\n").unwrap();
        let err = BearerToken::from_file(&path).unwrap_err();
        assert!(matches!(err, TokenError::EmptyFile { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
        std::fs::write(&path, "short\n").unwrap();
        let err = BearerToken::from_file(&path).unwrap_err();
        assert!(
            matches!(err, TokenError::TooShortInFile { len: 5, .. }),
            "{err}"
        );
        std::fs::write(&path, vec![b'a'; 100_000]).unwrap();
        let err = BearerToken::from_file(&path).unwrap_err();
        assert!(matches!(err, TokenError::FileTooLarge { .. }), "{err}");
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        assert_eq!(
            BearerToken::from_file(&path).unwrap(),
            BearerToken::new(TOKEN).unwrap()
        );
        let missing = dir.path().join("missing");
        let err = BearerToken::from_file(&missing).unwrap_err();
        assert!(matches!(err, TokenError::Read { .. }), "{err}");
    }
}
