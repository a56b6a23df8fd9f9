//! Connection details, written to the Secret a managed resource names in
//! `writeConnectionSecretToRef`, owned by that resource.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use super::ConnectionDetails;
use super::types::SecretReference;
use super::usage::ResourceRef;

/// The Secret type Crossplane uses for connection details.
pub const SECRET_TYPE: &str = "connection.crossplane.io/v1alpha1";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot publish connection details: {0}")]
    Kube(#[from] kube::Error),
    #[error(
        "cannot publish connection details: Secret {namespace}/{name} exists and is not controlled by this resource"
    )]
    NotOurs { namespace: String, name: String },
}

/// Publishes connection secrets, remembering what it wrote so that steady
/// state costs no request.
#[derive(Default)]
pub struct Publisher {
    client: Option<kube::Client>,
    /// uid -> hash of (target, details) last known to be in the Secret.
    published: Mutex<HashMap<String, u64>>,
}

impl Publisher {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client: Some(client),
            published: Mutex::default(),
        }
    }

    fn api(&self, namespace: &str) -> Option<Api<Secret>> {
        self.client.clone().map(|c| Api::namespaced(c, namespace))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `details` to the Secret (publishing is additive, as in
    /// Crossplane), creating it owned by `owner` if needed.
    pub async fn publish(
        &self,
        owner: &ResourceRef,
        target: &SecretReference,
        details: &ConnectionDetails,
    ) -> Result<(), PublishError> {
        let mut hasher = DefaultHasher::new();
        (&target.namespace, &target.name, details).hash(&mut hasher);
        let digest = hasher.finish();
        if self.lock().get(&owner.uid) == Some(&digest) {
            return Ok(());
        }
        let Some(api) = self.api(&target.namespace) else {
            return Ok(());
        };
        let data: std::collections::BTreeMap<String, ByteString> = details
            .iter()
            .map(|(k, v)| (k.clone(), ByteString(v.clone())))
            .collect();
        match api.get_opt(&target.name).await? {
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(target.name.clone()),
                        namespace: Some(target.namespace.clone()),
                        owner_references: Some(vec![owner_reference(owner)]),
                        ..ObjectMeta::default()
                    },
                    type_: Some(SECRET_TYPE.into()),
                    data: Some(data),
                    ..Secret::default()
                };
                api.create(&PostParams::default(), &secret).await?;
            }
            Some(existing) => {
                if !controlled_by(&existing.metadata, &owner.uid) {
                    return Err(PublishError::NotOurs {
                        namespace: target.namespace.clone(),
                        name: target.name.clone(),
                    });
                }
                let current = existing.data.unwrap_or_default();
                if data.iter().any(|(k, v)| current.get(k) != Some(v)) {
                    let patch = serde_json::json!({ "data": data });
                    api.patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
            }
        }
        self.lock().insert(owner.uid.clone(), digest);
        Ok(())
    }

    /// Deletes the Secret if this resource controls it. Kubernetes' garbage
    /// collector would too, through the owner reference, but a control plane
    /// need not run one.
    pub async fn unpublish(
        &self,
        owner_uid: &str,
        target: &SecretReference,
    ) -> Result<(), PublishError> {
        self.lock().remove(owner_uid);
        let Some(api) = self.api(&target.namespace) else {
            return Ok(());
        };
        match api.get_opt(&target.name).await? {
            Some(s) if controlled_by(&s.metadata, owner_uid) => {
                match api.delete(&target.name, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            _ => Ok(()),
        }
    }
}

fn owner_reference(owner: &ResourceRef) -> OwnerReference {
    OwnerReference {
        api_version: owner.api_version.clone(),
        kind: owner.kind.clone(),
        name: owner.name.clone(),
        uid: owner.uid.clone(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|r| r.uid == uid && r.controller == Some(true))
    })
}
