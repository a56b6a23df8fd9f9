//! A managed kind as a registered unit: [`Kind<K>`] erases a
//! [`ManagedKind`] into a [`Registered`], so that one list
//! ([`crate::kinds::ALL`], or a test's own) holds kinds of different types
//! and the runtime drives them all the same way.

use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::ApiResource;
use tokio_util::sync::CancellationToken;

use crate::api::{Family, Generation};
use crate::managed::usage::UsageStore;
use crate::managed::{ConfigKey, Connector, ManagedKind};
use crate::provider::{Deps, ProviderConfigObject};

use super::Setup;
use super::pass::{PreparedPass, prepare};

/// What a generation's shared watches give its kinds.
pub struct GenerationShared {
    pub family: Family,
    pub generation: Generation,
    /// The generation's usages, metadata only.
    pub usages: UsageStore,
    /// ProviderConfigs whose spec changed: their users are woken.
    pub config_changes: tokio::sync::broadcast::Sender<ConfigKey>,
}

/// What one kind's controller runs with.
pub struct KindContext {
    pub setup: Arc<Setup>,
    pub shared: Arc<GenerationShared>,
    pub stop: CancellationToken,
}

/// A managed kind, type-erased.
pub trait Registered: Send + Sync {
    fn kind(&self) -> &'static str;
    fn generation(&self) -> Generation;
    fn api_resource(&self, family: Family) -> ApiResource;
    fn crd(&self, family: Family) -> CustomResourceDefinition;
    /// Runs the kind's controller until `ctx.stop`, then lets in-flight
    /// reconciles finish.
    fn run(&self, ctx: KindContext) -> BoxFuture<'static, ()>;
    /// Lists the kind's resources for one pass and records their claims;
    /// the result reconciles them.
    fn prepare_pass(
        &self,
        setup: Arc<Setup>,
        family: Family,
    ) -> BoxFuture<'static, anyhow::Result<Box<dyn PreparedPass>>>;

    /// `Robot.iam.dummy.crossplane.io`: the kind and its group.
    fn id(&self, family: Family) -> String {
        format!("{}.{}", self.kind(), self.api_resource(family).group)
    }
}

/// The registration of the kind `K`.
pub struct Kind<K>(PhantomData<fn() -> K>);

impl<K> Kind<K> {
    pub const NEW: Self = Self(PhantomData);
}

impl<K> Registered for Kind<K>
where
    K: ManagedKind<Deps = Deps>,
    K::Connector: Connector<K::Spec, K::Status, Config = ProviderConfigObject>,
{
    fn kind(&self) -> &'static str {
        K::KIND
    }

    fn generation(&self) -> Generation {
        K::GENERATION
    }

    fn api_resource(&self, family: Family) -> ApiResource {
        K::api_resource(family)
    }

    fn crd(&self, family: Family) -> CustomResourceDefinition {
        K::crd(family)
    }

    fn run(&self, ctx: KindContext) -> BoxFuture<'static, ()> {
        Box::pin(super::controllers::run_kind::<K>(ctx))
    }

    fn prepare_pass(
        &self,
        setup: Arc<Setup>,
        family: Family,
    ) -> BoxFuture<'static, anyhow::Result<Box<dyn PreparedPass>>> {
        Box::pin(prepare::<K>(setup, family))
    }
}
