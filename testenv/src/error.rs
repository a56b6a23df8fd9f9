//! What can go wrong starting or driving the environment.

use std::path::Path;
use std::time::Duration;

/// Every failure names the component and, for a process that died, the end
/// of its log, so a red test says why without a second run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("control plane binaries: {0}")]
    Binaries(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} is not installed: {hint}")]
    MissingTool {
        tool: &'static str,
        hint: &'static str,
    },
    #[error("{what} did not start: {detail}")]
    Start { what: String, detail: String },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("CRDs: {0}")]
    Crds(String),
    #[error("certificates: {0}")]
    Pki(String),
    #[error("network namespace: {0}")]
    Netns(String),
    #[error("building {package}: {detail}")]
    Build { package: String, detail: String },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn path(path: &Path, source: std::io::Error) -> Self {
        Error::io(path.display().to_string(), source)
    }

    pub(crate) fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            what: what.into(),
            source,
        }
    }

    /// Whether a process failed because another one took its port between
    /// our probe and its bind; the caller picks new ports and tries again.
    pub(crate) fn is_port_conflict(&self) -> bool {
        // Go says "address already in use", Rust "Address already in use".
        matches!(self, Error::Start { detail, .. }
            if detail.to_ascii_lowercase().contains("address already in use"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_conflicts_are_recognised_in_go_and_rust_wording() {
        let start = |detail: &str| Error::Start {
            what: "x".into(),
            detail: detail.into(),
        };
        assert!(start("listen tcp 127.0.0.1:1: bind: address already in use").is_port_conflict());
        assert!(start("Address already in use (os error 98)").is_port_conflict());
        assert!(!start("permission denied").is_port_conflict());
        assert!(!Error::Crds("address already in use".into()).is_port_conflict());
    }
}
