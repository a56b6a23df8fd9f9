//! `run`: the long-lived service. Serves health and metrics, keeps the
//! credentials fresh, waits for the CRDs, then runs the controllers (under
//! leader election when asked) until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::telemetry::{Health, Metrics};

use super::controllers::run_controllers;
use super::leader::lead;
use super::{EXIT_CONFIG, Resources, Setup};

/// `run`: the long-lived service.
pub async fn run(args: RunArgs) -> ExitCode {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    health.set("watch", Some("starting".into()));
    let setup = match Setup::new(args, metrics.clone(), health.clone()).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let stop = CancellationToken::new();
    let exit = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));
    let addr = setup.args.health_addr();
    let serving = {
        let exit = exit.clone();
        tokio::spawn(crate::telemetry::serve(
            addr,
            metrics.clone(),
            health.clone(),
            async move { exit.cancelled().await },
        ))
    };
    setup.keep_credentials_fresh(&exit);
    tracing::info!(
        source = setup.control_plane.source(),
        leader_election = setup.args.leader_election,
        "robot-controller starting"
    );

    while !stop.is_cancelled() {
        let Some(generation) = setup.wait_for_crds(&stop).await else {
            break;
        };
        let resources = Resources::of(generation);
        if !setup.args.leader_election {
            if let Err(e) = run_until(&setup, &resources, stop.clone()).await {
                tracing::error!(error = %e, "controllers stopped");
            }
            break;
        }
        if let Err(e) = lead(&setup, &resources, &stop).await {
            tracing::warn!(error = %e, "leader election failed; retrying");
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }
    tracing::info!("stopped");
    exit.cancel();
    let _ = serving.await;
    ExitCode::SUCCESS
}

/// Runs the controllers until `stop`; then in-flight reconciles get
/// --shutdown-timeout to finish. One stuck on a control plane that does not
/// answer (its requests have no timeout) is abandoned, as a crash would
/// abandon it, which the reconciler is built to survive; waiting for it
/// would outlive the platform's grace period and end in SIGKILL anyway.
pub(super) async fn run_until(
    setup: &Arc<Setup>,
    resources: &Resources,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let shutdown_timeout = setup.args.shutdown_timeout;
    tokio::select! {
        result = run_controllers(setup, resources, stop.clone()) => result,
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(shutdown_timeout).await;
        } => {
            tracing::warn!("in-flight reconciles did not finish within --shutdown-timeout; abandoned");
            Ok(())
        }
    }
}

async fn cancel_on_signal(stop: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        } else {
            let _ = ctrl_c.await;
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing in-flight reconciles");
    stop.cancel();
}
