//! How the process runs: a long-lived service (watches, optional leader
//! election, health endpoints), one pass over every Robot (`once`), or a
//! Lambda handler. The only module that knows which; all three reconcile
//! through the same [`Reconciler`].

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cli::{RunArgs, ServerAuth};
use crate::crd::Generation;
use crate::endpoints::AllowedEndpoints;
use crate::kubeclient::{ControlPlane, KubeconfigSource, LoadError};
use crate::managed::events::Events;
use crate::managed::meta;
use crate::managed::usage::{PROVIDER_CONFIG_LABEL, UsageStore, UsageTracker};
use crate::managed::{ConfigLookup, Reconciler, ReconcilerConfig, SyncState};
use crate::providerconfig::{InUseReconciler, ProviderConfigObject};
use crate::ratelimit::RateLimiter;
use crate::robot::{RobotConnector, RobotObject, RobotSpec, RobotStatus};
use crate::serverauth::{BearerToken, TokenError};
use crate::telemetry::{Health, Metrics, ReconcileLabels};

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

/// `run`: the long-lived service.
pub async fn run(args: RunArgs) -> ExitCode {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    health.set("watch", Some("starting".into()));
    let setup = match Setup::new(args, metrics.clone(), health.clone()).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let stop = CancellationToken::new();
    let exit = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));
    let addr = setup.args.health_addr();
    let serving = {
        let exit = exit.clone();
        tokio::spawn(crate::telemetry::serve(
            addr,
            metrics.clone(),
            health.clone(),
            async move { exit.cancelled().await },
        ))
    };
    setup.keep_credentials_fresh(&exit);
    tracing::info!(
        source = setup.control_plane.source(),
        leader_election = setup.args.leader_election,
        "robot-controller starting"
    );

    while !stop.is_cancelled() {
        let Some(generation) = setup.wait_for_crds(&stop).await else {
            break;
        };
        let resources = Resources::of(generation);
        if !setup.args.leader_election {
            if let Err(e) = run_until(&setup, &resources, stop.clone()).await {
                tracing::error!(error = %e, "controllers stopped");
            }
            break;
        }
        if let Err(e) = lead(&setup, &resources, &stop).await {
            tracing::warn!(error = %e, "leader election failed; retrying");
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }
    tracing::info!("stopped");
    exit.cancel();
    let _ = serving.await;
    ExitCode::SUCCESS
}

/// Holds the Lease while reconciling; returns when leadership is lost or
/// `stop` fires, having released the Lease.
async fn lead(
    setup: &Arc<Setup>,
    resources: &Resources,
    stop: &CancellationToken,
) -> Result<(), String> {
    let secs = i64::try_from(setup.args.leader_election_duration.as_secs().max(2)).unwrap_or(15);
    let identity = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .map(|h| format!("{h}-{}", std::process::id()))
        .unwrap_or_else(|| format!("robot-controller-{}", rand::random::<u32>()));
    let manager = kube_lease_manager::LeaseManagerBuilder::new(
        setup.client(),
        &setup.args.leader_election_name,
    )
    .with_namespace(&setup.args.leader_election_namespace)
    .with_identity(&identity)
    .with_duration(secs.unsigned_abs())
    // Renew halfway through the lease, so that a renewal has time to be
    // seen by `confirm_leadership` before the lease could expire.
    .with_grace((secs / 2).max(1).unsigned_abs())
    .build()
    .await
    .map_err(|e| format!("cannot use Lease {}: {e}", setup.args.leader_election_name))?;
    let (mut leader, task) = manager.watch().await;
    setup.health.set("watch", None);
    tracing::info!(identity, "waiting for leadership");
    loop {
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => {
                drop(leader);
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
                return Ok(());
            }
            changed = leader.changed() => {
                if changed.is_err() {
                    return Err("the lease manager stopped".into());
                }
            }
        }
    }
    tracing::info!(identity, "leading");
    setup.metrics.leader.set(1);
    let term = stop.child_token();
    let lost = {
        let term = term.clone();
        let mut leader = leader.clone();
        tokio::spawn(async move {
            while leader.changed().await.is_ok() {
                if !*leader.borrow_and_update() {
                    tracing::warn!("leadership lost; stopping reconciles");
                    break;
                }
            }
            term.cancel();
        })
    };
    let confirming = tokio::spawn(confirm_leadership(
        setup.client(),
        setup.args.leader_election_namespace.clone(),
        setup.args.leader_election_name.clone(),
        identity.clone(),
        Duration::from_secs(secs.unsigned_abs()),
        term.clone(),
    ));
    let stepped_down = {
        let term = term.clone();
        let metrics = setup.metrics.clone();
        tokio::spawn(async move {
            term.cancelled().await;
            metrics.leader.set(0);
        })
    };
    let result = run_until(setup, resources, term.clone()).await;
    term.cancel();
    lost.abort();
    confirming.abort();
    let _ = stepped_down.await;
    setup.metrics.leader.set(0);
    drop(leader);
    // Dropping the channel releases the Lease, so a standby takes over now
    // rather than after the lease expires.
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    result.map_err(|e| e.to_string())
}

