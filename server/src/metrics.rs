//! Prometheus metrics, and the middleware that records every request
//! (and logs it, without its query or body).

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::App;

/// Log target of the per-request lines; enable them with
/// `--log-filter info,robot_server::access=debug`.
pub const ACCESS_LOG: &str = "robot_server::access";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InFlightLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<InFlightLabels, Gauge>,
    robots: Gauge,
    token_reloads: Family<ReloadLabels, Counter>,
    connections: Gauge,
    max_connections: Gauge,
    /// Changes applied whose state file directory could not be fsynced.
    pub state_file_unsynced: Counter,
    /// Connections cut off because their client read nothing of an
    /// answer for the request timeout.
    pub write_timeouts: Counter,
}

/// Latency buckets from 50 µs to 10 s: requests served from memory take
/// tens of microseconds, and the request timeout is 10 s by default.
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5, 5.0, 10.0,
    ])
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("robot_server");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let in_flight = Family::<InFlightLabels, Gauge>::default();
        let robots = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's headers to its answer, by route and method",
            Unit::Seconds,
            latency.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being answered now, by route",
            in_flight.clone(),
        );
        registry.register("robots_stored", "Robots in the store", robots.clone());
        let connections = Gauge::default();
        registry.register(
            "connections_open",
            "Connections being served now (new ones wait in the listen backlog at the limit)",
            connections.clone(),
        );
        let max_connections = Gauge::default();
        registry.register(
            "connections_max",
            "The most connections served at once (--max-connections)",
            max_connections.clone(),
        );
        let token_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "auth_token_reloads",
            "Re-reads of the auth token file that found something new: applied (a new token \
             in force), invalid (not a usable token; the old one stays), unreadable",
            token_reloads.clone(),
        );
        let write_timeouts = Counter::default();
        registry.register(
            "write_timeouts",
            "Connections closed because the client read nothing of an answer for the request timeout",
            write_timeouts.clone(),
        );
        let state_file_unsynced = Counter::default();
        registry.register(
            "state_file_unsynced_changes",
            "Changes saved to the state file and applied whose directory fsync failed \
             after the rename: on disk, but they may not survive a power loss",
            state_file_unsynced.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            in_flight,
            robots,
            token_reloads,
            connections,
            max_connections,
            state_file_unsynced,
            write_timeouts,
        }
    }

    pub fn set_max_connections(&self, max: usize) {
        self.max_connections
            .set(i64::try_from(max).unwrap_or(i64::MAX));
    }

    /// Counts a connection as open until the guard is dropped.
    pub fn connection_opened(&self) -> impl Drop + Send + 'static {
        self.connections.inc();
        Open(self.connections.clone())
    }

    /// Counts a re-read of the token file that found something new.
    pub fn token_reload(&self, result: &'static str) {
        self.token_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// The OpenMetrics text of every metric, with `robots` robots stored.
    pub fn encode(&self, robots: usize) -> Result<String, std::fmt::Error> {
        self.robots.set(i64::try_from(robots).unwrap_or(i64::MAX));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The route label for a path: one of ours, or "other" so that clients
/// cannot grow the label set.
fn route_of(path: &str) -> &'static str {
    match path {
        "/robots" => "/robots",
        "/v1/robots" => "/v1/robots",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/openapi.json" => "/openapi.json",
        _ => "other",
    }
}

fn method_of(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// An open connection, counted until dropped.
struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Keeps the in-flight gauge right even when a request is dropped midway.
struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts, times and (at debug level) logs every request.
pub async fn record(State(app): State<App>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_of(request.uri().path());
    let method = method_of(request.method());
    let metrics = app.metrics();
    let in_flight = metrics
        .in_flight
        .get_or_create_owned(&InFlightLabels { route });
    in_flight.inc();
    let _in_flight = InFlight(in_flight);
    // Cheap: a Uri shares its bytes.
    let uri = request.uri().clone();

    let response = next.run(request).await;

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status,
        })
        .inc();
    metrics
        .latency
        .get_or_create(&RouteLabels { route, method })
        .observe(elapsed.as_secs_f64());
    // Whole microseconds: log collectors index integers as numbers.
    let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    // Only the path: the query holds robot names, which are not ours to log.
    let path = uri.path();
    if response.status().is_server_error() {
        tracing::warn!(target: ACCESS_LOG, method, %path, status, latency_us, "request failed");
    } else {
        tracing::debug!(target: ACCESS_LOG, method, %path, status, latency_us, "request");
    }
    response
}
