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

use crate::credentials::{CachedToken, TokenSource};
use crate::kubeconfig::{self, Credential, KubeconfigError, Permissions};
use crate::source::{self, SecretSource, SourceError};
use crate::telemetry::{Check, Health, Metrics, RequestLabels};

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

/// What the client is built with besides the kubeconfig.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// What a kubeconfig from a secret may ask for (`--insecure-...`).
    pub permissions: Permissions,
    /// Where the Upbound token for an `up` plugin kubeconfig comes from.
    pub upbound_token_source: Option<String>,
    pub upbound_auth_endpoint: String,
    /// How often secrets are read again.
    pub refresh_interval: Duration,
    /// Timeout of each request (watches excepted).
    pub request_timeout: Duration,
    /// Timeout of each write; shorter under leader election, so that a
    /// leader that stepped down has no write left in flight when the
    /// Lease can expire.
    pub write_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            permissions: Permissions::default(),
            upbound_token_source: None,
            upbound_auth_endpoint: crate::credentials::upbound::DEFAULT_ENDPOINT.into(),
            refresh_interval: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// The client of the moment and the token it adds, swapped together.
#[derive(Clone)]
struct Inner {
    client: kube::Client,
    token: Option<Arc<CachedToken>>,
}

/// The shared connection to the control plane.
pub struct ControlPlane {
    source: KubeconfigSource,
    options: ConnectOptions,
    client: kube::Client,
    current: Arc<RwLock<Inner>>,
    fingerprint: Mutex<Option<u64>>,
    unauthorized: Arc<Notify>,
    /// How many times the inner client was rebuilt.
    rebuilt: tokio::sync::watch::Sender<u64>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl ControlPlane {
    /// Reads the kubeconfig once and builds the client. Errors here are
    /// configuration errors (exit 2), or transient ones of the source
    /// ([`LoadError::is_transient`]) the caller may retry.
    pub async fn connect(
        source: KubeconfigSource,
        options: ConnectOptions,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Arc<Self>, LoadError> {
        let (parsed, fingerprint) = load(&source, &options).await?;
        let default_ns = parsed.config.default_namespace.clone();
        let inner = build(&source, &options, parsed)?;
        tracing::info!(
            credentials = inner
                .token
                .as_ref()
                .map_or("the kubeconfig's own credentials", |t| t.what()),
            "control-plane client ready"
        );
        let current = Arc::new(RwLock::new(inner));
        let unauthorized = Arc::new(Notify::new());
        let transport = Rotating {
            current: current.clone(),
            unauthorized: unauthorized.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            source: source.describe().to_owned(),
            request_timeout: options.request_timeout,
            write_timeout: options.write_timeout,
        };
        Ok(Arc::new(Self {
            client: kube::Client::new(transport, default_ns),
            source,
            options,
            current,
            fingerprint: Mutex::new(fingerprint),
            unauthorized,
            rebuilt: tokio::sync::watch::Sender::new(0),
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

    /// Changes each time the inner client is rebuilt (new credentials).
    pub fn rebuilds(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rebuilt.subscribe()
    }

    /// Re-reads the kubeconfig; rebuilds the inner client if it changed (or
    /// `force`). Returns whether the client was rebuilt. A kubeconfig that
    /// cannot be used changes nothing: the current client goes on.
    pub async fn refresh(&self, force: bool) -> Result<bool, LoadError> {
        let (parsed, fingerprint) = match load(&self.source, &self.options).await {
            Ok(l) => l,
            Err(e) => {
                self.metrics.kubeconfig_reload_failures.inc();
                self.metrics.kubeconfig_rejected.set(1);
                return Err(e);
            }
        };
        {
            let old = self.fingerprint.lock().unwrap_or_else(|p| p.into_inner());
            if !force && fingerprint.is_some() && *old == fingerprint {
                self.metrics.kubeconfig_rejected.set(0);
                return Ok(false);
            }
        }
        let inner = build(&self.source, &self.options, parsed).inspect_err(|_| {
            self.metrics.kubeconfig_reload_failures.inc();
            self.metrics.kubeconfig_rejected.set(1);
        })?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = inner;
        *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = fingerprint;
        self.metrics.kubeconfig_rejected.set(0);
        self.metrics.kubeconfig_reloads.inc();
        self.rebuilt.send_modify(|n| *n += 1);
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
                    self.health.set(Check::Kubeconfig, None);
                }
                Ok(false) => self.health.set(Check::Kubeconfig, None),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot use the kubeconfig read now; keeping the last good client");
                    self.health.set(
                        Check::Kubeconfig,
                        Some(format!("{e} (the last good kubeconfig is still in use)")),
                    );
                }
            }
        }
    }
}

/// A fingerprint of what a resolved configuration connects with.
fn fingerprint(config: &kube::Config) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    config.cluster_url.to_string().hash(&mut h);
    config.root_cert.hash(&mut h);
    config.accept_invalid_certs.hash(&mut h);
    config
        .proxy_url
        .as_ref()
        .map(ToString::to_string)
        .hash(&mut h);
    config.tls_server_name.hash(&mut h);
    // The credentials (a token, a token file's path, a client key) as
    // serialized, hashed only.
    serde_json::to_vec(&config.auth_info).ok()?.hash(&mut h);
    Some(h.finish())
}

async fn load(
    source: &KubeconfigSource,
    options: &ConnectOptions,
) -> Result<(kubeconfig::Parsed, Option<u64>), LoadError> {
    let parsed = match source {
        KubeconfigSource::Secret(s) => {
            let fetched = s.fetch().await?;
            kubeconfig::parse(&fetched.bytes, s.uri(), Some(options.permissions)).await?
        }
        // The operator's own: exec plugins and files as kubectl has them.
        KubeconfigSource::InCluster => kubeconfig::Parsed {
            config: kube::Config::incluster().map_err(|e| LoadError::Other {
                source_uri: "in-cluster".into(),
                detail: e.to_string(),
            })?,
            credential: Credential::AsWritten,
        },
        KubeconfigSource::Default => kubeconfig::Parsed {
            config: kube::Config::infer().await.map_err(|_| LoadError::Other {
                source_uri: source.describe().into(),
                detail: "no kubeconfig (KUBECONFIG, ~/.kube/config) and not in a cluster".into(),
            })?,
            credential: Credential::AsWritten,
        },
    };
    let fingerprint = fingerprint(&parsed.config).map(|f| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (f, &parsed.credential).hash(&mut h);
        h.finish()
    });
    Ok((parsed, fingerprint))
}

