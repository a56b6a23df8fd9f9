//! How the process runs: a long-lived service (watches, optional leader
//! election, health endpoints), one pass over every Robot (`once`), or a
//! Lambda handler. The only module that knows which; all three reconcile
//! through the same [`Reconciler`], built here by [`Setup`].
//!
//! - [`service`]: `run`, the long-lived service, and its shutdown.
//! - [`leader`]: leader election around the service.
//! - [`controllers`]: the watches and the Robot and ProviderConfig
//!   controllers the service runs.
//! - [`pass`]: one pass over every Robot (`once`, each Lambda invocation).
//! - [`lambda`]: the Lambda handler.

use std::sync::Arc;
use std::time::Duration;

use kube::core::{ApiResource, GroupVersionKind};
use tokio_util::sync::CancellationToken;

use crate::cli::{RunArgs, ServerAuth};
use crate::crd::Generation;
use crate::endpoints::AllowedEndpoints;
use crate::kubeclient::{ControlPlane, KubeconfigSource, LoadError};
use crate::managed::usage::{UsageStore, UsageTracker};
use crate::managed::{ConfigLookup, Reconciler, ReconcilerConfig};
use crate::providerconfig::ProviderConfigObject;
use crate::ratelimit::RateLimiter;
use crate::robot::{RobotConnector, RobotSpec, RobotStatus};
use crate::serverauth::{BearerToken, TokenError};
use crate::telemetry::{Health, Metrics};

mod controllers;
mod lambda;
mod leader;
mod pass;
mod service;

pub use lambda::lambda;
pub use pass::{PassSummary, once, pass};
pub use service::run;

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
}

type RobotReconciler = Reconciler<RobotSpec, RobotStatus, RobotConnector>;

/// The resources of one API generation.
#[derive(Clone, Debug)]
pub struct Resources {
    pub generation: Generation,
    pub robot: ApiResource,
    pub provider_config: ApiResource,
    pub usage: ApiResource,
}

impl Resources {
    pub fn of(generation: Generation) -> Self {
        let ar = |group: &str, kind: &str, plural: &str| {
            ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(group, "v1alpha1", kind),
                plural,
            )
        };
        Self {
            generation,
            robot: ar(generation.robot_group(), "Robot", "robots"),
            provider_config: ar(
                generation.provider_group(),
                "ProviderConfig",
                "providerconfigs",
            ),
            usage: ar(
                generation.provider_group(),
                "ProviderConfigUsage",
                "providerconfigusages",
            ),
        }
    }
}

/// Everything the three modes share, built once at start.
pub struct Setup {
    pub args: RunArgs,
    pub control_plane: Arc<ControlPlane>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    token: Option<Arc<BearerToken>>,
    /// Per-server credentials (`--server-auth gcp-id-token`).
    authorizer: Option<Arc<dyn robot_api::Authorizer>>,
    http: reqwest::Client,
    allowed: Arc<AllowedEndpoints>,
    limiter: Arc<RateLimiter>,
}

impl Setup {
    pub async fn new(
        args: RunArgs,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Self, StartError> {
        let allowed = AllowedEndpoints::parse(&args.allowed_endpoints)
            .map_err(StartError::AllowedEndpoints)?;
        let mut authorizer: Option<Arc<dyn robot_api::Authorizer>> = None;
        let token = match (args.server_auth(), &args.server_token_source) {
            (ServerAuth::Bearer, Some(uri)) => {
                let source = crate::source::parse(uri).map_err(|e| StartError::Token(e.into()))?;
                Some(Arc::new(BearerToken::load(source).await?))
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
        let source =
            KubeconfigSource::parse(args.kubeconfig_source.as_deref()).map_err(LoadError::from)?;
        let control_plane = ControlPlane::connect(source, metrics.clone(), health.clone()).await?;
        Ok(Self {
            http: robot_api::http_client(args.server_timeout),
            limiter: Arc::new(RateLimiter::per_second(args.max_reconcile_rate)),
            allowed: Arc::new(allowed),
            args,
            control_plane,
            metrics,
            health,
            token,
            authorizer,
        })
    }

    fn client(&self) -> kube::Client {
        self.control_plane.client()
    }

    /// Which API generation the control plane serves (or the forced one,
    /// checked). `Ok(None)`: neither is installed yet.
    pub async fn discover(&self) -> Result<Option<Generation>, kube::Error> {
        let groups = self.client().list_api_groups().await?;
        let served = |g: Generation| {
            groups.groups.iter().any(|x| x.name == g.robot_group())
                && groups.groups.iter().any(|x| x.name == g.provider_group())
        };
        if let Some(forced) = self.args.api_group.forced() {
            return Ok(served(forced).then_some(forced));
        }
        let found: Vec<Generation> = Generation::ALL.into_iter().filter(|g| served(*g)).collect();
        if found.len() > 1 {
            tracing::warn!(
                "the control plane serves both dummy.crossplane.io and dummy.upbound.io; \
                 reconciling dummy.crossplane.io (choose with --api-group)"
            );
        }
        Ok(found.first().copied())
    }

    /// Waits until the control plane serves the provider's CRDs.
    async fn wait_for_crds(&self, stop: &CancellationToken) -> Option<Generation> {
        let mut delay = Duration::from_secs(1);
        loop {
            match self.discover().await {
                Ok(Some(g)) => {
                    self.health.set("crds", None);
                    return Some(g);
                }
                Ok(None) => self.health.set(
                    "crds",
                    Some("the control plane serves no provider-dummy CRDs (Robot, ProviderConfig) yet".into()),
                ),
                Err(e) => self
                    .health
                    .set("crds", Some(format!("cannot list the control plane's API groups: {e}"))),
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    fn reconciler(
        &self,
        resources: &Resources,
        configs: ConfigLookup<ProviderConfigObject>,
        usages: Option<UsageStore>,
    ) -> RobotReconciler {
        let connector = RobotConnector::new(
            self.http.clone(),
            self.token.as_ref().map(|t| t.header()),
            self.allowed.clone(),
            self.token.as_ref().map(|t| t.refused.clone()),
        )
        .with_authorizer(self.authorizer.clone());
        Reconciler::new(
            self.client(),
            resources.robot.clone(),
            connector,
            configs,
            format!("ProviderConfig.{}", resources.generation.provider_group()),
            UsageTracker::new(self.client(), resources.usage.clone(), usages),
            self.limiter.clone(),
            ReconcilerConfig {
                poll_interval: self.args.poll_interval,
                backoff_max: self.args.max_backoff,
                ..ReconcilerConfig::default()
            },
        )
    }

    /// Starts the background refreshers of credentials.
    fn keep_credentials_fresh(&self, stop: &CancellationToken) {
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
