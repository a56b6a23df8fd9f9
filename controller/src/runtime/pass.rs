//! One pass over every managed resource of every served kind, without
//! watches: `once`, and each Lambda invocation.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::future::BoxFuture;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde::Serialize;

use crate::api::{Family, Generation};
use crate::cli::RunArgs;
use crate::managed::events::Events;
use crate::managed::inuse::{ConfigKind, InUseReconciler};
use crate::managed::kube_writer::KubeWriter;
use crate::managed::reconciler::claim_of;
use crate::managed::{
    Connector, Managed, ManagedKind, ManagedStatus, Reconciler, ReconcilerConfig, SharedResource,
    SyncState, conditions,
};
use crate::provider::{Deps, ProviderConfigObject};

use super::registry::Registered;
use super::{Setup, discover};

type Mr<K> = Managed<<K as ManagedKind>::Spec, <K as ManagedKind>::Status>;

/// What one pass found (`once`, and each Lambda invocation's answer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PassSummary {
    /// Managed resources seen, of every kind.
    pub seen: usize,
    pub synced: usize,
    pub failed: usize,
    pub paused: usize,
    pub deleted: usize,
    pub duration_ms: u128,
    /// Resources seen, by kind (`Robot.iam.dummy.crossplane.io`).
    pub kinds: BTreeMap<String, usize>,
    /// Kinds whose CRD the control plane does not serve (yet).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
    /// Resources not synced, with their reason (first ten).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl PassSummary {
    pub fn ok(&self) -> bool {
        self.failed == 0
    }
}

/// The result of one resource in a pass.
pub struct ResourceOutcome {
    pub describe: String,
    pub result: Result<SyncState, String>,
}

/// A kind's resources, listed and ready to be reconciled.
pub trait PreparedPass: Send {
    fn kind(&self) -> String;
    fn count(&self) -> usize;
    fn run(self: Box<Self>) -> BoxFuture<'static, Vec<ResourceOutcome>>;
}

struct Prepared<K: ManagedKind> {
    id: String,
    client: kube::Client,
    resource: SharedResource,
    items: Vec<Mr<K>>,
    reconciler: Reconciler<K, KubeWriter>,
    concurrency: usize,
}

/// Lists the resources of `K` and records their claims, so that every
/// kind's claims are known before any is reconciled.
pub(super) async fn prepare<K>(
    setup: Arc<Setup>,
    family: Family,
) -> anyhow::Result<Box<dyn PreparedPass>>
where
    K: ManagedKind<Deps = Deps>,
    K::Connector: Connector<K::Spec, K::Status, Config = ProviderConfigObject>,
{
    let client = setup.client();
    let resource = SharedResource::new(K::api_resource(family));
    let id = format!("{}.{}", K::KIND, resource.group);
    let items = Api::<Mr<K>>::all_with(client.clone(), &resource)
        .list(&ListParams::default())
        .await?
        .items;
    setup.claims.begin_relist(&id);
    for mr in &items {
        let (name, claimant) = claim_of::<K>(family, mr, &id);
        setup.claims.claim(K::EXTERNAL_SPACE, &name, claimant);
    }
    setup.claims.end_relist(&id);
    let reconciler = Reconciler::<K, KubeWriter>::new(
        family,
        K::connector(&setup.deps),
        setup.config_lookup(),
        setup.claims.clone(),
        KubeWriter::new(
            client.clone(),
            ApiResource::clone(&resource),
            ConfigKind::usage_resource(K::GENERATION, family),
            None,
            Events::new(client.clone(), &ReconcilerConfig::default().controller_name),
        ),
        setup.limiter.clone(),
        setup.reconciler_config(),
    );
    Ok(Box::new(Prepared::<K> {
        id,
        client,
        resource,
        items,
        reconciler,
        concurrency: usize::from(setup.args.concurrency.max(1)),
    }))
}

impl<K: ManagedKind> PreparedPass for Prepared<K> {
    fn kind(&self) -> String {
        self.id.clone()
    }

    fn count(&self) -> usize {
        self.items.len()
    }