fn build(
    source: &KubeconfigSource,
    options: &ConnectOptions,
    parsed: kubeconfig::Parsed,
) -> Result<Inner, LoadError> {
    let other = |detail: String| LoadError::Other {
        source_uri: source.describe().into(),
        detail,
    };
    let kubeconfig::Parsed {
        mut config,
        credential,
    } = parsed;
    // Refusals for load are retried by `Rotating`, with jitter (see there).
    config.default_retry = false;
    // A watch the apiserver ends every minute, so that a silent connection
    // (black-holed) is noticed in about one.
    config.read_timeout = Some(WATCH_READ_TIMEOUT);
    let token = match &credential {
        Credential::AsWritten => None,
        native => {
            // The token is ours to add; nothing of the kubeconfig's user runs.
            config.auth_info = kube::config::AuthInfo::default();
            Some(Arc::new(native_token(native, options).map_err(other)?))
        }
    };
    let client = kube::Client::try_from(config).map_err(|e| other(build_error(&e)))?;
    Ok(Inner { client, token })
}

/// The token source of a natively done credential.
fn native_token(credential: &Credential, options: &ConnectOptions) -> Result<CachedToken, String> {
    let source: Box<dyn TokenSource> = match credential {
        Credential::AsWritten => return Err("no native credential".into()),
        Credential::Upbound { organization } => {
            let Some(uri) = &options.upbound_token_source else {
                return Err(format!(
                    "the kubeconfig authenticates with `up organization token` (Upbound Cloud, \
                     organization {organization:?}): set --upbound-token-source \
                     (ROBOT_CONTROLLER_UPBOUND_TOKEN_SOURCE) to where the Upbound robot token is \
                     kept; the controller exchanges it itself, no `up` binary needed"
                ));
            };
            let token_source =
                crate::source::parse(uri).map_err(|e| format!("--upbound-token-source: {e}"))?;
            Box::new(crate::credentials::upbound::UpboundExchange::new(
                &options.upbound_auth_endpoint,
                organization,
                token_source,
                options.refresh_interval,
            )?)
        }
        Credential::Eks {
            cluster,
            region,
            profile,
        } => Box::new(crate::credentials::eks::EksTokens::new(
            cluster,
            region.clone(),
            profile.clone(),
        )),
        Credential::Gke => Box::new(crate::credentials::gke::GkeTokens::default()),
    };
    Ok(CachedToken::new(source))
}

