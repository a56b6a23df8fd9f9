//! The managed kinds this provider serves: the one list. A kind is a
//! module implementing [`ManagedKind`](crate::managed::ManagedKind) plus an
//! entry here; the runtime starts a controller for each entry whose CRD the
//! control plane serves.

pub mod robot;

use crate::runtime::registry::{Kind, Registered};

/// Every managed kind, in both generations.
pub static ALL: &[&dyn Registered] = &[
    &Kind::<robot::legacy::LegacyRobot>::NEW,
    &Kind::<robot::namespaced::NamespacedRobot>::NEW,
];
