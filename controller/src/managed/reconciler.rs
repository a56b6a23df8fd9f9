//! The generic managed-resource reconciler: crossplane-runtime's order of
//! operations, with its known weak spots fixed (an interrupted create is
//! settled by observing; delete of a missing resource is success).
//!
//! Writes to the control plane happen only when something a reader could
//! see changes, so a resource in steady state costs no write at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::core::ApiResource;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::conditions::{self, Condition};
use super::connection::Publisher;
use super::events::{Events, Reason};
use super::meta::{self, AnnotationChanges};
use super::types::Policies;
use super::usage::{ResourceRef, UsageTracker};
use super::{Connector, ExternalClient, Managed, ManagedSpec, ManagedStatus, Observation};
use crate::ratelimit::RateLimiter;

/// How soon a resource whose write conflicted is looked at again.
const STALE_REQUEUE: Duration = Duration::from_millis(200);

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

/// The result of one reconcile: what state, and when to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub state: SyncState,
    pub requeue_after: Option<Duration>,
}

/// Timing knobs of the reconciler.
#[derive(Clone, Debug)]
pub struct ReconcilerConfig {
    /// How often an in-sync resource is observed again to catch drift.
    pub poll_interval: Duration,
    /// First and largest delay between retries of a failing resource.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Reporting controller name in events.
    pub controller_name: String,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(60),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            controller_name: "robot-byoc/robot-controller".into(),
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
        source: kube::Error,
    },
}

/// Looks up the provider's config by name (from a watch cache or a list).
pub type ConfigLookup<T> = Arc<dyn Fn(&str) -> Option<Arc<T>> + Send + Sync>;

/// Reconciles one managed kind with its external system.
pub struct Reconciler<P: ManagedSpec, U: ManagedStatus, C: Connector<P, U>> {
    api: Api<Managed<P, U>>,
    resource: ApiResource,
    connector: C,
    configs: ConfigLookup<C::Config>,
    config_kind: String,
    usages: UsageTracker,
    publisher: Publisher,
    events: Events,
    limiter: Arc<RateLimiter>,
    config: ReconcilerConfig,
    failures: Mutex<HashMap<String, u32>>,
}

/// A failed step: the reason for the event and the condition message.
struct Failure {
    reason: Reason,
    message: String,
    ready: Option<Condition>,
}