/// Runs the controllers until `stop`; then in-flight reconciles get
/// --shutdown-timeout to finish. One stuck on a control plane that does not
/// answer (its requests have no timeout) is abandoned, as a crash would
/// abandon it, which the reconciler is built to survive; waiting for it
/// would outlive the platform's grace period and end in SIGKILL anyway.
async fn run_until(
    setup: &Arc<Setup>,
    resources: &Resources,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let shutdown_timeout = setup.args.shutdown_timeout;
    tokio::select! {
        result = run_controllers(setup, resources, stop.clone()) => result,
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(shutdown_timeout).await;
        } => {
            tracing::warn!("in-flight reconciles did not finish within --shutdown-timeout; abandoned");
            Ok(())
        }
    }
}

/// Cancels `term` (stepping down) unless the Lease can be confirmed as ours
/// in time. The lease manager reports a lost lease only once it can read
/// the Lease again, so a leader cut off from the control plane would go on
/// reconciling from its stale caches after the standby took over, undoing
/// the new leader's work. The Lease is valid until its renewTime plus its
/// duration; this steps down a quarter of the duration before that, and
/// renewals happen at half the duration, leaving a quarter to see them.
async fn confirm_leadership(
    client: kube::Client,
    namespace: String,
    name: String,
    identity: String,
    duration: Duration,
    term: CancellationToken,
) {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: Api<Lease> = Api::namespaced(client, &namespace);
    let check = (duration / 8).max(Duration::from_millis(250));
    let margin = duration / 4;
    // Just acquired: renewed a moment ago.
    let mut valid_until = Instant::now() + duration - margin;
    loop {
        tokio::select! {
            _ = term.cancelled() => return,
            _ = tokio::time::sleep(check) => {}
        }
        match tokio::time::timeout(check, leases.get_opt(&name)).await {
            Ok(Ok(Some(lease))) => {
                let spec = lease.spec.unwrap_or_default();
                if spec.holder_identity.as_deref() != Some(identity.as_str()) {
                    tracing::warn!(holder = ?spec.holder_identity, "the Lease is held by another; stepping down");
                    break;
                }
                if let Some(renewed) = spec.renew_time {
                    let renewed = std::time::SystemTime::from(renewed.0);
                    // Our own clock wrote renewTime: its age is trustworthy here.
                    let age = std::time::SystemTime::now()
                        .duration_since(renewed)
                        .unwrap_or_default();
                    valid_until = Instant::now().checked_sub(age).unwrap_or_else(Instant::now)
                        + duration
                        - margin;
                }
            }
            Ok(Ok(None)) => {
                tracing::warn!("the Lease is gone; stepping down");
                break;
            }
            // Not confirmed this time; the deadline decides.
            Ok(Err(_)) | Err(_) => {}
        }
        if Instant::now() >= valid_until {
            tracing::warn!(
                "cannot confirm the Lease before it may expire (control plane unreachable?); \
                 stepping down so that a standby can lead"
            );
            break;
        }
    }
    term.cancel();
}

async fn cancel_on_signal(stop: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        } else {
            let _ = ctrl_c.await;
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing in-flight reconciles");
    stop.cancel();
}

