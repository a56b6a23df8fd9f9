//! Crossplane's status conditions: `Ready` and `Synced`, with the reasons
//! Crossplane users (and `kubectl wait --for=condition=Ready`) rely on.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const TYPE_READY: &str = "Ready";
pub const TYPE_SYNCED: &str = "Synced";

/// Crossplane's message for a paused resource (condition and event).
pub const PAUSED_MESSAGE: &str =
    "Reconciliation is paused either through the `spec.managementPolicies` or the pause annotation";

/// Longest condition message kept; longer ones are cut (etcd objects and
/// `kubectl describe` both suffer from walls of text).
const MAX_MESSAGE_CHARS: usize = 1024;

/// A condition as Crossplane writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(description = "A Condition that may apply to a resource.")]
pub struct Condition {
    /// Type of this condition. At most one of each condition type may apply
    /// to a resource at any point in time.
    #[serde(rename = "type")]
    pub type_: String,
    /// Status of this condition; is it currently True, False, or Unknown?
    pub status: String,
    /// A Reason for this condition's last transition from one status to another.
    pub reason: String,
    /// A Message containing details about this condition's last transition
    /// from one status to another, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// LastTransitionTime is the last time this condition transitioned from
    /// one status to another.
    #[schemars(schema_with = "crate::managed::schema::date_time")]
    pub last_transition_time: Time,
    /// ObservedGeneration is the .metadata.generation the condition was set
    /// based upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    fn new(type_: &str, status: bool, reason: &str, message: Option<String>) -> Self {
        Self {
            type_: type_.into(),
            status: if status { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.map(truncate),
            last_transition_time: Time(Timestamp::now()),
            observed_generation: None,
        }
    }

    pub fn available() -> Self {
        Self::new(TYPE_READY, true, "Available", None)
    }
    pub fn unavailable() -> Self {
        Self::new(TYPE_READY, false, "Unavailable", None)
    }
    pub fn creating() -> Self {
        Self::new(TYPE_READY, false, "Creating", None)
    }
    pub fn deleting() -> Self {
        Self::new(TYPE_READY, false, "Deleting", None)
    }
    pub fn reconcile_success() -> Self {
        Self::new(TYPE_SYNCED, true, "ReconcileSuccess", None)
    }
    pub fn reconcile_error(message: impl Into<String>) -> Self {
        Self::new(TYPE_SYNCED, false, "ReconcileError", Some(message.into()))
    }
    pub fn reconcile_paused() -> Self {
        Self::new(
            TYPE_SYNCED,
            false,
            "ReconcilePaused",
            Some(PAUSED_MESSAGE.into()),
        )
    }

    pub fn is_true(&self) -> bool {
        self.status == "True"
    }

    /// Same state, as far as a reader of the object can tell; the time and
    /// generation are bookkeeping.
    fn same_state(&self, other: &Condition) -> bool {
        self.status == other.status && self.reason == other.reason && self.message == other.message
    }
}

fn truncate(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}...", &message[..cut]),
        None => message,
    }
}

/// Sets `new` in `conditions`, replacing the condition of the same type.
///
/// As `meta.SetStatusCondition` does in Kubernetes: `lastTransitionTime`
/// moves only when the status flips; reason, message and generation are
/// updated in place. Returns whether anything a reader could see changed.
pub fn set(conditions: &mut Vec<Condition>, mut new: Condition, generation: Option<i64>) -> bool {
    new.observed_generation = generation;
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(old) => {
            // A stored condition without observedGeneration comes from a CRD
            // whose schema prunes it (the reference CRDs): never a difference.
            let generation_changed = old.observed_generation.is_some()
                && old.observed_generation != new.observed_generation;
            if old.same_state(&new) && !generation_changed {
                return false;
            }
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
            true
        }
    }
}

/// The condition of type `type_`, if any.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(c: &Condition) -> Timestamp {
        c.last_transition_time.0
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conds = vec![];
        assert!(set(&mut conds, Condition::reconcile_error("boom"), Some(1)));
        let first = at(&conds[0]);
        // Same state again: nothing to write.
        assert!(!set(
            &mut conds,
            Condition::reconcile_error("boom"),
            Some(1)
        ));
        // New message, same status: visible change, same transition time.
        assert!(set(&mut conds, Condition::reconcile_error("bang"), Some(1)));
        assert_eq!(at(&conds[0]), first);
        assert_eq!(conds[0].message.as_deref(), Some("bang"));
        // Status flips: new time.
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(set(&mut conds, Condition::reconcile_success(), Some(2)));
        assert_ne!(at(&conds[0]), first);
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].observed_generation, Some(2));
    }

    #[test]
    fn generation_counts_only_where_the_schema_keeps_it() {
        let mut conds = vec![];
        set(&mut conds, Condition::available(), Some(1));
        assert!(set(&mut conds, Condition::available(), Some(2)));
        // As stored under a CRD that prunes observedGeneration:
        conds[0].observed_generation = None;
        assert!(!set(&mut conds, Condition::available(), Some(3)));
    }

    #[test]
    fn long_messages_are_cut() {
        let c = Condition::reconcile_error("x".repeat(5000));
        assert_eq!(c.message.map(|m| m.len()), Some(MAX_MESSAGE_CHARS + 3));
    }

    #[test]
    fn serializes_like_crossplane() {
        let c = Condition::reconcile_success();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["type"], "Synced");
        assert_eq!(v["status"], "True");
        assert_eq!(v["reason"], "ReconcileSuccess");
        assert!(v.get("message").is_none());
        let t = v["lastTransitionTime"].as_str().unwrap();
        assert!(t.ends_with('Z') && t.contains('T'), "{t}");
    }
}
