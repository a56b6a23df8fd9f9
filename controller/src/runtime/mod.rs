//! How the process runs: a long-lived service (watches, optional leader
//! election, health endpoints), one pass over every managed resource
//! (`once`), or a Lambda handler. The only module that knows which; all
//! three reconcile through the same [`Reconciler`](crate::managed::Reconciler),
//! for every kind of the list it is given (it names none itself).
//!
//! - [`service`]: `run`, the long-lived service, and its shutdown.
//! - [`leader`]: leader election around the service.
//! - [`supervisor`]: which kinds the control plane serves; starts each
//!   kind's controller when its CRD appears, stops it when it goes.
//! - [`controllers`]: the watches and controllers of one generation and
//!   of one kind.
//! - [`registry`]: a managed kind as a registered, type-erased unit.
//! - [`pass`]: one pass over everything (`once`, each Lambda invocation).
//! - [`lambda`]: the Lambda handler.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use kube::core::ApiResource;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{Family, Generation};
use crate::cli::{RunArgs, ServerAuth};
use crate::endpoints::AllowedEndpoints;
use crate::kubeclient::{ConnectOptions, ControlPlane, KubeconfigSource, LoadError};
use crate::managed::claims::Claims;
use crate::managed::inuse::ConfigKind;
use crate::managed::{ConfigKey, ConfigLookup, ReconcilerConfig};
use crate::provider::{Deps, ProviderConfigObject};
use crate::ratelimit::RateLimiter;
use crate::serverauth::{BearerToken, TokenError};
use crate::telemetry::{Health, Metrics};

mod controllers;
mod lambda;
mod leader;
mod pass;
pub mod registry;
mod service;
mod supervisor;

pub use lambda::lambda;
pub use pass::{PassSummary, once, pass};
pub use registry::{Kind, Registered};
pub use service::{run, serve};

/// Exit status for a configuration error found at start-up.
pub const EXIT_CONFIG: u8 = 2;

/// What stops the process from starting: bad flags, a bad source, a bad
/// kubeconfig. Exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] LoadError),
    #[error("robot server token: {0}")]
    Token(#[from] TokenError),
    #[error("--allowed-endpoints: {0}")]
    AllowedEndpoints(String),
    #[error("{0}")]
    Flags(String),
    /// Transient trouble that outlasted --start-timeout: exit 1.
    #[error("{0} (still failing after --start-timeout)")]
    Unavailable(String),
}

impl StartError {
    /// The exit status: 2 for a configuration that cannot work, 1 for
    /// trouble that may pass.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Unavailable(_) => 1,
            _ => EXIT_CONFIG,
        }
    }
}

/// The ProviderConfig caches of every running generation, so that any
/// kind can look up any config (claims compare configs across kinds).
#[derive(Default)]
pub struct ConfigDirectory {
    stores: RwLock<HashMap<ConfigKindKey, (ApiResource, Store<ProviderConfigObject>)>>,
}

/// A config kind by group and kind name.
type ConfigKindKey = (String, &'static str);

impl ConfigDirectory {
    fn insert(&self, family: Family, kind: ConfigKind, store: Store<ProviderConfigObject>) {
        let ar = kind.api_resource(family);
        self.stores
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((ar.group.clone(), kind.kind), (ar, store));
    }

    fn remove(&self, family: Family, kind: ConfigKind) {
        let ar = kind.api_resource(family);
        self.stores
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(ar.group, kind.kind));
    }

    pub fn get(&self, key: &ConfigKey) -> Option<Arc<ProviderConfigObject>> {
        let stores = self.stores.read().unwrap_or_else(|p| p.into_inner());
        let (ar, store) = stores.get(&(key.group.clone(), kind_name(&key.kind)?))?;
        let mut oref = ObjectRef::new_with(&key.name, ar.clone());
        if let Some(ns) = &key.namespace {
            oref = oref.within(ns);
        }
        store.get(&oref)
    }
}

/// The static name of a config kind.
fn kind_name(kind: &str) -> Option<&'static str> {
    Generation::ALL
        .iter()
        .flat_map(|g| ConfigKind::of(*g))
        .map(|k| k.kind)
        .find(|k| *k == kind)
}

/// Everything the three modes share, built once at start.
pub struct Setup {
    pub args: RunArgs,
    pub control_plane: Arc<ControlPlane>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// The managed kinds to serve.
    pub kinds: &'static [&'static dyn Registered],
    token: Option<Arc<BearerToken>>,
    deps: Deps,
    limiter: Arc<RateLimiter>,
    claims: Arc<Claims>,
    configs: Arc<ConfigDirectory>,
}

