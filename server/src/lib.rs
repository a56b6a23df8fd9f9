//! The robot server: the reference `/robots` API of provider-dummy, kept
//! wire-compatible, plus what a production internal API needs (listing,
//! validation, auth, durability, health, metrics, an OpenAPI document).
//!
//! The API is small: bind a listener, build a [`Config`], then [`serve`]
//! it until a shutdown future completes (as tokio's mini-redis does, so
//! tests run the whole server in process on a `127.0.0.1:0` listener);
//! [`router`] gives the HTTP routes alone, for fuzzing.

mod auth;
pub mod cli;
mod deadline;
mod error;
mod metrics;
mod openapi;
mod routes;
mod serve;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use auth::{BearerToken, MIN_TOKEN_BYTES, TokenError};
pub use routes::router;
pub use serve::serve;
pub use store::LoadError;

/// The reference server's time limit for one request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once, unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How often a token file is re-read for a new token.
pub const DEFAULT_TOKEN_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Who may use `/robots` and `/v1/robots`. There is no default: a server
/// is given a token, or told in so many words that it needs none.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Anyone who reaches the port (`--no-auth`): for platforms that
    /// authenticate callers before they reach the server (Cloud Run with
    /// IAM), and for tests.
    None,
    /// `Authorization: Bearer` with this token, fixed for the life of the
    /// server (`ROBOT_SERVER_AUTH_TOKEN`).
    Token(BearerToken),
    /// `Authorization: Bearer` with the token in this file
    /// (`--auth-token-file`), re-read every
    /// [`token_poll_interval`](Config::token_poll_interval): replace the
    /// file (atomically, as a Kubernetes Secret volume does) to rotate.
    TokenFile(PathBuf),
}

/// How the server runs. Where it listens is the caller's: [`serve`]
/// takes a bound listener.
#[derive(Clone, Debug)]
pub struct Config {
    pub auth: Auth,
    /// When set, robots survive restarts in this file.
    pub state_file: Option<PathBuf>,
    /// The longest a request may take, from its first header byte on;
    /// also the longest a write to a client may wait without progress,
    /// and an idle keep-alive connection's wait for its next request.
    pub request_timeout: Duration,
    /// How often an [`Auth::TokenFile`] is re-read.
    pub token_poll_interval: Duration,
    /// Connections served at once; more wait in the listen backlog until
    /// one closes. At least 1.
    pub max_connections: usize,
}

impl Config {
    /// In memory, 10 s per request, with `auth`.
    pub fn new(auth: Auth) -> Self {
        Self {
            auth,
            state_file: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            token_poll_interval: DEFAULT_TOKEN_POLL_INTERVAL,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    State(#[from] LoadError),
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Binding is the caller's; this is the error for it, so that every
    /// caller reports it alike.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the listener has no local address: {0}")]
    Listener(#[source] std::io::Error),
    #[error("the request timeout must be more than zero")]
    ZeroTimeout,
    #[error("the token poll interval must be more than zero")]
    ZeroPollInterval,
    #[error("the connection limit must be at least 1")]
    ZeroMaxConnections,
}

impl Error {
    /// The process exit code for this error: 2 for bad configuration (the
    /// state file is configuration), 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::State(_)
            | Error::Token(_)
            | Error::ZeroTimeout
            | Error::ZeroPollInterval
            | Error::ZeroMaxConnections => 2,
            Error::Bind { .. } | Error::Listener(_) => 1,
        }
    }
}

/// What every request handler shares.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

struct AppInner {
    store: store::Store,
    metrics: metrics::Metrics,
    auth_token: Option<auth::TokenCell>,
    request_timeout: Duration,
    /// Set once shutdown starts, so `/readyz` can tell load balancers.
    draining: AtomicBool,
}

impl App {
    /// Reads the token file and opens the store (reading the state file,
    /// if any) for `config`.
    pub fn new(config: &Config) -> Result<Self, Error> {
        if config.request_timeout.is_zero() {
            return Err(Error::ZeroTimeout);
        }
        if config.token_poll_interval.is_zero() {
            return Err(Error::ZeroPollInterval);
        }
        let auth_token = match &config.auth {
            Auth::None => None,
            Auth::Token(token) => Some(token.clone()),
            Auth::TokenFile(path) => Some(BearerToken::from_file(path)?),
        }
        .map(auth::TokenCell::new);
        let metrics = metrics::Metrics::new();
        let store = store::Store::open(
            config.state_file.as_deref(),
            metrics.state_file_unsynced.clone(),
        )?;
        Ok(Self {
            inner: Arc::new(AppInner {
                store,
                metrics,
                auth_token,
                request_timeout: config.request_timeout,
                draining: AtomicBool::new(false),
            }),
        })
    }

    /// An in-memory server without auth, as the reference runs: for
    /// in-process use of [`router`] (fuzzing).
    pub fn in_memory() -> Self {
        // Cannot fail: no files to read and a non-zero timeout.
        match Self::new(&Config::new(Auth::None)) {
            Ok(app) => app,
            Err(e) => unreachable!("in-memory app failed to build: {e}"),
        }
    }

    fn store(&self) -> &store::Store {
        &self.inner.store
    }

    fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }
}
