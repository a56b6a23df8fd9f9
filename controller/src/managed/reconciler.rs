//! The generic managed-resource reconciler: crossplane-runtime's order of
//! operations, with its known weak spots fixed (external names are
//! deterministic, so an interrupted create is settled by observing; a
//! delete of a missing resource is success; a later claimant of an
//! external resource never touches it).
//!
//! Writes to the control plane happen only when something a reader could
//! see changes, so a resource in steady state costs no write at all. A
//! created resource costs four: finalizer and external name, status,
//! usage, and one event (three with `normal_events` off).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::ApiResource;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::api::{Family, VERSION};
use crate::ratelimit::RateLimiter;

use super::claims::{Claimant, Claims};
use super::conditions::{self, Condition};
use super::config::{ConfigKey, ConfigLookup};
use super::events::Reason;
use super::meta;
use super::metrics::{MrMetrics, gvk_label};
use super::types::Policies;
use super::usage::usage_of;
use super::writer::{ObjectKey, Owner, SecretTarget, WriteError, Writer};
use super::{
    ConnectionDetails, Connector, ExternalClient, Managed, ManagedKind, ManagedSpec, ManagedStatus,
    Observation, SharedResource,
};

/// How soon a resource whose write conflicted is looked at again.
const STALE_REQUEUE: Duration = Duration::from_millis(200);
/// Permanent failures back off from `backoff_max` up to this many times it.
const PERMANENT_BACKOFF_FACTOR: u32 = 10;

/// Where a reconcile left the resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// Synced=True: the external resource matches (or was deleted).
    Synced,
    /// Reconciliation is paused by annotation or policy; nothing was called.
    Paused,
    /// Synced=False: something failed; retried with backoff.
    Failed,
    /// The resource is gone (finalizer removed) or was never ours to touch.
    Done,
    /// Our view of the object was stale (a write conflicted): look again
    /// at the newest version, soon. Not a failure.
    Stale,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Synced => "synced",
            SyncState::Paused => "paused",
            SyncState::Failed => "failed",
            SyncState::Done => "done",
            SyncState::Stale => "stale",
        }
    }
}

/// The result of one reconcile: what state, why it failed, and when to look
/// again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub state: SyncState,
    pub requeue_after: Option<Duration>,
    /// For a failure: the event reason, a low-cardinality label for metrics.
    pub reason: Option<Reason>,
}

impl Outcome {
    fn done() -> Self {
        Self {
            state: SyncState::Done,
            requeue_after: None,
            reason: None,
        }
    }

    fn stale() -> Self {
        Self {
            state: SyncState::Stale,
            requeue_after: Some(STALE_REQUEUE),
            reason: None,
        }
    }
}

/// Timing knobs of the reconciler.
#[derive(Clone, Debug)]
pub struct ReconcilerConfig {
    /// How often an in-sync resource is observed again to catch drift.
    pub poll_interval: Duration,
    /// The floor of a `crossplane.io/poll-interval` annotation.
    pub min_poll_interval: Duration,
    /// First and largest delay between retries of a transiently failing
    /// resource; permanent failures start at the largest.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Reporting controller name in events.
    pub controller_name: String,
    /// Record the Normal events of a create, an update or a delete.
    pub normal_events: bool,
    /// Longest one reconcile may take. Past it the reconcile is abandoned
    /// (every step is idempotent: the next one observes where it stopped)
    /// and retried with backoff, so one hung call cannot stall a resource
    /// forever.
    pub timeout: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(60),
            min_poll_interval: Duration::from_secs(10),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            controller_name: "robot-byoc/robot-controller".into(),
            normal_events: true,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Errors the reconciler cannot record on the resource itself (writing to
/// the control plane failed); the caller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot update managed resource {name}: {source}")]
    Write {
        name: String,
        #[source]
        source: WriteError,
    },
    #[error("reconciling {name} took longer than {after:?}; abandoned, will retry")]
    Timeout { name: String, after: Duration },
}

impl Error {
    /// The `reason` label of the reconcile metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Write { .. } => "CannotUpdateManagedResource",
            Error::Timeout { .. } => "ReconcileTimeout",
        }
    }
}

type Mr<K> = Managed<<K as ManagedKind>::Spec, <K as ManagedKind>::Status>;
type ConnectorOf<K> = <K as ManagedKind>::Connector;
type ConfigOf<K> =
    <ConnectorOf<K> as Connector<<K as ManagedKind>::Spec, <K as ManagedKind>::Status>>::Config;