impl Setup {
    pub async fn new(
        args: RunArgs,
        kinds: &'static [&'static dyn Registered],
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Self, StartError> {
        let allowed = AllowedEndpoints::parse(args.allowed_endpoints.as_deref())
            .map_err(StartError::AllowedEndpoints)?;
        if allowed.allows_any() {
            // The one server credential must only go where it belongs.
            if args.server_auth() != ServerAuth::None {
                return Err(StartError::AllowedEndpoints(
                    "'*' cannot be used with --server-auth bearer or gcp-id-token: the server \
                     credential would go to whatever URL a ProviderConfig names; list the \
                     robot servers instead"
                        .into(),
                ));
            }
            tracing::warn!(
                "--allowed-endpoints '*': any ProviderConfig can aim the controller at any \
                 address it can reach; list the robot servers instead"
            );
        }
        let mut authorizer: Option<Arc<dyn robot_api::Authorizer>> = None;
        let token = match (args.server_auth(), &args.server_token_source) {
            (ServerAuth::Bearer, Some(uri)) => {
                crate::source::parse(uri).map_err(|e| StartError::Token(e.into()))?;
                let token = retrying(
                    args.start_timeout,
                    "the robot server token",
                    TokenError::is_transient,
                    || async {
                        let source = crate::source::parse(uri).map_err(TokenError::from)?;
                        BearerToken::load(source).await
                    },
                )
                .await
                .map_err(|(e, transient)| {
                    if transient {
                        StartError::Unavailable(format!("robot server token: {e}"))
                    } else {
                        StartError::Token(e)
                    }
                })?;
                Some(Arc::new(token))
            }
            (ServerAuth::Bearer, None) => {
                return Err(StartError::Flags(
                    "--server-auth bearer needs --server-token-source".into(),
                ));
            }
            (ServerAuth::GcpIdToken, Some(_)) => {
                return Err(StartError::Flags(
                    "--server-auth gcp-id-token takes its tokens from the metadata server; drop --server-token-source".into(),
                ));
            }
            (ServerAuth::GcpIdToken, None) => {
                let tokens = crate::serverauth::GcpIdTokens::from_env()
                    .map_err(|e| StartError::Flags(format!("--server-auth gcp-id-token: {e}")))?;
                authorizer = Some(Arc::new(tokens));
                None
            }
            (ServerAuth::None, _) => None,
        };
        let options = ConnectOptions {
            permissions: args.kubeconfig_permissions(),
            // Empty: not set (a template filled with nothing).
            upbound_token_source: args
                .upbound_token_source
                .clone()
                .filter(|s| !s.trim().is_empty()),
            upbound_auth_endpoint: args.upbound_auth_endpoint.clone(),
            refresh_interval: args.secret_refresh_interval,
            request_timeout: args.kube_timeout,
            write_timeout: if args.leader_election {
                // Nothing of ours may still be in flight when a Lease we
                // stopped confirming can expire (see leader.rs).
                args.kube_timeout
                    .min(args.leader_election_duration / 4)
                    .max(std::time::Duration::from_millis(500))
            } else {
                args.kube_timeout
            },
        };
        let control_plane = connect_retrying(&args, options, &metrics, &health).await?;
        let deps = Deps {
            http: robot_api::http_client(args.server_timeout),
            auth: token.as_ref().map(|t| t.header()),
            authorizer,
            allowed: Arc::new(allowed),
            refused: token.as_ref().map(|t| t.refused.clone()),
        };
        Ok(Self {
            limiter: Arc::new(RateLimiter::per_second(args.max_reconcile_rate)),
            args,
            control_plane,
            metrics,
            health,
            kinds,
            token,
            deps,
            claims: Arc::default(),
            configs: Arc::default(),
        })
    }

    pub fn client(&self) -> kube::Client {
        self.control_plane.client()
    }

    /// The reconciler's knobs, from the flags.
    fn reconciler_config(&self) -> ReconcilerConfig {
        ReconcilerConfig {
            poll_interval: self.args.poll_interval,
            min_poll_interval: self.args.min_poll_interval,
            backoff_max: self.args.max_backoff,
            timeout: self.args.reconcile_timeout,
            normal_events: !self.args.no_normal_events,
            ..ReconcilerConfig::default()
        }
    }

    /// Looks configs up in the running generations' caches.
    fn config_lookup(&self) -> ConfigLookup<ProviderConfigObject> {
        let configs = self.configs.clone();
        Arc::new(move |key: &ConfigKey| configs.get(key))
    }

    /// Starts the background refreshers of credentials.
    fn keep_credentials_fresh(&self, stop: &tokio_util::sync::CancellationToken) {
        tokio::spawn(
            self.control_plane
                .clone()
                .keep_fresh(self.args.secret_refresh_interval, stop.clone()),
        );
        if let Some(token) = &self.token {
            tokio::spawn(
                token
                    .clone()
                    .keep_fresh(self.args.secret_refresh_interval, stop.clone()),
            );
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `timeout` has
/// passed, backing off from 1 s: a Secrets Manager blip at start-up is not
/// a bad configuration.
async fn retrying<T, E, F, Fut>(
    timeout: std::time::Duration,
    what: &str,
    transient: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, (E, bool)>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = std::time::Duration::from_secs(1);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return Err((e, true));
                }
                tracing::warn!(error = %e, "cannot read {what} yet; retrying");
                tokio::time::sleep(delay.min(left)).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            }
            Err(e) => return Err((e, false)),
        }
    }
}

