//! The annotations and finalizer Crossplane puts on managed resources, with
//! the same keys, so a resource can move between this controller and a
//! Crossplane provider without losing its external name or its leak guard.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub const FINALIZER: &str = "finalizer.managedresource.crossplane.io";
pub const EXTERNAL_NAME: &str = "crossplane.io/external-name";
pub const PAUSED: &str = "crossplane.io/paused";
pub const CREATE_PENDING: &str = "crossplane.io/external-create-pending";
pub const CREATE_SUCCEEDED: &str = "crossplane.io/external-create-succeeded";
pub const CREATE_FAILED: &str = "crossplane.io/external-create-failed";
/// A per-resource poll interval, a Go duration (Crossplane 2.3).
pub const POLL_INTERVAL: &str = "crossplane.io/poll-interval";
/// An opaque token: a new value asks for a reconcile now, recorded in
/// `status.lastHandledReconcileAt` once handled (Crossplane 2.3).
pub const RECONCILE_REQUESTED_AT: &str = "crossplane.io/reconcile-requested-at";

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

/// The `crossplane.io/poll-interval` annotation: `None` when absent,
/// `Err` with a reason when it is not a positive Go duration.
pub fn poll_interval(meta: &ObjectMeta) -> Option<Result<Duration, String>> {
    let value = annotation(meta, POLL_INTERVAL)?.trim();
    if value.is_empty() {
        return None;
    }
    Some(match parse_go_duration(value) {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err(format!("{POLL_INTERVAL} {value:?} is not positive")),
        None => Err(format!(
            "{POLL_INTERVAL} {value:?} is not a duration such as 30s, 5m or 1h30m"
        )),
    })
}

/// The `crossplane.io/reconcile-requested-at` token, when set.
pub fn reconcile_request(meta: &ObjectMeta) -> Option<&str> {
    annotation(meta, RECONCILE_REQUESTED_AT).filter(|t| !t.is_empty())
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers, each with a
/// unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), as in `1h30m` or `1.5s`.
/// Negative durations are refused (`None`).
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * seconds;
        rest = after;
    }
    Duration::try_from_secs_f64(total).ok()
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
    fn go_durations_parse_as_crossplane_reads_them() {
        let s = Duration::from_secs;
        assert_eq!(parse_go_duration("30s"), Some(s(30)));
        assert_eq!(parse_go_duration("1h30m"), Some(s(5400)));
        assert_eq!(parse_go_duration("1.5h"), Some(s(5400)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "5", "-5s", "5 s", "1d", "s", ".s", "1h-2m"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn poll_interval_annotation() {
        assert_eq!(poll_interval(&meta(&[])), None);
        assert_eq!(
            poll_interval(&meta(&[(POLL_INTERVAL, "2m")])),
            Some(Ok(Duration::from_secs(120)))
        );
        let bad = poll_interval(&meta(&[(POLL_INTERVAL, "soon")]))
            .unwrap()
            .unwrap_err();
        assert!(bad.contains("\"soon\""), "{bad}");
        assert!(
            poll_interval(&meta(&[(POLL_INTERVAL, "0s")]))
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn paused_only_when_exactly_true() {
        assert!(is_paused(&meta(&[(PAUSED, "true")])));
        assert!(!is_paused(&meta(&[(PAUSED, "false")])));
        assert!(!is_paused(&meta(&[])));
    }
}