    fn run(self: Box<Self>) -> BoxFuture<'static, Vec<ResourceOutcome>> {
        Box::pin(async move {
            let this = &*self;
            futures::stream::iter(this.items.iter().cloned())
                .map(|mr| async move { this.reconcile_one(mr).await })
                .buffer_unordered(this.concurrency)
                .collect()
                .await
        })
    }
}

impl<K: ManagedKind> Prepared<K> {
    fn api(&self, namespace: Option<&str>) -> Api<Mr<K>> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &self.resource),
            None => Api::all_with(self.client.clone(), &self.resource),
        }
    }

    /// Reconciles one resource, looking again after a stale view (up to
    /// five times).
    async fn reconcile_one(&self, mr: Mr<K>) -> ResourceOutcome {
        let namespace = mr.namespace();
        let name = mr.name_any();
        let describe = match &namespace {
            Some(ns) => format!("{} {ns}/{name}", self.id),
            None => format!("{} {name}", self.id),
        };
        let api = self.api(namespace.as_deref());
        let mut current = Arc::new(mr);
        for _ in 0..5 {
            match self.reconciler.reconcile(current.clone()).await {
                Ok(o) if o.state == SyncState::Stale => match api.get_opt(&name).await {
                    Ok(Some(fresh)) => current = Arc::new(fresh),
                    Ok(None) => {
                        return ResourceOutcome {
                            describe,
                            result: Ok(SyncState::Done),
                        };
                    }
                    Err(e) => {
                        return ResourceOutcome {
                            describe,
                            result: Err(e.to_string()),
                        };
                    }
                },
                Ok(o) if o.state == SyncState::Failed => {
                    return ResourceOutcome {
                        result: Err(failure_reason::<K>(&api, &name).await),
                        describe,
                    };
                }
                Ok(o) => {
                    return ResourceOutcome {
                        describe,
                        result: Ok(o.state),
                    };
                }
                Err(e) => {
                    return ResourceOutcome {
                        describe,
                        result: Err(e.to_string()),
                    };
                }
            }
        }
        ResourceOutcome {
            describe,
            result: Err("the resource kept changing while being reconciled".into()),
        }
    }
}

/// The Synced message of a resource, for the pass summary.
async fn failure_reason<K: ManagedKind>(api: &Api<Mr<K>>, name: &str) -> String {
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|r| {
            r.status.and_then(|s| {
                conditions::get(&s.resource_status().conditions, conditions::TYPE_SYNCED)
                    .and_then(|c| c.message.clone())
            })
        })
        .unwrap_or_else(|| "not synced".into())
}

