//! The fields every Crossplane managed resource carries, in both
//! generations: crossplane-runtime's `ClusterManagedResourceSpec` (legacy,
//! cluster-scoped) and `ManagedResourceSpec` (v2, namespaced), and the
//! status both share.
//!
//! Every field has a serde default, so an object written under an older or
//! pruned schema still deserializes: one odd object must never stall the
//! watch for all the others.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;

/// The kind a namespaced resource's `providerConfigRef` defaults to.
pub const CLUSTER_PROVIDER_CONFIG: &str = "ClusterProviderConfig";
/// The namespaced ProviderConfig kind of v2, and the only legacy one.
pub const PROVIDER_CONFIG: &str = "ProviderConfig";

/// The `spec` fields of a legacy (cluster-scoped) managed resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegacyResourceSpec {
    /// DeletionPolicy specifies what will happen to the underlying external
    /// when this managed resource is deleted - either "Delete" or "Orphan" the
    /// external resource.
    #[serde(default)]
    #[schemars(default = "DeletionPolicy::default_value")]
    pub deletion_policy: DeletionPolicy,

    /// THIS IS A BETA FIELD. It is on by default but can be opted out through
    /// a Crossplane feature flag. ManagementPolicies specify the array of
    /// actions Crossplane is allowed to take on the managed and external
    /// resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(default = "ManagementAction::default_policies")]
    pub management_policies: Option<Vec<ManagementAction>>,

    /// ProviderConfigReference specifies how the provider that will be used
    /// to create, observe, update, and delete this managed resource should be
    /// configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(default = "Reference::default_provider_config")]
    pub provider_config_ref: Option<Reference>,

    /// ProviderReference specifies the provider that will be used to create,
    /// observe, update, and delete this managed resource.
    /// Deprecated: Please use ProviderConfigReference, i.e. `providerConfigRef`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_ref: Option<Reference>,

    /// PublishConnectionDetailsTo specifies the connection secret config
    /// which contains a name, metadata and a reference to secret store
    /// config to which any connection details for this managed resource
    /// should be written. Connection details frequently include the
    /// endpoint, username, and password required to connect to the managed
    /// resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_connection_details_to: Option<PublishConnectionDetailsTo>,

    /// WriteConnectionSecretToReference specifies the namespace and name of a
    /// Secret to which any connection details for this managed resource
    /// should be written. Connection details frequently include the
    /// endpoint, username, and password required to connect to the managed
    /// resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_connection_secret_to_ref: Option<SecretReference>,
}

/// The `spec` fields of a namespaced (Crossplane v2) managed resource. No
/// `deletionPolicy`: orphaning is a `managementPolicies` list without
/// `Delete`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedResourceSpec {
    /// THIS IS A BETA FIELD. It is on by default but can be opted out through
    /// a Crossplane feature flag. ManagementPolicies specify the array of
    /// actions Crossplane is allowed to take on the managed and external
    /// resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(default = "ManagementAction::default_policies")]
    pub management_policies: Option<Vec<ManagementAction>>,

    /// ProviderConfigReference specifies how the provider that will be used
    /// to create, observe, update, and delete this managed resource should be
    /// configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(default = "TypedReference::default_provider_config")]
    pub provider_config_ref: Option<TypedReference>,

    /// WriteConnectionSecretToReference specifies the name of a Secret, in
    /// the same namespace as this managed resource, to which any connection
    /// details for this managed resource should be written. Connection
    /// details frequently include the endpoint, username, and password
    /// required to connect to the managed resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_connection_secret_to_ref: Option<LocalSecretReference>,
}

/// Which ProviderConfig a managed resource names, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigRef<'a> {
    /// `None` for a legacy resource, whose reference has no kind.
    pub kind: Option<&'a str>,
    pub name: &'a str,
}

/// What the generic reconciler reads from either spec.
#[derive(Clone, Debug, PartialEq)]
pub struct CommonSpec<'a> {
    pub management_policies: Option<&'a [ManagementAction]>,
    pub deletion_policy: DeletionPolicy,
    pub config: ConfigRef<'a>,
    /// The Secret for connection details: (namespace, name). A namespace
    /// of `None` means the managed resource's own.
    pub connection_secret: Option<(Option<&'a str>, &'a str)>,
}

impl LegacyResourceSpec {
    pub fn common(&self) -> CommonSpec<'_> {
        CommonSpec {
            management_policies: self.management_policies.as_deref(),
            deletion_policy: self.deletion_policy,
            // `providerConfigRef`, then the deprecated `providerRef`, then
            // `default`, as crossplane-runtime resolves it.
            config: ConfigRef {
                kind: None,
                name: self
                    .provider_config_ref
                    .as_ref()
                    .or(self.provider_ref.as_ref())
                    .map(|r| r.name.as_str())
                    .filter(|n| !n.is_empty())
                    .unwrap_or("default"),
            },
            connection_secret: self
                .write_connection_secret_to_ref
                .as_ref()
                .map(|s| (Some(s.namespace.as_str()), s.name.as_str())),
        }
    }
}

