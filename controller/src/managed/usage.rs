//! ProviderConfigUsage tracking: one usage object per managed resource,
//! named by its UID and labelled with its ProviderConfig, so the
//! ProviderConfig can count its users and refuse to go while it has any.

use std::collections::HashSet;
use std::sync::Mutex;

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

/// The label crossplane-runtime puts on usages.
pub const PROVIDER_CONFIG_LABEL: &str = "crossplane.io/provider-config";

/// The managed resource a usage points back to.
#[derive(Clone, Debug)]
pub struct ResourceRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// A metadata-only cache of usages (names and labels are all we read).
pub type UsageStore = Store<PartialObjectMeta<DynamicObject>>;

pub struct UsageTracker {
    api: Api<DynamicObject>,
    resource: ApiResource,
    /// Usages as the watch sees them, when one runs (`run` mode).
    known: Option<UsageStore>,
    /// Usages this process has made sure of, for modes without a watch.
    ensured: Mutex<HashSet<(String, String)>>,
}

impl UsageTracker {
    pub fn new(client: kube::Client, resource: ApiResource, known: Option<UsageStore>) -> Self {
        Self {
            api: Api::all_with(client, &resource),
            resource,
            known,
            ensured: Mutex::default(),
        }
    }

    fn is_known(&self, uid: &str, provider_config: &str) -> bool {
        let key = (uid.to_owned(), provider_config.to_owned());
        if self.lock().contains(&key) {
            return true;
        }
        let Some(store) = &self.known else {
            return false;
        };
        let oref = ObjectRef::new_with(uid, self.resource.clone());
        store.get(&oref).is_some_and(|u| {
            u.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(PROVIDER_CONFIG_LABEL))
                .is_some_and(|pc| pc == provider_config)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.ensured.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `owner` uses `provider_config`. No request when the
    /// usage is already known to be right.
    pub async fn track(
        &self,
        owner: &ResourceRef,
        provider_config: &str,
    ) -> Result<(), kube::Error> {
        if self.is_known(&owner.uid, provider_config) {
            return Ok(());
        }
        let usage = json!({
            "apiVersion": self.resource.api_version,
            "kind": self.resource.kind,
            "metadata": {
                "name": owner.uid,
                "labels": { PROVIDER_CONFIG_LABEL: provider_config },
                "ownerReferences": [{
                    "apiVersion": owner.api_version,
                    "kind": owner.kind,
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": true,
                }],
            },
            "providerConfigRef": { "name": provider_config },
            "resourceRef": {
                "apiVersion": owner.api_version,
                "kind": owner.kind,
                "name": owner.name,
                "uid": owner.uid,
            },
        });
        let object: DynamicObject =
            serde_json::from_value(usage.clone()).map_err(kube::Error::SerdeError)?;
        match self.api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                // It exists, perhaps for another ProviderConfig: make it ours.
                let patch = json!({
                    "metadata": { "labels": { PROVIDER_CONFIG_LABEL: provider_config } },
                    "providerConfigRef": { "name": provider_config },
                });
                self.api
                    .patch(&owner.uid, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            Err(e) => return Err(e),
        }
        self.lock()
            .insert((owner.uid.clone(), provider_config.to_owned()));
        Ok(())
    }

    /// Forgets the usage of a managed resource that is going away.
    pub async fn release(&self, uid: &str) -> Result<(), kube::Error> {
        self.lock().retain(|(u, _)| u != uid);
        match self.api.delete(uid, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}