/// A reflector store holding `items`, as a watch's first list would.
fn store_of<K>(resource: K::DynamicType, items: Vec<K>) -> Store<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash,
{
    let mut writer = reflector::store::Writer::<K>::new(resource);
    let store = writer.as_reader();
    writer.apply_watcher_event(&watcher::Event::Init);
    for item in items {
        writer.apply_watcher_event(&watcher::Event::InitApply(item));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

/// One pass: every served kind's resources reconciled once, then every
/// ProviderConfig's users counted.
pub async fn pass(setup: &Arc<Setup>) -> anyhow::Result<PassSummary> {
    let started = Instant::now();
    let client = setup.client();
    let served = discover(&client).await?;
    let forced = setup.args.api_group.forced();
    let generations: Vec<(Generation, Family)> = Generation::ALL
        .into_iter()
        .filter_map(|g| served.family_for(g, forced).map(|f| (g, f)))
        .collect();
    if generations.is_empty() {
        anyhow::bail!("the control plane serves no provider-dummy CRDs (Robot, ProviderConfig)");
    }

    // Configs and usages of each served generation, as a watch would hold them.
    let mut in_use = Vec::new();
    for (generation, family) in &generations {
        let usage_ar = ConfigKind::usage_resource(*generation, *family);
        let usages = Api::<DynamicObject>::all_with(client.clone(), &usage_ar)
            .list_metadata(&ListParams::default())
            .await?
            .items;
        let usages: Store<PartialObjectMeta<DynamicObject>> = store_of(usage_ar, usages);
        for kind in ConfigKind::of(*generation) {
            let ar = kind.api_resource(*family);
            let configs = Api::<ProviderConfigObject>::all_with(client.clone(), &ar)
                .list(&ListParams::default())
                .await?
                .items;
            let store = store_of(ar, configs);
            setup.configs.insert(*family, *kind, store.clone());
            in_use.push((*kind, *family, store, usages.clone()));
        }
    }

    let mut summary = PassSummary::default();
    let mut prepared = Vec::new();
    for kind in setup.kinds {
        let Some((_, family)) = generations.iter().find(|(g, _)| *g == kind.generation()) else {
            summary
                .waiting
                .push(kind.id(forced.unwrap_or(Family::Crossplane)));
            continue;
        };
        if !served.has(&kind.api_resource(*family)) {
            summary.waiting.push(kind.id(*family));
            continue;
        }
        prepared.push(kind.prepare_pass(setup.clone(), *family).await?);
    }
    for p in &prepared {
        summary.seen += p.count();
        summary.kinds.insert(p.kind(), p.count());
    }
    let outcomes = futures::future::join_all(prepared.into_iter().map(|p| p.run())).await;
    for outcome in outcomes.into_iter().flatten() {
        match outcome.result {
            Ok(SyncState::Synced) => summary.synced += 1,
            Ok(SyncState::Paused) => summary.paused += 1,
            Ok(SyncState::Done) => summary.deleted += 1,
            Ok(SyncState::Failed | SyncState::Stale) => {
                summary.failed += 1;
                if summary.failures.len() < 10 {
                    summary
                        .failures
                        .push(format!("{}: not synced", outcome.describe));
                }
            }
            Err(e) => {
                summary.failed += 1;
                if summary.failures.len() < 10 {
                    summary.failures.push(format!("{}: {e}", outcome.describe));
                }
            }
        }
    }

    // Users of each ProviderConfig, from the usages listed above plus what
    // this pass created: a fresh list.
    for (kind, family, configs, _) in in_use {
        let usage_ar = ConfigKind::usage_resource(kind.generation, family);
        let usages = Api::<DynamicObject>::all_with(client.clone(), &usage_ar)
            .list_metadata(&ListParams::default())
            .await?
            .items;
        let reconciler = InUseReconciler::<ProviderConfigObject>::new(
            kind,
            family,
            client.clone(),
            store_of(usage_ar, usages),
            // Listed above.
            tokio::sync::watch::channel(true).1,
            Events::new(client.clone(), &ReconcilerConfig::default().controller_name),
        );
        for pc in configs.state() {
            reconciler.reconcile(pc).await?;
        }
    }

    summary.duration_ms = started.elapsed().as_millis();
    Ok(summary)
}

/// `once`: one pass, then exit 0 when every resource is Synced.
pub async fn once(args: RunArgs, kinds: &'static [&'static dyn Registered]) -> ExitCode {
    let setup = match Setup::new(args, kinds, Arc::default(), Arc::default()).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(e.exit_code());
        }
    };
    match pass(&setup).await {
        Ok(summary) => {
            tracing::info!(
                seen = summary.seen,
                synced = summary.synced,
                failed = summary.failed,
                paused = summary.paused,
                deleted = summary.deleted,
                duration_ms = summary.duration_ms as u64,
                "pass complete"
            );
            for w in &summary.waiting {
                tracing::info!(kind = %w, "not served by the control plane; skipped");
            }
            for f in &summary.failures {
                tracing::warn!(resource = %f, "not synced");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_serialize_for_lambda() {
        let s = PassSummary {
            seen: 2,
            synced: 1,
            failed: 1,
            kinds: [("Robot.iam.dummy.crossplane.io".to_owned(), 2)].into(),
            ..PassSummary::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["seen"], 2);
        assert_eq!(v["kinds"]["Robot.iam.dummy.crossplane.io"], 2);
        assert!(v.get("waiting").is_none());
        assert!(!s.ok());
    }
}
