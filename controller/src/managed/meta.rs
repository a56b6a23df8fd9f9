//! The annotations and finalizer Crossplane puts on managed resources, with
//! the same keys, so a resource can move between this controller and a
//! Crossplane provider without losing its external name or its leak guard.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

pub const FINALIZER: &str = "finalizer.managedresource.crossplane.io";
pub const EXTERNAL_NAME: &str = "crossplane.io/external-name";
pub const PAUSED: &str = "crossplane.io/paused";
pub const CREATE_PENDING: &str = "crossplane.io/external-create-pending";
pub const CREATE_SUCCEEDED: &str = "crossplane.io/external-create-succeeded";
pub const CREATE_FAILED: &str = "crossplane.io/external-create-failed";

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The external name: the annotation when set, else `metadata.name`.
pub fn external_name(meta: &ObjectMeta) -> String {
    annotation(meta, EXTERNAL_NAME)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .or_else(|| meta.name.clone())
        .unwrap_or_default()
}

pub fn has_external_name(meta: &ObjectMeta) -> bool {
    annotation(meta, EXTERNAL_NAME).is_some_and(|n| !n.is_empty())
}

pub fn is_paused(meta: &ObjectMeta) -> bool {
    annotation(meta, PAUSED) == Some("true")
}

pub fn is_deleted(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

pub fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// When an annotation holds an RFC 3339 time, that time.
fn annotation_time(meta: &ObjectMeta, key: &str) -> Option<Timestamp> {
    annotation(meta, key)?.parse().ok()
}

/// A create was started and neither its success nor its failure recorded:
/// the process died in between, and the external resource may or may not
/// exist. Crossplane stops here for a human; external names here are
/// deterministic, so the reconciler settles it by observing instead.
pub fn create_incomplete(meta: &ObjectMeta) -> bool {
    let Some(pending) = annotation_time(meta, CREATE_PENDING) else {
        return false;
    };
    let settled_after = |key| annotation_time(meta, key).is_some_and(|t| t >= pending);
    !settled_after(CREATE_SUCCEEDED) && !settled_after(CREATE_FAILED)
}

/// Crossplane's timestamp format for these annotations.
pub fn now_rfc3339() -> String {
    Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.fZ")
        .to_string()
}

/// Annotations to set (`Some`) or remove (`None`) in one metadata patch.
pub type AnnotationChanges = BTreeMap<String, Option<String>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(annotations: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("robot".into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn external_name_defaults_to_the_object_name() {
        assert_eq!(external_name(&meta(&[])), "robot");
        assert_eq!(external_name(&meta(&[(EXTERNAL_NAME, "")])), "robot");
        assert_eq!(external_name(&meta(&[(EXTERNAL_NAME, "r2d2")])), "r2d2");
    }

    #[test]
    fn create_incomplete_compares_times() {
        let t1 = "2026-01-01T00:00:00Z";
        let t2 = "2026-01-01T00:00:01.5Z";
        assert!(!create_incomplete(&meta(&[])));
        assert!(create_incomplete(&meta(&[(CREATE_PENDING, t2)])));
        assert!(create_incomplete(&meta(&[
            (CREATE_PENDING, t2),
            (CREATE_SUCCEEDED, t1)
        ])));
        assert!(!create_incomplete(&meta(&[
            (CREATE_PENDING, t1),
            (CREATE_SUCCEEDED, t2)
        ])));
        assert!(!create_incomplete(&meta(&[
            (CREATE_PENDING, t1),
            (CREATE_FAILED, t1)
        ])));
        // Our own format parses back.
        let now = now_rfc3339();
        assert!(create_incomplete(&meta(&[(CREATE_PENDING, &now)])));
    }

    #[test]
    fn paused_only_when_exactly_true() {
        assert!(is_paused(&meta(&[(PAUSED, "true")])));
        assert!(!is_paused(&meta(&[(PAUSED, "false")])));
        assert!(!is_paused(&meta(&[])));
    }
}
