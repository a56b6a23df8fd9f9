//! The reconciler's decisions, one named case per branch, as
//! crossplane-runtime's `reconciler_modern_test.go` tests them: a
//! kind-agnostic fake managed kind, a fake external system, and an
//! in-memory fake of the control-plane side ([`FakeWriter`], a hand-written
//! fake of our own [`Writer`] trait). No apiserver: milliseconds.
//!
//! What only a real apiserver shows (merge-patch semantics, RBAC, watches,
//! conflicts from real writers) is tested in `controller/tests/it`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::claims::{Claimant, Claims};
use super::conditions::{self, Condition};
use super::config::ConfigKey;
use super::events::Reason;
use super::types::{LegacyResourceSpec, ManagementAction, NamespacedResourceSpec};
use super::writer::{ObjectKey, Owner, SecretTarget, Usage, WriteError, Writer};
use super::*;
use crate::api::{Family, Generation};
use crate::ratelimit::RateLimiter;

// ---------------------------------------------------------------------------
// A kind-agnostic fake managed kind, in both generations.

/// The fake kind's parameters: one value the external system holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FakeParameters {
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FakeStatus {
    #[serde(flatten)]
    pub resource: ResourceStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_provider: Option<FakeParameters>,
}

impl ManagedStatus for FakeStatus {
    fn resource_status(&self) -> &ResourceStatus {
        &self.resource
    }
    fn resource_status_mut(&mut self) -> &mut ResourceStatus {
        &mut self.resource
    }
    fn observation_differs(&self, stored: &Self) -> bool {
        stored.at_provider.is_some() && stored.at_provider != self.at_provider
    }
}

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "fake.dummy.m.crossplane.io",
    version = "v1alpha1",
    kind = "Fake",
    namespaced,
    status = "FakeStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct FakeSpec {
    #[serde(flatten)]
    pub resource: NamespacedResourceSpec,
    pub for_provider: FakeParameters,
}

impl ManagedSpec for FakeSpec {
    fn common(&self) -> CommonSpec<'_> {
        self.resource.common()
    }
}

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "fake.dummy.crossplane.io",
    version = "v1alpha1",
    kind = "Fake",
    root = "LegacyFakeCrd",
    status = "FakeStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct LegacyFakeSpec {
    #[serde(flatten)]
    pub resource: LegacyResourceSpec,
    pub for_provider: FakeParameters,
}

impl ManagedSpec for LegacyFakeSpec {
    fn common(&self) -> CommonSpec<'_> {
        self.resource.common()
    }
}

/// Where a fake config points: which instance of the fake system.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    pub target: String,
}

/// The fake external system, shared by the connector and the test.
#[derive(Debug, Default)]
pub struct World {
    /// Name to value, per target.
    pub resources: HashMap<(String, String), String>,
    /// Errors the next calls of an operation return, in order.
    pub faults: HashMap<&'static str, VecDeque<ExternalError>>,
    pub calls: Vec<String>,
    /// The connector refuses configs of this target.
    pub refuse_target: Option<String>,
    /// Operations that never answer (a black-holed system).
    pub hang: Vec<&'static str>,
}

type SharedWorld = Arc<Mutex<World>>;

pub struct FakeConnector {
    world: SharedWorld,
}

pub struct FakeClient {
    world: SharedWorld,
    target: String,
}

pub trait FakeSpecExt: ManagedSpec {
    fn value(&self) -> &str;
}
impl FakeSpecExt for FakeSpec {
    fn value(&self) -> &str {
        &self.for_provider.value
    }
}
impl FakeSpecExt for LegacyFakeSpec {
    fn value(&self) -> &str {
        &self.for_provider.value
    }
}

impl<S: FakeSpecExt> Connector<S, FakeStatus> for FakeConnector {
    type Config = FakeConfig;
    type Client = FakeClient;

    fn connect(
        &self,
        _mr: &Managed<S, FakeStatus>,
        config: &FakeConfig,
    ) -> Result<FakeClient, ExternalError> {
        let world = self.world.lock().unwrap();
        if world.refuse_target.as_deref() == Some(config.target.as_str()) {
            return Err(ExternalError::permanent("target not allowed"));
        }
        Ok(FakeClient {
            world: self.world.clone(),
            target: config.target.clone(),
        })
    }

    fn target(&self, config: &FakeConfig) -> Option<String> {
        Some(config.target.clone())
    }
}

impl FakeClient {
    fn call(&self, op: &'static str) -> Result<std::sync::MutexGuard<'_, World>, ExternalError> {
        let mut world = self.world.lock().unwrap();
        world.calls.push(op.to_owned());
        match world.faults.get_mut(op).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(world),
        }
    }
}

impl<S: FakeSpecExt> ExternalClient<S, FakeStatus> for FakeClient {
    async fn observe(
        &self,
        mr: &Managed<S, FakeStatus>,
        status: &mut FakeStatus,
    ) -> Result<Observation, ExternalError> {
        if self.world.lock().unwrap().hang.contains(&"observe") {
            std::future::pending::<()>().await;
        }
        let world = self.call("observe")?;
        let name = meta::external_name(&mr.metadata);
        let Some(value) = world.resources.get(&(self.target.clone(), name)) else {
            return Ok(Observation::default());
        };
        status.at_provider = Some(FakeParameters {
            value: value.clone(),
        });
        Ok(Observation {
            exists: true,
            up_to_date: value == mr.spec.value(),
            connection_details: BTreeMap::from([("value".into(), value.as_bytes().to_vec())]),
        })
    }

    async fn create(
        &self,
        mr: &Managed<S, FakeStatus>,
    ) -> Result<ConnectionDetails, ExternalError> {
        let mut world = self.call("create")?;
        let key = (self.target.clone(), meta::external_name(&mr.metadata));
        world.resources.insert(key, mr.spec.value().to_owned());
        Ok(BTreeMap::new())
    }

    async fn update(
        &self,
        mr: &Managed<S, FakeStatus>,
    ) -> Result<ConnectionDetails, ExternalError> {
        let mut world = self.call("update")?;
        let key = (self.target.clone(), meta::external_name(&mr.metadata));
        world.resources.insert(key, mr.spec.value().to_owned());
        Ok(BTreeMap::new())
    }

    async fn delete(&self, mr: &Managed<S, FakeStatus>) -> Result<(), ExternalError> {
        let mut world = self.call("delete")?;
        let key = (self.target.clone(), meta::external_name(&mr.metadata));
        if world.faults.contains_key("sticky") {
            return Ok(());
        }
        world.resources.remove(&key);
        Ok(())
    }
}

