//! The provider-level kinds, per generation:
//! - legacy: ProviderConfig (cluster-scoped, where the robot server is),
//!   ProviderConfigUsage (cluster-scoped) and StoreConfig (kept for schema
//!   compatibility);
//! - namespaced (v2): ProviderConfig (namespaced: serves its own namespace
//!   only), ClusterProviderConfig, and ProviderConfigUsage (namespaced,
//!   beside each managed resource, whichever config kind it uses).
//!
//! Every config kind has the same spec and status, so one Rust type,
//! [`ProviderConfigObject`], reads them all at run time.

use kube::CustomResource;
use kube::core::Object;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::managed::conditions::Condition;
use crate::managed::inuse::ConfigStatus;
use crate::managed::types::{Reference, TypedReference as ConfigReference};

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
    #[schemars(pattern(ENDPOINT_PATTERN))]
    pub endpoint: String,
}

/// What `spec.endpoint` must look like: an http or https URL.
pub const ENDPOINT_PATTERN: &str = r"^https?://\S+$";

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

/// A ProviderConfig of any kind and generation.
pub type ProviderConfigObject = Object<ProviderConfigSpec, ProviderConfigStatus>;

impl ConfigStatus for ProviderConfigObject {
    fn users(&self) -> Option<i64> {
        self.status.as_ref().and_then(|s| s.users)
    }
}

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

/// A ProviderConfigSpec defines the desired state of a ProviderConfig: the
/// robot server of the managed resources in this namespace that name it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dummy.m.crossplane.io",
    version = "v1alpha1",
    kind = "ProviderConfig",
    root = "NamespacedProviderConfigCrd",
    namespaced,
    status = "ProviderConfigStatus",
    category = "crossplane",
    category = "provider",
    category = "dummy",
    doc = "A ProviderConfig configures a Dummy provider for the managed resources of its namespace.",
    printcolumn = r#"{"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name": "ENDPOINT", "type": "string", "jsonPath": ".spec.endpoint", "priority": 1}"#
)]
pub struct NamespacedProviderConfigSpec {
    /// Endpoint is the API endpoint of the Dummy service.
    #[schemars(pattern(ENDPOINT_PATTERN))]
    pub endpoint: String,
}

/// A ClusterProviderConfigSpec defines the desired state of a
/// ClusterProviderConfig: the robot server of the managed resources of any
/// namespace that name it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dummy.m.crossplane.io",
    version = "v1alpha1",
    kind = "ClusterProviderConfig",
    root = "ClusterProviderConfigCrd",
    status = "ProviderConfigStatus",
    category = "crossplane",
    category = "provider",
    category = "dummy",
    doc = "A ClusterProviderConfig configures a Dummy provider for managed resources of any namespace.",
    printcolumn = r#"{"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name": "ENDPOINT", "type": "string", "jsonPath": ".spec.endpoint", "priority": 1}"#
)]
pub struct ClusterProviderConfigSpec {
    /// Endpoint is the API endpoint of the Dummy service.
    #[schemars(pattern(ENDPOINT_PATTERN))]
    pub endpoint: String,
}

/// A ProviderConfigUsage indicates that a namespaced managed resource is
/// using a ProviderConfig or a ClusterProviderConfig.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dummy.m.crossplane.io",
    version = "v1alpha1",
    kind = "ProviderConfigUsage",
    root = "NamespacedProviderConfigUsageCrd",
    namespaced,
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
pub struct NamespacedProviderConfigUsageFields {
    /// ProviderConfigReference to the provider config being used.
    pub provider_config_ref: ConfigReference,
    /// ResourceReference to the managed resource using the provider config.
    pub resource_ref: TypedReference,
}
