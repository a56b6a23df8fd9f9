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
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub code: String,
}

/// Everything the controller counts.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_seconds: Family<ReconcileLabels, Histogram>,
    /// Requests to the control plane, by HTTP verb and status code.
    pub kube_requests: Family<RequestLabels, Counter>,
    pub kubeconfig_reloads: Counter,
    pub kube_auth_failures: Counter,
    /// 1 while the control plane accepts our credentials.
    pub credentials_ok: Gauge,
    pub leader: Gauge,
    pub managed_resources: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("robot_controller");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_seconds = Family::<ReconcileLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let kube_requests = Family::<RequestLabels, Counter>::default();
        let kubeconfig_reloads = Counter::default();
        let kube_auth_failures = Counter::default();
        let credentials_ok = Gauge::default();
        let leader = Gauge::default();
        let managed_resources = Gauge::default();
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
            "Managed resources in the watch cache",
            managed_resources.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_seconds,
            kube_requests,
            kubeconfig_reloads,
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

/// What `/readyz` reports: ready only when every check passes; otherwise
/// the reasons, so a human reading the probe output knows what is wrong.
#[derive(Default)]
pub struct Health {
    problems: Mutex<std::collections::BTreeMap<&'static str, String>>,
}

impl Health {
    /// Marks the check `name` as failing with `why`, or passing with `None`.
    pub fn set(&self, name: &'static str, why: Option<String>) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        match why {
            Some(w) => {
                p.insert(name, w);
            }
            None => {
                p.remove(name);
            }
        }
    }

    pub fn problems(&self) -> Vec<String> {
        let p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        p.iter().map(|(k, v)| format!("{k}: {v}")).collect()
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
    if problems.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n")
    }
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
