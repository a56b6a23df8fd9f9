//! The managed resource type: a Kubernetes object with a Crossplane spec
//! and status, whose API group is only known at run time (two families).
//!
//! kube's `Object` would do, but its run-time type is an `ApiResource`
//! (five strings) copied into every key of every cache: the reflector
//! store, the scheduler, the predicate cache, one of each per resource.
//! [`SharedResource`] shares one.

use std::borrow::Cow;
use std::ops::Deref;
use std::sync::Arc;

use kube::core::{ApiResource, DynamicResourceScope, ObjectMeta, Resource, TypeMeta};
use serde::{Deserialize, Serialize};

/// A managed kind's API resource, shared by every key that names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SharedResource(Arc<ApiResource>);

impl SharedResource {
    pub fn new(ar: ApiResource) -> Self {
        Self(Arc::new(ar))
    }
}

impl Deref for SharedResource {
    type Target = ApiResource;
    fn deref(&self) -> &ApiResource {
        &self.0
    }
}

impl From<ApiResource> for SharedResource {
    fn from(ar: ApiResource) -> Self {
        Self::new(ar)
    }
}

/// A managed resource: the same fields and wire format as kube's `Object`.
#[derive(Deserialize, Serialize, Clone, Debug)]
pub struct Managed<P: Clone, U: Clone> {
    /// The type fields; not kept in caches (see `slim`).
    #[serde(flatten, default)]
    pub types: Option<TypeMeta>,
    pub metadata: ObjectMeta,
    pub spec: P,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<U>,
}

impl<P: Clone, U: Clone> Managed<P, U> {
    pub fn new(name: &str, ar: &ApiResource, spec: P) -> Self {
        Self {
            types: Some(TypeMeta {
                api_version: ar.api_version.clone(),
                kind: ar.kind.clone(),
            }),
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    #[must_use]
    pub fn within(mut self, namespace: &str) -> Self {
        self.metadata.namespace = Some(namespace.into());
        self
    }
}

impl<P: Clone, U: Clone> Resource for Managed<P, U> {
    type DynamicType = SharedResource;
    type Scope = DynamicResourceScope;

    fn kind(dt: &SharedResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn group(dt: &SharedResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &SharedResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn api_version(dt: &SharedResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &SharedResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::GroupVersionKind;

    #[test]
    fn the_wire_format_is_kubes_object() {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("iam.dummy.crossplane.io", "v1alpha1", "Robot"),
            "robots",
        );
        let mine = Managed::<serde_json::Value, serde_json::Value>::new(
            "r",
            &ar,
            serde_json::json!({"a": 1}),
        );
        let theirs = kube::core::Object::<serde_json::Value, serde_json::Value>::new(
            "r",
            &ar,
            serde_json::json!({"a": 1}),
        );
        assert_eq!(
            serde_json::to_value(&mine).unwrap(),
            serde_json::to_value(&theirs).unwrap()
        );
        let kind = SharedResource::new(ar.clone());
        assert_eq!(Managed::<(), ()>::plural(&kind), "robots");
        assert_eq!(
            kind,
            SharedResource::new(ar),
            "equal by content, not by pointer"
        );
    }
}
