//! A real control plane on loopback, for tests and the demo.

pub mod binaries;

/// What can go wrong starting the environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("control plane binaries: {0}")]
    Binaries(String),
    #[error("{0}")]
    Io(String),
}
