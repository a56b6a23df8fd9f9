//! The reconciler's side effects on the control plane, behind one trait:
//! [`kube_writer::KubeWriter`](super::kube_writer::KubeWriter) does them
//! against an apiserver, the reconciler tests' in-memory fake records them.
//!
//! Every method is a write (or an event): the reconciler reads only the
//! object it was given and the caches behind its lookups, so a resource in
//! steady state costs no call here at all.

use std::collections::BTreeMap;
use std::future::Future;

use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::Value;

use super::ConnectionDetails;
use super::events::Reason;

/// The object a write is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `None` for a cluster-scoped object.
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The managed resource that owns a usage or a connection Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub key: ObjectKey,
    pub uid: String,
}

/// A ProviderConfigUsage as crossplane-runtime writes it: named by the
/// owner's UID, labelled with the config it uses, owned by the resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Usage {
    pub key: ObjectKey,
    pub labels: BTreeMap<String, String>,
    /// `providerConfigRef` as the generation's schema has it.
    pub provider_config_ref: Value,
    pub owner: Owner,
}

/// Where connection details go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretTarget {
    pub namespace: String,
    pub name: String,
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Our view of the object is stale: someone else wrote meanwhile.
    #[error("the object was changed by someone else (conflict)")]
    Conflict,
    #[error("the object does not exist")]
    NotFound,
    /// A Secret of that name exists and belongs to something else.
    #[error("Secret {namespace}/{name} exists and is not controlled by this resource")]
    NotOurs { namespace: String, name: String },
    #[error("{0}")]
    Failed(String),
}

/// The reconciler's writes to the control plane.
pub trait Writer: Send + Sync + 'static {
    /// Merge-patches `metadata` (finalizers, annotations, a
    /// `resourceVersion` guard) of the managed object; returns the new
    /// resourceVersion.
    fn patch_metadata(
        &self,
        key: &ObjectKey,
        metadata: Value,
    ) -> impl Future<Output = Result<Option<String>, WriteError>> + Send;

    /// Merge-patches `status` (with an optional `resourceVersion` guard);
    /// returns the new resourceVersion.
    fn patch_status(
        &self,
        key: &ObjectKey,
        resource_version: Option<&str>,
        status: Value,
    ) -> impl Future<Output = Result<Option<String>, WriteError>> + Send;

    /// Makes sure `usage` exists as given. No request when it is known to.
    fn track_usage(&self, usage: &Usage) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Deletes the usage at `key`; gone already is success.
    fn release_usage(&self, key: &ObjectKey)
    -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Adds `details` to the Secret (creating it, owned by `owner`). A
    /// Secret of another owner is [`WriteError::NotOurs`]. Nothing is
    /// written when it already holds them.
    fn publish(
        &self,
        owner: &Owner,
        target: &SecretTarget,
        details: &ConnectionDetails,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Deletes the Secret if `owner_uid` controls it.
    fn unpublish(
        &self,
        owner_uid: &str,
        target: &SecretTarget,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Records an event; failures are the writer's to log, never fatal.
    fn event(
        &self,
        regarding: &ObjectReference,
        reason: Reason,
        note: &str,
    ) -> impl Future<Output = ()> + Send;
}