/// Drops what the caches never read: managed fields and kubectl's copy of
/// the last applied object are most of an object's size. Nothing is ever
/// written back from a cached object whole, so nothing is lost.
fn slim<K: kube::Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// The reconcile triggers of a Robot: changes a reconcile must react to.
/// Our own bookkeeping (create-* annotations, finalizers, status) is left
/// out, so writing it does not wake the Robot again.
fn robot_trigger(robot: &RobotObject) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    robot.metadata.generation.hash(&mut h);
    robot.metadata.deletion_timestamp.is_some().hash(&mut h);
    if let Some(a) = &robot.metadata.annotations {
        for (k, v) in a {
            let ours = [meta::CREATE_PENDING, meta::CREATE_SUCCEEDED, meta::CREATE_FAILED].contains(&k.as_str())
                // Defaulting the external name to the object name changes nothing.
                || (k == meta::EXTERNAL_NAME && Some(v) == robot.metadata.name.as_ref());
            if !ours {
                (k, v).hash(&mut h);
            }
        }
    }
    Some(h.finish())
}

#[derive(Debug, thiserror::Error)]
enum ControllerError {
    #[error(transparent)]
    Reconcile(#[from] crate::managed::ReconcileError),
    #[error(transparent)]
    ProviderConfig(#[from] crate::providerconfig::Error),
}

struct Context {
    robots: RobotReconciler,
    in_use: InUseReconciler,
    metrics: Arc<Metrics>,
    kind: String,
}

/// Runs the Robot and ProviderConfig controllers until `stop`, then lets
/// in-flight reconciles finish (bounded by --shutdown-timeout).
async fn run_controllers(
    setup: &Arc<Setup>,
    res: &Resources,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let client = setup.client();
    let wc = watcher::Config::default();

    // Usages: names and labels only, shared by both controllers.
    let usage_writer =
        reflector::store::Writer::<PartialObjectMeta<DynamicObject>>::new(res.usage.clone());
    let usage_store = usage_writer.as_reader();
    let pc_ar = res.provider_config.clone();
    let usage_triggers = watcher(
        Api::<PartialObjectMeta<DynamicObject>>::all_with(client.clone(), &res.usage),
        wc.clone(),
    )
    .default_backoff()
    .modify(slim)
    .reflect(usage_writer)
    .touched_objects()
    .filter_map(move |u| {
        let pc = u
            .ok()
            .and_then(|u| u.labels().get(PROVIDER_CONFIG_LABEL).cloned());
        let pc_ar = pc_ar.clone();
        async move { pc.map(|name| ObjectRef::new_with(&name, pc_ar)) }
    });

    // ProviderConfigs: one watch feeds the lookup cache, the in-use
    // controller, and wakes the Robots that use a config when its spec
    // changes. Only the spec: the users count in its status changes with
    // every Robot created, and waking every Robot each time is quadratic.
    let pc_writer =
        reflector::store::Writer::<ProviderConfigObject>::new(res.provider_config.clone());
    let pc_store = pc_writer.as_reader();
    let (wake_tx, wake_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let pc_stream = watcher(
        Api::<ProviderConfigObject>::all_with(client.clone(), &res.provider_config),
        wc.clone(),
    )
    .default_backoff()
    .modify(slim)
    .reflect(pc_writer)
    .applied_objects()
    .inspect_ok({
        let seen = std::sync::Mutex::new(HashMap::<String, Option<i64>>::new());
        move |pc| {
            let name = pc.name_any();
            let generation = pc.metadata.generation;
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.insert(name.clone(), generation) != Some(generation) {
                let _ = wake_tx.send(name);
            }
        }
    });

    let lookup_store = pc_store.clone();
    let lookup_ar = res.provider_config.clone();
    let configs: ConfigLookup<ProviderConfigObject> =
        Arc::new(move |name: &str| lookup_store.get(&ObjectRef::new_with(name, lookup_ar.clone())));

    let ctx = Arc::new(Context {
        robots: setup.reconciler(res, configs, Some(usage_store.clone())),
        in_use: InUseReconciler::new(
            client.clone(),
            res.provider_config.clone(),
            usage_store.clone(),
            Events::new(client.clone(), &ReconcilerConfig::default().controller_name),
        ),
        metrics: setup.metrics.clone(),
        kind: res.robot.kind.clone(),
    });

    // Robots.
    let robot_writer = reflector::store::Writer::<RobotObject>::new(res.robot.clone());
    let robot_store = robot_writer.as_reader();
    let robot_stream = watcher(
        Api::<RobotObject>::all_with(client.clone(), &res.robot),
        wc.clone(),
    )
    .default_backoff()
    .modify(slim)
    .reflect(robot_writer)
    .applied_objects()
    .predicate_filter(robot_trigger, PredicateConfig::default());
    let wake_store = robot_store.clone();
    let robot_ar = res.robot.clone();
    let wake =
        tokio_stream::wrappers::UnboundedReceiverStream::new(wake_rx).flat_map(move |pc_name| {
            let refs: Vec<ObjectRef<RobotObject>> = wake_store
                .state()
                .iter()
                .filter(|r| r.spec.resource.provider_config_name() == pc_name)
                .map(|r| ObjectRef::from_obj_with(r.as_ref(), robot_ar.clone()))
                .collect();
            futures::stream::iter(refs)
        });

    let robots = Controller::for_stream_with(robot_stream, robot_store.clone(), res.robot.clone())
        .with_config(ControllerConfig::default().concurrency(setup.args.concurrency))
        .reconcile_on(wake)
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile_robot, robot_error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                log_controller_error(&e);
            }
        });