pub struct NamespacedFake;
pub struct LegacyFake;

impl ManagedKind for NamespacedFake {
    type Spec = FakeSpec;
    type Status = FakeStatus;
    type Connector = FakeConnector;
    type Deps = SharedWorld;
    const KIND: &'static str = "Fake";
    const PLURAL: &'static str = "fakes";
    const SERVICE: &'static str = "fake";
    const GENERATION: Generation = Generation::Namespaced;
    const EXTERNAL_SPACE: &'static str = "fake";
    fn crd(_: Family) -> CustomResourceDefinition {
        Fake::crd()
    }
    fn connector(world: &SharedWorld) -> FakeConnector {
        FakeConnector {
            world: world.clone(),
        }
    }
}

impl ManagedKind for LegacyFake {
    type Spec = LegacyFakeSpec;
    type Status = FakeStatus;
    type Connector = FakeConnector;
    type Deps = SharedWorld;
    const KIND: &'static str = "Fake";
    const PLURAL: &'static str = "fakes";
    const SERVICE: &'static str = "fake";
    const GENERATION: Generation = Generation::Legacy;
    const EXTERNAL_SPACE: &'static str = "fake";
    fn crd(_: Family) -> CustomResourceDefinition {
        LegacyFakeCrd::crd()
    }
    fn connector(world: &SharedWorld) -> FakeConnector {
        FakeConnector {
            world: world.clone(),
        }
    }
}

// ---------------------------------------------------------------------------
// An in-memory fake of the control-plane side.

#[derive(Default)]
pub struct FakeWriter {
    /// A summary of every write, in order.
    pub log: Mutex<Vec<String>>,
    pub statuses: Mutex<Vec<Value>>,
    pub metadata: Mutex<Vec<Value>>,
    pub usages: Mutex<Vec<Usage>>,
    pub published: Mutex<Vec<SecretTarget>>,
    /// Failures the next writes of a kind return, in order:
    /// `metadata`, `status`, `usage`, `publish`, `unpublish`, `release`.
    pub faults: Mutex<HashMap<&'static str, VecDeque<WriteError>>>,
    /// Usages known to exist, as the usage watch would know them: tracking
    /// one again costs nothing.
    pub known_usages: Mutex<std::collections::HashSet<ObjectKey>>,
    rv: Mutex<u64>,
}

