//! Logs, metrics and the health endpoints.
//!
//! Logs are set up by `robot-logging`, as the server's. Metrics are
//! Prometheus text on `/metrics`; `/healthz` says the process is alive,
//! `/readyz` that it is doing its job (watches synced, credentials good).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: String,
    pub result: String,
    /// Why a reconcile failed (an event reason, a handful of values);
    /// empty otherwise.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `Robot.iam.dummy.crossplane.io`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub code: String,
}

/// Everything the controller counts.
pub struct Metrics {
    registry: Registry,
    /// Crossplane's own managed-resource metrics, unprefixed.
    pub managed: Arc<crate::managed::metrics::MrMetrics>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_seconds: Family<ReconcileLabels, Histogram>,
    /// Requests to the control plane, by HTTP verb and status code.
    pub kube_requests: Family<RequestLabels, Counter>,
    pub kubeconfig_reloads: Counter,
    /// Kubeconfigs read (at a refresh) that could not be used.
    pub kubeconfig_reload_failures: Counter,
    /// 1 while the newest kubeconfig read is refused (the last good one
    /// stays in use).
    pub kubeconfig_rejected: Gauge,
    pub kube_auth_failures: Counter,
    /// 1 while the control plane accepts our credentials.
    pub credentials_ok: Gauge,
    pub leader: Gauge,
    pub managed_resources: Family<KindLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let managed = Arc::new(crate::managed::metrics::MrMetrics::default());
        managed.register(&mut root);
        let registry = root.sub_registry_with_prefix("robot_controller");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_seconds = Family::<ReconcileLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let kube_requests = Family::<RequestLabels, Counter>::default();
        let kubeconfig_reloads = Counter::default();
        let kubeconfig_reload_failures = Counter::default();
        let kubeconfig_rejected = Gauge::default();
        let kube_auth_failures = Counter::default();
        let credentials_ok = Gauge::default();
        let leader = Gauge::default();
        let managed_resources = Family::<KindLabels, Gauge>::default();
        registry.register(
            "reconciles",
            "Reconciles by kind and result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_seconds.clone(),
        );
        registry.register(
            "kube_requests",
            "Requests to the control plane by verb and status code",
            kube_requests.clone(),
        );
        registry.register(
            "kubeconfig_reloads",
            "Times the kubeconfig changed and the client was rebuilt",
            kubeconfig_reloads.clone(),
        );
        registry.register(
            "kubeconfig_reload_failures",
            "Kubeconfigs read again that could not be used (the last good one stays)",
            kubeconfig_reload_failures.clone(),
        );
        registry.register(
            "kubeconfig_rejected",
            "1 while the newest kubeconfig read is refused and the last good one is in use",
            kubeconfig_rejected.clone(),
        );
        registry.register(
            "kube_auth_failures",
            "Control-plane answers of 401 Unauthorized",
            kube_auth_failures.clone(),
        );
        registry.register(
            "credentials_ok",
            "1 while the control plane accepts the controller's credentials",
            credentials_ok.clone(),
        );
        registry.register(
            "leader",
            "1 while this instance holds the leader lease",
            leader.clone(),
        );
        registry.register(
            "managed_resources",
            "Managed resources in the watch cache, by kind",
            managed_resources.clone(),
        );
        Self {
            registry: root,
            managed,
            reconciles,
            reconcile_seconds,
            kube_requests,
            kubeconfig_reloads,
            kubeconfig_reload_failures,
            kubeconfig_rejected,
            kube_auth_failures,
            credentials_ok,
            leader,
            managed_resources,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One thing `/readyz` reports on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// Whether the control plane serves any of the provider's CRDs.
    Crds,
    /// Whether the control plane accepts our credentials.
    Credentials,
    /// Whether the kubeconfig source can be read.
    Kubeconfig,
    /// Whether the credentials of a token exchange are good.
    Upbound,
    /// Leader election: a standby is ready while it waits.
    Leader,
    /// A kind's cache has not listed yet (`Robot.iam.dummy.crossplane.io`).
    Watch(String),
    /// A kind waits for its CRD; informational, not a failure.
    Waiting(String),
}

impl Check {
    fn label(&self) -> String {
        match self {
            Check::Crds => "crds".into(),
            Check::Credentials => "credentials".into(),
            Check::Kubeconfig => "kubeconfig".into(),
            Check::Upbound => "upbound".into(),
            Check::Leader => "leader".into(),
            Check::Watch(kind) => format!("watch {kind}"),
            Check::Waiting(kind) => format!("waiting {kind}"),
        }
    }

    /// Whether this check failing makes the instance unready.
    fn blocks_readiness(&self) -> bool {
        !matches!(self, Check::Waiting(_))
    }
}

/// What `/readyz` reports: ready only when every check passes; otherwise
/// the reasons, so a human reading the probe output knows what is wrong.
/// Kinds waiting for their CRD are listed without making it unready: under
/// safe-start an inactive managed resource definition is normal.
#[derive(Default)]
pub struct Health {
    problems: Mutex<std::collections::BTreeMap<Check, String>>,
}

impl Health {
    /// Marks `check` as failing with `why`, or passing with `None`.
    pub fn set(&self, check: Check, why: Option<String>) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        match why {
            Some(w) => {
                p.insert(check, w);
            }
            None => {
                p.remove(&check);
            }
        }
    }

    /// Drops every check `pred` matches (a kind that stopped).
    pub fn clear(&self, pred: impl Fn(&Check) -> bool) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|c, _| !pred(c));
    }

    /// Whether `check` is failing now.
    pub fn failing(&self, check: &Check) -> bool {
        let p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        p.contains_key(check)
    }

    /// The failing checks, one line each.
    pub fn problems(&self) -> Vec<String> {
        self.lines(true)
    }

    fn lines(&self, blocking: bool) -> Vec<String> {
        let p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        p.iter()
            .filter(|(c, _)| c.blocks_readiness() == blocking)
            .map(|(c, v)| format!("{}: {v}", c.label()))
            .collect()
    }

    /// The informational lines (kinds waiting for their CRD).
    pub fn notes(&self) -> Vec<String> {
        self.lines(false)
    }
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Serves the health endpoints until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "health endpoints listening");
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Shared { metrics, health });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(s): State<Shared>) -> impl IntoResponse {
    let problems = s.health.problems();
    let notes = s.health.notes();
    let mut body = if problems.is_empty() {
        "ok\n".to_owned()
    } else {
        problems.join("\n") + "\n"
    };
    for n in &notes {
        body.push_str(n);
        body.push('\n');
    }
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

async fn metrics_text(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