type ClientOf<K> =
    <ConnectorOf<K> as Connector<<K as ManagedKind>::Spec, <K as ManagedKind>::Status>>::Client;

/// The claim `mr` makes on its external name, and that name.
pub fn claim_of<K: ManagedKind>(family: Family, mr: &Mr<K>, source: &str) -> (String, Claimant) {
    let common = mr.spec.common();
    let config = ConfigKey::resolve(
        K::GENERATION,
        family,
        mr.metadata.namespace.as_deref(),
        &common.config,
    )
    .ok();
    let key = object_key(mr);
    (
        meta::external_name(&mr.metadata),
        Claimant {
            uid: mr.uid().unwrap_or_default(),
            created: mr.metadata.creation_timestamp.as_ref().map(|t| t.0),
            describe: format!("{}.{} {key}", K::KIND, K::group(family)),
            config,
            source: source.to_owned(),
            established: meta::has_finalizer(&mr.metadata, meta::FINALIZER)
                && mr.status.as_ref().is_some_and(is_ready),
        },
    )
}

fn object_key<K: Resource>(mr: &K) -> ObjectKey {
    ObjectKey {
        namespace: mr.meta().namespace.clone(),
        name: mr.meta().name.clone().unwrap_or_default(),
    }
}

/// Reconciles one managed kind with its external system.
pub struct Reconciler<K: ManagedKind, W: Writer> {
    family: Family,
    resource: SharedResource,
    gvk: String,
    connector: ConnectorOf<K>,
    configs: ConfigLookup<ConfigOf<K>>,
    claims: Arc<Claims>,
    writer: W,
    limiter: Arc<RateLimiter>,
    config: ReconcilerConfig,
    metrics: Option<Arc<MrMetrics>>,
    failures: Mutex<HashMap<String, u32>>,
    /// Reconcile requests handled, by UID: a schema that prunes
    /// `lastHandledReconcileAt` must not make one be handled forever.
    handled: Mutex<HashMap<String, String>>,
}

/// A failed step: the reason for the event and the condition message.
struct Failure {
    reason: Reason,
    message: String,
    ready: Option<Condition>,
    transient: bool,
}

impl Failure {
    fn new(reason: Reason, message: impl Into<String>, transient: bool) -> Self {
        Self {
            reason,
            message: message.into(),
            ready: None,
            transient,
        }
    }

    fn ready(mut self, ready: Condition) -> Self {
        self.ready = Some(ready);
        self
    }
}

impl<K: ManagedKind, W: Writer> Reconciler<K, W> {
    pub fn new(
        family: Family,
        connector: ConnectorOf<K>,
        configs: ConfigLookup<ConfigOf<K>>,
        claims: Arc<Claims>,
        writer: W,
        limiter: Arc<RateLimiter>,
        config: ReconcilerConfig,
    ) -> Self {
        let resource = SharedResource::new(K::api_resource(family));
        Self {
            gvk: gvk_label(&resource.group, VERSION, K::KIND),
            family,
            resource,
            connector,
            configs,
            claims,
            writer,
            limiter,
            config,
            metrics: None,
            failures: Mutex::default(),
            handled: Mutex::default(),
        }
    }

