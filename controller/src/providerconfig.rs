//! The provider-level kinds: ProviderConfig (where the robot server is),
//! ProviderConfigUsage (who uses it) and StoreConfig (kept for schema
//! compatibility), plus the reconciler that keeps a used ProviderConfig
//! from vanishing.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::core::{ApiResource, Object};
use kube::{CustomResource, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::managed::conditions::Condition;
use crate::managed::events::Events;
use crate::managed::types::Reference;
use crate::managed::usage::{PROVIDER_CONFIG_LABEL, UsageStore};

/// How long a ProviderConfig reconcile lets a burst of usage changes settle.
const SETTLE: Duration = Duration::from_millis(300);

/// Crossplane's finalizer on a ProviderConfig that has users.
pub const IN_USE_FINALIZER: &str = "in-use.crossplane.io";

/// A ProviderConfigSpec defines the desired state of a ProviderConfig.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dummy.crossplane.io",
    version = "v1alpha1",
    kind = "ProviderConfig",
    root = "ProviderConfigCrd",
    status = "ProviderConfigStatus",
    doc = "A ProviderConfig configures a Dummy provider.",
    printcolumn = r#"{"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name": "ENDPOINT", "type": "string", "jsonPath": ".spec.endpoint", "priority": 1}"#
)]
pub struct ProviderConfigSpec {
    /// Endpoint is the API endpoint of the Dummy service.
    pub endpoint: String,
}

/// A ProviderConfigStatus reflects the observed state of a ProviderConfig.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProviderConfigStatus {
    /// Conditions of the resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Users of this provider configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<i64>,
}

/// A ProviderConfig of either API generation.
pub type ProviderConfigObject = Object<ProviderConfigSpec, ProviderConfigStatus>;

/// A ProviderConfigUsage indicates that a resource is using a
/// ProviderConfig.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dummy.crossplane.io",
    version = "v1alpha1",
    kind = "ProviderConfigUsage",
    root = "ProviderConfigUsageCrd",
    no_spec,
    category = "crossplane",
    category = "provider",
    category = "dummy",
    doc = "A ProviderConfigUsage indicates that a resource is using a ProviderConfig.",
    printcolumn = r#"{"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name": "CONFIG-NAME", "type": "string", "jsonPath": ".providerConfigRef.name"}"#,
    printcolumn = r#"{"name": "RESOURCE-KIND", "type": "string", "jsonPath": ".resourceRef.kind"}"#,
    printcolumn = r#"{"name": "RESOURCE-NAME", "type": "string", "jsonPath": ".resourceRef.name"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConfigUsageFields {
    /// ProviderConfigReference to the provider config being used.
    pub provider_config_ref: Reference,
    /// ResourceReference to the managed resource using the provider config.
    pub resource_ref: TypedReference,
}

/// A reference to an object of a known kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypedReference {
    /// APIVersion of the referenced object.
    pub api_version: String,
    /// Kind of the referenced object.
    pub kind: String,
    /// Name of the referenced object.
    pub name: String,
    /// UID of the referenced object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// A StoreConfigSpec defines the desired state of a StoreConfig. This
/// controller does not use external secret stores; the kind is served so
/// that packages written against provider-dummy keep applying.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dummy.crossplane.io",
    version = "v1alpha1",
    kind = "StoreConfig",
    root = "StoreConfigCrd",
    status = "StoreConfigStatus",
    category = "crossplane",
    category = "store",
    category = "gcp",
    doc = "A StoreConfig configures how the provider controller should store connection details.",
    printcolumn = r#"{"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name": "TYPE", "type": "string", "jsonPath": ".spec.type"}"#,
    printcolumn = r#"{"name": "DEFAULT-SCOPE", "type": "string", "jsonPath": ".spec.defaultScope"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StoreConfigSpec {
    /// DefaultScope used for scoping secrets for "cluster-scoped" resources.
    pub default_scope: String,
    /// Kubernetes configures a Kubernetes secret store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesSecretStoreConfig>,
    /// Type configures which secret store to be used.
    #[serde(
        default = "default_store_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub r#type: Option<String>,
    /// Vault configures a Vault secret store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultSecretStoreConfig>,
}

fn default_store_type() -> Option<String> {
    Some("Kubernetes".into())
}

fn default_vault_version() -> Option<String> {
    Some("v2".into())
}

/// A StoreConfigStatus represents the status of a StoreConfig.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StoreConfigStatus {
    /// Conditions of the resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// KubernetesSecretStoreConfig represents the required configuration for a
/// Kubernetes secret store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KubernetesSecretStoreConfig {
    /// Credentials used to connect to the Kubernetes API.
    pub auth: CredentialSource,
}

