//! The watches and controllers of the long-lived service:
//! - per generation ([`run_generation`]): one watch per config kind (the
//!   lookup caches, and the in-use controller of that kind) and one
//!   metadata-only watch of the usages;
//! - per managed kind ([`run_kind`]): its watch, which also feeds the
//!   claims, and its controller through the generic reconciler, woken for
//!   the resources that use a ProviderConfig whose spec changed.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::ResourceExt;
use kube::api::Api;
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use crate::managed::events::Events;
use crate::managed::inuse::{ConfigKind, InUseReconciler};
use crate::managed::kube_writer::KubeWriter;
use crate::managed::reconciler::claim_of;
use crate::managed::usage::{PROVIDER_CONFIG_KIND_LABEL, PROVIDER_CONFIG_LABEL};
use crate::managed::{
    ConfigKey, Connector, Managed, ManagedKind, ManagedSpec, ReconcileError, Reconciler,
    ReconcilerConfig, SharedResource, conditions, meta,
};
use crate::provider::{Deps, ProviderConfigObject};
use crate::telemetry::{Check, KindLabels, Metrics, ReconcileLabels};

use super::Setup;
use super::registry::{GenerationShared, KindContext};

type Mr<K> = Managed<<K as ManagedKind>::Spec, <K as ManagedKind>::Status>;

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

/// The reconcile triggers of a managed resource: changes a reconcile must
/// react to. Our own bookkeeping (create-* annotations, finalizers, status)
/// is left out, so writing it does not wake the resource again.
fn managed_trigger<K: kube::Resource>(mr: &K) -> Option<u64> {
    let m = mr.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.generation.hash(&mut h);
    m.deletion_timestamp.is_some().hash(&mut h);
    if let Some(a) = &m.annotations {
        for (k, v) in a {
            let ours = [meta::CREATE_PENDING, meta::CREATE_SUCCEEDED, meta::CREATE_FAILED].contains(&k.as_str())
                // Defaulting the external name to the object name changes nothing.
                || (k == meta::EXTERNAL_NAME && Some(v) == m.name.as_ref());
            if !ours {
                (k, v).hash(&mut h);
            }
        }
    }
    Some(h.finish())
}

/// A watch (with kube's default backoff) that starts over at once when the
/// control-plane client is rebuilt with new credentials. A watcher that
/// has been refused meanwhile (401s while the old token was revoked) would
/// otherwise sleep out its backoff, up to 30 s, before trying the new
/// ones. Starting over is a relist: the reflector replaces its store when
/// the list is complete, and the predicates keep unchanged objects from
/// being reconciled again.
fn resuming_watcher<K>(
    api: Api<K>,
    rebuilds: tokio::sync::watch::Receiver<u64>,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    // The apiserver ends each watch after this long and kube's watcher
    // resumes it from its last resourceVersion (no relist), so a watch is
    // never silent for longer than the client's read timeout allows.
    let config = watcher::Config::default().timeout(crate::kubeclient::WATCH_SECONDS);
    let start = move || {
        watcher(api.clone(), config.clone())
            .default_backoff()
            .boxed()
    };
    let first = start();
    futures::stream::unfold(
        (first, rebuilds, start),
        |(mut inner, mut rebuilds, start)| async move {
            loop {
                tokio::select! {
                    item = inner.next() => return item.map(|item| (item, (inner, rebuilds, start))),
                    Ok(()) = rebuilds.changed() => {
                        tracing::debug!("control-plane client rebuilt; watching again");
                        inner = start();
                    }
                }
            }
        },
    )
}

/// The config a usage counts for, from its labels.
fn config_of_usage(
    u: &PartialObjectMeta<DynamicObject>,
    kinds: &[(ConfigKind, ApiResource)],
) -> Option<(ConfigKind, ObjectRef<ProviderConfigObject>)> {
    let labels = u.metadata.labels.as_ref()?;
    let name = labels.get(PROVIDER_CONFIG_LABEL)?;
    let label_kind = labels.get(PROVIDER_CONFIG_KIND_LABEL).map(String::as_str);
    let (kind, ar) = kinds.iter().find(|(k, _)| match label_kind {
        Some(l) => k.kind == l,
        // Legacy usages carry no kind: the generation has one config kind.
        None => true,
    })?;
    let mut oref = ObjectRef::new_with(name, ar.clone());
    if kind.namespaced
        && let Some(ns) = &u.metadata.namespace
    {
        oref = oref.within(ns);
    }
    Some((*kind, oref))
}