impl NamespacedResourceSpec {
    pub fn common(&self) -> CommonSpec<'_> {
        let (kind, name) = match &self.provider_config_ref {
            Some(r) => (
                r.kind.as_str(),
                Some(r.name.as_str()).filter(|n| !n.is_empty()),
            ),
            None => (CLUSTER_PROVIDER_CONFIG, None),
        };
        CommonSpec {
            management_policies: self.management_policies.as_deref(),
            deletion_policy: DeletionPolicy::Delete,
            config: ConfigRef {
                kind: Some(if kind.is_empty() {
                    CLUSTER_PROVIDER_CONFIG
                } else {
                    kind
                }),
                name: name.unwrap_or("default"),
            },
            connection_secret: self
                .write_connection_secret_to_ref
                .as_ref()
                .map(|s| (None, s.name.as_str())),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    Orphan,
    #[default]
    Delete,
}

impl DeletionPolicy {
    fn default_value() -> Self {
        Self::Delete
    }
}

/// One action the controller may take on the external resource.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum ManagementAction {
    Observe,
    Create,
    Update,
    Delete,
    LateInitialize,
    #[serde(rename = "*")]
    All,
}

impl ManagementAction {
    fn default_policies() -> Option<Vec<ManagementAction>> {
        Some(vec![ManagementAction::All])
    }
}

/// A reference to another cluster-scoped object, by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Reference {
    /// Name of the referenced object.
    pub name: String,
    /// Policies for referencing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
}

impl Reference {
    fn default_provider_config() -> Option<Reference> {
        Some(Reference {
            name: "default".into(),
            policy: None,
        })
    }
}

/// A reference to a ProviderConfig of a given kind (`ProviderConfig` in
/// the resource's namespace, or `ClusterProviderConfig`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TypedReference {
    /// Kind of the referenced object.
    pub kind: String,
    /// Name of the referenced object.
    pub name: String,
}

impl TypedReference {
    fn default_provider_config() -> Option<TypedReference> {
        Some(TypedReference {
            kind: CLUSTER_PROVIDER_CONFIG.into(),
            name: "default".into(),
        })
    }
}

/// Policies for referencing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Policy {
    /// Resolution specifies whether resolution of this reference is required.
    /// The default is 'Required', which means the reconcile will fail if the
    /// reference cannot be resolved. 'Optional' means this reference will be
    /// a no-op if it cannot be resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(default = "Resolution::default_value")]
    pub resolution: Option<Resolution>,
    /// Resolve specifies when this reference should be resolved. The default
    /// is 'IfNotPresent', which will attempt to resolve the reference only
    /// when the corresponding field is not present. Use 'Always' to resolve
    /// the reference on every reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve: Option<Resolve>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Resolution {
    Required,
    Optional,
}

impl Resolution {
    fn default_value() -> Option<Resolution> {
        Some(Resolution::Required)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Resolve {
    Always,
    IfNotPresent,
}

/// A reference to a Secret, by namespace and name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretReference {
    /// Name of the secret.
    pub name: String,
    /// Namespace of the secret.
    pub namespace: String,
}

/// A reference to a Secret in the managed resource's own namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LocalSecretReference {
    /// Name of the secret.
    pub name: String,
}

/// Where to publish connection details in an external secret store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishConnectionDetailsTo {
    /// SecretStoreConfigRef specifies which secret store config should be
    /// used for this ConnectionSecret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(default = "Reference::default_provider_config")]
    pub config_ref: Option<Reference>,
    /// Metadata is the metadata for connection secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ConnectionSecretMetadata>,
    /// Name is the name of the connection secret.
    pub name: String,
}

/// Metadata for a connection secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectionSecretMetadata {
    /// Annotations are the annotations to be added to connection secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Labels are the labels/tags to be added to connection secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Type is the SecretType for the connection secret.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

/// The fields of `status` that the generic reconciler writes, in both
/// generations. A schema that prunes `observedGeneration` or
/// `lastHandledReconcileAt` (the reference CRDs) loses them; the
/// reconciler then never counts their absence as a difference.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// Conditions of the resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// ObservedGeneration is the latest metadata.generation which resulted
    /// in either a ready state, or stalled due to error it can not recover
    /// from without human intervention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// LastHandledReconcileAt holds the value of the most recent reconcile
    /// request value (the crossplane.io/reconcile-requested-at annotation)
    /// that the controller handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// What the management policies allow, resolved once per reconcile
/// (crossplane-runtime's `ManagementPoliciesResolver`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policies {
    actions: Vec<ManagementAction>,
    deletion: DeletionPolicy,
}