/// Our message for a client that cannot be built: kube's own may quote an
/// exec plugin's command line, its environment or its output (a token).
fn build_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Auth(_) => {
            "cannot build a client: the kubeconfig's credentials cannot be used (an exec plugin, \
             auth provider or credential file failed, or a field is invalid)"
                .into()
        }
        _ => "cannot build a client from the kubeconfig (its TLS or server settings are invalid)"
            .into(),
    }
}

/// How long each watch asks the apiserver to last (`timeoutSeconds`).
pub const WATCH_SECONDS: u32 = 30;

/// How long a connection may be silent before it is dropped: past the
/// apiserver's own end of each watch. A watch on a connection that died
/// without a reset (a NAT or load balancer that forgot it) is noticed and
/// replaced in this long, not in kube's default of 290 s (client-go
/// notices in about 45 s too, with HTTP/2 pings). The cost: each watch is
/// resumed twice a minute, a request with no relist.
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(WATCH_SECONDS as u64 + 15);

/// The transport of the shared client: forwards to the current inner
/// client (adding its token), bounds each request, counts requests, and
/// reports 401s.
#[derive(Clone)]
struct Rotating {
    current: Arc<RwLock<Inner>>,
    unauthorized: Arc<Notify>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    source: String,
    request_timeout: Duration,
    write_timeout: Duration,
}

/// A kube error with our own, fixed message.
fn fixed(message: String) -> kube::Error {
    kube::Error::Service(message.into())
}

impl Rotating {
    /// Sends `req` with `inner`'s credentials, within the request's timeout.
    async fn send_once(
        &self,
        inner: &Inner,
        mut req: Request<Body>,
        verb: &str,
    ) -> Result<(Response<Body>, Option<http::HeaderValue>), kube::Error> {
        let header = match &inner.token {
            Some(t) => match t.header().await {
                Ok(h) => {
                    req.headers_mut()
                        .insert(http::header::AUTHORIZATION, h.clone());
                    Some(h)
                }
                Err(e) => {
                    self.metrics.credentials_ok.set(0);
                    self.health.set(Check::Credentials, Some(e.to_string()));
                    return Err(fixed(e.to_string()));
                }
            },
            None => None,
        };
        let timeout = match verb {
            "watch" => None,
            "get" | "list" => Some(self.request_timeout),
            _ => Some(self.write_timeout),
        };
        let sent = inner.client.send(req);
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, sent).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(fixed(format!(
                        "the control plane did not answer within {}",
                        humantime::format_duration(t)
                    )));
                }
            },
            None => sent.await,
        };
        match result {
            Ok(r) => Ok((r, header)),
            // kube's auth errors may quote an exec plugin's output.
            Err(kube::Error::Auth(_)) => Err(fixed(
                "the kubeconfig's credentials failed (an exec plugin, auth provider or token file)"
                    .into(),
            )),
            Err(e) => Err(e),
        }
    }
}

impl tower::Service<Request<Body>> for Rotating {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let this = self.clone();
        let verb = verb(&req);
        Box::pin(async move {
            let mut req = req;
            let mut attempt = 0;
            let mut refused_once = false;
            let result = loop {
                let again = (attempt < MAX_LOAD_RETRIES)
                    .then(|| clone_request(&req))
                    .flatten();
                let result = this.send_once(&inner, req, &verb).await;
                let code = match &result {
                    Ok((r, _)) => r.status().as_u16().to_string(),
                    Err(_) => "error".to_owned(),
                };
                this.metrics
                    .kube_requests
                    .get_or_create(&RequestLabels {
                        verb: verb.clone(),
                        code,
                    })
                    .inc();
                match (result, again) {
                    (Ok((r, _)), Some(next)) if refused_for_load(r.status()) => {
                        tokio::time::sleep(load_retry_delay(attempt, retry_after(&r))).await;
                        attempt += 1;
                        req = next;
                    }
                    // A token of ours refused: it may have been revoked
                    // early. Drop it and try once more with a new one.
                    (Ok((r, Some(header))), Some(next))
                        if r.status() == StatusCode::UNAUTHORIZED && !refused_once =>
                    {
                        if let Some(t) = &inner.token {
                            t.refused(&header);
                        }
                        refused_once = true;
                        attempt += 1;
                        req = next;
                    }
                    (result, _) => break result.map(|(r, _)| r),
                }
            };
            if let Ok(r) = &result {
                if r.status() == StatusCode::UNAUTHORIZED {
                    this.metrics.kube_auth_failures.inc();
                    this.metrics.credentials_ok.set(0);
                    this.health.set(
                        Check::Credentials,
                        Some(format!(
                            "the control plane refuses the credentials from {} (401 Unauthorized); re-reading them",
                            this.source
                        )),
                    );
                    this.unauthorized.notify_one();
                } else if r.status().is_success() {
                    this.metrics.credentials_ok.set(1);
                    this.health.set(Check::Credentials, None);
                }
            }
            result
        })
    }
}