    let pcs = Controller::for_stream_with(pc_stream, pc_store, res.provider_config.clone())
        // Usages arrive in bursts when many Robots are created: count once
        // the burst settles rather than write the users count each time.
        .reconcile_on(usage_triggers)
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile_provider_config, pc_error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                log_controller_error(&e);
            }
        });

    // Ready once every cache has its first full list.
    let health = setup.health.clone();
    let metrics = setup.metrics.clone();
    let ready_store = robot_store.clone();
    let readiness = async move {
        let _ = ready_store.wait_until_ready().await;
        health.set("watch", None);
        tracing::info!(robots = ready_store.len(), "watch synced; reconciling");
        loop {
            metrics
                .managed_resources
                .set(i64::try_from(ready_store.len()).unwrap_or(i64::MAX));
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    };

    tokio::select! {
        _ = futures::future::join(robots, pcs) => {}
        _ = readiness => {}
    }
    Ok(())
}

fn log_controller_error<E: std::error::Error>(
    e: &kube::runtime::controller::Error<E, watcher::Error>,
) {
    use kube::runtime::controller::Error as E;
    match e {
        E::ObjectNotFound(_) => {}
        E::ReconcilerFailed(err, obj) => {
            tracing::warn!(object = %obj.name, error = %err, "reconcile failed")
        }
        other => tracing::warn!(error = %other, "watch error; retrying"),
    }
}

