//! Leader election: only the holder of the Lease reconciles, and it steps
//! down before the Lease could expire when it cannot confirm it.
//!
//! A leader that loses the Lease stops at once: its in-flight reconciles
//! are abandoned, not drained (a drain of up to --shutdown-timeout would
//! outlast the margin, and a stale leader could revert the new one's
//! writes). On SIGTERM it drains, then releases the Lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::Api;
use tokio_util::sync::CancellationToken;

use crate::telemetry::Check;

use super::Setup;
use super::service::run_until;

/// The shortest lease: its margin (a quarter) must leave time to notice.
pub const MIN_LEASE: Duration = Duration::from_secs(4);

/// A Lease holder identity that no other instance has: the hostname (or a
/// name) for people, the PID, and a random part, since in a container the
/// PID is 1 and hostnames repeat on some platforms.
pub fn identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "robot-controller".into());
    format!(
        "{host}-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    )
}

/// Holds the Lease while reconciling; returns when leadership is lost or
/// `stop` fires, having released the Lease.
pub(super) async fn lead(setup: &Arc<Setup>, stop: &CancellationToken) -> Result<(), String> {
    let duration = setup.args.leader_election_duration.max(MIN_LEASE);
    let secs = duration.as_secs();
    let identity = identity();
    let manager = kube_lease_manager::LeaseManagerBuilder::new(
        setup.client(),
        &setup.args.leader_election_name,
    )
    .with_namespace(&setup.args.leader_election_namespace)
    .with_identity(&identity)
    .with_duration(secs)
    // Renew halfway through the lease, so that a renewal has time to be
    // seen by `confirm_leadership` before the lease could expire.
    .with_grace((secs / 2).max(1))
    .build()
    .await
    .map_err(|e| format!("cannot use Lease {}: {e}", setup.args.leader_election_name))?;
    let (mut leader, task) = manager.watch().await;
    // A standby is ready: it is doing its job, which is to wait.
    setup.health.set(Check::Crds, None);
    tracing::info!(identity, "waiting for leadership");
    loop {
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => {
                drop(leader);
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
                return Ok(());
            }
            changed = leader.changed() => {
                if changed.is_err() {
                    return Err("the lease manager stopped".into());
                }
            }
        }
    }
    tracing::info!(identity, "leading");
    setup.metrics.leader.set(1);
    // Cancelled the moment leadership is lost or cannot be confirmed.
    let lost = CancellationToken::new();
    let watching = {
        let lost = lost.clone();
        let mut leader = leader.clone();
        tokio::spawn(async move {
            while leader.changed().await.is_ok() {
                if !*leader.borrow_and_update() {
                    tracing::warn!("leadership lost; stopping reconciles at once");
                    break;
                }
            }
            lost.cancel();
        })
    };
    let confirming = tokio::spawn(confirm_leadership(
        setup.client(),
        setup.args.leader_election_namespace.clone(),
        setup.args.leader_election_name.clone(),
        identity.clone(),
        duration,
        lost.clone(),
    ));
    tokio::select! {
        () = run_until(setup, stop.clone()) => {}
        // Dropping the service aborts everything it runs, in-flight
        // reconciles included.
        () = lost.cancelled() => {}
    }
    setup.metrics.leader.set(0);
    // An aborted service cleans nothing up: its kinds' checks go here.
    setup
        .health
        .clear(|c| matches!(c, Check::Watch(_) | Check::Waiting(_)));
    lost.cancel();
    watching.abort();
    confirming.abort();
    drop(leader);
    // Dropping the channel releases the Lease, so a standby takes over now
    // rather than after the lease expires.
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    Ok(())
}

/// Cancels `lost` (stepping down) unless the Lease can be confirmed as ours
/// in time. The lease manager reports a lost lease only once it can read
/// the Lease again, so a leader cut off from the control plane would go on
/// reconciling from its stale caches after the standby took over, undoing
/// the new leader's work. The Lease is valid until its renewTime plus its
/// duration; this steps down a quarter of the duration before that, and
/// renewals happen at half the duration, leaving a quarter to see them.
/// No wait (a check, a request) runs past that deadline.
async fn confirm_leadership(
    client: kube::Client,
    namespace: String,
    name: String,
    identity: String,
    duration: Duration,
    lost: CancellationToken,
) {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: Api<Lease> = Api::namespaced(client, &namespace);
    let check = (duration / 8).max(Duration::from_millis(250));
    let margin = duration / 4;
    // Just acquired: renewed a moment ago.
    let mut valid_until = Instant::now() + duration - margin;
    loop {
        let left = valid_until.saturating_duration_since(Instant::now());
        tokio::select! {
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(check.min(left)) => {}
        }
        let left = valid_until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(check.min(left), leases.get_opt(&name)).await {
            Ok(Ok(Some(lease))) => {
                let spec = lease.spec.unwrap_or_default();
                if spec.holder_identity.as_deref() != Some(identity.as_str()) {
                    tracing::warn!(holder = ?spec.holder_identity, "the Lease is held by another; stepping down");
                    break;
                }
                if let Some(renewed) = spec.renew_time {
                    let renewed = std::time::SystemTime::from(renewed.0);
                    // Our own clock wrote renewTime: its age is trustworthy here.
                    let age = std::time::SystemTime::now()
                        .duration_since(renewed)
                        .unwrap_or_default();
                    valid_until = Instant::now().checked_sub(age).unwrap_or_else(Instant::now)
                        + duration
                        - margin;
                }
            }
            Ok(Ok(None)) => {
                tracing::warn!("the Lease is gone; stepping down");
                break;
            }
            // Not confirmed this time; the deadline decides.
            Ok(Err(_)) | Err(_) => {}
        }
        if Instant::now() >= valid_until {
            tracing::warn!(
                "cannot confirm the Lease before it may expire (control plane unreachable?); \
                 stepping down so that a standby can lead"
            );
            break;
        }
    }
    lost.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_differ_even_with_one_hostname_and_pid() {
        let a = identity();
        let b = identity();
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())), "{a}");
    }
}
