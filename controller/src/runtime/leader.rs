//! Leader election: only the holder of the Lease reconciles, and it steps
//! down before the Lease could expire when it cannot confirm it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::Api;
use tokio_util::sync::CancellationToken;

use super::service::run_until;
use super::{Resources, Setup};

/// Holds the Lease while reconciling; returns when leadership is lost or
/// `stop` fires, having released the Lease.
pub(super) async fn lead(
    setup: &Arc<Setup>,
    resources: &Resources,
    stop: &CancellationToken,
) -> Result<(), String> {
    let secs = i64::try_from(setup.args.leader_election_duration.as_secs().max(2)).unwrap_or(15);
    let identity = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .map(|h| format!("{h}-{}", std::process::id()))
        .unwrap_or_else(|| format!("robot-controller-{}", rand::random::<u32>()));
    let manager = kube_lease_manager::LeaseManagerBuilder::new(
        setup.client(),
        &setup.args.leader_election_name,
    )
    .with_namespace(&setup.args.leader_election_namespace)
    .with_identity(&identity)
    .with_duration(secs.unsigned_abs())
    // Renew halfway through the lease, so that a renewal has time to be
    // seen by `confirm_leadership` before the lease could expire.
    .with_grace((secs / 2).max(1).unsigned_abs())
    .build()
    .await
    .map_err(|e| format!("cannot use Lease {}: {e}", setup.args.leader_election_name))?;
    let (mut leader, task) = manager.watch().await;
    setup.health.set("watch", None);
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
    let term = stop.child_token();
    let lost = {
        let term = term.clone();
        let mut leader = leader.clone();
        tokio::spawn(async move {
            while leader.changed().await.is_ok() {
                if !*leader.borrow_and_update() {
                    tracing::warn!("leadership lost; stopping reconciles");
                    break;
                }
            }
            term.cancel();
        })
    };
    let confirming = tokio::spawn(confirm_leadership(
        setup.client(),
        setup.args.leader_election_namespace.clone(),
        setup.args.leader_election_name.clone(),
        identity.clone(),
        Duration::from_secs(secs.unsigned_abs()),
        term.clone(),
    ));
    let stepped_down = {
        let term = term.clone();
        let metrics = setup.metrics.clone();
        tokio::spawn(async move {
            term.cancelled().await;
            metrics.leader.set(0);
        })
    };
    let result = run_until(setup, resources, term.clone()).await;
    term.cancel();
    lost.abort();
    confirming.abort();
    let _ = stepped_down.await;
    setup.metrics.leader.set(0);
    drop(leader);
    // Dropping the channel releases the Lease, so a standby takes over now
    // rather than after the lease expires.
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    result.map_err(|e| e.to_string())
}

/// Cancels `term` (stepping down) unless the Lease can be confirmed as ours
/// in time. The lease manager reports a lost lease only once it can read
/// the Lease again, so a leader cut off from the control plane would go on
/// reconciling from its stale caches after the standby took over, undoing
/// the new leader's work. The Lease is valid until its renewTime plus its
/// duration; this steps down a quarter of the duration before that, and
/// renewals happen at half the duration, leaving a quarter to see them.
async fn confirm_leadership(
    client: kube::Client,
    namespace: String,
    name: String,
    identity: String,
    duration: Duration,
    term: CancellationToken,
) {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: Api<Lease> = Api::namespaced(client, &namespace);
    let check = (duration / 8).max(Duration::from_millis(250));
    let margin = duration / 4;
    // Just acquired: renewed a moment ago.
    let mut valid_until = Instant::now() + duration - margin;
    loop {
        tokio::select! {
            _ = term.cancelled() => return,
            _ = tokio::time::sleep(check) => {}
        }
        match tokio::time::timeout(check, leases.get_opt(&name)).await {
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
    term.cancel();
}