async fn reconcile_robot(
    robot: Arc<RobotObject>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let started = Instant::now();
    let outcome = ctx.robots.reconcile(robot).await;
    let result = match &outcome {
        Ok(o) => match o.state {
            SyncState::Synced => "synced",
            SyncState::Paused => "paused",
            SyncState::Failed => "failed",
            SyncState::Done => "done",
            SyncState::Stale => "stale",
        },
        Err(_) => "error",
    };
    let labels = ReconcileLabels {
        kind: ctx.kind.clone(),
        result: result.into(),
    };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    ctx.metrics
        .reconcile_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    let o = outcome?;
    Ok(match o.requeue_after {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

fn robot_error_policy(robot: Arc<RobotObject>, _: &ControllerError, ctx: Arc<Context>) -> Action {
    Action::requeue(ctx.robots.backoff(&robot.uid().unwrap_or_default()))
}

async fn reconcile_provider_config(
    pc: Arc<ProviderConfigObject>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let after = ctx.in_use.reconcile(pc).await?;
    // Usages wake us; the periodic look is a safety net after watch gaps.
    Ok(Action::requeue(after.unwrap_or(Duration::from_secs(300))))
}

fn pc_error_policy(_: Arc<ProviderConfigObject>, _: &ControllerError, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(5))
}

/// What one pass over every Robot found (`once`, and each Lambda
/// invocation's answer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PassSummary {
    pub robots_seen: usize,
    pub synced: usize,
    pub failed: usize,
    pub paused: usize,
    pub deleted: usize,
    pub duration_ms: u128,
    /// Names of Robots not synced, with their reason (first ten).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl PassSummary {
    pub fn ok(&self) -> bool {
        self.failed == 0
    }
}

/// One pass: every Robot reconciled once (retried on a stale view), then
/// every ProviderConfig's users counted.
pub async fn pass(setup: &Setup) -> anyhow::Result<PassSummary> {
    let started = Instant::now();
    let Some(generation) = setup.discover().await? else {
        anyhow::bail!("the control plane serves no provider-dummy CRDs (Robot, ProviderConfig)");
    };
    let res = Resources::of(generation);
    let client = setup.client();

    let pcs: Api<ProviderConfigObject> = Api::all_with(client.clone(), &res.provider_config);
    let configs: HashMap<String, Arc<ProviderConfigObject>> = pcs
        .list(&ListParams::default())
        .await?
        .into_iter()
        .map(|pc| (pc.name_any(), Arc::new(pc)))
        .collect();
    let configs = Arc::new(configs);
    let lookup: ConfigLookup<ProviderConfigObject> = {
        let configs = configs.clone();
        Arc::new(move |name: &str| configs.get(name).cloned())
    };
    let reconciler = setup.reconciler(&res, lookup, None);

    let robots: Api<RobotObject> = Api::all_with(client.clone(), &res.robot);
    let list = robots.list(&ListParams::default()).await?;
    let mut summary = PassSummary {
        robots_seen: list.items.len(),
        ..PassSummary::default()
    };
    let results: Vec<(String, Result<SyncState, String>)> = futures::stream::iter(list.items)
        .map(|robot| {
            let reconciler = &reconciler;
            let robots = &robots;
            async move {
                let name = robot.name_any();
                let mut current = Arc::new(robot);
                for _ in 0..5 {
                    match reconciler.reconcile(current.clone()).await {
                        Ok(o) if o.state == SyncState::Stale => match robots.get_opt(&name).await {
                            Ok(Some(fresh)) => current = Arc::new(fresh),
                            Ok(None) => return (name, Ok(SyncState::Done)),
                            Err(e) => return (name, Err(e.to_string())),
                        },
                        Ok(o) => return (name, Ok(o.state)),
                        Err(e) => return (name, Err(e.to_string())),
                    }
                }
                (
                    name,
                    Err("the Robot kept changing while being reconciled".into()),
                )
            }
        })
        .buffer_unordered(usize::from(setup.args.concurrency.max(1)))
        .collect()
        .await;
    for (name, result) in results {
        match result {
            Ok(SyncState::Synced) => summary.synced += 1,
            Ok(SyncState::Paused) => summary.paused += 1,
            Ok(SyncState::Done) => summary.deleted += 1,
            Ok(SyncState::Failed | SyncState::Stale) => {
                summary.failed += 1;
                if summary.failures.len() < 10 {
                    summary
                        .failures
                        .push(format!("{name}: {}", failure_reason(&robots, &name).await));
                }
            }
            Err(e) => {
                summary.failed += 1;
                if summary.failures.len() < 10 {
                    summary.failures.push(format!("{name}: {e}"));
                }
            }
        }
    }

    // Users of each ProviderConfig, from a fresh list of usages.
    let usage_api: Api<DynamicObject> = Api::all_with(client.clone(), &res.usage);
    let usages = usage_api.list_metadata(&ListParams::default()).await?;
    let writer =
        reflector::store::Writer::<PartialObjectMeta<DynamicObject>>::new(res.usage.clone());
    let store = writer.as_reader();
    let mut writer = writer;
    writer.apply_watcher_event(&watcher::Event::Init);
    for u in usages.items {
        writer.apply_watcher_event(&watcher::Event::InitApply(u));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let in_use = InUseReconciler::new(
        client.clone(),
        res.provider_config.clone(),
        store,
        Events::new(client, &ReconcilerConfig::default().controller_name),
    );
    for pc in configs.values() {
        in_use.reconcile(pc.clone()).await?;
    }

    summary.duration_ms = started.elapsed().as_millis();
    Ok(summary)
}

/// The Synced message of a Robot, for the pass summary.
async fn failure_reason(robots: &Api<RobotObject>, name: &str) -> String {
    robots
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|r| {
            r.status.and_then(|s| {
                crate::managed::conditions::get(
                    &s.resource.conditions,
                    crate::managed::conditions::TYPE_SYNCED,
                )
                .and_then(|c| c.message.clone())
            })
        })
        .unwrap_or_else(|| "not synced".into())
}

/// `once`: one pass, then exit 0 when every Robot is Synced.
pub async fn once(args: RunArgs) -> ExitCode {
    let setup = match Setup::new(args, Arc::default(), Arc::default()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match pass(&setup).await {
        Ok(summary) => {
            tracing::info!(
                robots = summary.robots_seen,
                synced = summary.synced,
                failed = summary.failed,
                paused = summary.paused,
                deleted = summary.deleted,
                duration_ms = summary.duration_ms as u64,
                "pass complete"
            );
            for f in &summary.failures {
                tracing::warn!(robot = %f, "not synced");
            }
            if summary.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "pass failed");
            ExitCode::FAILURE
        }
    }
}

/// `lambda`: each invocation (a schedule tick, or any event) runs one pass
/// and answers with its summary. Clients and credentials stay cached while
/// the function is warm, re-read after --secret-refresh-interval.
pub async fn lambda(args: RunArgs) -> ExitCode {
    let setup = match Setup::new(args, Arc::default(), Arc::default()).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let last_refresh = Arc::new(tokio::sync::Mutex::new(Instant::now()));
    let handler = lambda_runtime::service_fn(
        move |_event: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let setup = setup.clone();
            let last_refresh = last_refresh.clone();
            async move {
                {
                    let mut last = last_refresh.lock().await;
                    if last.elapsed() >= setup.args.secret_refresh_interval {
                        if let Err(e) = setup.control_plane.refresh(false).await {
                            tracing::warn!(error = %e, "cannot re-read the kubeconfig; keeping the current one");
                        }
                        *last = Instant::now();
                    }
                }
                let summary = match pass(&setup).await {
                    Ok(s) => s,
                    Err(e)
                        if setup
                            .health
                            .problems()
                            .iter()
                            .any(|p| p.starts_with("credentials")) =>
                    {
                        // Refused credentials: re-read them now and try once more.
                        tracing::warn!(error = %e, "pass failed with refused credentials; re-reading them");
                        setup.control_plane.refresh(true).await?;
                        pass(&setup).await?
                    }
                    Err(e) => return Err(e.into()),
                };
                tracing::info!(
                    robots = summary.robots_seen,
                    synced = summary.synced,
                    failed = summary.failed,
                    "pass complete"
                );
                Ok::<PassSummary, lambda_runtime::Error>(summary)
            }
        },
    );
    match lambda_runtime::run(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "lambda runtime stopped");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn robot(annotations: &[(&str, &str)], generation: i64) -> RobotObject {
        let mut r = RobotObject::new(
            "r",
            &Resources::of(Generation::Crossplane).robot,
            RobotSpec {
                resource: Default::default(),
                for_provider: crate::robot::RobotParameters {
                    color: "red".into(),
                },
            },
        );
        r.metadata.generation = Some(generation);
        r.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        r
    }

    #[test]
    fn our_bookkeeping_does_not_retrigger() {
        let base = robot(&[], 1);
        let bookkeeping = robot(
            &[(meta::CREATE_PENDING, "t"), (meta::CREATE_SUCCEEDED, "t")],
            1,
        );
        assert_eq!(robot_trigger(&base), robot_trigger(&bookkeeping));
        assert_ne!(robot_trigger(&base), robot_trigger(&robot(&[], 2)));
        assert_ne!(
            robot_trigger(&base),
            robot_trigger(&robot(&[(meta::PAUSED, "true")], 1))
        );
        assert_ne!(
            robot_trigger(&base),
            robot_trigger(&robot(&[(meta::EXTERNAL_NAME, "x")], 1))
        );
        assert_eq!(
            robot_trigger(&base),
            robot_trigger(&robot(&[(meta::EXTERNAL_NAME, "r")], 1))
        );
    }

    #[test]
    fn summaries_serialize_for_lambda() {
        let s = PassSummary {
            robots_seen: 2,
            synced: 1,
            failed: 1,
            ..PassSummary::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["robots_seen"], 2);
        assert!(!s.ok());
    }
}
