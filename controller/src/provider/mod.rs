//! What the provider's kinds share: the config and usage kinds of each
//! generation ([`types`]), and what every connector is built from
//! ([`Deps`]: how to reach the robot servers).

pub mod types;

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use robot_api::{AuthHeader, Authorizer};
use tokio::sync::Notify;

use crate::api::Generation;
use crate::endpoints::AllowedEndpoints;

pub use types::ProviderConfigObject;

/// How the connectors reach robot servers; built once from the flags.
#[derive(Clone)]
pub struct Deps {
    pub http: reqwest::Client,
    /// A bearer token for every server (`--server-token-source`).
    pub auth: Option<AuthHeader>,
    /// Per-server credentials (`--server-auth gcp-id-token`); replaces
    /// `auth` when set.
    pub authorizer: Option<Arc<dyn Authorizer>>,
    pub allowed: Arc<AllowedEndpoints>,
    /// Told when a server refuses our token, so it is re-read at once.
    pub refused: Option<Arc<Notify>>,
}

/// The provider-level CRDs of `generation` (in the `dummy.crossplane.io`
/// family; [`crate::crd`] regroups them).
pub fn crds(generation: Generation) -> Vec<CustomResourceDefinition> {
    match generation {
        Generation::Legacy => vec![
            types::ProviderConfigCrd::crd(),
            types::ProviderConfigUsageCrd::crd(),
            types::StoreConfigCrd::crd(),
        ],
        Generation::Namespaced => vec![
            types::NamespacedProviderConfigCrd::crd(),
            types::ClusterProviderConfigCrd::crd(),
            types::NamespacedProviderConfigUsageCrd::crd(),
        ],
    }
}
