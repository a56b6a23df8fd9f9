//! `run`: the long-lived service. Serves health and metrics, keeps the
//! credentials fresh, then serves the kinds the control plane has (under
//! leader election when asked) until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::telemetry::{Check, Health, Metrics};

use super::Setup;
use super::leader::lead;
use super::registry::Registered;
use super::supervisor::supervise;

/// `run`: the long-lived service, until SIGTERM or Ctrl-C.
pub async fn run(args: RunArgs, kinds: &'static [&'static dyn Registered]) -> ExitCode {
    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));
    serve(args, kinds, stop).await
}

/// The long-lived service until `stop` (in-process, for tests and
/// embedding).
pub async fn serve(
    args: RunArgs,
    kinds: &'static [&'static dyn Registered],
    stop: CancellationToken,
) -> ExitCode {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    health.set(Check::Crds, Some("starting".into()));
    let setup = match Setup::new(args, kinds, metrics.clone(), health.clone()).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(e.exit_code());
        }
    };
    let exit = CancellationToken::new();
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

    if !setup.args.leader_election {
        run_until(&setup, stop.clone()).await;
    } else {
        while !stop.is_cancelled() {
            if let Err(e) = lead(&setup, &stop).await {
                tracing::warn!(error = %e, "leader election failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    }
    tracing::info!("stopped");
    exit.cancel();
    let _ = serving.await;
    ExitCode::SUCCESS
}

/// Serves the kinds until `stop`; then in-flight reconciles get
/// --shutdown-timeout to finish. One stuck past that is abandoned, as a
/// crash would abandon it, which the reconciler is built to survive;
/// waiting for it would outlive the platform's grace period and end in
/// SIGKILL anyway.
pub(super) async fn run_until(setup: &Arc<Setup>, stop: CancellationToken) {
    let shutdown_timeout = setup.args.shutdown_timeout;
    tokio::select! {
        () = supervise(setup, stop.clone()) => {}
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(shutdown_timeout).await;
        } => {
            tracing::warn!("in-flight reconciles did not finish within --shutdown-timeout; abandoned");
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