impl FakeWriter {
    fn write(&self, what: &'static str, summary: String) -> Result<Option<String>, WriteError> {
        if let Some(e) = self
            .faults
            .lock()
            .unwrap()
            .get_mut(what)
            .and_then(VecDeque::pop_front)
        {
            return Err(e);
        }
        self.log.lock().unwrap().push(summary);
        let mut rv = self.rv.lock().unwrap();
        *rv += 1;
        Ok(Some(format!("rv{rv}")))
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Writer for Arc<FakeWriter> {
    async fn patch_metadata(
        &self,
        _: &ObjectKey,
        metadata: Value,
    ) -> Result<Option<String>, WriteError> {
        let mut parts = Vec::new();
        if let Some(f) = metadata.get("finalizers").and_then(Value::as_array) {
            parts.push(if f.iter().any(|x| x == meta::FINALIZER) {
                "+finalizer"
            } else {
                "-finalizer"
            });
        }
        if metadata.get("annotations").is_some() {
            parts.push("+external-name");
        }
        if metadata.get("resourceVersion").is_some() {
            parts.push("guarded");
        }
        let r = self.write("metadata", format!("metadata {}", parts.join(",")))?;
        self.metadata.lock().unwrap().push(metadata);
        Ok(r)
    }

    async fn patch_status(
        &self,
        _: &ObjectKey,
        _: Option<&str>,
        status: Value,
    ) -> Result<Option<String>, WriteError> {
        let r = self.write("status", "status".into())?;
        self.statuses.lock().unwrap().push(status);
        Ok(r)
    }

    async fn track_usage(&self, usage: &Usage) -> Result<(), WriteError> {
        if self.known_usages.lock().unwrap().contains(&usage.key) {
            return Ok(());
        }
        self.write("usage", "usage".into())?;
        self.known_usages.lock().unwrap().insert(usage.key.clone());
        self.usages.lock().unwrap().push(usage.clone());
        Ok(())
    }

    async fn release_usage(&self, key: &ObjectKey) -> Result<(), WriteError> {
        self.write("release", format!("release-usage {key}"))?;
        Ok(())
    }

    async fn publish(
        &self,
        _: &Owner,
        target: &SecretTarget,
        _: &ConnectionDetails,
    ) -> Result<(), WriteError> {
        self.write(
            "publish",
            format!("publish {}/{}", target.namespace, target.name),
        )?;
        self.published.lock().unwrap().push(target.clone());
        Ok(())
    }

    async fn unpublish(&self, _: &str, target: &SecretTarget) -> Result<(), WriteError> {
        self.write(
            "unpublish",
            format!("unpublish {}/{}", target.namespace, target.name),
        )?;
        Ok(())
    }

    async fn event(&self, _: &ObjectReference, reason: Reason, _: &str) {
        self.log
            .lock()
            .unwrap()
            .push(format!("event {}", reason.as_str()));
    }
}

// ---------------------------------------------------------------------------
// The rig: a reconciler over the fakes.

const TARGET: &str = "system-a";
const NS: &str = "team-a";

fn cluster_default() -> ConfigKey {
    ConfigKey {
        group: "dummy.m.crossplane.io".into(),
        kind: "ClusterProviderConfig".into(),
        namespace: None,
        name: "default".into(),
    }
}

fn legacy_default() -> ConfigKey {
    ConfigKey {
        group: "dummy.crossplane.io".into(),
        kind: "ProviderConfig".into(),
        namespace: None,
        name: "default".into(),
    }
}

struct Rig<K: ManagedKind<Connector = FakeConnector>> {
    world: SharedWorld,
    writer: Arc<FakeWriter>,
    claims: Arc<Claims>,
    reconciler: Reconciler<K, Arc<FakeWriter>>,
}

fn rig<K>(configure: impl FnOnce(&mut ReconcilerConfig)) -> Rig<K>
where
    K: ManagedKind<Connector = FakeConnector>,
    FakeConnector: Connector<K::Spec, K::Status, Config = FakeConfig>,
{
    let world = SharedWorld::default();
    let writer = Arc::new(FakeWriter::default());
    let claims = Arc::new(Claims::default());
    let configs: HashMap<ConfigKey, Arc<FakeConfig>> = HashMap::from([
        (
            cluster_default(),
            Arc::new(FakeConfig {
                target: TARGET.into(),
            }),
        ),
        (
            legacy_default(),
            Arc::new(FakeConfig {
                target: TARGET.into(),
            }),
        ),
        (
            ConfigKey {
                namespace: Some(NS.into()),
                kind: "ProviderConfig".into(),
                ..cluster_default()
            },
            Arc::new(FakeConfig {
                target: "system-b".into(),
            }),
        ),
    ]);
    let mut config = ReconcilerConfig {
        poll_interval: Duration::from_secs(60),
        min_poll_interval: Duration::from_secs(10),
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(30),
        ..ReconcilerConfig::default()
    };
    configure(&mut config);
    let reconciler = Reconciler::<K, Arc<FakeWriter>>::new(
        Family::Crossplane,
        FakeConnector {
            world: world.clone(),
        },
        Arc::new(move |k: &ConfigKey| configs.get(k).cloned()),
        claims.clone(),
        writer.clone(),
        Arc::new(RateLimiter::per_second(0)),
        config,
    );
    Rig {
        world,
        writer,
        claims,
        reconciler,
    }
}

type Obj = Managed<FakeSpec, FakeStatus>;

/// A namespaced fake resource, as the control plane would first hand it
/// out: no finalizer, no status.
fn fake(name: &str, value: &str) -> Obj {
    let mut mr = Obj::new(
        name,
        &NamespacedFake::api_resource(Family::Crossplane),
        FakeSpec {
            resource: NamespacedResourceSpec::default(),
            for_provider: FakeParameters {
                value: value.into(),
            },
        },
    );
    mr.metadata.namespace = Some(NS.into());
    mr.metadata.uid = Some(format!("uid-{name}"));
    mr.metadata.generation = Some(1);
    mr.metadata.resource_version = Some("rv0".into());
    mr.metadata.creation_timestamp = Some(Time(Timestamp::from_second(1_700_000_000).unwrap()));
    mr
}

/// What a resource looks like once reconciled: finalized, named, Ready.
fn settled(mut mr: Obj) -> Obj {
    mr.metadata.finalizers = Some(vec![meta::FINALIZER.into()]);
    let name = mr.metadata.name.clone();
    mr.annotate(meta::EXTERNAL_NAME, name.as_deref().unwrap_or_default());
    let value = mr.spec.for_provider.value.clone();
    let mut status = FakeStatus {
        at_provider: Some(FakeParameters { value }),
        ..FakeStatus::default()
    };
    for c in [Condition::available(), Condition::reconcile_success()] {
        conditions::set(&mut status.resource.conditions, c, Some(1));
    }
    status.resource.observed_generation = Some(1);
    mr.status = Some(status);
    mr
}

trait Annotate {
    fn annotate(&mut self, key: &str, value: &str);
}

impl<P: Clone, U: Clone> Annotate for Managed<P, U> {
    fn annotate(&mut self, key: &str, value: &str) {
        self.metadata
            .annotations
            .get_or_insert_default()
            .insert(key.into(), value.into());
    }
}

fn deleting(mut mr: Obj) -> Obj {
    mr.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    mr
}

fn with_policies(mut mr: Obj, p: &[ManagementAction]) -> Obj {
    mr.spec.resource.management_policies = Some(p.to_vec());
    mr
}

fn exists(world: &SharedWorld, name: &str, value: &str) {
    world
        .lock()
        .unwrap()
        .resources
        .insert((TARGET.into(), name.into()), value.into());
}

fn fail_external(world: &SharedWorld, op: &'static str, e: ExternalError) {
    world
        .lock()
        .unwrap()
        .faults
        .entry(op)
        .or_default()
        .push_back(e);
}

fn fail_write(writer: &FakeWriter, what: &'static str, e: WriteError) {
    writer
        .faults
        .lock()
        .unwrap()
        .entry(what)
        .or_default()
        .push_back(e);
}

/// When the reconciler asks to look again.
#[derive(Debug, PartialEq)]
enum Requeue {
    Never,
    /// About the poll interval given (within jitter).
    Poll(Duration),
    /// A first transient failure: about the base backoff.
    Soon,
    /// A permanent failure: no sooner than the largest backoff.
    Later,
    /// A stale view: 200 ms.
    Stale,
    /// A delete that is not confirmed yet.
    Second,
}

fn classify(o: &Outcome) -> Requeue {
    let Some(d) = o.requeue_after else {
        return Requeue::Never;
    };
    if d == Duration::from_millis(200) {
        return Requeue::Stale;
    }
    if d == Duration::from_secs(1) && o.state == SyncState::Synced {
        return Requeue::Second;
    }
    if o.state == SyncState::Failed {
        if d <= Duration::from_millis(1100) {
            return Requeue::Soon;
        }
        if d >= Duration::from_secs(27) {
            return Requeue::Later;
        }
    }
    Requeue::Poll(d)
}

fn near(d: Duration, want: Duration) -> bool {
    d >= want.mul_f64(0.9) && d <= want.mul_f64(1.1)
}

fn condition(writer: &FakeWriter, type_: &str) -> Option<(String, String)> {
    let status = writer.statuses.lock().unwrap().last().cloned()?;
    let conds: Vec<Condition> = serde_json::from_value(status["conditions"].clone()).ok()?;
    conditions::get(&conds, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

/// What a case sets up before the reconcile.
type Arrange = Box<dyn Fn(&Rig<NamespacedFake>)>;

/// One case of the table.
struct Case {
    name: &'static str,
    reason: &'static str,
    mr: Obj,
    arrange: Arrange,
    state: SyncState,
    requeue: Requeue,
    calls: &'static [&'static str],
    writes: &'static [&'static str],
    synced: Option<(&'static str, &'static str)>,
    ready: Option<(&'static str, &'static str)>,
}

fn nothing() -> Arrange {
    Box::new(|_| {})
}

fn cases() -> Vec<Case> {
    use ManagementAction::*;
    let minute = Duration::from_secs(60);
    vec![
        Case {
            name: "CreateSuccessful",
            reason: "A new resource is tracked, finalized and named before its external resource is created, then Ready: four writes and one event.",
            mr: fake("r1", "red"),
            arrange: nothing(),
            state: SyncState::Synced,
            requeue: Requeue::Poll(minute),
            calls: &["observe", "create", "observe"],
            writes: &[
                "usage",
                "metadata +finalizer,+external-name,guarded",
                "event CreatedExternalResource",
                "status",
            ],
            synced: Some(("True", "ReconcileSuccess")),
            ready: Some(("True", "Available")),
        },
        Case {
            name: "CreateSuccessfulWithoutNormalEvents",
            reason: "With Normal events off a create costs three writes.",
            mr: fake("r1", "red"),
            arrange: Box::new(|r| {
                // Rebuilt below with normal_events off; see the test.
                let _ = r;
            }),
            state: SyncState::Synced,
            requeue: Requeue::Poll(minute),
            calls: &["observe", "create", "observe"],
            writes: &[
                "usage",
                "metadata +finalizer,+external-name,guarded",
                "status",
            ],
            synced: Some(("True", "ReconcileSuccess")),
            ready: Some(("True", "Available")),
        },
        Case {
            name: "CreateExternalErrorTransient",
            reason: "A create that fails for a transient reason is retried soon, Ready=False Creating.",
            mr: fake("r1", "red"),
            arrange: Box::new(|r| {
                fail_external(&r.world, "create", ExternalError::transient("503"))
            }),
            state: SyncState::Failed,
            requeue: Requeue::Soon,
            calls: &["observe", "create"],
            writes: &[
                "usage",
                "metadata +finalizer,+external-name,guarded",
                "event CannotCreateExternalResource",
                "status",
            ],
            synced: Some(("False", "ReconcileError")),
            ready: Some(("False", "Creating")),
        },
        Case {
            name: "CreateExternalErrorPermanent",
            reason: "A create the external system refuses for good waits long (or for a change).",
            mr: fake("r1", "red"),
            arrange: Box::new(|r| {
                fail_external(&r.world, "create", ExternalError::permanent("400"))
            }),
            state: SyncState::Failed,
            requeue: Requeue::Later,
            calls: &["observe", "create"],
            writes: &[
                "usage",
                "metadata +finalizer,+external-name,guarded",
                "event CannotCreateExternalResource",
                "status",
            ],
            synced: Some(("False", "ReconcileError")),
            ready: Some(("False", "Creating")),
        },
        Case {
            name: "ExternalResourceUpToDateWritesNothing",
            reason: "Steady state: an in-sync resource costs one observe and no write at all.",
            mr: settled(fake("r1", "red")),
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Synced,
            requeue: Requeue::Poll(minute),
            calls: &["observe"],
            writes: &[],
            synced: None,
            ready: None,
        },
        Case {
            name: "UpdateSuccessful",
            reason: "An external resource that differs from the spec is updated, and the observation recorded.",
            mr: settled(fake("r1", "blue")),
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Synced,
            requeue: Requeue::Poll(minute),
            calls: &["observe", "update"],
            writes: &["event UpdatedExternalResource", "status"],
            synced: Some(("True", "ReconcileSuccess")),
            ready: Some(("True", "Available")),
        },
        Case {
            name: "UpdateExternalError",
            reason: "A failed update is a reconcile error, retried.",
            mr: settled(fake("r1", "blue")),
            arrange: Box::new(|r| {
                exists(&r.world, "r1", "red");
                fail_external(&r.world, "update", ExternalError::transient("timeout"));
            }),
            state: SyncState::Failed,
            requeue: Requeue::Soon,
            calls: &["observe", "update"],
            writes: &["event CannotUpdateExternalResource", "status"],
            synced: Some(("False", "ReconcileError")),
            ready: Some(("True", "Available")),
        },
        Case {
            name: "ExternalObserveErrorIsNeverAbsence",
            reason: "An observe that fails is an error, never a reason to create.",
            mr: fake("r1", "red"),
            arrange: Box::new(|r| {
                fail_external(&r.world, "observe", ExternalError::transient("refused"))
            }),
            state: SyncState::Failed,
            requeue: Requeue::Soon,
            calls: &["observe"],
            writes: &["usage", "event CannotObserveExternalResource", "status"],
            synced: Some(("False", "ReconcileError")),
            ready: None,
        },
        Case {
            name: "ProviderConfigMissing",
            reason: "No config of that name: a permanent failure until one appears (which wakes the resource).",
            mr: {
                let mut mr = fake("r1", "red");
                mr.spec.resource.provider_config_ref = Some(super::types::TypedReference {
                    kind: "ClusterProviderConfig".into(),
                    name: "missing".into(),
                });
                mr
            },
            arrange: nothing(),
            state: SyncState::Failed,
            requeue: Requeue::Later,
            calls: &[],
            writes: &["usage", "event CannotConnectToProvider", "status"],
            synced: Some(("False", "ReconcileError")),
            ready: None,
        },
        Case {
            name: "ProviderConfigKindUnsupported",
            reason: "A providerConfigRef of another kind is refused before anything is tracked.",
            mr: {
                let mut mr = fake("r1", "red");
                mr.spec.resource.provider_config_ref = Some(super::types::TypedReference {
                    kind: "StoreConfig".into(),
                    name: "default".into(),
                });
                mr
            },
            arrange: nothing(),
            state: SyncState::Failed,
            requeue: Requeue::Later,
            calls: &[],
            writes: &["event CannotConnectToProvider", "status"],
            synced: Some(("False", "ReconcileError")),
            ready: None,
        },
        Case {
            name: "NamespacedProviderConfigServesItsNamespace",
            reason: "A ProviderConfig reference resolves in the resource's own namespace (system-b there).",
            mr: {
                let mut mr = fake("r1", "red");
                mr.spec.resource.provider_config_ref = Some(super::types::TypedReference {
                    kind: "ProviderConfig".into(),
                    name: "default".into(),
                });
                mr
            },
            arrange: nothing(),
            state: SyncState::Synced,
            requeue: Requeue::Poll(minute),
            calls: &["observe", "create", "observe"],
            writes: &[
                "usage",
                "metadata +finalizer,+external-name,guarded",
                "event CreatedExternalResource",
                "status",
            ],
            synced: Some(("True", "ReconcileSuccess")),
            ready: Some(("True", "Available")),
        },
        Case {
            name: "ExternalConnectError",
            reason: "A connector that refuses the config fails the reconcile; nothing is called.",
            mr: fake("r1", "red"),
            arrange: Box::new(|r| r.world.lock().unwrap().refuse_target = Some(TARGET.into())),
            state: SyncState::Failed,
            requeue: Requeue::Later,
            calls: &[],
            writes: &["usage", "event CannotConnectToProvider", "status"],
            synced: Some(("False", "ReconcileError")),
            ready: None,
        },
        Case {
            name: "TrackUsageError",
            reason: "A usage that cannot be recorded stops the reconcile before any external call.",
            mr: fake("r1", "red"),
            arrange: Box::new(|r| fail_write(&r.writer, "usage", WriteError::Failed("503".into()))),
            state: SyncState::Failed,
            requeue: Requeue::Soon,
            calls: &[],
            writes: &["event CannotConnectToProvider", "status"],
            synced: Some(("False", "ReconcileError")),
            ready: None,
        },
        Case {
            name: "ReconciliationPaused",
            reason: "The pause annotation stops everything but the Synced condition and one event.",
            mr: {
                let mut mr = settled(fake("r1", "blue"));
                mr.annotate(meta::PAUSED, "true");
                mr
            },
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Paused,
            requeue: Requeue::Never,
            calls: &[],
            writes: &["event ReconciliationPaused", "status"],
            synced: Some(("False", "ReconcilePaused")),
            ready: Some(("True", "Available")),
        },
        Case {
            name: "ReconciliationStillPaused",
            reason: "A resource already paused costs nothing more.",
            mr: {
                let mut mr = settled(fake("r1", "blue"));
                mr.annotate(meta::PAUSED, "true");
                if let Some(s) = mr.status.as_mut() {
                    conditions::set(
                        &mut s.resource.conditions,
                        Condition::reconcile_paused(),
                        Some(1),
                    );
                }
                mr
            },
            arrange: nothing(),
            state: SyncState::Paused,
            requeue: Requeue::Never,
            calls: &[],
            writes: &[],
            synced: None,
            ready: None,
        },
        Case {
            name: "ManagementPolicyReconciliationPaused",
            reason: "An empty managementPolicies list pauses like the annotation.",
            mr: with_policies(fake("r1", "red"), &[]),
            arrange: nothing(),
            state: SyncState::Paused,
            requeue: Requeue::Never,
            calls: &[],
            writes: &["event ReconciliationPaused", "status"],
            synced: Some(("False", "ReconcilePaused")),
            ready: None,
        },
        Case {
            name: "ManagementPolicyNotSupported",
            reason: "An unsupported policy combination is an error that waits for a spec change.",
            mr: with_policies(fake("r1", "red"), &[Create]),
            arrange: nothing(),
            state: SyncState::Failed,
            requeue: Requeue::Never,
            calls: &[],
            writes: &["event CannotUseManagementPolicy", "status"],
            synced: Some(("False", "ReconcileError")),
            ready: None,
        },
        Case {
            name: "ObserveOnlySuccessfulObserve",
            reason: "Observe-only: the resource is finalized and Available; nothing is created or changed.",
            mr: with_policies(fake("r1", "blue"), &[Observe]),
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Synced,
            requeue: Requeue::Poll(minute),
            calls: &["observe"],
            writes: &[
                "usage",
                "metadata +finalizer,+external-name,guarded",
                "status",
            ],
            synced: Some(("True", "ReconcileSuccess")),
            ready: Some(("True", "Available")),
        },
        Case {
            name: "ObserveOnlyResourceDoesNotExist",
            reason: "Observe-only never creates: a missing external resource is an error.",
            mr: with_policies(fake("r1", "red"), &[Observe]),
            arrange: nothing(),
            state: SyncState::Failed,
            requeue: Requeue::Soon,
            calls: &["observe"],
            writes: &[
                "usage",
                "metadata +finalizer,+external-name,guarded",
                "event CannotObserveExternalResource",
                "status",
            ],
            synced: Some(("False", "ReconcileError")),
            ready: Some(("False", "Unavailable")),
        },
        Case {
            name: "ManagementPolicyWithoutCreate",
            reason: "Policies without Create never create a missing external resource.",
            mr: with_policies(fake("r1", "red"), &[Observe, Delete]),
            arrange: nothing(),
            state: SyncState::Failed,
            requeue: Requeue::Later,
            calls: &["observe"],
            writes: &[
                "usage",
                "metadata +finalizer,+external-name,guarded",
                "event CannotObserveExternalResource",
                "status",
            ],
            synced: Some(("False", "ReconcileError")),
            ready: Some(("False", "Unavailable")),
        },
        Case {
            name: "ManagementPolicyWithoutUpdate",
            reason: "Policies without Update leave a differing external resource alone and succeed.",
            mr: settled(with_policies(fake("r1", "blue"), &[Observe, Create])),
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Synced,
            requeue: Requeue::Poll(minute),
            calls: &["observe"],
            writes: &["status"],
            synced: Some(("True", "ReconcileSuccess")),
            ready: Some(("True", "Available")),
        },
        Case {
            name: "CreateInterruptedSettledByObserving",
            reason: "A create interrupted before its status was written: the external resource is found, adopted, Ready; no second create.",
            mr: {
                let mut mr = settled(fake("r1", "red"));
                mr.status = None;
                mr.annotate(meta::CREATE_PENDING, "2026-01-01T00:00:00Z");
                mr
            },
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Synced,
            requeue: Requeue::Poll(minute),
            calls: &["observe"],
            writes: &["status"],
            synced: Some(("True", "ReconcileSuccess")),
            ready: Some(("True", "Available")),
        },
        Case {
            name: "DeleteSuccessful",
            reason: "A deleted resource deletes its external resource, confirms it gone, releases its usage and lets go.",
            mr: deleting(settled(fake("r1", "red"))),
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Done,
            requeue: Requeue::Never,
            calls: &["observe", "delete", "observe"],
            writes: &[
                "event DeletedExternalResource",
                "release-usage team-a/uid-r1",
                "metadata -finalizer,guarded",
            ],
            synced: None,
            ready: None,
        },
        Case {
            name: "DeleteNotConfirmedYet",
            reason: "An external resource still there after its delete keeps the finalizer, Deleting, looked at in a second.",
            mr: deleting(settled(fake("r1", "red"))),
            arrange: Box::new(|r| {
                exists(&r.world, "r1", "red");
                r.world
                    .lock()
                    .unwrap()
                    .faults
                    .insert("sticky", VecDeque::new());
            }),
            state: SyncState::Synced,
            requeue: Requeue::Second,
            calls: &["observe", "delete", "observe"],
            writes: &["event DeletedExternalResource", "status"],
            synced: Some(("True", "ReconcileSuccess")),
            ready: Some(("False", "Deleting")),
        },
        Case {
            name: "ExternalDeleteError",
            reason: "A failed delete keeps the finalizer: nothing leaks.",
            mr: deleting(settled(fake("r1", "red"))),
            arrange: Box::new(|r| {
                exists(&r.world, "r1", "red");
                fail_external(&r.world, "delete", ExternalError::transient("503"));
            }),
            state: SyncState::Failed,
            requeue: Requeue::Soon,
            calls: &["observe", "delete"],
            writes: &["event CannotDeleteExternalResource", "status"],
            synced: Some(("False", "ReconcileError")),
            ready: Some(("False", "Deleting")),
        },
        Case {
            name: "DeleteOfMissingExternalResource",
            reason: "A missing external resource counts as deleted: finalize at once.",
            mr: deleting(settled(fake("r1", "red"))),
            arrange: nothing(),
            state: SyncState::Done,
            requeue: Requeue::Never,
            calls: &["observe"],
            writes: &["release-usage team-a/uid-r1", "metadata -finalizer,guarded"],
            synced: None,
            ready: None,
        },
        Case {
            name: "DeleteOrphaned",
            reason: "Policies without Delete leave the external resource: finalize without connecting.",
            mr: deleting(settled(with_policies(
                fake("r1", "red"),
                &[Observe, Create, Update],
            ))),
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Done,
            requeue: Requeue::Never,
            calls: &[],
            writes: &["release-usage team-a/uid-r1", "metadata -finalizer,guarded"],
            synced: None,
            ready: None,
        },
        Case {
            name: "DeletedWithoutOurFinalizer",
            reason: "A resource deleted before we ever finalized it is not ours to touch.",
            mr: deleting(fake("r1", "red")),
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Done,
            requeue: Requeue::Never,
            calls: &[],
            writes: &[],
            synced: None,
            ready: None,
        },
        Case {
            name: "PublishConnectionDetailsBesideTheResource",
            reason: "writeConnectionSecretToRef names a Secret in the resource's namespace.",
            mr: {
                let mut mr = settled(fake("r1", "red"));
                mr.spec.resource.write_connection_secret_to_ref =
                    Some(super::types::LocalSecretReference {
                        name: "conn".into(),
                    });
                mr
            },
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Synced,
            requeue: Requeue::Poll(minute),
            calls: &["observe"],
            writes: &["publish team-a/conn"],
            synced: None,
            ready: None,
        },
        Case {
            name: "PublishConnectionDetailsNotOurs",
            reason: "A Secret owned by something else is never overwritten: a permanent failure.",
            mr: {
                let mut mr = settled(fake("r1", "red"));
                mr.spec.resource.write_connection_secret_to_ref =
                    Some(super::types::LocalSecretReference {
                        name: "conn".into(),
                    });
                mr
            },
            arrange: Box::new(|r| {
                exists(&r.world, "r1", "red");
                fail_write(
                    &r.writer,
                    "publish",
                    WriteError::NotOurs {
                        namespace: NS.into(),
                        name: "conn".into(),
                    },
                );
            }),
            state: SyncState::Failed,
            requeue: Requeue::Later,
            calls: &["observe"],
            writes: &["event CannotPublishConnectionDetails", "status"],
            synced: Some(("False", "ReconcileError")),
            ready: None,
        },
        Case {
            name: "FinalizeUnpublishesConnectionDetails",
            reason: "Finalizing deletes the connection Secret too (no garbage collector needed).",
            mr: {
                let mut mr = deleting(settled(fake("r1", "red")));
                mr.spec.resource.write_connection_secret_to_ref =
                    Some(super::types::LocalSecretReference {
                        name: "conn".into(),
                    });
                mr
            },
            arrange: nothing(),
            state: SyncState::Done,
            requeue: Requeue::Never,
            calls: &["observe"],
            writes: &[
                "unpublish team-a/conn",
                "release-usage team-a/uid-r1",
                "metadata -finalizer,guarded",
            ],
            synced: None,
            ready: None,
        },
        Case {
            name: "StaleViewBeforeCreate",
            reason: "The guarded finalizer write conflicts: our view is stale, look again soon; nothing is created.",
            mr: fake("r1", "red"),
            arrange: Box::new(|r| fail_write(&r.writer, "metadata", WriteError::Conflict)),
            state: SyncState::Stale,
            requeue: Requeue::Stale,
            calls: &["observe"],
            writes: &["usage"],
            synced: None,
            ready: None,
        },
        Case {
            name: "StaleStatusWrite",
            reason: "A status write that conflicts is a stale view, not an error.",
            mr: settled(fake("r1", "blue")),
            arrange: Box::new(|r| {
                exists(&r.world, "r1", "red");
                fail_write(&r.writer, "status", WriteError::Conflict);
            }),
            state: SyncState::Stale,
            requeue: Requeue::Stale,
            calls: &["observe", "update"],
            writes: &["event UpdatedExternalResource"],
            synced: None,
            ready: None,
        },
        Case {
            name: "InitializeWriteError",
            reason: "A finalizer that cannot be written stops the create.",
            mr: fake("r1", "red"),
            arrange: Box::new(|r| {
                fail_write(&r.writer, "metadata", WriteError::Failed("500".into()))
            }),
            state: SyncState::Failed,
            requeue: Requeue::Soon,
            calls: &["observe"],
            writes: &["usage", "event CannotUpdateManagedResource", "status"],
            synced: Some(("False", "ReconcileError")),
            ready: Some(("False", "Creating")),
        },
        Case {
            name: "LaterClaimantWaits",
            reason: "An older resource claims the same external name on the same system: this one touches nothing.",
            mr: fake("r1", "red"),
            arrange: Box::new(|r| {
                exists(&r.world, "r1", "green");
                r.claims
                    .claim("fake", "r1", older("other-ns/r1", cluster_default()));
            }),
            state: SyncState::Failed,
            requeue: Requeue::Later,
            calls: &[],
            writes: &["usage", "event ExternalNameConflict", "status"],
            synced: Some(("False", "ReconcileError")),
            ready: None,
        },
        Case {
            name: "LaterClaimantOfAnotherSystemProceeds",
            reason: "The same name on another system is another external resource.",
            mr: fake("r1", "red"),
            arrange: Box::new(|r| {
                r.claims.claim(
                    "fake",
                    "r1",
                    older(
                        "team-a/x",
                        ConfigKey {
                            namespace: Some(NS.into()),
                            kind: "ProviderConfig".into(),
                            ..cluster_default()
                        },
                    ),
                );
            }),
            state: SyncState::Synced,
            requeue: Requeue::Poll(minute),
            calls: &["observe", "create", "observe"],
            writes: &[
                "usage",
                "metadata +finalizer,+external-name,guarded",
                "event CreatedExternalResource",
                "status",
            ],
            synced: Some(("True", "ReconcileSuccess")),
            ready: Some(("True", "Available")),
        },
        Case {
            name: "LaterClaimantDeletedLeavesTheExternalResource",
            reason: "Deleting a later claimant finalizes it without deleting what the older one manages.",
            mr: deleting(settled(fake("r1", "red"))),
            arrange: Box::new(|r| {
                exists(&r.world, "r1", "green");
                r.claims
                    .claim("fake", "r1", older("legacy r1", legacy_default()));
            }),
            state: SyncState::Done,
            requeue: Requeue::Never,
            calls: &[],
            writes: &[
                "event ExternalNameConflict",
                "release-usage team-a/uid-r1",
                "metadata -finalizer,guarded",
            ],
            synced: None,
            ready: None,
        },
        Case {
            name: "OldestClaimantManages",
            reason: "A newer claimant does not stop the oldest.",
            mr: settled(fake("r1", "red")),
            arrange: Box::new(|r| {
                exists(&r.world, "r1", "red");
                let mut newer = older("other/r1", cluster_default());
                newer.created = Some(Timestamp::from_second(1_800_000_000).unwrap());
                r.claims.claim("fake", "r1", newer);
            }),
            state: SyncState::Synced,
            requeue: Requeue::Poll(minute),
            calls: &["observe"],
            writes: &[],
            synced: None,
            ready: None,
        },
        Case {
            name: "PollIntervalAnnotation",
            reason: "crossplane.io/poll-interval sets this resource's poll.",
            mr: {
                let mut mr = settled(fake("r1", "red"));
                mr.annotate(meta::POLL_INTERVAL, "5m");
                mr
            },
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Synced,
            requeue: Requeue::Poll(Duration::from_secs(300)),
            calls: &["observe"],
            writes: &[],
            synced: None,
            ready: None,
        },
        Case {
            name: "PollIntervalBelowMinimumClampsToMin",
            reason: "A poll below --min-poll-interval is raised to it.",
            mr: {
                let mut mr = settled(fake("r1", "red"));
                mr.annotate(meta::POLL_INTERVAL, "1s");
                mr
            },
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Synced,
            requeue: Requeue::Poll(Duration::from_secs(10)),
            calls: &["observe"],
            writes: &[],
            synced: None,
            ready: None,
        },
        Case {
            name: "PollIntervalInvalidFallsBack",
            reason: "An annotation that is not a duration falls back to the default poll.",
            mr: {
                let mut mr = settled(fake("r1", "red"));
                mr.annotate(meta::POLL_INTERVAL, "often");
                mr
            },
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Synced,
            requeue: Requeue::Poll(minute),
            calls: &["observe"],
            writes: &[],
            synced: None,
            ready: None,
        },
        Case {
            name: "NewReconcileRequestRecordsToken",
            reason: "A new crossplane.io/reconcile-requested-at is handled, told in an event and recorded in status.",
            mr: {
                let mut mr = settled(fake("r1", "red"));
                mr.annotate(meta::RECONCILE_REQUESTED_AT, "token-1");
                mr
            },
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Synced,
            requeue: Requeue::Poll(minute),
            calls: &["observe"],
            writes: &["event ReconcileRequestHandled", "status"],
            synced: Some(("True", "ReconcileSuccess")),
            ready: Some(("True", "Available")),
        },
        Case {
            name: "AlreadyHandledReconcileRequestIsNoOp",
            reason: "A token already in lastHandledReconcileAt costs nothing.",
            mr: {
                let mut mr = settled(fake("r1", "red"));
                mr.annotate(meta::RECONCILE_REQUESTED_AT, "token-1");
                if let Some(s) = mr.status.as_mut() {
                    s.resource.last_handled_reconcile_at = Some("token-1".into());
                }
                mr
            },
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Synced,
            requeue: Requeue::Poll(minute),
            calls: &["observe"],
            writes: &[],
            synced: None,
            ready: None,
        },
        Case {
            name: "NewGenerationIsObserved",
            reason: "A spec change (new generation) is recorded in the conditions and status.observedGeneration.",
            mr: {
                let mut mr = settled(fake("r1", "red"));
                mr.metadata.generation = Some(2);
                mr
            },
            arrange: Box::new(|r| exists(&r.world, "r1", "red")),
            state: SyncState::Synced,
            requeue: Requeue::Poll(minute),
            calls: &["observe"],
            writes: &["status"],
            synced: Some(("True", "ReconcileSuccess")),
            ready: Some(("True", "Available")),
        },
    ]
}

/// An older claimant of the fake name, using `config`.
fn older(describe: &str, config: ConfigKey) -> Claimant {
    Claimant {
        uid: format!("uid-{describe}"),
        created: Some(Timestamp::from_second(1_600_000_000).unwrap()),
        describe: describe.into(),
        config: Some(config),
        source: "test".into(),
        established: true,
    }
}

#[tokio::test]
async fn every_branch_decides_as_crossplane_does() {
    let mut failures = Vec::new();
    for case in cases() {
        let r = rig::<NamespacedFake>(|c| {
            c.normal_events = case.name != "CreateSuccessfulWithoutNormalEvents";
        });
        (case.arrange)(&r);
        // A resource that carries our finalizer has its usage, and the
        // usage watch knows it.
        if meta::has_finalizer(&case.mr.metadata, meta::FINALIZER) {
            r.writer.known_usages.lock().unwrap().insert(ObjectKey {
                namespace: case.mr.metadata.namespace.clone(),
                name: case.mr.metadata.uid.clone().unwrap_or_default(),
            });
        }
        // Writes of the arrangement are not the reconcile's.
        r.writer.log.lock().unwrap().clear();
        let outcome = r.reconciler.reconcile(Arc::new(case.mr.clone())).await;
        let mut problems = Vec::new();
        match &outcome {
            Ok(o) => {
                if o.state != case.state {
                    problems.push(format!("state {:?}, want {:?}", o.state, case.state));
                }
                let got = classify(o);
                let ok = match (&got, &case.requeue) {
                    (Requeue::Poll(d), Requeue::Poll(w)) => near(*d, *w),
                    (g, w) => g == w,
                };
                if !ok {
                    problems.push(format!("requeue {got:?}, want {:?}", case.requeue));
                }
            }
            Err(e) => problems.push(format!("error {e}")),
        }
        let calls = r.world.lock().unwrap().calls.clone();
        if calls != case.calls {
            problems.push(format!("external calls {calls:?}, want {:?}", case.calls));
        }
        let writes = r.writer.log();
        if writes != case.writes {
            problems.push(format!("writes {writes:?}, want {:?}", case.writes));
        }
        for (type_, want) in [("Synced", case.synced), ("Ready", case.ready)] {
            if let Some((status, reason)) = want {
                let got = condition(&r.writer, type_);
                if got != Some((status.into(), reason.into())) {
                    problems.push(format!("{type_} {got:?}, want {status} {reason}"));
                }
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({}):\n    {}",
                case.name,
                case.reason,
                problems.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn written_status_carries_generation_request_and_observation() {
    let r = rig::<NamespacedFake>(|_| {});
    exists(&r.world, "r1", "red");
    let mut mr = settled(fake("r1", "red"));
    mr.metadata.generation = Some(7);
    mr.annotate(meta::RECONCILE_REQUESTED_AT, "now");
    r.reconciler.reconcile(Arc::new(mr)).await.unwrap();
    let status = r.writer.statuses.lock().unwrap().last().cloned().unwrap();
    assert_eq!(status["observedGeneration"], 7);
    assert_eq!(status["lastHandledReconcileAt"], "now");
    assert_eq!(status["atProvider"]["value"], "red");
    assert!(
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["observedGeneration"] == 7),
        "{status}"
    );
}

#[tokio::test]
async fn a_pruned_last_handled_reconcile_at_is_not_handled_again() {
    // The reference CRDs prune the field: the stored status never shows it.
    let r = rig::<NamespacedFake>(|_| {});
    exists(&r.world, "r1", "red");
    let mut mr = settled(fake("r1", "red"));
    mr.annotate(meta::RECONCILE_REQUESTED_AT, "t1");
    r.reconciler.reconcile(Arc::new(mr.clone())).await.unwrap();
    r.writer.log.lock().unwrap().clear();
    r.reconciler.reconcile(Arc::new(mr)).await.unwrap();
    assert!(
        r.writer.log().is_empty(),
        "handled once: {:?}",
        r.writer.log()
    );
}

#[tokio::test]
async fn usages_and_secrets_follow_the_generation() {
    // Legacy: cluster-scoped usage with the name label only; the Secret in
    // the namespace the reference names.
    let r = rig::<LegacyFake>(|_| {});
    let mut mr = Managed::<LegacyFakeSpec, FakeStatus>::new(
        "l1",
        &LegacyFake::api_resource(Family::Crossplane),
        LegacyFakeSpec {
            resource: LegacyResourceSpec {
                write_connection_secret_to_ref: Some(super::types::SecretReference {
                    name: "conn".into(),
                    namespace: "ops".into(),
                }),
                ..LegacyResourceSpec::default()
            },
            for_provider: FakeParameters { value: "v".into() },
        },
    );
    mr.metadata.uid = Some("uid-l1".into());
    let o = r.reconciler.reconcile(Arc::new(mr)).await.unwrap();
    assert_eq!(o.state, SyncState::Synced);
    let usage = r.writer.usages.lock().unwrap()[0].clone();
    assert_eq!(usage.key.namespace, None);
    assert_eq!(usage.labels.len(), 1);
    assert_eq!(
        r.writer.published.lock().unwrap()[0],
        SecretTarget {
            namespace: "ops".into(),
            name: "conn".into()
        }
    );

    // Namespaced: the usage beside the resource, with the kind label.
    let r = rig::<NamespacedFake>(|_| {});
    r.reconciler
        .reconcile(Arc::new(fake("n1", "v")))
        .await
        .unwrap();
    let usage = r.writer.usages.lock().unwrap()[0].clone();
    assert_eq!(usage.key.namespace.as_deref(), Some(NS));
    assert_eq!(usage.key.name, "uid-n1");
    assert_eq!(
        usage.labels[super::usage::PROVIDER_CONFIG_KIND_LABEL],
        "ClusterProviderConfig"
    );
    assert_eq!(
        usage.provider_config_ref,
        json!({"kind": "ClusterProviderConfig", "name": "default"})
    );
}

#[tokio::test]
async fn failures_back_off_exponentially_and_reset_on_success() {
    let r = rig::<NamespacedFake>(|_| {});
    let mr = Arc::new(settled(fake("r1", "red")));
    let mut last = Duration::ZERO;
    for i in 0..6 {
        fail_external(&r.world, "observe", ExternalError::transient("down"));
        let o = r.reconciler.reconcile(mr.clone()).await.unwrap();
        let d = o.requeue_after.unwrap();
        let want = Duration::from_secs(1 << i).min(Duration::from_secs(30));
        assert!(near(d, want), "attempt {i}: {d:?}, want about {want:?}");
        assert!(d >= last.mul_f64(0.8));
        last = d;
    }
    exists(&r.world, "r1", "red");
    assert_eq!(
        r.reconciler.reconcile(mr.clone()).await.unwrap().state,
        SyncState::Synced
    );
    fail_external(&r.world, "observe", ExternalError::transient("down"));
    let o = r.reconciler.reconcile(mr).await.unwrap();
    assert!(near(o.requeue_after.unwrap(), Duration::from_secs(1)));
}

#[tokio::test]
async fn permanent_failures_back_off_from_the_largest_step() {
    let r = rig::<NamespacedFake>(|_| {});
    let mr = Arc::new(settled(fake("r1", "red")));
    let mut delays = Vec::new();
    for _ in 0..6 {
        fail_external(&r.world, "observe", ExternalError::permanent("400"));
        delays.push(
            r.reconciler
                .reconcile(mr.clone())
                .await
                .unwrap()
                .requeue_after
                .unwrap(),
        );
    }
    assert!(near(delays[0], Duration::from_secs(30)), "{delays:?}");
    assert!(near(delays[1], Duration::from_secs(60)), "{delays:?}");
    assert!(near(delays[5], Duration::from_secs(300)), "{delays:?}");
}

#[tokio::test(start_paused = true)]
async fn a_reconcile_that_hangs_is_abandoned_at_its_timeout_and_retried() {
    let r = rig::<NamespacedFake>(|c| c.timeout = Duration::from_secs(5));
    let mr = Arc::new(settled(fake("r1", "red")));
    r.world.lock().unwrap().hang.push("observe");
    let started = tokio::time::Instant::now();
    let err = r.reconciler.reconcile(mr.clone()).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(err.reason(), "ReconcileTimeout");
    assert_eq!(
        err.to_string(),
        "reconciling r1 took longer than 5s; abandoned, will retry"
    );
    // Abandoned mid-way: nothing half-decided was recorded on the resource.
    assert!(r.writer.statuses.lock().unwrap().is_empty());
    // The system answers again: the next reconcile settles the resource.
    r.world.lock().unwrap().hang.clear();
    exists(&r.world, "r1", "red");
    let o = r.reconciler.reconcile(mr).await.unwrap();
    assert_eq!(o.state, SyncState::Synced);
}
