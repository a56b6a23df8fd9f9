//! Keeps `status.users` counted and the in-use finalizer on every
//! ProviderConfig of any kind, so one with users cannot be deleted from
//! under them (crossplane-runtime's `pkg/reconciler/providerconfig`).
//!
//! Users are counted by name, kind and namespace: a namespaced
//! ProviderConfig counts the usages of its own namespace only
//! (crossplane#7154 counted by name alone), and a ClusterProviderConfig
//! counts the namespaced usages that name its kind in every namespace (the
//! usages that really exist: provider-template#171 counted a
//! cluster-scoped usage kind nobody created, and never protected it).

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::api::{Family, Generation, VERSION};

use super::events::{Events, Reason};
use super::types::{CLUSTER_PROVIDER_CONFIG, PROVIDER_CONFIG};
use super::usage::{PROVIDER_CONFIG_KIND_LABEL, PROVIDER_CONFIG_LABEL, UsageStore};

/// Crossplane's finalizer on a ProviderConfig that has users.
pub const IN_USE_FINALIZER: &str = "in-use.crossplane.io";

/// How long a ProviderConfig reconcile lets a burst of usage changes settle.
const SETTLE: Duration = Duration::from_millis(300);

/// A config object whose users are counted in its status.
pub trait ConfigStatus {
    fn users(&self) -> Option<i64>;
}

/// One kind of ProviderConfig: where it is served and which usages count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConfigKind {
    pub generation: Generation,
    /// `ProviderConfig` or `ClusterProviderConfig`.
    pub kind: &'static str,
    pub namespaced: bool,
}

impl ConfigKind {
    /// The config kinds of `generation`.
    pub fn of(generation: Generation) -> &'static [ConfigKind] {
        const LEGACY: &[ConfigKind] = &[ConfigKind {
            generation: Generation::Legacy,
            kind: PROVIDER_CONFIG,
            namespaced: false,
        }];
        const NAMESPACED: &[ConfigKind] = &[
            ConfigKind {
                generation: Generation::Namespaced,
                kind: PROVIDER_CONFIG,
                namespaced: true,
            },
            ConfigKind {
                generation: Generation::Namespaced,
                kind: CLUSTER_PROVIDER_CONFIG,
                namespaced: false,
            },
        ];
        match generation {
            Generation::Legacy => LEGACY,
            Generation::Namespaced => NAMESPACED,
        }
    }

    fn plural(&self) -> String {
        format!("{}s", self.kind.to_ascii_lowercase())
    }

    pub fn api_resource(&self, family: Family) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&self.generation.provider_group(family), VERSION, self.kind),
            &self.plural(),
        )
    }

    /// The usage kind of a generation (one per generation).
    pub fn usage_resource(generation: Generation, family: Family) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(
                &generation.provider_group(family),
                VERSION,
                "ProviderConfigUsage",
            ),
            "providerconfigusages",
        )
    }

    /// Whether the usage `u` is a use of the config `name` in `namespace`.
    pub fn counts(
        &self,
        u: &PartialObjectMeta<DynamicObject>,
        name: &str,
        namespace: Option<&str>,
    ) -> bool {
        let labels = u.metadata.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        if label(PROVIDER_CONFIG_LABEL) != Some(name) {
            return false;
        }
        match self.generation {
            // Legacy usages carry no kind: there is one config kind.
            Generation::Legacy => true,
            Generation::Namespaced => {
                label(PROVIDER_CONFIG_KIND_LABEL) == Some(self.kind)
                    && (!self.namespaced || u.metadata.namespace.as_deref() == namespace)
            }
        }
    }
}

/// Why a ProviderConfig reconcile could not finish.
#[derive(Debug, thiserror::Error)]
#[error("cannot update {kind} {name}: {source}")]
pub struct Error {
    kind: &'static str,
    name: String,
    #[source]
    source: kube::Error,
}

/// The in-use reconciler of one config kind.
pub struct InUseReconciler<K> {
    kind: ConfigKind,
    client: kube::Client,
    resource: ApiResource,
    usages: UsageStore,
    /// True once `usages` has listed. (The store's own readiness future
    /// wakes only its last waiter: two config kinds share one store.)
    listed: tokio::sync::watch::Receiver<bool>,
    events: Events,
    _object: std::marker::PhantomData<fn() -> K>,
}