    /// Records Crossplane's managed-resource metrics.
    pub fn with_metrics(mut self, metrics: Arc<MrMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn api_resource(&self) -> &ApiResource {
        &self.resource
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// The `gvk` label of this kind's metrics.
    pub fn gvk(&self) -> &str {
        &self.gvk
    }

    /// Reconciles `mr` once. Errors from the external system end up in the
    /// resource's conditions and events; only a failure to write to the
    /// control plane is returned.
    pub async fn reconcile(&self, mr: Arc<Mr<K>>) -> Result<Outcome, Error> {
        let inner = tokio::time::timeout(self.config.timeout, self.reconcile_inner(&mr));
        let result = match inner.await.unwrap_or_else(|_| {
            Err(Error::Timeout {
                name: mr.name_any(),
                after: self.config.timeout,
            })
        }) {
            // A write refused for a stale resourceVersion: someone else
            // wrote meanwhile. Look again at the newest version soon instead
            // of failing (which warns and backs off, up to --max-backoff).
            Err(Error::Write {
                source: WriteError::Conflict,
                ..
            }) => Ok(Outcome::stale()),
            Err(Error::Write {
                source: WriteError::NotFound,
                ..
            }) => Ok(Outcome::done()),
            other => other,
        };
        if let Ok(Outcome {
            state: SyncState::Synced | SyncState::Paused | SyncState::Done,
            ..
        }) = &result
        {
            self.lock_failures().remove(&mr.uid().unwrap_or_default());
        }
        result
    }

    async fn reconcile_inner(&self, mr: &Mr<K>) -> Result<Outcome, Error> {
        let common = mr.spec.common();
        let stored = mr.status.clone().unwrap_or_default();
        let key = object_key(mr);
        if let Some(m) = &self.metrics
            && conditions::get(
                &stored.resource_status().conditions,
                conditions::TYPE_SYNCED,
            )
            .is_none()
        {
            m.first_reconcile(
                &self.gvk,
                &key,
                mr.metadata.creation_timestamp.as_ref().map(|t| t.0),
            );
        }
        let mut run = Run::<K, W> {
            r: self,
            mr,
            oref: mr.object_ref(&self.resource),
            key,
            rv: mr.resource_version(),
            finalizers: mr.finalizers().to_vec(),
            status: stored.clone(),
            stored,
            changed: false,
            request: None,
        };
        run.note_reconcile_request().await;

        let policies = match Policies::resolve(&common) {
            Ok(p) => p,
            Err(message) => {
                // Nothing to retry until the spec changes.
                let mut o = run
                    .fail(Failure::new(
                        Reason::CannotUseManagementPolicy,
                        message,
                        false,
                    ))
                    .await?;
                o.requeue_after = None;
                return Ok(o);
            }
        };

        if meta::is_paused(&mr.metadata) || policies.is_paused() {
            let was_paused = conditions::get(
                run.stored.resource_status().conditions.as_slice(),
                conditions::TYPE_SYNCED,
            )
            .is_some_and(|c| c.reason == "ReconcilePaused");
            run.set(Condition::reconcile_paused());
            if !was_paused {
                self.writer
                    .event(
                        &run.oref,
                        Reason::ReconciliationPaused,
                        conditions::PAUSED_MESSAGE,
                    )
                    .await;
            }
            run.write_status().await?;
            // Nothing to poll: the pause ends with a change to the object.
            return Ok(Outcome {
                state: SyncState::Paused,
                requeue_after: None,
                reason: None,
            });
        }

        let deleting = meta::is_deleted(&mr.metadata);
        if deleting && !meta::has_finalizer(&mr.metadata, meta::FINALIZER) {
            // Not ours (never reached a create), or already finalized.
            return Ok(Outcome::done());
        }
        if deleting && !policies.should_delete() {
            return run.finalize().await;
        }

        // Connect: the ProviderConfig, and a record that we use it.
        let config_key = match ConfigKey::resolve(
            K::GENERATION,
            self.family,
            mr.metadata.namespace.as_deref(),
            &common.config,
        ) {
            Ok(k) => k,
            Err(e) => {
                return run
                    .fail(Failure::new(
                        Reason::CannotConnectToProvider,
                        format!("connect failed: {e}"),
                        false,
                    ))
                    .await;
            }
        };
        if !deleting {
            let usage = usage_of(K::GENERATION, &run.owner(), &config_key);
            if let Err(e) = self.writer.track_usage(&usage).await {
                return run
                    .fail(Failure::new(
                        Reason::CannotConnectToProvider,
                        format!("connect failed: cannot track ProviderConfig usage: {e}"),
                        true,
                    ))
                    .await;
            }
        }
        let Some(pc) = (self.configs)(&config_key) else {
            // A new or changed ProviderConfig wakes the resource.
            return run
                .fail(Failure::new(
                    Reason::CannotConnectToProvider,
                    format!("connect failed: cannot get ProviderConfig: {config_key} not found"),
                    false,
                ))
                .await;
        };
        let external = match self.connector.connect(mr, &pc) {
            Ok(c) => c,
            Err(e) => {
                return run
                    .fail(Failure::new(
                        Reason::CannotConnectToProvider,
                        format!("connect failed: {e}"),
                        e.transient,
                    ))
                    .await;
            }
        };

        // One external resource, one owner: a later claimant waits.
        if let Some(owner) = self.preceding_claimant(mr, &pc) {
            if deleting {
                self.writer
                    .event(
                        &run.oref,
                        Reason::ExternalNameConflict,
                        &format!(
                            "Not deleting the external resource: {} manages it",
                            owner.describe
                        ),
                    )
                    .await;
                return run.finalize().await;
            }
            return run
                .fail(Failure::new(
                    Reason::ExternalNameConflict,
                    format!(
                        "external name {:?} is already managed by {} (the oldest claimant manages it); \
                         this resource changes nothing until it is the only one",
                        meta::external_name(&mr.metadata),
                        owner.describe
                    ),
                    false,
                ))
                .await;
        }

        self.limiter.acquire().await;
        let observation = match external.observe(mr, &mut run.status).await {
            Ok(o) => o,
            Err(e) => {
                return run
                    .fail(Failure::new(
                        Reason::CannotObserveExternalResource,
                        format!("observe failed: {e}"),
                        e.transient,
                    ))
                    .await;
            }
        };
        if observation.exists
            && let Some(m) = &self.metrics
        {
            if observation.up_to_date {
                m.in_sync(&self.gvk, &run.key);
            } else {
                m.drifted(&self.gvk, &run.key);
            }
        }

        if policies.should_only_observe() {
            // Finalized like any other resource, so that its usage and
            // connection Secret go with it even without a garbage collector.
            if let Err(e) = run.initialize().await {
                return run.write_failed(e, None).await;
            }
            if !observation.exists {
                return run
                    .fail(
                        Failure::new(
                            Reason::CannotObserveExternalResource,
                            "observe failed: external resource does not exist",
                            true,
                        )
                        .ready(Condition::unavailable()),
                    )
                    .await;
            }
            if let Err(f) = run.publish_details(&observation.connection_details).await {
                return run.fail(f).await;
            }
            run.set(Condition::available());
            return run.succeed().await;
        }

        if deleting {
            return run.delete(&external, observation).await;
        }

        // From here on the resource is live: finalized and named before
        // anything is created for it.
        if let Err(e) = run.initialize().await {
            let creating = (!observation.exists).then(Condition::creating);
            return run.write_failed(e, creating).await;
        }

        if !observation.exists {
            if !policies.should_create() {
                return run
                    .fail(
                        Failure::new(
                            Reason::CannotObserveExternalResource,
                            "external resource does not exist and management policies do not allow Create",
                            false,
                        )
                        .ready(Condition::unavailable()),
                    )
                    .await;
            }
            return run.create(&external).await;
        }

        if let Err(f) = run.publish_details(&observation.connection_details).await {
            return run.fail(f).await;
        }
        run.set(Condition::available());

        if observation.up_to_date || !policies.should_update() {
            return run.succeed().await;
        }
        self.limiter.acquire().await;
        match external.update(mr).await {
            Ok(details) => {
                if self.config.normal_events {
                    self.writer
                        .event(
                            &run.oref,
                            Reason::UpdatedExternalResource,
                            "Successfully requested update of external resource",
                        )
                        .await;
                }
                if let Err(f) = run.publish_details(&details).await {
                    return run.fail(f).await;
                }
                run.succeed().await
            }
            Err(e) => {
                run.fail(Failure::new(
                    Reason::CannotUpdateExternalResource,
                    format!("update failed: {e}"),
                    e.transient,
                ))
                .await
            }
        }
    }

    /// The oldest other resource claiming the same external resource, if
    /// it precedes `mr`.
    fn preceding_claimant(&self, mr: &Mr<K>, config: &ConfigOf<K>) -> Option<Claimant> {
        let target = self.connector.target(config)?;
        let (name, me) = claim_of::<K>(self.family, mr, "");
        self.claims
            .preceding(K::EXTERNAL_SPACE, &name, &me)
            .into_iter()
            .find(|other| {
                other
                    .config
                    .as_ref()
                    .and_then(|k| (self.configs)(k))
                    .and_then(|c| self.connector.target(&c))
                    .is_some_and(|t| t == target)
            })
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Exponential backoff per resource, with jitter so a fleet of resources
    /// failing together does not retry together. Permanent failures start
    /// where transient ones stop: they wait for a change more than for time.
    pub fn backoff(&self, uid: &str, transient: bool) -> Duration {
        let mut failures = self.lock_failures();
        let n = failures.entry(uid.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        let (base, max) = if transient {
            (self.config.backoff_base, self.config.backoff_max)
        } else {
            (
                self.config.backoff_max,
                self.config
                    .backoff_max
                    .saturating_mul(PERMANENT_BACKOFF_FACTOR),
            )
        };
        let d = base.saturating_mul(1u32 << (*n - 1).min(16)).min(max);
        jitter(d, 0.1)
    }

    /// The poll interval of `mr`: its `crossplane.io/poll-interval`
    /// (no lower than the floor), else the default; jittered by up to 10%.
    pub fn poll(&self, mr: &Mr<K>) -> Duration {
        let d = match meta::poll_interval(&mr.metadata) {
            Some(Ok(d)) => d.max(self.config.min_poll_interval),
            Some(Err(why)) => {
                tracing::warn!(name = %object_key(mr), "{why}; polling at the default interval");
                self.config.poll_interval
            }
            None => self.config.poll_interval,
        };
        jitter(d, 0.1)
    }
}

/// `d` plus or minus up to `fraction` of it.
fn jitter(d: Duration, fraction: f64) -> Duration {
    let f = 1.0 + fraction * (rand::random::<f64>() * 2.0 - 1.0);
    d.mul_f64(f.max(0.0))
}

/// The state of one reconcile: the status being built and the version of
/// the object last seen, for optimistic writes.
struct Run<'a, K: ManagedKind, W: Writer> {
    r: &'a Reconciler<K, W>,
    mr: &'a Mr<K>,
    key: ObjectKey,
    rv: Option<String>,
    /// The finalizers as last written (ours added once we add it).
    finalizers: Vec<String>,
    stored: K::Status,
    status: K::Status,
    changed: bool,
    oref: ObjectReference,
    /// A reconcile request being handled: remembered once written.
    request: Option<String>,
}

impl<K: ManagedKind, W: Writer> Run<'_, K, W> {
    fn uid(&self) -> String {
        self.mr.uid().unwrap_or_default()
    }

    fn owner(&self) -> Owner {
        Owner {
            api_version: self.r.resource.api_version.clone(),
            kind: self.r.resource.kind.clone(),
            key: self.key.clone(),
            uid: self.uid(),
        }
    }

    fn set(&mut self, c: Condition) {
        let generation = self.mr.metadata.generation;
        if conditions::set(
            &mut self.status.resource_status_mut().conditions,
            c,
            generation,
        ) {
            self.changed = true;
        }
    }

    /// A new `crossplane.io/reconcile-requested-at` token: reconciled now,
    /// recorded in `status.lastHandledReconcileAt` with the next write.
    async fn note_reconcile_request(&mut self) {
        let Some(token) = meta::reconcile_request(&self.mr.metadata) else {
            return;
        };
        let stored = self
            .stored
            .resource_status()
            .last_handled_reconcile_at
            .as_deref();
        let handled = self
            .r
            .handled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.uid())
            .is_some_and(|t| t == token);
        if stored == Some(token) || handled {
            return;
        }
        self.r
            .writer
            .event(
                &self.oref,
                Reason::ReconcileRequestHandled,
                "Handling reconcile request",
            )
            .await;
        self.status.resource_status_mut().last_handled_reconcile_at = Some(token.to_owned());
        self.changed = true;
        self.request = Some(token.to_owned());
    }

    /// Writes the status if a reader could see a difference.
    async fn write_status(&mut self) -> Result<(), Error> {
        if !self.changed && !self.status.observation_differs(&self.stored) {
            return Ok(());
        }
        self.status.resource_status_mut().observed_generation = self.mr.metadata.generation;
        let body = serde_json::to_value(&self.status).map_err(|e| Error::Write {
            name: self.key.to_string(),
            source: WriteError::Failed(format!("cannot encode the status: {e}")),
        })?;
        match self
            .r
            .writer
            .patch_status(&self.key, self.rv.as_deref(), body)
            .await
        {
            Ok(rv) => {
                self.rv = rv.or(self.rv.take());
                let was_ready = is_ready(&self.stored);
                self.stored = self.status.clone();
                self.changed = false;
                if let Some(token) = self.request.take() {
                    self.r
                        .handled
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(self.uid(), token);
                }
                if !was_ready
                    && is_ready(&self.status)
                    && let Some(m) = &self.r.metrics
                {
                    m.became_ready(
                        &self.r.gvk,
                        &self.key,
                        self.mr.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    );
                }
                Ok(())
            }
            Err(source) => Err(Error::Write {
                name: self.key.to_string(),
                source,
            }),
        }
    }

    /// Adds the finalizer and the external name, in one write, when either
    /// is missing. Adding the finalizer replaces the list whole (a merge
    /// patch), so that write is guarded by the version we read: a stale
    /// view fails here, before anything is created.
    async fn initialize(&mut self) -> Result<(), WriteError> {
        let add_finalizer = !self.finalizers.iter().any(|f| f == meta::FINALIZER);
        let name = (!meta::has_external_name(&self.mr.metadata))
            .then(|| meta::external_name(&self.mr.metadata));
        if !add_finalizer && name.is_none() {
            return Ok(());
        }
        let mut metadata = serde_json::Map::new();
        let mut finalizers = self.finalizers.clone();
        if add_finalizer {
            finalizers.push(meta::FINALIZER.into());
            metadata.insert("finalizers".into(), json!(finalizers));
            if let Some(rv) = &self.rv {
                metadata.insert("resourceVersion".into(), json!(rv));
            }
        }
        if let Some(name) = name {
            metadata.insert("annotations".into(), json!({ meta::EXTERNAL_NAME: name }));
        }
        let rv = self
            .r
            .writer
            .patch_metadata(&self.key, Value::Object(metadata))
            .await?;
        self.rv = rv.or(self.rv.take());
        self.finalizers = finalizers;
        Ok(())
    }

    /// A conflict means our view is stale: look again soon, no error. A
    /// resource that is gone is done. Anything else is a reconcile error.
    async fn write_failed(
        &mut self,
        e: WriteError,
        ready: Option<Condition>,
    ) -> Result<Outcome, Error> {
        match e {
            WriteError::Conflict => Ok(Outcome::stale()),
            WriteError::NotFound => Ok(Outcome::done()),
            e => {
                let mut f = Failure::new(
                    Reason::CannotUpdateManagedResource,
                    format!("cannot update managed resource: {e}"),
                    true,
                );
                f.ready = ready;
                self.fail(f).await
            }
        }
    }

    async fn fail(&mut self, f: Failure) -> Result<Outcome, Error> {
        tracing::info!(
            name = %self.key,
            kind = K::KIND,
            reason = f.reason.as_str(),
            transient = f.transient,
            error = %f.message,
            "reconcile failed"
        );
        self.r.writer.event(&self.oref, f.reason, &f.message).await;
        if let Some(ready) = f.ready {
            self.set(ready);
        }
        self.set(Condition::reconcile_error(f.message));
        self.write_status().await?;
        Ok(Outcome {
            state: SyncState::Failed,
            requeue_after: Some(self.r.backoff(&self.uid(), f.transient)),
            reason: Some(f.reason),
        })
    }

    async fn succeed(&mut self) -> Result<Outcome, Error> {
        self.set(Condition::reconcile_success());
        self.write_status().await?;
        Ok(Outcome {
            state: SyncState::Synced,
            requeue_after: Some(self.r.poll(self.mr)),
            reason: None,
        })
    }

    fn secret_target(&self) -> Option<SecretTarget> {
        let (namespace, name) = self.mr.spec.common().connection_secret?;
        Some(SecretTarget {
            // A namespaced resource's Secret lives beside it.
            namespace: namespace
                .map(str::to_owned)
                .or_else(|| self.key.namespace.clone())
                .unwrap_or_else(|| "default".into()),
            name: name.to_owned(),
        })
    }

    async fn publish_details(&mut self, details: &ConnectionDetails) -> Result<(), Failure> {
        let Some(target) = self.secret_target() else {
            return Ok(());
        };
        let owner = self.owner();
        self.r
            .writer
            .publish(&owner, &target, details)
            .await
            .map_err(|e| {
                let transient = !matches!(e, WriteError::NotOurs { .. });
                Failure::new(
                    Reason::CannotPublishConnectionDetails,
                    format!("cannot publish connection details: {e}"),
                    transient,
                )
            })
    }

    async fn create(&mut self, external: &ClientOf<K>) -> Result<Outcome, Error> {
        self.r.limiter.acquire().await;
        match external.create(self.mr).await {
            Ok(details) => {
                if self.r.config.normal_events {
                    self.r
                        .writer
                        .event(
                            &self.oref,
                            Reason::CreatedExternalResource,
                            "Successfully requested creation of external resource",
                        )
                        .await;
                }
                if let Err(f) = self.publish_details(&details).await {
                    return self.fail(f).await;
                }
                // The external API answers synchronously: look once more so the
                // status says Available now rather than after another round.
                self.r.limiter.acquire().await;
                let mut status = self.status.clone();
                match external.observe(self.mr, &mut status).await {
                    Ok(o) if o.exists => {
                        if o.up_to_date
                            && let Some(m) = &self.r.metrics
                        {
                            m.in_sync(&self.r.gvk, &self.key);
                        }
                        self.status = status;
                        self.set(Condition::available());
                    }
                    _ => self.set(Condition::creating()),
                }
                self.succeed().await
            }
            Err(e) => {
                self.fail(
                    Failure::new(
                        Reason::CannotCreateExternalResource,
                        format!("create failed: {e}"),
                        e.transient,
                    )
                    .ready(Condition::creating()),
                )
                .await
            }
        }
    }

    async fn delete(
        &mut self,
        external: &ClientOf<K>,
        observation: Observation,
    ) -> Result<Outcome, Error> {
        if observation.exists {
            self.r.limiter.acquire().await;
            if let Err(e) = external.delete(self.mr).await {
                return self
                    .fail(
                        Failure::new(
                            Reason::CannotDeleteExternalResource,
                            format!("delete failed: {e}"),
                            e.transient,
                        )
                        .ready(Condition::deleting()),
                    )
                    .await;
            }
            if self.r.config.normal_events {
                self.r
                    .writer
                    .event(
                        &self.oref,
                        Reason::DeletedExternalResource,
                        "Successfully requested deletion of external resource",
                    )
                    .await;
            }
            // Confirm it is gone before letting the object go.
            self.r.limiter.acquire().await;
            let mut status = self.status.clone();
            match external.observe(self.mr, &mut status).await {
                Ok(o) if !o.exists => {}
                Ok(_) => {
                    self.set(Condition::deleting());
                    self.set(Condition::reconcile_success());
                    self.write_status().await?;
                    return Ok(Outcome {
                        state: SyncState::Synced,
                        requeue_after: Some(Duration::from_secs(1)),
                        reason: None,
                    });
                }
                Err(e) => {
                    return self
                        .fail(
                            Failure::new(
                                Reason::CannotObserveExternalResource,
                                format!("observe failed: {e}"),
                                e.transient,
                            )
                            .ready(Condition::deleting()),
                        )
                        .await;
                }
            }
        }
        self.finalize().await
    }

    /// Unpublishes, releases the ProviderConfig and removes the finalizer:
    /// the external resource is gone or is being left in place.
    async fn finalize(&mut self) -> Result<Outcome, Error> {
        if let Some(target) = self.secret_target()
            && let Err(e) = self.r.writer.unpublish(&self.uid(), &target).await
        {
            return self
                .fail(
                    Failure::new(
                        Reason::CannotUnpublishConnectionDetails,
                        format!("cannot unpublish connection details: {e}"),
                        true,
                    )
                    .ready(Condition::deleting()),
                )
                .await;
        }
        let usage = ObjectKey {
            namespace: match K::GENERATION {
                crate::api::Generation::Legacy => None,
                crate::api::Generation::Namespaced => self.key.namespace.clone(),
            },
            name: self.uid(),
        };
        if let Err(e) = self.r.writer.release_usage(&usage).await {
            return self
                .fail(
                    Failure::new(
                        Reason::CannotUpdateManagedResource,
                        format!("cannot release ProviderConfig usage: {e}"),
                        true,
                    )
                    .ready(Condition::deleting()),
                )
                .await;
        }
        let finalizers: Vec<&String> = self
            .finalizers
            .iter()
            .filter(|f| *f != meta::FINALIZER)
            .collect();
        let mut metadata = json!({ "finalizers": finalizers });
        if let Some(rv) = &self.rv {
            metadata["resourceVersion"] = json!(rv);
        }
        match self.r.writer.patch_metadata(&self.key, metadata).await {
            Ok(_) | Err(WriteError::NotFound) => {
                if let Some(m) = &self.r.metrics {
                    m.deleted(
                        &self.r.gvk,
                        &self.key,
                        self.mr.metadata.deletion_timestamp.as_ref().map(|t| t.0),
                    );
                }
                Ok(Outcome::done())
            }
            Err(e) => self.write_failed(e, Some(Condition::deleting())).await,
        }
    }
}

fn is_ready<U: ManagedStatus>(status: &U) -> bool {
    conditions::get(&status.resource_status().conditions, conditions::TYPE_READY)
        .is_some_and(Condition::is_true)
}
