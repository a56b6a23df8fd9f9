//! Which ProviderConfig a managed resource uses, across both generations:
//! a legacy resource names a cluster-scoped `ProviderConfig`; a namespaced
//! one a `ProviderConfig` in its own namespace or a `ClusterProviderConfig`.

use std::fmt;
use std::sync::Arc;

use crate::api::{Family, Generation};

use super::types::{CLUSTER_PROVIDER_CONFIG, ConfigRef, PROVIDER_CONFIG};

/// One ProviderConfig object, of any of the provider's config kinds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigKey {
    /// The API group, e.g. `dummy.m.crossplane.io`.
    pub group: String,
    /// `ProviderConfig` or `ClusterProviderConfig`.
    pub kind: String,
    /// Set for a namespaced ProviderConfig.
    pub namespace: Option<String>,
    pub name: String,
}

impl ConfigKey {
    /// The config that a resource of `generation` in `namespace` names
    /// with `reference`. A namespaced ProviderConfig serves only its own
    /// namespace, so it is looked up there and nowhere else.
    pub fn resolve(
        generation: Generation,
        family: Family,
        namespace: Option<&str>,
        reference: &ConfigRef<'_>,
    ) -> Result<ConfigKey, String> {
        let group = generation.provider_group(family);
        let name = reference.name.to_owned();
        match (generation, reference.kind) {
            (Generation::Legacy, _) => Ok(ConfigKey {
                group,
                kind: PROVIDER_CONFIG.into(),
                namespace: None,
                name,
            }),
            (Generation::Namespaced, Some(PROVIDER_CONFIG)) => Ok(ConfigKey {
                group,
                kind: PROVIDER_CONFIG.into(),
                namespace: Some(namespace.unwrap_or_default().to_owned()),
                name,
            }),
            (Generation::Namespaced, Some(CLUSTER_PROVIDER_CONFIG)) => Ok(ConfigKey {
                group,
                kind: CLUSTER_PROVIDER_CONFIG.into(),
                namespace: None,
                name,
            }),
            (Generation::Namespaced, other) => Err(format!(
                "providerConfigRef.kind {:?} is not supported: use {PROVIDER_CONFIG} or {CLUSTER_PROVIDER_CONFIG}",
                other.unwrap_or_default()
            )),
        }
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{} ", self.kind, self.group)?;
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{:?}", self.name),
            None => write!(f, "{:?}", self.name),
        }
    }
}

/// Looks up a config (from a watch cache, or a list in one-shot modes).
pub type ConfigLookup<T> = Arc<dyn Fn(&ConfigKey) -> Option<Arc<T>> + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_per_generation() {
        let r = |kind, name| ConfigRef { kind, name };
        let legacy = ConfigKey::resolve(
            Generation::Legacy,
            Family::Upbound,
            None,
            &r(None, "default"),
        )
        .unwrap();
        assert_eq!(legacy.group, "dummy.upbound.io");
        assert_eq!(legacy.namespace, None);
        assert_eq!(
            legacy.to_string(),
            "ProviderConfig.dummy.upbound.io \"default\""
        );

        let local = ConfigKey::resolve(
            Generation::Namespaced,
            Family::Crossplane,
            Some("team-a"),
            &r(Some("ProviderConfig"), "pc"),
        )
        .unwrap();
        assert_eq!(local.namespace.as_deref(), Some("team-a"));
        assert_eq!(local.group, "dummy.m.crossplane.io");

        let cluster = ConfigKey::resolve(
            Generation::Namespaced,
            Family::Crossplane,
            Some("team-a"),
            &r(Some("ClusterProviderConfig"), "default"),
        )
        .unwrap();
        assert_eq!(cluster.namespace, None);
        assert_eq!(cluster.kind, "ClusterProviderConfig");

        let bad = ConfigKey::resolve(
            Generation::Namespaced,
            Family::Crossplane,
            Some("team-a"),
            &r(Some("StoreConfig"), "x"),
        )
        .unwrap_err();
        assert!(bad.contains("\"StoreConfig\" is not supported"), "{bad}");
    }
}