/// VaultSecretStoreConfig represents the required configuration for a Vault
/// secret store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultSecretStoreConfig {
    /// Auth configures an authentication method for Vault.
    pub auth: VaultAuthConfig,
    /// CABundle configures CA bundle for Vault Server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CredentialSource>,
    /// MountPath is the mount path of the KV secrets engine.
    pub mount_path: String,
    /// Server is the url of the Vault server, e.g. "https://vault.acme.org"
    pub server: String,
    /// Version of the KV Secrets engine of Vault.
    #[serde(
        default = "default_vault_version",
        skip_serializing_if = "Option::is_none"
    )]
    pub version: Option<String>,
}

/// VaultAuthConfig required to authenticate to a Vault API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VaultAuthConfig {
    /// Method configures which auth method will be used.
    pub method: String,
    /// Token configures Token Auth for Vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<CredentialSource>,
}

/// Where a credential comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialSource {
    /// Env is a reference to an environment variable that contains credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvSelector>,
    /// Fs is a reference to a filesystem location that contains credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsSelector>,
    /// A SecretRef is a reference to a secret key that contains the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
    /// Source of the credentials.
    pub source: CredentialsSourceKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CredentialsSourceKind {
    None,
    Secret,
    Environment,
    Filesystem,
}

/// EnvSelector selects an environment variable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnvSelector {
    /// Name is the name of an environment variable.
    pub name: String,
}

/// FsSelector selects a filesystem location.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FsSelector {
    /// Path is a filesystem path.
    pub path: String,
}

/// A SecretKeySelector is a reference to a secret key in an arbitrary
/// namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeySelector {
    /// The key to select.
    pub key: String,
    /// Name of the secret.
    pub name: String,
    /// Namespace of the secret.
    pub namespace: String,
}

/// Keeps `status.users` counted and the in-use finalizer on every
/// ProviderConfig, so one with users cannot be deleted from under them.
pub struct InUseReconciler {
    api: Api<ProviderConfigObject>,
    resource: ApiResource,
    usages: UsageStore,
    events: Events,
}

/// Why a ProviderConfig reconcile could not finish.
#[derive(Debug, thiserror::Error)]
#[error("cannot update ProviderConfig {name}: {source}")]
pub struct Error {
    name: String,
    #[source]
    source: kube::Error,
}

impl InUseReconciler {
    pub fn new(
        client: kube::Client,
        resource: ApiResource,
        usages: UsageStore,
        events: Events,
    ) -> Self {
        Self {
            api: Api::all_with(client, &resource),
            resource,
            usages,
            events,
        }
    }

    /// The number of usages labelled with `name`.
    pub fn users(&self, name: &str) -> i64 {
        let n = self
            .usages
            .state()
            .iter()
            .filter(|u| {
                u.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(PROVIDER_CONFIG_LABEL))
                    .is_some_and(|pc| pc == name)
            })
            .count();
        i64::try_from(n).unwrap_or(i64::MAX)
    }

    /// Returns when to look again, if ever.
    pub async fn reconcile(
        &self,
        pc: Arc<ProviderConfigObject>,
    ) -> Result<Option<Duration>, Error> {
        // Counting users in a cache that has not listed yet would count none,
        // and a used ProviderConfig would lose its finalizer.
        if self.usages.wait_until_ready().await.is_err() {
            return Ok(Some(Duration::from_secs(1)));
        }
        let name = pc.name_any();
        let err = |source| Error {
            name: name.clone(),
            source,
        };
        let has_finalizer = pc.finalizers().iter().any(|f| f == IN_USE_FINALIZER);
        if pc.meta().deletion_timestamp.is_some() {
            let users = self.users(&name);
            if users > 0 {
                self.events
                    .publish(
                        &pc.object_ref(&self.resource),
                        crate::managed::events::Reason::UsageAccounting,
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
                    .api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
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
            self.api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(err)?;
        }
        // Usages come in bursts when many Robots are created at once. The
        // controller runs one reconcile per ProviderConfig at a time and
        // folds the requests that arrive meanwhile into one, so a short
        // pause before counting turns a burst into one count and one write.
        // (The controller's own debounce would also stop it reading the
        // watch that the Robot reconciler's ProviderConfig cache reads.)
        tokio::time::sleep(SETTLE).await;
        self.write_users(&pc, self.users(&name))
            .await
            .map_err(err)?;
        Ok(None)
    }

    async fn write_users(&self, pc: &ProviderConfigObject, users: i64) -> Result<(), kube::Error> {
        if pc.status.as_ref().and_then(|s| s.users) == Some(users) {
            return Ok(());
        }
        let patch = json!({ "status": { "users": users } });
        self.api
            .patch_status(
                &pc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(())
    }
}
