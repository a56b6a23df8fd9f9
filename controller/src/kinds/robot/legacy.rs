//! The legacy Robot: cluster-scoped, `iam.dummy.crossplane.io` (or
//! `iam.dummy.upbound.io`), with `deletionPolicy` and a ProviderConfig
//! named by `providerConfigRef.name`: provider-dummy's own kind.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{EXTERNAL_SPACE, RobotConnector, RobotParameters, RobotStatus};
use crate::api::{Family, Generation};
use crate::managed::types::LegacyResourceSpec;
use crate::managed::{CommonSpec, Managed, ManagedKind, ManagedSpec};
use crate::provider::Deps;

/// A RobotSpec defines the desired state of a Robot.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "iam.dummy.crossplane.io",
    version = "v1alpha1",
    kind = "Robot",
    root = "RobotCrd",
    status = "RobotStatus",
    category = "crossplane",
    category = "managed",
    category = "dummy",
    doc = "A Robot is an example API type.",
    printcolumn = r#"{"name": "READY", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].status"}"#,
    printcolumn = r#"{"name": "SYNCED", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Synced')].status"}"#,
    printcolumn = r#"{"name": "EXTERNAL-NAME", "type": "string", "jsonPath": ".metadata.annotations.crossplane\\.io/external-name"}"#,
    printcolumn = r#"{"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RobotSpec {
    #[serde(flatten)]
    pub resource: LegacyResourceSpec,
    /// RobotParameters are the configurable fields of a Robot.
    pub for_provider: RobotParameters,
}

/// A Robot of this generation, in either group family.
pub type RobotObject = Managed<RobotSpec, RobotStatus>;

impl ManagedSpec for RobotSpec {
    fn common(&self) -> CommonSpec<'_> {
        self.resource.common()
    }
}

impl super::RobotSpec for RobotSpec {
    fn for_provider(&self) -> &RobotParameters {
        &self.for_provider
    }
}

/// The legacy Robot as a registered kind.
pub struct LegacyRobot;

impl ManagedKind for LegacyRobot {
    type Spec = RobotSpec;
    type Status = RobotStatus;
    type Connector = RobotConnector;
    type Deps = Deps;

    const KIND: &'static str = "Robot";
    const PLURAL: &'static str = "robots";
    const SERVICE: &'static str = "iam";
    const GENERATION: Generation = Generation::Legacy;
    const EXTERNAL_SPACE: &'static str = EXTERNAL_SPACE;

    fn crd(family: Family) -> CustomResourceDefinition {
        crate::crd::regroup(RobotCrd::crd(), &Self::group(family))
    }

    fn connector(deps: &Deps) -> RobotConnector {
        RobotConnector::new(deps)
    }
}
