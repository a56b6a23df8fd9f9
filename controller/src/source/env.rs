//! A secret in an environment variable, as ECS (`secrets` in a task
//! definition) and Cloud Run (`--set-secrets`) inject them. It cannot
//! change while the process runs; rotation there means a new task.

use super::{FetchFuture, Fetched, SecretSource, SourceError};

#[derive(Debug)]
pub struct EnvSource {
    uri: String,
    var: String,
}

impl EnvSource {
    pub fn new(var: &str) -> Self {
        Self {
            uri: format!("env:{var}"),
            var: var.to_owned(),
        }
    }
}

impl SecretSource for EnvSource {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            match std::env::var_os(&self.var) {
                None => Err(SourceError::not_found(&self.uri)),
                Some(v) => Fetched::non_empty(v.into_encoded_bytes(), None, &self.uri),
            }
        })
    }
}