/// Runs a generation's config and usage watches and its in-use
/// controllers until `stop`; the config caches are in the setup's
/// directory meanwhile.
pub(super) async fn run_generation(
    setup: Arc<Setup>,
    shared: Arc<GenerationShared>,
    usage_writer: reflector::store::Writer<PartialObjectMeta<DynamicObject>>,
    stop: CancellationToken,
) {
    let client = setup.client();
    let family = shared.family;
    let kinds: Vec<(ConfigKind, ApiResource)> = ConfigKind::of(shared.generation)
        .iter()
        .map(|k| (*k, k.api_resource(family)))
        .collect();

    // Usages: names and labels only; each wakes the in-use controller of
    // the config it names.
    let mut triggers = HashMap::new();
    let mut receivers = HashMap::new();
    for (kind, _) in &kinds {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        triggers.insert(kind.kind, tx);
        receivers.insert(kind.kind, rx);
    }
    let usage_ar = ConfigKind::usage_resource(shared.generation, family);
    let routing = kinds.clone();
    let usages = resuming_watcher(
        Api::<PartialObjectMeta<DynamicObject>>::all_with(client.clone(), &usage_ar),
        setup.control_plane.rebuilds(),
    )
    .modify(slim)
    .reflect(usage_writer)
    .touched_objects()
    .for_each(move |u| {
        match u {
            Ok(u) => {
                if let Some((kind, oref)) = config_of_usage(&u, &routing)
                    && let Some(tx) = triggers.get(kind.kind)
                {
                    let _ = tx.send(oref);
                }
            }
            // The watcher retries with backoff; say why it had to.
            Err(e) => tracing::warn!(error = %e, "usage watch error; retrying"),
        }
        futures::future::ready(())
    });

    // One waiter on the usage store's readiness, told to every in-use
    // reconciler: the store's own future wakes only its last waiter.
    let (listed_tx, listed) = tokio::sync::watch::channel(false);
    let usages_store = shared.usages.clone();
    let listing = async move {
        if usages_store.wait_until_ready().await.is_ok() {
            let _ = listed_tx.send(true);
        }
        futures::future::pending::<()>().await;
    };
    let mut controllers = Vec::new();
    for (kind, ar) in kinds {
        let writer = reflector::store::Writer::<ProviderConfigObject>::new(ar.clone());
        let store = writer.as_reader();
        setup.configs.insert(family, kind, store.clone());
        // A spec change wakes the resources that use the config. Only the
        // spec: the users count in its status changes with every resource
        // created, and waking them all each time is quadratic.
        let changes = shared.config_changes.clone();
        let seen = std::sync::Mutex::new(HashMap::<ConfigKey, Option<i64>>::new());
        let group = ar.group.clone();
        let stream = resuming_watcher(
            Api::<ProviderConfigObject>::all_with(client.clone(), &ar),
            setup.control_plane.rebuilds(),
        )
        .modify(slim)
        .reflect(writer)
        .applied_objects()
        .inspect_ok(move |pc| {
            let key = ConfigKey {
                group: group.clone(),
                kind: kind.kind.to_owned(),
                namespace: pc.namespace(),
                name: pc.name_any(),
            };
            let generation = pc.metadata.generation;
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.insert(key.clone(), generation) != Some(generation) {
                let _ = changes.send(key);
            }
        });
        let in_use = Arc::new(InUseReconciler::<ProviderConfigObject>::new(
            kind,
            family,
            client.clone(),
            shared.usages.clone(),
            listed.clone(),
            Events::new(client.clone(), &ReconcilerConfig::default().controller_name),
        ));
        let usage_triggers = tokio_stream::wrappers::UnboundedReceiverStream::new(
            receivers.remove(kind.kind).unwrap_or_else(|| {
                // Every kind got a channel above; an empty one never fires.
                tokio::sync::mpsc::unbounded_channel().1
            }),
        );
        let controller = Controller::for_stream_with(stream, store, ar)
            // Usages arrive in bursts when many resources are created:
            // count once the burst settles rather than write each time.
            .reconcile_on(usage_triggers)
            .graceful_shutdown_on(stop.clone().cancelled_owned())
            .run(reconcile_config, config_error_policy, in_use)
            .for_each(|r| async move {
                if let Err(e) = r {
                    log_controller_error(&e);
                }
            });
        controllers.push(controller);
    }
    tokio::select! {
        _ = futures::future::join_all(controllers) => {}
        _ = usages => {}
        _ = listing => {}
    }
    for kind in ConfigKind::of(shared.generation) {
        setup.configs.remove(family, *kind);
    }
}

/// What the controller of one managed kind reconciles with.
struct KindState<K: ManagedKind> {
    reconciler: Reconciler<K, KubeWriter>,
    metrics: Arc<Metrics>,
    id: String,
}

