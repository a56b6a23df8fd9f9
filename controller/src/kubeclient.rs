//! The connection to the control plane, kept alive across credential
//! rotation.
//!
//! Everything in the process holds one `kube::Client` whose transport
//! delegates to the current *inner* client. When the kubeconfig changes
//! (periodic re-read, or at once after a 401), a new inner client is built
//! and swapped in: watches and queued work carry on, and the next request
//! (including a watch's reconnect) uses the new credentials.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::kubeconfig::{self, KubeconfigError};
use crate::source::{self, SecretSource, SourceError};
use crate::telemetry::{Health, Metrics, RequestLabels};

/// Where the kubeconfig comes from.
#[derive(Debug)]
pub enum KubeconfigSource {
    /// Bytes from a [`SecretSource`], re-read to pick up rotation.
    Secret(Box<dyn SecretSource>),
    /// The service account of the pod this runs in.
    InCluster,
    /// As kubectl: `KUBECONFIG`, `~/.kube/config`, then in-cluster.
    Default,
}

impl KubeconfigSource {
    pub fn parse(uri: Option<&str>) -> Result<Self, SourceError> {
        match uri.map(str::trim) {
            None | Some("") => Ok(Self::Default),
            Some("in-cluster") => Ok(Self::InCluster),
            Some(uri) => source::parse(uri).map(Self::Secret),
        }
    }

    pub fn describe(&self) -> &str {
        match self {
            Self::Secret(s) => s.uri(),
            Self::InCluster => "in-cluster",
            Self::Default => "KUBECONFIG or ~/.kube/config",
        }
    }
}

/// Why the kubeconfig could not be turned into a client.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    #[error("{source_uri}: {detail}")]
    Other { source_uri: String, detail: String },
}

impl LoadError {
    /// Whether a later retry may succeed without a human.
    pub fn is_transient(&self) -> bool {
        matches!(self, LoadError::Source(e) if e.is_transient())
    }
}

/// The shared connection to the control plane.
pub struct ControlPlane {
    source: KubeconfigSource,
    client: kube::Client,
    current: Arc<RwLock<kube::Client>>,
    fingerprint: Mutex<Option<u64>>,
    unauthorized: Arc<Notify>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl ControlPlane {
    /// Reads the kubeconfig once and builds the client. Errors here are
    /// configuration errors: the caller exits with status 2.
    pub async fn connect(
        source: KubeconfigSource,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Arc<Self>, LoadError> {
        let (config, fingerprint) = load(&source).await?;
        let default_ns = config.default_namespace.clone();
        let inner = build(&source, config)?;
        let current = Arc::new(RwLock::new(inner));
        let unauthorized = Arc::new(Notify::new());
        let transport = Rotating {
            current: current.clone(),
            unauthorized: unauthorized.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            source: source.describe().to_owned(),
        };
        Ok(Arc::new(Self {
            client: kube::Client::new(transport, default_ns),
            source,
            current,
            fingerprint: Mutex::new(fingerprint),
            unauthorized,
            metrics,
            health,
        }))
    }

    /// The client to use for everything; it survives rotation.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    pub fn source(&self) -> &str {
        self.source.describe()
    }

    /// Re-reads the kubeconfig; rebuilds the inner client if it changed (or
    /// `force`). Returns whether the client was rebuilt.
    pub async fn refresh(&self, force: bool) -> Result<bool, LoadError> {
        let (config, fingerprint) = load(&self.source).await?;
        {
            let old = self.fingerprint.lock().unwrap_or_else(|p| p.into_inner());
            if !force && fingerprint.is_some() && *old == fingerprint {
                return Ok(false);
            }
        }
        let inner = build(&self.source, config)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = inner;
        *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = fingerprint;
        self.metrics.kubeconfig_reloads.inc();
        Ok(true)
    }

    /// Re-reads the kubeconfig every `interval`, and soon after a 401 (at
    /// most once per backoff step while 401s persist), until `stop`.
    pub async fn keep_fresh(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut backoff = Duration::from_secs(1);
        let mut last_forced: Option<Instant> = None;
        loop {
            let after_401 = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => false,
                _ = self.unauthorized.notified() => true,
            };
            if after_401 {
                // Throttle: a storm of 401s must not become a storm of reads.
                if let Some(t) = last_forced {
                    let wait = backoff.saturating_sub(t.elapsed());
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                last_forced = Some(Instant::now());
                backoff = (backoff * 2).min(Duration::from_secs(60));
            } else {
                backoff = Duration::from_secs(1);
            }
            match self.refresh(after_401).await {
                Ok(true) => {
                    tracing::info!(
                        source = self.source(),
                        after_401,
                        "kubeconfig reloaded; control-plane client rebuilt"
                    );
                    self.health.set("kubeconfig", None);
                }
                Ok(false) => self.health.set("kubeconfig", None),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reload the kubeconfig; keeping the current client");
                    self.health.set("kubeconfig", Some(e.to_string()));
                }
            }
        }
    }
}