/// Connects, retrying transient failures of the source for --start-timeout.
async fn connect_retrying(
    args: &RunArgs,
    options: ConnectOptions,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
) -> Result<Arc<ControlPlane>, StartError> {
    let source =
        || KubeconfigSource::parse(args.kubeconfig_source.as_deref()).map_err(LoadError::from);
    source()?;
    retrying(
        args.start_timeout,
        "the kubeconfig",
        LoadError::is_transient,
        || async {
            ControlPlane::connect(source()?, options.clone(), metrics.clone(), health.clone()).await
        },
    )
    .await
    .map_err(|(e, transient)| {
        if transient {
            StartError::Unavailable(e.to_string())
        } else {
            e.into()
        }
    })
}

/// What discovery found: the `(group, plural)` pairs the control plane
/// serves at our version, among the groups the provider could use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Served(BTreeSet<(String, String)>);

impl Served {
    pub fn has(&self, ar: &ApiResource) -> bool {
        self.0.contains(&(ar.group.clone(), ar.plural.clone()))
    }

    /// Whether a generation's config and usage kinds are all served.
    pub fn has_generation(&self, generation: Generation, family: Family) -> bool {
        ConfigKind::of(generation)
            .iter()
            .all(|k| self.has(&k.api_resource(family)))
            && self.has(&ConfigKind::usage_resource(generation, family))
    }

    /// The family to serve `generation` in: the forced one if served, else
    /// the first served (with a warning when both are).
    pub fn family_for(&self, generation: Generation, forced: Option<Family>) -> Option<Family> {
        if let Some(f) = forced {
            return self.has_generation(generation, f).then_some(f);
        }
        let found: Vec<Family> = Family::ALL
            .into_iter()
            .filter(|f| self.has_generation(generation, *f))
            .collect();
        found.first().copied()
    }

    #[cfg(test)]
    pub fn of(pairs: &[(&str, &str)]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(g, p)| (g.to_string(), p.to_string()))
                .collect(),
        )
    }
}

/// Asks the control plane's discovery which of the provider's groups and
/// resources it serves.
pub async fn discover(client: &kube::Client) -> Result<Served, kube::Error> {
    let groups = client.list_api_groups().await?;
    let mut served = BTreeSet::new();
    let ours: BTreeSet<String> = Generation::ALL
        .iter()
        .flat_map(|g| {
            Family::ALL.into_iter().flat_map(move |f| {
                [g.provider_group(f), g.managed_group("", f)]
                    .into_iter()
                    .map(|s| s.trim_start_matches('.').to_owned())
            })
        })
        .collect();
    for group in &groups.groups {
        let relevant = ours
            .iter()
            .any(|o| group.name == *o || group.name.ends_with(&format!(".{o}")));
        if !relevant {
            continue;
        }
        if !group
            .versions
            .iter()
            .any(|v| v.version == crate::api::VERSION)
        {
            continue;
        }
        let list = match client
            .list_api_group_resources(&format!("{}/{}", group.name, crate::api::VERSION))
            .await
        {
            Ok(l) => l,
            // A group going away between the two calls.
            Err(kube::Error::Api(s)) if s.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        for r in list.resources {
            if !r.name.contains('/') {
                served.insert((group.name.clone(), r.name));
            }
        }
    }
    Ok(Served(served))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_is_served_when_its_config_and_usage_kinds_are() {
        let legacy = [
            ("dummy.crossplane.io", "providerconfigs"),
            ("dummy.crossplane.io", "providerconfigusages"),
        ];
        let served = Served::of(&legacy);
        assert_eq!(
            served.family_for(Generation::Legacy, None),
            Some(Family::Crossplane)
        );
        assert_eq!(served.family_for(Generation::Namespaced, None), None);
        assert_eq!(
            served.family_for(Generation::Legacy, Some(Family::Upbound)),
            None
        );
        // v2 needs both config kinds and the usage kind.
        let partial = Served::of(&[
            ("dummy.m.upbound.io", "providerconfigs"),
            ("dummy.m.upbound.io", "providerconfigusages"),
        ]);
        assert_eq!(partial.family_for(Generation::Namespaced, None), None);
        let full = Served::of(&[
            ("dummy.m.upbound.io", "providerconfigs"),
            ("dummy.m.upbound.io", "clusterproviderconfigs"),
            ("dummy.m.upbound.io", "providerconfigusages"),
        ]);
        assert_eq!(
            full.family_for(Generation::Namespaced, None),
            Some(Family::Upbound)
        );
    }
}
