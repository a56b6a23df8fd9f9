//! `?jsonKey=K`: the secret is a JSON object (as the AWS console's
//! key/value secrets are) and the wanted value is the string under `K`.
//! Wraps any source; its errors say what is wrong with the shape and never
//! quote the JSON (serde's messages would).

use super::{FetchFuture, Fetched, SecretBytes, SecretSource, SourceError};

#[derive(Debug)]
pub struct JsonKeySource {
    inner: Box<dyn SecretSource>,
    key: String,
}

impl JsonKeySource {
    pub fn new(inner: Box<dyn SecretSource>, key: &str) -> Self {
        Self {
            inner,
            key: key.to_owned(),
        }
    }
}

impl SecretSource for JsonKeySource {
    fn uri(&self) -> &str {
        self.inner.uri()
    }

    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let fetched = self.inner.fetch().await?;
            Ok(Fetched {
                bytes: extract(&fetched.bytes, &self.key, self.uri())?,
                version: fetched.version,
            })
        })
    }
}

/// The string under `key` in the JSON object `bytes`.
pub fn extract(bytes: &SecretBytes, key: &str, uri: &str) -> Result<SecretBytes, SourceError> {
    let invalid = |detail: String| SourceError::Invalid {
        source_uri: uri.to_owned(),
        detail,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes.expose()).map_err(|_| {
        invalid(format!(
            "the secret is not JSON, but jsonKey={key} needs a JSON object"
        ))
    })?;
    let serde_json::Value::Object(mut object) = value else {
        return Err(invalid(format!(
            "the secret is JSON but not an object ({}), but jsonKey={key} needs one",
            kind(&value)
        )));
    };
    match object.remove(key) {
        None => Err(invalid(format!(
            "the secret's JSON object has no key {key:?} (jsonKey)"
        ))),
        Some(serde_json::Value::String(text)) => {
            if text.trim().is_empty() {
                return Err(SourceError::Empty {
                    source_uri: uri.to_owned(),
                });
            }
            Ok(SecretBytes::new(text.into_bytes()))
        }
        Some(other) => Err(invalid(format!(
            "the value under {key:?} is {}, not a string",
            kind(&other)
        ))),
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "tok-JSONKEY-5ecret";

    fn run(json: &str) -> Result<SecretBytes, SourceError> {
        extract(
            &SecretBytes::new(json.as_bytes().to_vec()),
            "kubeconfig",
            "src://x",
        )
    }

    #[test]
    fn takes_the_string_under_the_key() {
        let got = run(&format!(r#"{{"kubeconfig": "{SECRET}", "other": 1}}"#)).unwrap();
        assert_eq!(got.expose(), SECRET.as_bytes());
    }

    #[test]
    fn wrong_shapes_get_clear_errors_without_content() {
        for (json, needle) in [
            (
                format!("{SECRET} not json"),
                "is not JSON, but jsonKey=kubeconfig needs a JSON object",
            ),
            (format!(r#"["{SECRET}"]"#), "not an object (an array)"),
            (format!(r#""{SECRET}""#), "not an object (a string)"),
            (
                format!(r#"{{"other": "{SECRET}"}}"#),
                "has no key \"kubeconfig\"",
            ),
            (
                format!(r#"{{"kubeconfig": ["{SECRET}"]}}"#),
                "is an array, not a string",
            ),
            (
                r#"{"kubeconfig": 12}"#.to_owned(),
                "is a number, not a string",
            ),
            (r#"{"kubeconfig": " "}"#.to_owned(), "is empty"),
        ] {
            let e = run(&json).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(shown.contains(needle), "{json}: {shown}");
            assert!(shown.starts_with("src://x: "), "{shown}");
            assert!(!shown.contains(SECRET), "leaks: {shown}");
        }
    }
}
