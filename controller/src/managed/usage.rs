//! ProviderConfigUsage tracking, as crossplane-runtime does it per
//! generation: one usage object per managed resource, named by its UID,
//! labelled with the ProviderConfig it uses and owned by the resource, so
//! the ProviderConfig can count its users and refuse to go while it has
//! any.
//!
//! - Legacy: a cluster-scoped usage, labelled `crossplane.io/provider-config`.
//! - Namespaced: a usage in the resource's namespace (whichever kind of
//!   config it uses), labelled `crossplane.io/provider-config` and
//!   `crossplane.io/provider-config-kind`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::api::Generation;

use super::config::ConfigKey;
use super::writer::{ObjectKey, Owner, Usage, WriteError};

/// The label crossplane-runtime puts on usages: the config's name.
pub const PROVIDER_CONFIG_LABEL: &str = "crossplane.io/provider-config";
/// The label v2 usages add: the config's kind.
pub const PROVIDER_CONFIG_KIND_LABEL: &str = "crossplane.io/provider-config-kind";

/// A metadata-only cache of usages (names and labels are all we read).
pub type UsageStore = Store<PartialObjectMeta<DynamicObject>>;

/// The usage `owner` (a resource of `generation`) has of `config`.
pub fn usage_of(generation: Generation, owner: &Owner, config: &ConfigKey) -> Usage {
    let mut labels = BTreeMap::from([(PROVIDER_CONFIG_LABEL.to_owned(), config.name.clone())]);
    let provider_config_ref = match generation {
        Generation::Legacy => json!({ "name": config.name }),
        Generation::Namespaced => {
            labels.insert(PROVIDER_CONFIG_KIND_LABEL.to_owned(), config.kind.clone());
            json!({ "kind": config.kind, "name": config.name })
        }
    };
    Usage {
        key: ObjectKey {
            namespace: match generation {
                Generation::Legacy => None,
                Generation::Namespaced => owner.key.namespace.clone(),
            },
            name: owner.uid.clone(),
        },
        labels,
        provider_config_ref,
        owner: owner.clone(),
    }
}

/// A usage as written: its key and labels.
type Ensured = (ObjectKey, BTreeMap<String, String>);

/// Whether a usage exists as it should. `seen`: what the watch's store
/// shows (`None` without a watch). With a watch, the store decides, and a
/// usage this process wrote is remembered only until the store shows it:
/// one copy of each usage in memory, not two, and a usage deleted behind
/// our back is written again. Without a watch, what this process wrote is
/// all it knows.
fn known(seen: Option<bool>, ensured: &mut HashSet<Ensured>, entry: Ensured) -> bool {
    if seen == Some(true) {
        ensured.remove(&entry);
        return true;
    }
    ensured.contains(&entry)
}

/// Usages in the control plane, with a cache so that steady state costs
/// no request.
pub struct UsageTracker {
    client: kube::Client,
    resource: ApiResource,
    /// Usages as the watch sees them, when one runs (`run` mode).
    known: Option<UsageStore>,
    /// Usages this process wrote: with a watch, only until the watch
    /// shows them; without one, all of them.
    ensured: Mutex<HashSet<Ensured>>,
}

impl UsageTracker {
    pub fn new(client: kube::Client, resource: ApiResource, known: Option<UsageStore>) -> Self {
        Self {
            client,
            resource,
            known,
            ensured: Mutex::default(),
        }
    }

