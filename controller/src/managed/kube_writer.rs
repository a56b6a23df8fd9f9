//! [`Writer`] against a real apiserver: merge patches guarded by
//! resourceVersion, usages, connection Secrets and events.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use serde_json::{Value, json};

use super::ConnectionDetails;
use super::connection::Publisher;
use super::events::{Events, Reason};
use super::usage::{UsageStore, UsageTracker};
use super::writer::{ObjectKey, Owner, SecretTarget, Usage, WriteError, Writer};

/// The most of an apiserver's message kept in ours.
const MAX_MESSAGE: usize = 300;

/// Writes for one managed kind.
pub struct KubeWriter {
    client: kube::Client,
    resource: ApiResource,
    usages: UsageTracker,
    publisher: Publisher,
    events: Events,
}

impl KubeWriter {
    /// `usage` is the kind's ProviderConfigUsage resource; `known` the
    /// watch cache of usages, when one runs.
    pub fn new(
        client: kube::Client,
        resource: ApiResource,
        usage: ApiResource,
        known: Option<UsageStore>,
        events: Events,
    ) -> Self {
        Self {
            usages: UsageTracker::new(client.clone(), usage, known),
            publisher: Publisher::new(client.clone()),
            client,
            resource,
            events,
        }
    }

    fn api(&self, key: &ObjectKey) -> Api<DynamicObject> {
        match &key.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &self.resource),
            None => Api::all_with(self.client.clone(), &self.resource),
        }
    }
}

/// Our message for a failed request: what was written and the apiserver's
/// reason, bounded.
pub fn write_error(what: &str, e: kube::Error) -> WriteError {
    match e {
        kube::Error::Api(s) if s.is_conflict() => WriteError::Conflict,
        kube::Error::Api(s) if s.is_not_found() => WriteError::NotFound,
        kube::Error::Api(s) => WriteError::Failed(format!(
            "cannot write {what}: {} ({})",
            cut(&s.message),
            s.code
        )),
        other => WriteError::Failed(format!("cannot write {what}: {}", cut(&other.to_string()))),
    }
}

fn cut(text: &str) -> String {
    if text.len() <= MAX_MESSAGE {
        return text.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

impl Writer for KubeWriter {
    async fn patch_metadata(
        &self,
        key: &ObjectKey,
        metadata: Value,
    ) -> Result<Option<String>, WriteError> {
        let patch = json!({ "metadata": metadata });
        let updated = self
            .api(key)
            .patch_metadata(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| write_error("the managed resource", e))?;
        Ok(updated.metadata.resource_version)
    }

    async fn patch_status(
        &self,
        key: &ObjectKey,
        resource_version: Option<&str>,
        status: Value,
    ) -> Result<Option<String>, WriteError> {
        let mut patch = json!({ "status": status });
        if let Some(rv) = resource_version {
            patch["metadata"] = json!({ "resourceVersion": rv });
        }
        let updated = self
            .api(key)
            .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| write_error("the managed resource's status", e))?;
        Ok(updated.metadata.resource_version)
    }

    async fn track_usage(&self, usage: &Usage) -> Result<(), WriteError> {
        self.usages.track(usage).await
    }

    async fn release_usage(&self, key: &ObjectKey) -> Result<(), WriteError> {
        self.usages.release(key).await
    }

    async fn publish(
        &self,
        owner: &Owner,
        target: &SecretTarget,
        details: &ConnectionDetails,
    ) -> Result<(), WriteError> {
        self.publisher.publish(owner, target, details).await
    }

    async fn unpublish(&self, owner_uid: &str, target: &SecretTarget) -> Result<(), WriteError> {
        self.publisher.unpublish(owner_uid, target).await
    }

    async fn event(&self, regarding: &ObjectReference, reason: Reason, note: &str) {
        self.events.publish(regarding, reason, note).await;
    }
}
