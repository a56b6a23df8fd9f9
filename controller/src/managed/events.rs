//! Kubernetes Events with Crossplane's reasons, so `kubectl describe`
//! reads as it does for any Crossplane provider.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Crossplane's event reasons for managed resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    CannotConnectToProvider,
    CannotObserveExternalResource,
    CannotCreateExternalResource,
    CannotUpdateExternalResource,
    CannotDeleteExternalResource,
    CannotPublishConnectionDetails,
    CannotUnpublishConnectionDetails,
    CannotUpdateManagedResource,
    CannotUseManagementPolicy,
    CreatedExternalResource,
    UpdatedExternalResource,
    DeletedExternalResource,
    ReconciliationPaused,
    /// A `crossplane.io/reconcile-requested-at` token was handled.
    ReconcileRequestHandled,
    /// Another managed resource claims the same external resource.
    ExternalNameConflict,
    /// ProviderConfig usage bookkeeping (crossplane-runtime's `reasonAccount`).
    UsageAccounting,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CannotConnectToProvider => "CannotConnectToProvider",
            Reason::CannotObserveExternalResource => "CannotObserveExternalResource",
            Reason::CannotCreateExternalResource => "CannotCreateExternalResource",
            Reason::CannotUpdateExternalResource => "CannotUpdateExternalResource",
            Reason::CannotDeleteExternalResource => "CannotDeleteExternalResource",
            Reason::CannotPublishConnectionDetails => "CannotPublishConnectionDetails",
            Reason::CannotUnpublishConnectionDetails => "CannotUnpublishConnectionDetails",
            Reason::CannotUpdateManagedResource => "CannotUpdateManagedResource",
            Reason::CannotUseManagementPolicy => "CannotUseManagementPolicy",
            Reason::CreatedExternalResource => "CreatedExternalResource",
            Reason::UpdatedExternalResource => "UpdatedExternalResource",
            Reason::DeletedExternalResource => "DeletedExternalResource",
            Reason::ReconciliationPaused => "ReconciliationPaused",
            Reason::ReconcileRequestHandled => "ReconcileRequestHandled",
            Reason::ExternalNameConflict => "ExternalNameConflict",
            Reason::UsageAccounting => "UsageAccounting",
        }
    }

    pub fn event_type(self) -> EventType {
        match self {
            Reason::CreatedExternalResource
            | Reason::UpdatedExternalResource
            | Reason::DeletedExternalResource
            | Reason::ReconciliationPaused
            | Reason::ReconcileRequestHandled => EventType::Normal,
            _ => EventType::Warning,
        }
    }
}

/// Records events for one controller; failures to record are logged, never
/// fatal: an event is a courtesy, the condition is the truth.
///
/// Warnings repeat while a fault lasts, so they go through one shared
/// kube `Recorder`, which folds repeats into a series (one Event, a count).
/// That recorder keeps every event it published for six minutes and only
/// forgets them when it next publishes, scanning them all under one lock:
/// for the one-off Normal events (a create, an update, a delete) that
/// meant 28 MB held after 10 000 creates and a scan of up to 10 000
/// entries per event. A Normal event is recorded by a recorder of its own,
/// which remembers nothing.
#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    reporter: Reporter,
    warnings: Recorder,
}

impl Events {
    pub fn new(client: kube::Client, controller: &str) -> Self {
        let reporter = Reporter {
            controller: controller.into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        Self {
            warnings: Recorder::new(client.clone(), reporter.clone()),
            client,
            reporter,
        }
    }

    pub async fn publish(&self, regarding: &ObjectReference, reason: Reason, note: &str) {
        let event = Event {
            type_: reason.event_type(),
            reason: reason.as_str().into(),
            note: Some(truncate(note)),
            action: action(reason).into(),
            secondary: None,
        };
        let published = match event.type_ {
            EventType::Warning => self.warnings.publish(&event, regarding).await,
            EventType::Normal => {
                Recorder::new(self.client.clone(), self.reporter.clone())
                    .publish(&event, regarding)
                    .await
            }
        };
        if let Err(e) = published {
            tracing::warn!(
                reason = reason.as_str(),
                object = regarding.name.as_deref().unwrap_or_default(),
                error = %e,
                "cannot record event"
            );
        }
    }
}

/// The short action name the Events API requires.
fn action(reason: Reason) -> &'static str {
    match reason {
        Reason::CannotConnectToProvider => "Connect",
        Reason::CannotObserveExternalResource => "Observe",
        Reason::CannotCreateExternalResource | Reason::CreatedExternalResource => "Create",
        Reason::CannotUpdateExternalResource | Reason::UpdatedExternalResource => "Update",
        Reason::CannotDeleteExternalResource | Reason::DeletedExternalResource => "Delete",
        Reason::CannotPublishConnectionDetails | Reason::CannotUnpublishConnectionDetails => {
            "PublishConnectionDetails"
        }
        Reason::CannotUpdateManagedResource => "UpdateManagedResource",
        Reason::CannotUseManagementPolicy => "ResolvePolicies",
        Reason::ReconciliationPaused => "Pause",
        Reason::ReconcileRequestHandled => "Reconcile",
        Reason::ExternalNameConflict => "Claim",
        Reason::UsageAccounting => "AccountUsage",
    }
}

/// The Events API refuses notes over 1 kB.
fn truncate(note: &str) -> String {
    const MAX: usize = 1000;
    if note.len() <= MAX {
        return note.to_owned();
    }
    let mut cut = MAX;
    while !note.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &note[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_fit_the_events_api() {
        let long = "é".repeat(800);
        let t = truncate(&long);
        assert!(t.len() <= 1003 && t.ends_with("..."));
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn successes_are_normal_failures_warn() {
        assert_eq!(
            Reason::CreatedExternalResource.event_type(),
            EventType::Normal
        );
        assert_eq!(
            Reason::CannotObserveExternalResource.event_type(),
            EventType::Warning
        );
    }
}