/// Runs the controller of the managed kind `K` until `ctx.stop`.
pub(super) async fn run_kind<K>(ctx: KindContext)
where
    K: ManagedKind<Deps = Deps>,
    K::Connector: Connector<K::Spec, K::Status, Config = ProviderConfigObject>,
{
    let KindContext {
        setup,
        shared,
        stop,
    } = ctx;
    let family = shared.family;
    let client = setup.client();
    let ar = SharedResource::new(K::api_resource(family));
    let id = format!("{}.{}", K::KIND, ar.group);
    setup
        .health
        .set(Check::Watch(id.clone()), Some("listing".into()));
    let reconciler = Reconciler::<K, KubeWriter>::new(
        family,
        K::connector(&setup.deps),
        setup.config_lookup(),
        setup.claims.clone(),
        KubeWriter::new(
            client.clone(),
            ApiResource::clone(&ar),
            ConfigKind::usage_resource(K::GENERATION, family),
            Some(shared.usages.clone()),
            Events::new(client.clone(), &ReconcilerConfig::default().controller_name),
        ),
        setup.limiter.clone(),
        setup.reconciler_config(),
    )
    .with_metrics(setup.metrics.managed.clone());
    let gvk = reconciler.gvk().to_owned();

    let writer = reflector::store::Writer::<Mr<K>>::new(ar.clone());
    let store = writer.as_reader();
    let claims = setup.claims.clone();
    let source = id.clone();
    let stream = resuming_watcher(
        Api::<Mr<K>>::all_with(client.clone(), &ar),
        setup.control_plane.rebuilds(),
    )
    .modify(slim)
    // Writes name the kind from the run-time type, never from the object.
    .modify(|mr| mr.types = None)
    .map_ok(move |event| {
        // Every resource's claim on its external name, as the watch sees it.
        match &event {
            watcher::Event::Apply(mr) | watcher::Event::InitApply(mr) => {
                let (name, claimant) = claim_of::<K>(family, mr, &source);
                claims.claim(K::EXTERNAL_SPACE, &name, claimant);
            }
            watcher::Event::Delete(mr) => claims.release(&mr.uid().unwrap_or_default()),
            watcher::Event::Init => claims.begin_relist(&source),
            watcher::Event::InitDone => claims.end_relist(&source),
        }
        event
    })
    .reflect(writer)
    .applied_objects()
    .predicate_filter(managed_trigger, PredicateConfig::default());

    let wake_store = store.clone();
    let wake_ar = ar.clone();
    let wake = tokio_stream::wrappers::BroadcastStream::new(shared.config_changes.subscribe())
        .filter_map(|k| futures::future::ready(k.ok()))
        .flat_map(move |key: ConfigKey| {
            let refs: Vec<ObjectRef<Mr<K>>> = wake_store
                .state()
                .iter()
                .filter(|mr| {
                    ConfigKey::resolve(
                        K::GENERATION,
                        family,
                        mr.metadata.namespace.as_deref(),
                        &mr.spec.common().config,
                    )
                    .is_ok_and(|k| k == key)
                })
                .map(|mr| ObjectRef::from_obj_with(mr.as_ref(), wake_ar.clone()))
                .collect();
            futures::stream::iter(refs)
        });

    let state = Arc::new(KindState {
        reconciler,
        metrics: setup.metrics.clone(),
        id: id.clone(),
    });
    let run = Controller::for_stream_with(stream, store.clone(), ar)
        .with_config(ControllerConfig::default().concurrency(setup.args.concurrency))
        .reconcile_on(wake)
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile_managed::<K>, managed_error_policy::<K>, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                log_controller_error(&e);
            }
        });

    // Ready once the cache has its first full list; the gauges follow it.
    let health = setup.health.clone();
    let metrics = setup.metrics.clone();
    let gauge_id = id.clone();
    let gauge_gvk = gvk.clone();
    let readiness = async move {
        let _ = store.wait_until_ready().await;
        health.set(Check::Watch(gauge_id.clone()), None);
        tracing::info!(kind = %gauge_id, resources = store.len(), "watch synced; reconciling");
        loop {
            let all = store.state();
            let count = |t: &str| {
                all.iter()
                    .filter(|mr| {
                        mr.status.as_ref().is_some_and(|s| {
                            conditions::get(
                                &crate::managed::ManagedStatus::resource_status(s).conditions,
                                t,
                            )
                            .is_some_and(conditions::Condition::is_true)
                        })
                    })
                    .count()
            };
            metrics.managed.set_state(
                &gauge_gvk,
                all.len(),
                count(conditions::TYPE_READY),
                count(conditions::TYPE_SYNCED),
            );
            metrics
                .managed_resources
                .get_or_create(&KindLabels {
                    kind: gauge_id.clone(),
                })
                .set(i64::try_from(all.len()).unwrap_or(i64::MAX));
            drop(all);
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    };
    tokio::select! {
        _ = run => {}
        _ = readiness => {}
    }
    // The kind stopped (shutdown, or its CRD went away).
    setup.health.clear(|c| *c == Check::Watch(id.clone()));
    setup.claims.begin_relist(&id);
    setup.claims.end_relist(&id);
    setup.metrics.managed.forget_kind(&gvk);
    setup
        .metrics
        .managed_resources
        .remove(&KindLabels { kind: id });
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

async fn reconcile_managed<K: ManagedKind>(
    mr: Arc<Mr<K>>,
    state: Arc<KindState<K>>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let outcome = state.reconciler.reconcile(mr).await;
    let (result, reason) = match &outcome {
        Ok(o) => (o.state.as_str(), o.reason.map(|r| r.as_str()).unwrap_or("")),
        Err(e) => ("error", e.reason()),
    };
    let labels = ReconcileLabels {
        kind: state.id.clone(),
        result: result.into(),
        reason: reason.into(),
    };
    state.metrics.reconciles.get_or_create(&labels).inc();
    state
        .metrics
        .reconcile_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    let o = outcome?;
    Ok(match o.requeue_after {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

fn managed_error_policy<K: ManagedKind>(
    mr: Arc<Mr<K>>,
    _: &ReconcileError,
    state: Arc<KindState<K>>,
) -> Action {
    Action::requeue(
        state
            .reconciler
            .backoff(&mr.uid().unwrap_or_default(), true),
    )
}

async fn reconcile_config(
    pc: Arc<ProviderConfigObject>,
    in_use: Arc<InUseReconciler<ProviderConfigObject>>,
) -> Result<Action, crate::managed::inuse::Error> {
    let after = in_use.reconcile(pc).await?;
    // Usages wake us; the periodic look is a safety net after watch gaps.
    Ok(Action::requeue(after.unwrap_or(Duration::from_secs(300))))
}

fn config_error_policy(
    _: Arc<ProviderConfigObject>,
    _: &crate::managed::inuse::Error,
    _: Arc<InUseReconciler<ProviderConfigObject>>,
) -> Action {
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Family, Generation};
    use crate::kinds::robot::legacy::LegacyRobot;
    use crate::managed::types::CLUSTER_PROVIDER_CONFIG;

    fn robot(annotations: &[(&str, &str)], generation: i64) -> Mr<LegacyRobot> {
        let mut r = Mr::<LegacyRobot>::new(
            "r",
            &LegacyRobot::api_resource(Family::Crossplane),
            crate::kinds::robot::legacy::RobotSpec {
                resource: Default::default(),
                for_provider: crate::kinds::robot::RobotParameters {
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
        assert_eq!(managed_trigger(&base), managed_trigger(&bookkeeping));
        assert_ne!(managed_trigger(&base), managed_trigger(&robot(&[], 2)));
        assert_ne!(
            managed_trigger(&base),
            managed_trigger(&robot(&[(meta::PAUSED, "true")], 1))
        );
        assert_ne!(
            managed_trigger(&base),
            managed_trigger(&robot(&[(meta::EXTERNAL_NAME, "x")], 1))
        );
        assert_eq!(
            managed_trigger(&base),
            managed_trigger(&robot(&[(meta::EXTERNAL_NAME, "r")], 1))
        );
        // A reconcile request is a trigger: it asks for a reconcile now.
        assert_ne!(
            managed_trigger(&base),
            managed_trigger(&robot(&[(meta::RECONCILE_REQUESTED_AT, "1")], 1))
        );
    }

    #[test]
    fn usages_wake_the_config_they_name() {
        let family = Family::Crossplane;
        let kinds: Vec<(ConfigKind, ApiResource)> = ConfigKind::of(Generation::Namespaced)
            .iter()
            .map(|k| (*k, k.api_resource(family)))
            .collect();
        let mut u: PartialObjectMeta<DynamicObject> = serde_json::from_value(serde_json::json!({
            "apiVersion": "dummy.m.crossplane.io/v1alpha1",
            "kind": "ProviderConfigUsage",
            "metadata": { "name": "u" },
        }))
        .unwrap();
        u.metadata.namespace = Some("team-a".into());
        u.metadata.labels = Some(
            [
                (PROVIDER_CONFIG_LABEL.to_owned(), "pc".to_owned()),
                (
                    PROVIDER_CONFIG_KIND_LABEL.to_owned(),
                    "ProviderConfig".to_owned(),
                ),
            ]
            .into(),
        );
        let (kind, oref) = config_of_usage(&u, &kinds).unwrap();
        assert!(kind.namespaced);
        assert_eq!(oref.namespace.as_deref(), Some("team-a"));
        u.metadata.labels.as_mut().unwrap().insert(
            PROVIDER_CONFIG_KIND_LABEL.to_owned(),
            CLUSTER_PROVIDER_CONFIG.to_owned(),
        );
        let (kind, oref) = config_of_usage(&u, &kinds).unwrap();
        assert!(!kind.namespaced);
        assert_eq!(oref.namespace, None);
    }
}
