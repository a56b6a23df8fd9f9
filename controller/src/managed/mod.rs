//! Crossplane's managed-resource semantics, for any kind of managed resource.
//!
//! A kind plugs in by implementing [`ManagedKind`] (its types, API group,
//! CRD and [`Connector`]) and [`ExternalClient`] (observe / create / update
//! / delete), as providers do for crossplane-runtime's `managed.Reconciler`.
//! Everything else lives here: finalizer, external name, conditions,
//! policies, poll and reconcile-request annotations, ProviderConfig usage,
//! connection secrets, events, one owner per external resource. Nothing
//! here knows what a robot is.
//!
//! The reconciler's writes to the control plane go through [`Writer`], so
//! its decisions are tested against an in-memory fake in milliseconds
//! (`reconciler_tests`), and against the real apiserver elsewhere.

pub mod claims;
pub mod conditions;
pub mod config;
pub mod connection;
pub mod events;
pub mod inuse;
pub mod kube_writer;
pub mod meta;
pub mod metrics;
pub mod object;
pub mod reconciler;
#[cfg(test)]
mod reconciler_tests;
pub mod schema;
pub mod types;
pub mod usage;
pub mod writer;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::{ApiResource, GroupVersionKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{Family, Generation, VERSION};

pub use config::{ConfigKey, ConfigLookup};
pub use reconciler::{Error as ReconcileError, Outcome, Reconciler, ReconcilerConfig, SyncState};
pub use types::{CommonSpec, ResourceStatus};
pub use writer::Writer;

pub use object::{Managed, SharedResource};

/// The spec of a managed kind: its own fields plus those of its generation
/// ([`types::LegacyResourceSpec`] or [`types::NamespacedResourceSpec`]).
pub trait ManagedSpec:
    Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    fn common(&self) -> CommonSpec<'_>;
}

/// The status of a managed kind: [`ResourceStatus`] plus what it observes.
pub trait ManagedStatus:
    Clone + Debug + Default + Serialize + DeserializeOwned + Send + Sync + 'static
{
    fn resource_status(&self) -> &ResourceStatus;
    fn resource_status_mut(&mut self) -> &mut ResourceStatus;
    /// Whether the kind's observed fields (`atProvider`) in `self` differ
    /// from `stored` in a way worth a write. A field missing from `stored`
    /// may have been pruned by the installed CRD's schema: not a difference.
    fn observation_differs(&self, stored: &Self) -> bool;
}

/// Details a client of the external resource needs (endpoint, keys...),
/// published to the Secret named by `writeConnectionSecretToRef`.
pub type ConnectionDetails = BTreeMap<String, Vec<u8>>;

/// What observing the external resource found.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// The external resource exists. Only a definite "not found" from the
    /// external API may set this to false: any doubt is an error instead.
    pub exists: bool,
    /// It matches the spec; updating it would change nothing.
    pub up_to_date: bool,
    pub connection_details: ConnectionDetails,
}

/// An error from the external API, with a message fit for a condition and
/// whether retrying soon may help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExternalError {
    pub message: String,
    /// Network trouble, timeouts, 5xx, throttling: retried soon. Anything
    /// else (a refused request, a bad configuration) waits longer, or for a
    /// change to the resource or its ProviderConfig.
    pub transient: bool,
}

impl ExternalError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: true,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
        }
    }
}

/// Talks to the external system for one managed resource. Every call must
/// be idempotent: create of an existing resource and delete of a missing
/// one are not errors worth retrying forever.
pub trait ExternalClient<P: ManagedSpec, U: ManagedStatus>: Send + Sync {
    /// Looks at the external resource without changing it. May fill the
    /// observed fields of `status` (the status about to be written).
    fn observe(
        &self,
        mr: &Managed<P, U>,
        status: &mut U,
    ) -> impl Future<Output = Result<Observation, ExternalError>> + Send;

    fn create(
        &self,
        mr: &Managed<P, U>,
    ) -> impl Future<Output = Result<ConnectionDetails, ExternalError>> + Send;

    fn update(
        &self,
        mr: &Managed<P, U>,
    ) -> impl Future<Output = Result<ConnectionDetails, ExternalError>> + Send;

    fn delete(&self, mr: &Managed<P, U>) -> impl Future<Output = Result<(), ExternalError>> + Send;
}

/// Produces the [`ExternalClient`] for a managed resource from the
/// ProviderConfig it references.
pub trait Connector<P: ManagedSpec, U: ManagedStatus>: Send + Sync + 'static {
    /// The provider's ProviderConfig type.
    type Config: Send + Sync + 'static;
    type Client: ExternalClient<P, U>;

    fn connect(
        &self,
        mr: &Managed<P, U>,
        config: &Self::Config,
    ) -> Result<Self::Client, ExternalError>;

    /// Which instance of the external system `config` points at: two
    /// resources with one external name and one target are one external
    /// resource (see [`claims`]). `None`: the config cannot be used.
    fn target(&self, config: &Self::Config) -> Option<String>;
}

/// A managed kind as a registered unit: its types, where it is served,
/// its CRD and how it connects. Adding a kind is one module implementing
/// this (plus [`ExternalClient`]) and one entry in the list of kinds.
pub trait ManagedKind: Send + Sync + 'static {
    type Spec: ManagedSpec;
    type Status: ManagedStatus;
    type Connector: Connector<Self::Spec, Self::Status>;
    /// What every connector of the provider is built from.
    type Deps: Send + Sync + 'static;

    /// The kind, as in `kind: Robot`.
    const KIND: &'static str;
    /// Its plural resource name, as in `robots`.
    const PLURAL: &'static str;
    /// The first label of its API group, as `iam` in `iam.dummy.crossplane.io`.
    const SERVICE: &'static str;
    const GENERATION: Generation;
    /// Kinds with the same space name one external resource by the same
    /// external name (the legacy and the namespaced Robot).
    const EXTERNAL_SPACE: &'static str;

    /// The CRD, in the `family`'s group.
    fn crd(family: Family) -> CustomResourceDefinition;

    fn connector(deps: &Self::Deps) -> Self::Connector;

    fn group(family: Family) -> String {
        Self::GENERATION.managed_group(Self::SERVICE, family)
    }

    fn api_resource(family: Family) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&Self::group(family), VERSION, Self::KIND),
            Self::PLURAL,
        )
    }
}