impl Policies {
    /// Checks the combination against those Crossplane supports.
    pub fn resolve(spec: &CommonSpec<'_>) -> Result<Policies, String> {
        use ManagementAction::*;
        let mut actions = spec
            .management_policies
            .map(<[ManagementAction]>::to_vec)
            .unwrap_or_else(|| vec![All]);
        actions.sort();
        actions.dedup();
        const SUPPORTED: &[&[ManagementAction]] = &[
            &[All],
            &[Observe, Create, Update, Delete, LateInitialize],
            &[Observe],
            &[],
            &[Observe, Create, Update, Delete],
            &[Observe, Create, Update, LateInitialize],
            &[Observe, Create, Update],
            &[Observe, Create, Delete, LateInitialize],
            &[Observe, Create, LateInitialize],
            &[Observe, Create, Delete],
            &[Observe, Create],
            &[Observe, Delete],
        ];
        if !SUPPORTED.iter().any(|s| {
            let mut s = s.to_vec();
            s.sort();
            s == actions
        }) {
            return Err(format!(
                "management policies {actions:?} are not a supported combination"
            ));
        }
        Ok(Policies {
            actions,
            deletion: spec.deletion_policy,
        })
    }

    fn allows(&self, action: ManagementAction) -> bool {
        self.actions.contains(&action) || self.actions.contains(&ManagementAction::All)
    }

    /// An empty policy list pauses, like the pause annotation.
    pub fn is_paused(&self) -> bool {
        self.actions.is_empty()
    }
    pub fn should_create(&self) -> bool {
        self.allows(ManagementAction::Create)
    }
    pub fn should_update(&self) -> bool {
        self.allows(ManagementAction::Update)
    }
    pub fn should_only_observe(&self) -> bool {
        self.actions == [ManagementAction::Observe]
    }
    /// Deletion needs both the deletion policy and the management policies
    /// to agree, except where the policies name Delete explicitly.
    pub fn should_delete(&self) -> bool {
        let explicit = !self.actions.contains(&ManagementAction::All)
            && self.actions.contains(&ManagementAction::Delete);
        (self.deletion == DeletionPolicy::Delete && self.allows(ManagementAction::Delete))
            || explicit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ManagementAction::*;

    fn policies(actions: Option<Vec<ManagementAction>>, deletion: DeletionPolicy) -> Policies {
        let spec = LegacyResourceSpec {
            management_policies: actions,
            deletion_policy: deletion,
            ..LegacyResourceSpec::default()
        };
        Policies::resolve(&spec.common()).unwrap()
    }

    #[test]
    fn default_is_full_control() {
        let p = policies(None, DeletionPolicy::Delete);
        assert!(p.should_create() && p.should_update() && p.should_delete());
        assert!(!p.should_only_observe() && !p.is_paused());
        assert!(!policies(None, DeletionPolicy::Orphan).should_delete());
    }

    #[test]
    fn observe_only_and_explicit_delete() {
        let p = policies(Some(vec![Observe]), DeletionPolicy::Delete);
        assert!(p.should_only_observe() && !p.should_create() && !p.should_delete());
        let p = policies(Some(vec![Observe, Delete]), DeletionPolicy::Orphan);
        assert!(p.should_delete(), "explicit Delete wins over Orphan");
        let p = policies(Some(vec![Observe, Create, Update]), DeletionPolicy::Delete);
        assert!(!p.should_delete());
        assert!(policies(Some(vec![]), DeletionPolicy::Delete).is_paused());
    }

    #[test]
    fn namespaced_orphans_by_leaving_delete_out() {
        let spec = NamespacedResourceSpec {
            management_policies: Some(vec![Observe, Create, Update, LateInitialize]),
            ..NamespacedResourceSpec::default()
        };
        let p = Policies::resolve(&spec.common()).unwrap();
        assert!(p.should_create() && !p.should_delete());
        let p = Policies::resolve(&NamespacedResourceSpec::default().common()).unwrap();
        assert!(p.should_delete());
    }

    #[test]
    fn unsupported_combinations_are_refused() {
        let spec = LegacyResourceSpec {
            management_policies: Some(vec![Create]),
            ..LegacyResourceSpec::default()
        };
        assert!(
            Policies::resolve(&spec.common())
                .unwrap_err()
                .contains("not a supported")
        );
    }

    #[test]
    fn legacy_provider_config_name_falls_back() {
        let mut spec = LegacyResourceSpec::default();
        assert_eq!(spec.common().config.name, "default");
        spec.provider_ref = Some(Reference {
            name: "old".into(),
            policy: None,
        });
        assert_eq!(spec.common().config.name, "old");
        spec.provider_config_ref = Some(Reference {
            name: "new".into(),
            policy: None,
        });
        assert_eq!(
            spec.common().config,
            ConfigRef {
                kind: None,
                name: "new"
            }
        );
    }

    #[test]
    fn namespaced_provider_config_defaults_to_the_cluster_default() {
        let spec = NamespacedResourceSpec::default();
        assert_eq!(
            spec.common().config,
            ConfigRef {
                kind: Some(CLUSTER_PROVIDER_CONFIG),
                name: "default"
            }
        );
        let spec: NamespacedResourceSpec = serde_json::from_value(serde_json::json!({
            "providerConfigRef": {"kind": "ProviderConfig", "name": "team-a"},
            "writeConnectionSecretToRef": {"name": "conn"},
        }))
        .unwrap();
        let common = spec.common();
        assert_eq!(common.config.kind, Some(PROVIDER_CONFIG));
        assert_eq!(common.config.name, "team-a");
        assert_eq!(common.connection_secret, Some((None, "conn")));
    }
}