async fn load(source: &KubeconfigSource) -> Result<(kube::Config, Option<u64>), LoadError> {
    match source {
        KubeconfigSource::Secret(s) => {
            let fetched = s.fetch().await?;
            let mut h = std::collections::hash_map::DefaultHasher::new();
            fetched.bytes.expose().hash(&mut h);
            let config = kubeconfig::parse(&fetched.bytes, s.uri()).await?;
            Ok((config, Some(h.finish())))
        }
        KubeconfigSource::InCluster => {
            kube::Config::incluster()
                .map(|c| (c, None))
                .map_err(|e| LoadError::Other {
                    source_uri: "in-cluster".into(),
                    detail: e.to_string(),
                })
        }
        KubeconfigSource::Default => {
            kube::Config::infer()
                .await
                .map(|c| (c, None))
                .map_err(|e| LoadError::Other {
                    source_uri: source.describe().into(),
                    detail: e.to_string(),
                })
        }
    }
}

fn build(source: &KubeconfigSource, config: kube::Config) -> Result<kube::Client, LoadError> {
    kube::Client::try_from(config).map_err(|e| LoadError::Other {
        source_uri: source.describe().into(),
        detail: format!("cannot build a client from the kubeconfig: {e}"),
    })
}

/// The transport of the shared client: forwards to the current inner
/// client, counts requests, and reports 401s.
#[derive(Clone)]
struct Rotating {
    current: Arc<RwLock<kube::Client>>,
    unauthorized: Arc<Notify>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    source: String,
}

impl tower::Service<Request<Body>> for Rotating {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let client = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let this = self.clone();
        let verb = verb(&req);
        Box::pin(async move {
            let result = client.send(req).await;
            let code = match &result {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            };
            this.metrics
                .kube_requests
                .get_or_create(&RequestLabels { verb, code })
                .inc();
            if let Ok(r) = &result {
                if r.status() == StatusCode::UNAUTHORIZED {
                    this.metrics.kube_auth_failures.inc();
                    this.metrics.credentials_ok.set(0);
                    this.health.set(
                        "credentials",
                        Some(format!(
                            "the control plane refuses the credentials from {} (401 Unauthorized); re-reading them",
                            this.source
                        )),
                    );
                    this.unauthorized.notify_one();
                } else if r.status().is_success() {
                    this.metrics.credentials_ok.set(1);
                    this.health.set("credentials", None);
                }
            }
            result
        })
    }
}

/// The Kubernetes verb of a request, for metrics: watches and lists are
/// both GETs on the wire but cost very differently.
fn verb(req: &Request<Body>) -> String {
    let query = req.uri().query().unwrap_or_default();
    match *req.method() {
        http::Method::GET if query.contains("watch=true") || query.contains("watch=1") => {
            "watch".into()
        }
        http::Method::GET => "get".into(),
        ref m => m.as_str().to_ascii_lowercase(),
    }
}
