//! The API groups the provider's kinds live in.
//!
//! Two axes, as on a real control plane:
//! - the [`Family`]: provider-dummy was renamed from `*.dummy.crossplane.io`
//!   to `*.dummy.upbound.io`; a control plane has one or the other;
//! - the [`Generation`]: Crossplane v1's cluster-scoped ("legacy") managed
//!   resources, and Crossplane v2's namespaced ones in `.m.` groups, which
//!   a v2 provider serves next to the legacy ones.

use std::fmt;

/// The group family: which name provider-dummy's groups carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Family {
    /// `*.dummy.crossplane.io`, what the BYOC guide installs.
    #[value(name = "dummy.crossplane.io")]
    Crossplane,
    /// `*.dummy.upbound.io`, after the upstream rename.
    #[value(name = "dummy.upbound.io")]
    Upbound,
}

impl Family {
    /// In order of preference when a control plane serves both.
    pub const ALL: [Family; 2] = [Family::Crossplane, Family::Upbound];

    /// `crossplane.io` or `upbound.io`.
    pub fn domain(self) -> &'static str {
        match self {
            Family::Crossplane => "crossplane.io",
            Family::Upbound => "upbound.io",
        }
    }

    /// The legacy provider-level group: `dummy.crossplane.io`.
    pub fn provider_group(self) -> String {
        Generation::Legacy.provider_group(self)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dummy.{}", self.domain())
    }
}

/// The generation of Crossplane managed resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Generation {
    /// Cluster-scoped managed resources and ProviderConfig (Crossplane v1,
    /// deprecated in v2): `iam.dummy.crossplane.io`, `dummy.crossplane.io`.
    Legacy,
    /// Namespaced managed resources, namespaced ProviderConfig and
    /// cluster-scoped ClusterProviderConfig (Crossplane v2):
    /// `iam.dummy.m.crossplane.io`, `dummy.m.crossplane.io`.
    Namespaced,
}

impl Generation {
    pub const ALL: [Generation; 2] = [Generation::Legacy, Generation::Namespaced];

    /// The provider-level group (ProviderConfig and friends).
    pub fn provider_group(self, family: Family) -> String {
        match self {
            Generation::Legacy => format!("dummy.{}", family.domain()),
            Generation::Namespaced => format!("dummy.m.{}", family.domain()),
        }
    }

    /// The group of a managed kind of `service` (`iam` for Robot).
    pub fn managed_group(self, service: &str, family: Family) -> String {
        format!("{service}.{}", self.provider_group(family))
    }

    pub fn is_namespaced(self) -> bool {
        self == Generation::Namespaced
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Generation::Legacy => "legacy",
            Generation::Namespaced => "namespaced",
        })
    }
}

/// The version every kind of the provider is served at.
pub const VERSION: &str = "v1alpha1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_the_upstream_names() {
        assert_eq!(
            Generation::Legacy.managed_group("iam", Family::Crossplane),
            "iam.dummy.crossplane.io"
        );
        assert_eq!(
            Generation::Namespaced.managed_group("iam", Family::Upbound),
            "iam.dummy.m.upbound.io"
        );
        assert_eq!(
            Generation::Namespaced.provider_group(Family::Crossplane),
            "dummy.m.crossplane.io"
        );
        assert_eq!(Family::Upbound.provider_group(), "dummy.upbound.io");
        assert_eq!(Family::Upbound.to_string(), "dummy.upbound.io");
    }
}