impl<K> InUseReconciler<K>
where
    K: Resource<DynamicType = ApiResource> + ConfigStatus + Clone + Send + Sync + 'static,
{
    pub fn new(
        kind: ConfigKind,
        family: Family,
        client: kube::Client,
        usages: UsageStore,
        listed: tokio::sync::watch::Receiver<bool>,
        events: Events,
    ) -> Self {
        Self {
            resource: kind.api_resource(family),
            kind,
            client,
            usages,
            listed,
            events,
            _object: std::marker::PhantomData,
        }
    }

    pub fn api_resource(&self) -> &ApiResource {
        &self.resource
    }

    fn api(&self, namespace: Option<&str>) -> Api<PartialObjectMeta<DynamicObject>> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &self.resource),
            None => Api::all_with(self.client.clone(), &self.resource),
        }
    }

    fn status_api(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &self.resource),
            None => Api::all_with(self.client.clone(), &self.resource),
        }
    }

    /// The usages of the config `name` (in `namespace`).
    pub fn users(&self, name: &str, namespace: Option<&str>) -> i64 {
        let n = self
            .usages
            .state()
            .iter()
            .filter(|u| self.kind.counts(u, name, namespace))
            .count();
        i64::try_from(n).unwrap_or(i64::MAX)
    }

    /// Returns when to look again, if ever.
    pub async fn reconcile(&self, pc: Arc<K>) -> Result<Option<Duration>, Error> {
        // Counting users in a cache that has not listed yet would count none,
        // and a used ProviderConfig would lose its finalizer.
        if self
            .listed
            .clone()
            .wait_for(|listed| *listed)
            .await
            .is_err()
        {
            return Ok(Some(Duration::from_secs(1)));
        }
        let name = pc.name_any();
        let namespace = pc.meta().namespace.clone();
        let ns = namespace.as_deref();
        let err = |source| Error {
            kind: self.kind.kind,
            name: name.clone(),
            source,
        };
        let has_finalizer = pc.finalizers().iter().any(|f| f == IN_USE_FINALIZER);
        if pc.meta().deletion_timestamp.is_some() {
            let users = self.users(&name, ns);
            if users > 0 {
                self.events
                    .publish(
                        &pc.object_ref(&self.resource),
                        Reason::UsageAccounting,
                        "Blocking deletion while usages still exist",
                    )
                    .await;
                self.write_users(&pc, users).await.map_err(err)?;
                // Usages going away trigger us again.
                return Ok(None);
            }
            if has_finalizer {
                let rest: Vec<&String> = pc
                    .finalizers()
                    .iter()
                    .filter(|f| *f != IN_USE_FINALIZER)
                    .collect();
                let patch = json!({ "metadata": { "finalizers": rest, "resourceVersion": pc.resource_version() } });
                match self
                    .api(ns)
                    .patch_metadata(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.is_not_found() => {}
                    Err(e) => return Err(err(e)),
                }
            }
            return Ok(None);
        }
        // The finalizer first and at once: until it is there, the
        // ProviderConfig can vanish from under its users.
        if !has_finalizer {
            let mut all = pc.finalizers().to_vec();
            all.push(IN_USE_FINALIZER.into());
            let patch = json!({ "metadata": { "finalizers": all, "resourceVersion": pc.resource_version() } });
            self.api(ns)
                .patch_metadata(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(err)?;
        }
        // Usages come in bursts when many resources are created at once.
        // The controller runs one reconcile per ProviderConfig at a time and
        // folds the requests that arrive meanwhile into one, so a short
        // pause before counting turns a burst into one count and one write.
        tokio::time::sleep(SETTLE).await;
        let users = self.users(&name, ns);
        tracing::debug!(
            kind = self.kind.kind,
            name,
            namespace = ns,
            users,
            "users counted"
        );
        self.write_users(&pc, users).await.map_err(err)?;
        Ok(None)
    }

    async fn write_users(&self, pc: &K, users: i64) -> Result<(), kube::Error> {
        if pc.users() == Some(users) {
            return Ok(());
        }
        let patch = json!({ "status": { "users": users } });
        self.status_api(pc.meta().namespace.as_deref())
            .patch_status(
                &pc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn usage(ns: Option<&str>, labels: &[(&str, &str)]) -> PartialObjectMeta<DynamicObject> {
        let mut u: PartialObjectMeta<DynamicObject> = serde_json::from_value(serde_json::json!({
            "apiVersion": "dummy.m.crossplane.io/v1alpha1",
            "kind": "ProviderConfigUsage",
            "metadata": { "name": "u" },
        }))
        .unwrap();
        u.metadata.namespace = ns.map(str::to_owned);
        u.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        u
    }

    #[test]
    fn users_count_by_name_kind_and_namespace() {
        let [pc, cpc] = ConfigKind::of(Generation::Namespaced) else {
            panic!("two namespaced config kinds");
        };
        let of_pc = usage(
            Some("a"),
            &[
                (PROVIDER_CONFIG_LABEL, "default"),
                (PROVIDER_CONFIG_KIND_LABEL, "ProviderConfig"),
            ],
        );
        let of_cpc = usage(
            Some("b"),
            &[
                (PROVIDER_CONFIG_LABEL, "default"),
                (PROVIDER_CONFIG_KIND_LABEL, "ClusterProviderConfig"),
            ],
        );
        // A namespaced ProviderConfig counts its own namespace only.
        assert!(pc.counts(&of_pc, "default", Some("a")));
        assert!(!pc.counts(&of_pc, "default", Some("b")));
        // ...and never the uses of a ClusterProviderConfig of its name.
        assert!(!pc.counts(&of_cpc, "default", Some("b")));
        // A ClusterProviderConfig counts its uses in every namespace.
        assert!(cpc.counts(&of_cpc, "default", None));
        assert!(!cpc.counts(&of_pc, "default", None));
        assert!(!cpc.counts(&of_cpc, "other", None));
        // Legacy usages have no kind label.
        let [legacy] = ConfigKind::of(Generation::Legacy) else {
            panic!("one legacy config kind");
        };
        let old = usage(None, &[(PROVIDER_CONFIG_LABEL, "default")]);
        assert!(legacy.counts(&old, "default", None));
        assert_eq!(
            legacy.api_resource(Family::Upbound).api_version,
            "dummy.upbound.io/v1alpha1"
        );
        assert_eq!(
            cpc.api_resource(Family::Crossplane).plural,
            "clusterproviderconfigs"
        );
    }
}
