//! Connection details, written to the Secret a managed resource names in
//! `writeConnectionSecretToRef`, owned by that resource.
//!
//! The Secret is read on every publish (a GET, never a write when it holds
//! the details already): a Secret someone else deleted or edited is
//! repaired at the next poll, not at the next restart.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use super::ConnectionDetails;
use super::kube_writer::write_error;
use super::writer::{Owner, SecretTarget, WriteError};

/// The Secret type Crossplane uses for connection details.
pub const SECRET_TYPE: &str = "connection.crossplane.io/v1alpha1";

/// Publishes connection secrets.
pub struct Publisher {
    client: kube::Client,
}

impl Publisher {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    fn api(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Adds `details` to the Secret (publishing is additive, as in
    /// Crossplane), creating it owned by `owner` if needed.
    pub async fn publish(
        &self,
        owner: &Owner,
        target: &SecretTarget,
        details: &ConnectionDetails,
    ) -> Result<(), WriteError> {
        let api = self.api(&target.namespace);
        let data: BTreeMap<String, ByteString> = details
            .iter()
            .map(|(k, v)| (k.clone(), ByteString(v.clone())))
            .collect();
        let fail = |e| write_error("connection Secret", e);
        match api.get_opt(&target.name).await.map_err(fail)? {
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
                api.create(&PostParams::default(), &secret)
                    .await
                    .map_err(fail)?;
            }
            Some(existing) => {
                if !controlled_by(&existing.metadata, &owner.uid) {
                    return Err(WriteError::NotOurs {
                        namespace: target.namespace.clone(),
                        name: target.name.clone(),
                    });
                }
                let current = existing.data.unwrap_or_default();
                if data.iter().any(|(k, v)| current.get(k) != Some(v)) {
                    let patch = serde_json::json!({ "data": data });
                    api.patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(fail)?;
                }
            }
        }
        Ok(())
    }

    /// Deletes the Secret if this resource controls it. Kubernetes' garbage
    /// collector would too, through the owner reference, but a control plane
    /// need not run one.
    pub async fn unpublish(
        &self,
        owner_uid: &str,
        target: &SecretTarget,
    ) -> Result<(), WriteError> {
        let api = self.api(&target.namespace);
        let fail = |e| write_error("connection Secret", e);
        match api.get_opt(&target.name).await.map_err(fail)? {
            Some(s) if controlled_by(&s.metadata, owner_uid) => {
                match api.delete(&target.name, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
                    Err(e) => Err(fail(e)),
                }
            }
            _ => Ok(()),
        }
    }
}

fn owner_reference(owner: &Owner) -> OwnerReference {
    OwnerReference {
        api_version: owner.api_version.clone(),
        kind: owner.kind.clone(),
        name: owner.key.name.clone(),
        uid: owner.uid.clone(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// Whether `uid` is the controller of the object.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|r| r.uid == uid && r.controller == Some(true))
    })
}