impl<P, U, C> Reconciler<P, U, C>
where
    P: ManagedSpec,
    U: ManagedStatus,
    C: Connector<P, U>,
{
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        resource: ApiResource,
        connector: C,
        configs: ConfigLookup<C::Config>,
        config_kind: String,
        usages: UsageTracker,
        limiter: Arc<RateLimiter>,
        config: ReconcilerConfig,
    ) -> Self {
        Self {
            api: Api::all_with(client.clone(), &resource),
            events: Events::new(client.clone(), &config.controller_name),
            publisher: Publisher::new(client),
            resource,
            connector,
            configs,
            config_kind,
            usages,
            limiter,
            config,
            failures: Mutex::default(),
        }
    }

    pub fn api_resource(&self) -> &ApiResource {
        &self.resource
    }

    /// Reconciles `mr` once. Errors from the external system end up in the
    /// resource's conditions and events; only a failure to write to the
    /// control plane is returned.
    pub async fn reconcile(&self, mr: Arc<Managed<P, U>>) -> Result<Outcome, Error> {
        let result = match self.reconcile_inner(&mr).await {
            // A status write refused for a stale resourceVersion: someone
            // else wrote meanwhile. Look again at the newest version soon,
            // as for a conflicting metadata write, instead of failing (which
            // logs a warning and backs off, up to --max-backoff).
            Err(Error::Write {
                source: kube::Error::Api(s),
                ..
            }) if s.is_conflict() => Ok(Outcome {
                state: SyncState::Stale,
                requeue_after: Some(STALE_REQUEUE),
            }),
            other => other,
        };
        let uid = mr.uid().unwrap_or_default();
        if let Ok(Outcome {
            state: SyncState::Synced | SyncState::Paused | SyncState::Done,
            ..
        }) = &result
        {
            self.lock_failures().remove(&uid);
        }
        result
    }

    async fn reconcile_inner(&self, mr: &Managed<P, U>) -> Result<Outcome, Error> {
        let spec = mr.spec.resource_spec();
        let stored = mr.status.clone().unwrap_or_default();
        let mut run = Run {
            r: self,
            mr,
            rv: mr.resource_version(),
            finalizers: mr.finalizers().to_vec(),
            status: stored.clone(),
            stored,
            changed: false,
            oref: mr.object_ref(&self.resource),
        };

        let policies = match Policies::resolve(spec) {
            Ok(p) => p,
            Err(message) => {
                return run
                    .fail(Failure {
                        reason: Reason::CannotUseManagementPolicy,
                        message,
                        ready: None,
                    })
                    .await
                    .map(|o| Outcome {
                        requeue_after: None,
                        ..o
                    });
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
                self.events
                    .publish(
                        &run.oref,
                        Reason::ReconciliationPaused,
                        "Reconciliation is paused via the pause annotation",
                    )
                    .await;
            }
            run.write_status().await?;
            // Nothing to poll: the pause ends with a change to the object.
            return Ok(Outcome {
                state: SyncState::Paused,
                requeue_after: None,
            });
        }

        let deleting = meta::is_deleted(&mr.metadata);
        if deleting && !meta::has_finalizer(&mr.metadata, meta::FINALIZER) {
            // Not ours (never reached a create), or already finalized.
            return Ok(Outcome {
                state: SyncState::Done,
                requeue_after: None,
            });
        }
        if deleting && !policies.should_delete() {
            return run.finalize().await;
        }

        // Connect: the ProviderConfig, and a record that we use it.
        let owner = run.owner();
        let pc_name = spec.provider_config_name().to_owned();
        if !deleting && let Err(e) = self.usages.track(&owner, &pc_name).await {
            return run
                .fail(Failure {
                    reason: Reason::CannotConnectToProvider,
                    message: format!("connect failed: cannot track ProviderConfig usage: {e}"),
                    ready: None,
                })
                .await;
        }
        let Some(pc) = (self.configs)(&pc_name) else {
            return run
                .fail(Failure {
                    reason: Reason::CannotConnectToProvider,
                    message: format!(
                        "connect failed: cannot get ProviderConfig: {} {pc_name:?} not found",
                        self.config_kind
                    ),
                    ready: None,
                })
                .await;
        };
        let external = match self.connector.connect(mr, &pc) {
            Ok(c) => c,
            Err(e) => {
                return run
                    .fail(Failure {
                        reason: Reason::CannotConnectToProvider,
                        message: format!("connect failed: {e}"),
                        ready: None,
                    })
                    .await;
            }
        };

        self.limiter.acquire().await;
        let observation = match external.observe(mr, &mut run.status).await {
            Ok(o) => o,
            Err(e) => {
                return run
                    .fail(Failure {
                        reason: Reason::CannotObserveExternalResource,
                        message: format!("observe failed: {e}"),
                        ready: None,
                    })
                    .await;
            }
        };

        if policies.should_only_observe() {
            if !observation.exists {
                return run
                    .fail(Failure {
                        reason: Reason::CannotObserveExternalResource,
                        message: "observe failed: external resource does not exist".into(),
                        ready: Some(Condition::unavailable()),
                    })
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

        // From here on the resource is live: make sure it is finalized and
        // named before anything is created for it.
        let mut annotations = AnnotationChanges::new();
        if !meta::has_external_name(&mr.metadata) {
            annotations.insert(
                meta::EXTERNAL_NAME.into(),
                Some(meta::external_name(&mr.metadata)),
            );
        }
        if observation.exists && meta::create_incomplete(&mr.metadata) {
            // A create was interrupted, and the resource is there: adopt it.
            annotations.insert(meta::CREATE_SUCCEEDED.into(), Some(meta::now_rfc3339()));
        }

        if !observation.exists {
            if !policies.should_create() {
                return run
                    .fail(Failure {
                        reason: Reason::CannotObserveExternalResource,
                        message: "external resource does not exist and management policies do not allow Create".into(),
                        ready: Some(Condition::unavailable()),
                    })
                    .await;
            }
            // Recorded before the create, with the object's version, so that a
            // stale view of the object fails here instead of creating twice.
            annotations.insert(meta::CREATE_PENDING.into(), Some(meta::now_rfc3339()));
            if let Err(e) = run.patch_metadata(annotations, true).await {
                return run
                    .write_conflict_or_fail(e, Some(Condition::creating()))
                    .await;
            }
            return run.create(&external).await;
        }

        if let Err(e) = run.patch_metadata(annotations, false).await {
            return run.write_conflict_or_fail(e, None).await;
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
                self.events
                    .publish(
                        &run.oref,
                        Reason::UpdatedExternalResource,
                        "Successfully requested update of external resource",
                    )
                    .await;
                if let Err(f) = run.publish_details(&details).await {
                    return run.fail(f).await;
                }
                run.succeed().await
            }
            Err(e) => {
                run.fail(Failure {
                    reason: Reason::CannotUpdateExternalResource,
                    message: format!("update failed: {e}"),
                    ready: None,
                })
                .await
            }
        }
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Exponential backoff per resource, with jitter so a fleet of resources
    /// failing together does not retry together.
    pub fn backoff(&self, uid: &str) -> Duration {
        let mut failures = self.lock_failures();
        let n = failures.entry(uid.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << (*n - 1).min(16));
        let d = exp.min(self.config.backoff_max);
        jitter(d, 0.1)
    }

    /// The poll interval, jittered by up to 10% so polls spread out.
    fn poll(&self) -> Duration {
        jitter(self.config.poll_interval, 0.1)
    }
}

/// `d` plus or minus up to `fraction` of it.
fn jitter(d: Duration, fraction: f64) -> Duration {
    let f = 1.0 + fraction * (rand::random::<f64>() * 2.0 - 1.0);
    d.mul_f64(f.max(0.0))
}

/// The state of one reconcile: the status being built and the version of
/// the object last seen, for optimistic writes.
struct Run<'a, P: ManagedSpec, U: ManagedStatus, C: Connector<P, U>> {
    r: &'a Reconciler<P, U, C>,
    mr: &'a Managed<P, U>,
    rv: Option<String>,
    /// The finalizers as last written (ours added once we add it).
    finalizers: Vec<String>,
    stored: U,
    status: U,
    changed: bool,
    oref: ObjectReference,
}

