//! Crossplane's managed-resource semantics, for any kind of managed resource.
//!
//! A kind plugs in by implementing [`Connector`] and [`ExternalClient`]
//! (observe / create / update / delete), as providers do for
//! crossplane-runtime's `managed.Reconciler`. Everything else lives here:
//! finalizer, external name, create-pending/succeeded/failed annotations,
//! conditions, policies, ProviderConfig usage, connection secrets, events.
//! Nothing here knows what a robot is.

pub mod conditions;
pub mod connection;
pub mod events;
pub mod meta;
mod reconciler;
pub mod types;
pub mod usage;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;

use kube::core::Object;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use reconciler::{
    ConfigLookup, Error as ReconcileError, Outcome, Reconciler, ReconcilerConfig, SyncState,
};
pub use types::{ResourceSpec, ResourceStatus};

/// A managed resource: Kubernetes object with a Crossplane spec and status.
/// The API group is only known at run time (two generations exist), hence
/// `Object` with an `ApiResource` rather than a static type.
pub type Managed<P, U> = Object<P, U>;

/// The spec of a managed kind: its own fields plus [`ResourceSpec`].
pub trait ManagedSpec:
    Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    fn resource_spec(&self) -> &ResourceSpec;
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

/// An error from the external API, with a message fit for a condition.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExternalError {
    pub message: String,
}

impl ExternalError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
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
}
