//! A secret in a file: a mounted Kubernetes Secret or Cloud Run secret
//! volume, which the platform rewrites in place when the secret rotates.

use std::path::PathBuf;

use super::{FetchFuture, Fetched, SecretSource, SourceError};

#[derive(Debug)]
pub struct FileSource {
    uri: String,
    path: PathBuf,
}

impl FileSource {
    /// `uri` is how the user wrote it (a path or `file://` URI), for messages.
    pub fn new(uri: &str, path: &str) -> Self {
        Self {
            uri: uri.to_owned(),
            path: PathBuf::from(path),
        }
    }
}

impl SecretSource for FileSource {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let uri = || self.uri.clone();
            let bytes = tokio::fs::read(&self.path)
                .await
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => SourceError::not_found(&uri()),
                    std::io::ErrorKind::PermissionDenied => SourceError::PermissionDenied {
                        source_uri: uri(),
                        detail: "the file is not readable by this process".into(),
                    },
                    _ => SourceError::Unavailable {
                        source_uri: uri(),
                        detail: e.kind().to_string(),
                    },
                })?;
            let version = tokio::fs::metadata(&self.path)
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .map(|t| format!("{t:?}"));
            Fetched::non_empty(bytes, version, &self.uri)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_files_and_names_them_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kc");
        std::fs::write(&path, "secret-content").unwrap();
        let p = path.to_str().unwrap();
        let src = FileSource::new(p, p);
        assert_eq!(src.fetch().await.unwrap().bytes.expose(), b"secret-content");

        std::fs::write(&path, "  \n").unwrap();
        let e = src.fetch().await.unwrap_err();
        assert!(matches!(e, SourceError::Empty { .. }), "{e}");

        let missing = FileSource::new("/nonexistent/kc", "/nonexistent/kc");
        let e = missing.fetch().await.unwrap_err().to_string();
        assert_eq!(e, "/nonexistent/kc: the secret does not exist");
    }
}