/// Attempts after the first at a request the control plane refuses for
/// load (429 from API Priority and Fairness, 503, 504).
const MAX_LOAD_RETRIES: u32 = 10;

fn refused_for_load(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// The server's `Retry-After`, in seconds.
fn retry_after(response: &Response<Body>) -> Option<Duration> {
    let secs: u64 = response
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

/// How long to wait before attempt `attempt + 1`: at least what the server
/// asks and an exponential step (100 ms doubling, up to 10 s), plus up to
/// as much again at random. kube's own retry waits exactly `Retry-After`,
/// so requests refused together all come back together and are refused
/// together again: with 64 reconciles against a small priority level,
/// throughput fell to a few requests a second (fault test: 429s).
fn load_retry_delay(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let step = Duration::from_millis(100)
        .saturating_mul(1u32 << attempt.min(7))
        .min(Duration::from_secs(10));
    let floor = retry_after.unwrap_or_default().max(step);
    floor + floor.mul_f64(rand::random::<f64>())
}

/// A copy of `req` to send again, when its body can be replayed.
fn clone_request(req: &Request<Body>) -> Option<Request<Body>> {
    let body = req.body().try_clone()?;
    let mut copy = Request::builder()
        .method(req.method().clone())
        .uri(req.uri().clone())
        .version(req.version())
        .body(body)
        .ok()?;
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    Some(copy)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(server: &str, token: &str) -> kube::Config {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: k, cluster: {{server: '{server}'}}}}]\n\
             users: [{{name: u, user: {{token: {token}}}}}]\n\
             contexts: [{{name: c, context: {{cluster: k, user: u}}}}]\n"
        );
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        futures::executor::block_on(kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        ))
        .unwrap()
    }

    /// The in-cluster and default sources have no secret version to
    /// compare: an unchanged resolved config must not rebuild the client
    /// (and relist every watch) at each refresh, a changed one must.
    #[test]
    fn a_resolved_config_is_fingerprinted_by_what_it_connects_with() {
        let a = fingerprint(&config("https://cp.example:6443", "t-one")).unwrap();
        assert_eq!(
            fingerprint(&config("https://cp.example:6443", "t-one")),
            Some(a)
        );
        assert_ne!(
            fingerprint(&config("https://cp.example:6443", "t-two")),
            Some(a),
            "a rotated token"
        );
        assert_ne!(
            fingerprint(&config("https://cp2.example:6443", "t-one")),
            Some(a),
            "another control plane"
        );
    }

    #[test]
    fn load_retries_wait_at_least_what_is_asked_and_spread_out() {
        let delays: Vec<Duration> = (0..200)
            .map(|_| load_retry_delay(0, Some(Duration::from_secs(1))))
            .collect();
        assert!(delays.iter().all(|d| *d >= Duration::from_secs(1)));
        assert!(delays.iter().all(|d| *d < Duration::from_secs(2)));
        // Requests refused together come back spread over a second, not at once.
        let early = delays.iter().filter(|d| **d < Duration::from_millis(1500));
        let count = early.count();
        assert!(
            (40..160).contains(&count),
            "{count} of 200 in the first half"
        );
        // Without Retry-After: exponential steps, capped.
        assert!(load_retry_delay(0, None) >= Duration::from_millis(100));
        assert!(load_retry_delay(3, None) >= Duration::from_millis(800));
        assert!(load_retry_delay(30, None) < Duration::from_secs(20));
    }

    #[test]
    fn requests_are_cloned_whole() {
        let req = Request::builder()
            .method("PATCH")
            .uri("/apis/x/v1/robots/r?fieldManager=m")
            .header("content-type", "application/merge-patch+json")
            .body(Body::from(b"{\"a\":1}".to_vec()))
            .unwrap();
        let copy = clone_request(&req).expect("a replayable body");
        assert_eq!(copy.method(), req.method());
        assert_eq!(copy.uri(), req.uri());
        assert_eq!(copy.headers(), req.headers());
        assert!(refused_for_load(StatusCode::TOO_MANY_REQUESTS));
        assert!(!refused_for_load(StatusCode::INTERNAL_SERVER_ERROR));
    }
}
