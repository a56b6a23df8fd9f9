//! The fields every Crossplane managed resource carries (crossplane-runtime's
//! `xpv1.ResourceSpec` / `ResourceStatus`), shared by every managed kind.
//!
//! Every field has a serde default, so an object written under an older or
//! pruned schema still deserializes: one odd object must never stall the
//! watch for all the others.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;

/// The fields of `spec` that the generic reconciler acts on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpec {
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

impl ResourceSpec {
    /// The ProviderConfig to use: `providerConfigRef`, then the deprecated
    /// `providerRef`, then `default`, as crossplane-runtime resolves it.
    pub fn provider_config_name(&self) -> &str {
        self.provider_config_ref
            .as_ref()
            .or(self.provider_ref.as_ref())
            .map(|r| r.name.as_str())
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
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

/// The fields of `status` that the generic reconciler writes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceStatus {
    /// Conditions of the resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
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
    pub fn resolve(spec: &ResourceSpec) -> Result<Policies, String> {
        use ManagementAction::*;
        let mut actions = spec
            .management_policies
            .clone()
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
        Policies::resolve(&ResourceSpec {
            management_policies: actions,
            deletion_policy: deletion,
            ..ResourceSpec::default()
        })
        .unwrap()
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
    fn unsupported_combinations_are_refused() {
        let spec = ResourceSpec {
            management_policies: Some(vec![Create]),
            ..ResourceSpec::default()
        };
        assert!(
            Policies::resolve(&spec)
                .unwrap_err()
                .contains("not a supported")
        );
    }

    #[test]
    fn provider_config_name_falls_back() {
        let mut spec = ResourceSpec::default();
        assert_eq!(spec.provider_config_name(), "default");
        spec.provider_ref = Some(Reference {
            name: "old".into(),
            policy: None,
        });
        assert_eq!(spec.provider_config_name(), "old");
        spec.provider_config_ref = Some(Reference {
            name: "new".into(),
            policy: None,
        });
        assert_eq!(spec.provider_config_name(), "new");
    }
}