    fn api(&self, key: &ObjectKey) -> Api<DynamicObject> {
        match &key.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &self.resource),
            None => Api::all_with(self.client.clone(), &self.resource),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Ensured>> {
        self.ensured.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `usage` exists as it should (see [`known`]).
    fn is_known(&self, usage: &Usage) -> bool {
        let seen = self.known.as_ref().map(|store| {
            let mut oref = ObjectRef::new_with(&usage.key.name, self.resource.clone());
            if let Some(ns) = &usage.key.namespace {
                oref = oref.within(ns);
            }
            store.get(&oref).is_some_and(|u| {
                let labels = u.metadata.labels.as_ref();
                usage
                    .labels
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
        });
        known(
            seen,
            &mut self.lock(),
            (usage.key.clone(), usage.labels.clone()),
        )
    }

    /// Records that the owner uses the config. No request when the usage
    /// is already known to be right.
    pub async fn track(&self, usage: &Usage) -> Result<(), WriteError> {
        if self.is_known(usage) {
            return Ok(());
        }
        let owner = &usage.owner;
        let object = json!({
            "apiVersion": self.resource.api_version,
            "kind": self.resource.kind,
            "metadata": {
                "name": usage.key.name,
                "namespace": usage.key.namespace,
                "labels": usage.labels,
                "ownerReferences": [{
                    "apiVersion": owner.api_version,
                    "kind": owner.kind,
                    "name": owner.key.name,
                    "uid": owner.uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "providerConfigRef": usage.provider_config_ref,
            "resourceRef": {
                "apiVersion": owner.api_version,
                "kind": owner.kind,
                "name": owner.key.name,
                "uid": owner.uid,
            },
        });
        let object: DynamicObject = serde_json::from_value(object)
            .map_err(|e| WriteError::Failed(format!("cannot build a ProviderConfigUsage: {e}")))?;
        let api = self.api(&usage.key);
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                // It exists, perhaps for another ProviderConfig: make it ours.
                let patch = json!({
                    "metadata": { "labels": usage.labels },
                    "providerConfigRef": usage.provider_config_ref,
                });
                api.patch(
                    &usage.key.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(|e| super::kube_writer::write_error("ProviderConfigUsage", e))?;
            }
            Err(e) => return Err(super::kube_writer::write_error("ProviderConfigUsage", e)),
        }
        self.lock()
            .insert((usage.key.clone(), usage.labels.clone()));
        Ok(())
    }

    /// Forgets the usage of a managed resource that is going away.
    pub async fn release(&self, key: &ObjectKey) -> Result<(), WriteError> {
        self.lock().retain(|(k, _)| k != key);
        match self
            .api(key)
            .delete(&key.name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(e) => Err(super::kube_writer::write_error("ProviderConfigUsage", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(namespace: Option<&str>) -> Owner {
        Owner {
            api_version: "iam.dummy.m.crossplane.io/v1alpha1".into(),
            kind: "Robot".into(),
            key: ObjectKey {
                namespace: namespace.map(str::to_owned),
                name: "r".into(),
            },
            uid: "u-1".into(),
        }
    }

    #[test]
    fn a_written_usage_is_remembered_until_the_watch_shows_it() {
        let entry = || -> Ensured {
            (
                ObjectKey {
                    namespace: None,
                    name: "u-1".into(),
                },
                BTreeMap::from([(PROVIDER_CONFIG_LABEL.to_owned(), "default".to_owned())]),
            )
        };
        let mut ensured = HashSet::from([entry()]);
        // Written, not yet in the watch: known, no second write.
        assert!(known(Some(false), &mut ensured, entry()));
        // The watch shows it: known, and no longer held twice.
        assert!(known(Some(true), &mut ensured, entry()));
        assert!(ensured.is_empty());
        // Deleted behind our back: the store no longer has it, so it is
        // written again.
        assert!(!known(Some(false), &mut ensured, entry()));
        // Without a watch, what was written is what is known.
        ensured.insert(entry());
        assert!(known(None, &mut ensured, entry()));
        assert!(!known(None, &mut HashSet::new(), entry()));
    }

    #[test]
    fn namespaced_usages_live_beside_the_resource_whatever_the_config_kind() {
        let config = ConfigKey {
            group: "dummy.m.crossplane.io".into(),
            kind: "ClusterProviderConfig".into(),
            namespace: None,
            name: "default".into(),
        };
        let u = usage_of(Generation::Namespaced, &owner(Some("team-a")), &config);
        assert_eq!(u.key.namespace.as_deref(), Some("team-a"));
        assert_eq!(u.key.name, "u-1");
        assert_eq!(
            u.labels[PROVIDER_CONFIG_KIND_LABEL],
            "ClusterProviderConfig"
        );
        assert_eq!(u.provider_config_ref["kind"], "ClusterProviderConfig");
    }

    #[test]
    fn legacy_usages_are_cluster_scoped_with_one_label() {
        let config = ConfigKey {
            group: "dummy.crossplane.io".into(),
            kind: "ProviderConfig".into(),
            namespace: None,
            name: "default".into(),
        };
        let u = usage_of(Generation::Legacy, &owner(None), &config);
        assert_eq!(u.key.namespace, None);
        assert_eq!(u.labels.len(), 1);
        assert!(u.provider_config_ref.get("kind").is_none());
    }
}