impl<P, U, C> Run<'_, P, U, C>
where
    P: ManagedSpec,
    U: ManagedStatus,
    C: Connector<P, U>,
{
    fn name(&self) -> String {
        self.mr.name_any()
    }

    fn owner(&self) -> ResourceRef {
        ResourceRef {
            api_version: self.r.resource.api_version.clone(),
            kind: self.r.resource.kind.clone(),
            name: self.name(),
            uid: self.mr.uid().unwrap_or_default(),
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

    /// Writes the status if a reader could see a difference.
    async fn write_status(&mut self) -> Result<(), Error> {
        if !self.changed && !self.status.observation_differs(&self.stored) {
            return Ok(());
        }
        let mut patch = json!({ "status": &self.status });
        if let Some(rv) = &self.rv {
            patch["metadata"] = json!({ "resourceVersion": rv });
        }
        match self
            .r
            .api
            .patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => {
                self.rv = updated.resource_version();
                self.stored = self.status.clone();
                self.changed = false;
                Ok(())
            }
            Err(source) => Err(Error::Write {
                name: self.name(),
                source,
            }),
        }
    }

    /// Adds the finalizer (unless being deleted) and applies annotation
    /// changes, in one write, only if something changes. With `guarded`, the
    /// write fails on a stale view of the object.
    async fn patch_metadata(
        &mut self,
        annotations: AnnotationChanges,
        guarded: bool,
    ) -> Result<(), kube::Error> {
        let add_finalizer = !self.finalizers.iter().any(|f| f == meta::FINALIZER);
        if annotations.is_empty() && !add_finalizer {
            return Ok(());
        }
        let mut metadata = serde_json::Map::new();
        let mut finalizers = self.finalizers.clone();
        if add_finalizer {
            finalizers.push(meta::FINALIZER.into());
            metadata.insert("finalizers".into(), json!(finalizers));
        }
        if !annotations.is_empty() {
            metadata.insert("annotations".into(), json!(annotations));
        }
        // The finalizer list is replaced whole by a merge patch: guard it
        // with the version too, so a concurrent finalizer is never dropped.
        if (guarded || add_finalizer)
            && let Some(rv) = &self.rv
        {
            metadata.insert("resourceVersion".into(), json!(rv));
        }
        let patch = json!({ "metadata": Value::Object(metadata) });
        let updated = self
            .r
            .api
            .patch(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        self.rv = updated.resource_version();
        self.finalizers = finalizers;
        Ok(())
    }

    /// A conflict means our view is stale: look again soon, no error. Any
    /// other failure to write the object is a reconcile error.
    async fn write_conflict_or_fail(
        &mut self,
        e: kube::Error,
        ready: Option<Condition>,
    ) -> Result<Outcome, Error> {
        if let kube::Error::Api(s) = &e
            && s.is_conflict()
        {
            return Ok(Outcome {
                state: SyncState::Stale,
                requeue_after: Some(STALE_REQUEUE),
            });
        }
        self.fail(Failure {
            reason: Reason::CannotUpdateManagedResource,
            message: format!("cannot update managed resource: {e}"),
            ready,
        })
        .await
    }

    async fn fail(&mut self, f: Failure) -> Result<Outcome, Error> {
        tracing::info!(
            name = %self.name(),
            reason = ?f.reason,
            error = %f.message,
            "reconcile failed"
        );
        self.r
            .events
            .publish(&self.oref, f.reason, &f.message)
            .await;
        if let Some(ready) = f.ready {
            self.set(ready);
        }
        self.set(Condition::reconcile_error(f.message));
        self.write_status().await?;
        let uid = self.mr.uid().unwrap_or_default();
        Ok(Outcome {
            state: SyncState::Failed,
            requeue_after: Some(self.r.backoff(&uid)),
        })
    }

    async fn succeed(&mut self) -> Result<Outcome, Error> {
        self.set(Condition::reconcile_success());
        self.write_status().await?;
        Ok(Outcome {
            state: SyncState::Synced,
            requeue_after: Some(self.r.poll()),
        })
    }

    async fn publish_details(&mut self, details: &super::ConnectionDetails) -> Result<(), Failure> {
        let Some(target) = &self.mr.spec.resource_spec().write_connection_secret_to_ref else {
            return Ok(());
        };
        let owner = self.owner();
        self.r
            .publisher
            .publish(&owner, target, details)
            .await
            .map_err(|e| Failure {
                reason: Reason::CannotPublishConnectionDetails,
                message: e.to_string(),
                ready: None,
            })
    }

    async fn create(&mut self, external: &C::Client) -> Result<Outcome, Error> {
        self.r.limiter.acquire().await;
        match external.create(self.mr).await {
            Ok(details) => {
                // Critical: without it the next reconcile sees an incomplete
                // create. Not guarded by version: only this key changes.
                let mut done = AnnotationChanges::new();
                done.insert(meta::CREATE_SUCCEEDED.into(), Some(meta::now_rfc3339()));
                if let Err(e) = self.patch_metadata(done, false).await {
                    return self
                        .write_conflict_or_fail(e, Some(Condition::creating()))
                        .await;
                }
                self.r
                    .events
                    .publish(
                        &self.oref,
                        Reason::CreatedExternalResource,
                        "Successfully requested creation of external resource",
                    )
                    .await;
                if let Err(f) = self.publish_details(&details).await {
                    return self.fail(f).await;
                }
                // The external API answers synchronously: look once more so the
                // status says Available now rather than after another round.
                self.r.limiter.acquire().await;
                let mut status = self.status.clone();
                match external.observe(self.mr, &mut status).await {
                    Ok(o) if o.exists => {
                        self.status = status;
                        self.set(Condition::available());
                    }
                    _ => self.set(Condition::creating()),
                }
                self.succeed().await
            }
            Err(e) => {
                let mut failed = AnnotationChanges::new();
                failed.insert(meta::CREATE_FAILED.into(), Some(meta::now_rfc3339()));
                if let Err(write) = self.patch_metadata(failed, false).await {
                    tracing::warn!(name = %self.name(), error = %write, "cannot record failed create");
                }
                self.fail(Failure {
                    reason: Reason::CannotCreateExternalResource,
                    message: format!("create failed: {e}"),
                    ready: Some(Condition::creating()),
                })
                .await
            }
        }
    }

    async fn delete(
        &mut self,
        external: &C::Client,
        observation: Observation,
    ) -> Result<Outcome, Error> {
        if observation.exists {
            self.r.limiter.acquire().await;
            if let Err(e) = external.delete(self.mr).await {
                return self
                    .fail(Failure {
                        reason: Reason::CannotDeleteExternalResource,
                        message: format!("delete failed: {e}"),
                        ready: Some(Condition::deleting()),
                    })
                    .await;
            }
            self.r
                .events
                .publish(
                    &self.oref,
                    Reason::DeletedExternalResource,
                    "Successfully requested deletion of external resource",
                )
                .await;
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
                    });
                }
                Err(e) => {
                    return self
                        .fail(Failure {
                            reason: Reason::CannotObserveExternalResource,
                            message: format!("observe failed: {e}"),
                            ready: Some(Condition::deleting()),
                        })
                        .await;
                }
            }
        }
        self.finalize().await
    }

    /// Unpublishes, releases the ProviderConfig and removes the finalizer:
    /// the external resource is gone or is being orphaned.
    async fn finalize(&mut self) -> Result<Outcome, Error> {
        if let Some(target) = &self.mr.spec.resource_spec().write_connection_secret_to_ref {
            let uid = self.mr.uid().unwrap_or_default();
            if let Err(e) = self.r.publisher.unpublish(&uid, target).await {
                return self
                    .fail(Failure {
                        reason: Reason::CannotUnpublishConnectionDetails,
                        message: e.to_string(),
                        ready: Some(Condition::deleting()),
                    })
                    .await;
            }
        }
        let uid = self.mr.uid().unwrap_or_default();
        if let Err(e) = self.r.usages.release(&uid).await {
            return self
                .fail(Failure {
                    reason: Reason::CannotUpdateManagedResource,
                    message: format!("cannot release ProviderConfig usage: {e}"),
                    ready: Some(Condition::deleting()),
                })
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
        match self
            .r
            .api
            .patch(
                &self.name(),
                &PatchParams::default(),
                &Patch::Merge(&json!({ "metadata": metadata })),
            )
            .await
        {
            Ok(_) => Ok(Outcome {
                state: SyncState::Done,
                requeue_after: None,
            }),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(Outcome {
                state: SyncState::Done,
                requeue_after: None,
            }),
            Err(e) => {
                self.write_conflict_or_fail(e, Some(Condition::deleting()))
                    .await
            }
        }
    }
}
