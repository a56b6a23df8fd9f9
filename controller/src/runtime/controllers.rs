//! The watches and the two controllers of the long-lived service: Robots
//! (through the generic managed reconciler) and ProviderConfigs (users count
//! and in-use finalizer), fed by one ProviderConfig and one usage watch.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::ResourceExt;
use kube::api::Api;
use kube::core::{DynamicObject, PartialObjectMeta};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use crate::managed::events::Events;
use crate::managed::meta;
use crate::managed::usage::PROVIDER_CONFIG_LABEL;
use crate::managed::{
    ConfigLookup, Connector, Managed, ManagedSpec, ManagedStatus, ReconcileError, Reconciler,
    ReconcilerConfig, SyncState,
};
use crate::providerconfig::{InUseReconciler, ProviderConfigObject};
use crate::telemetry::{Metrics, ReconcileLabels};

use super::{Resources, Setup};

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
    config: watcher::Config,
    rebuilds: tokio::sync::watch::Receiver<u64>,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
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

/// Runs the Robot and ProviderConfig controllers until `stop`, then lets
/// in-flight reconciles finish (bounded by --shutdown-timeout).
pub(super) async fn run_controllers(
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
    let usage_triggers = resuming_watcher(
        Api::<PartialObjectMeta<DynamicObject>>::all_with(client.clone(), &res.usage),
        wc.clone(),
        setup.control_plane.rebuilds(),
    )
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
    // controller, and wakes the managed resources that use a config when
    // its spec changes. Only the spec: the users count in its status changes
    // with every resource created, and waking them all each time is
    // quadratic.
    let pc_writer =
        reflector::store::Writer::<ProviderConfigObject>::new(res.provider_config.clone());
    let pc_store = pc_writer.as_reader();
    let (wake_tx, wake_robots) = tokio::sync::mpsc::unbounded_channel::<String>();
    let pc_stream = resuming_watcher(
        Api::<ProviderConfigObject>::all_with(client.clone(), &res.provider_config),
        wc.clone(),
        setup.control_plane.rebuilds(),
    )
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

    // The managed kinds: Robots. Another kind is one more `managed_controller`.
    let (robot_store, robots) = managed_controller(
        setup.reconciler(res, configs, Some(usage_store.clone())),
        client.clone(),
        setup.control_plane.rebuilds(),
        wake_robots,
        setup.args.concurrency,
        setup.metrics.clone(),
        &stop,
    );

    let in_use = Arc::new(InUseReconciler::new(
        client.clone(),
        res.provider_config.clone(),
        usage_store,
        Events::new(client.clone(), &ReconcilerConfig::default().controller_name),
    ));
    let pcs = Controller::for_stream_with(pc_stream, pc_store, res.provider_config.clone())
        // Usages arrive in bursts when many Robots are created: count once
        // the burst settles rather than write the users count each time.
        .reconcile_on(usage_triggers)
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile_provider_config, pc_error_policy, in_use)
        .for_each(|r| async move {
            if let Err(e) = r {
                log_controller_error(&e);
            }
        });

    // Ready once every cache has its first full list.
    let health = setup.health.clone();
    let metrics = setup.metrics.clone();
    let readiness = async move {
        let _ = robot_store.wait_until_ready().await;
        health.set("watch", None);
        tracing::info!(robots = robot_store.len(), "watch synced; reconciling");
        loop {
            metrics
                .managed_resources
                .set(i64::try_from(robot_store.len()).unwrap_or(i64::MAX));
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    };

    tokio::select! {
        _ = futures::future::join(robots, pcs) => {}
        _ = readiness => {}
    }
    Ok(())
}

/// What the controller of one managed kind reconciles with.
struct ManagedContext<P: ManagedSpec, U: ManagedStatus, C: Connector<P, U>> {
    reconciler: Reconciler<P, U, C>,
    metrics: Arc<Metrics>,
}

/// The controller of one managed kind: a watch of its resources, woken
/// also for every resource that uses a ProviderConfig named on `wake`.
/// Returns its cache and the future that runs it until `stop`.
fn managed_controller<P, U, C>(
    reconciler: Reconciler<P, U, C>,
    client: kube::Client,
    rebuilds: tokio::sync::watch::Receiver<u64>,
    wake: tokio::sync::mpsc::UnboundedReceiver<String>,
    concurrency: u16,
    metrics: Arc<Metrics>,
    stop: &CancellationToken,
) -> (
    reflector::Store<Managed<P, U>>,
    impl std::future::Future<Output = ()> + Send + use<P, U, C>,
)
where
    P: ManagedSpec,
    U: ManagedStatus,
    C: Connector<P, U>,
{
    let ar = reconciler.api_resource().clone();
    let writer = reflector::store::Writer::<Managed<P, U>>::new(ar.clone());
    let store = writer.as_reader();
    let stream = resuming_watcher(
        Api::<Managed<P, U>>::all_with(client, &ar),
        watcher::Config::default(),
        rebuilds,
    )
    .modify(slim)
    .reflect(writer)
    .applied_objects()
    .predicate_filter(managed_trigger, PredicateConfig::default());
    let wake_store = store.clone();
    let wake_ar = ar.clone();
    let wake = tokio_stream::wrappers::UnboundedReceiverStream::new(wake).flat_map(move |pc| {
        let refs: Vec<ObjectRef<Managed<P, U>>> = wake_store
            .state()
            .iter()
            .filter(|mr| mr.spec.resource_spec().provider_config_name() == pc)
            .map(|mr| ObjectRef::from_obj_with(mr.as_ref(), wake_ar.clone()))
            .collect();
        futures::stream::iter(refs)
    });
    let ctx = Arc::new(ManagedContext {
        reconciler,
        metrics,
    });
    let run = Controller::for_stream_with(stream, store.clone(), ar)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .reconcile_on(wake)
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile_managed, managed_error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                log_controller_error(&e);
            }
        });
    (store, run)
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

async fn reconcile_managed<P, U, C>(
    mr: Arc<Managed<P, U>>,
    ctx: Arc<ManagedContext<P, U, C>>,
) -> Result<Action, ReconcileError>
where
    P: ManagedSpec,
    U: ManagedStatus,
    C: Connector<P, U>,
{
    let started = Instant::now();
    let outcome = ctx.reconciler.reconcile(mr).await;
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
        kind: ctx.reconciler.api_resource().kind.clone(),
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

fn managed_error_policy<P, U, C>(
    mr: Arc<Managed<P, U>>,
    _: &ReconcileError,
    ctx: Arc<ManagedContext<P, U, C>>,
) -> Action
where
    P: ManagedSpec,
    U: ManagedStatus,
    C: Connector<P, U>,
{
    Action::requeue(ctx.reconciler.backoff(&mr.uid().unwrap_or_default()))
}

async fn reconcile_provider_config(
    pc: Arc<ProviderConfigObject>,
    in_use: Arc<InUseReconciler>,
) -> Result<Action, crate::providerconfig::Error> {
    let after = in_use.reconcile(pc).await?;
    // Usages wake us; the periodic look is a safety net after watch gaps.
    Ok(Action::requeue(after.unwrap_or(Duration::from_secs(300))))
}

fn pc_error_policy(
    _: Arc<ProviderConfigObject>,
    _: &crate::providerconfig::Error,
    _: Arc<InUseReconciler>,
) -> Action {
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Generation;
    use crate::robot::{RobotObject, RobotSpec};

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
    }
}
