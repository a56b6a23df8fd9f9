//! Bearer tokens and the apiserver's static token file.

use std::fmt;
use std::path::Path;

use base64::Engine;

use crate::Error;

/// A bearer token. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token(String);

impl Token {
    /// 32 random bytes, base64url: no comma, quote or newline, so it is a
    /// valid token-file field.
    pub(crate) fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::io("generating a token", std::io::Error::other(e.to_string())))?;
        Ok(Self(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        ))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// One line of `--token-auth-file`: `token,user,uid,"group1,group2"`.
pub(crate) struct TokenUser<'a> {
    pub token: &'a Token,
    pub user: &'a str,
    pub groups: &'a [&'a str],
}

/// Writes the token file, readable by the owner only.
pub(crate) fn write_token_file(path: &Path, users: &[TokenUser<'_>]) -> Result<(), Error> {
    let mut csv = String::new();
    for u in users {
        csv.push_str(&format!("{},{},{}", u.token.expose(), u.user, u.user));
        // An empty quoted field would be read as one group named "".
        if !u.groups.is_empty() {
            csv.push_str(&format!(",\"{}\"", u.groups.join(",")));
        }
        csv.push('\n');
    }
    crate::workspace::write_private(path, csv.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_hidden_from_debug() {
        let a = Token::generate().expect("token");
        let b = Token::generate().expect("token");
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn token_file_lines_have_the_apiserver_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.csv");
        let t = Token::generate().expect("token");
        write_token_file(
            &path,
            &[
                TokenUser {
                    token: &t,
                    user: "admin",
                    groups: &["system:masters", "other"],
                },
                TokenUser {
                    token: &t,
                    user: "plain",
                    groups: &[],
                },
            ],
        )
        .expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let token = t.expose();
        assert_eq!(
            text,
            format!("{token},admin,admin,\"system:masters,other\"\n{token},plain,plain\n")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
