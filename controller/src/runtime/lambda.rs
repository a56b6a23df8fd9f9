//! `lambda`: the AWS Lambda handler, one pass per invocation.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use lambda_runtime::Diagnostic;

use crate::cli::RunArgs;
use crate::telemetry::Check;

use super::Setup;
use super::pass::{PassSummary, pass};
use super::registry::Registered;

/// `lambda`: each invocation (a schedule tick, or any event) runs one pass
/// and answers with its summary. Clients and credentials stay cached while
/// the function is warm, re-read after --secret-refresh-interval.
///
/// Start-up (reading the kubeconfig, connecting) happens in the first
/// invocation, not before the runtime: a start-up failure is then the
/// invocation's error, with the same fixed message the log has (never a
/// secret), where `aws lambda invoke` and the function's Errors metric show
/// it; and the next invocation tries again, so a secret fixed meanwhile
/// needs no redeploy. Lambda's init phase (10 s) does not bound it either.
pub async fn lambda(args: RunArgs, kinds: &'static [&'static dyn Registered]) -> ExitCode {
    let started: Arc<tokio::sync::Mutex<Option<Arc<Setup>>>> = Arc::default();
    let last_refresh = Arc::new(tokio::sync::Mutex::new(Instant::now()));
    let handler = lambda_runtime::service_fn(
        move |_event: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let (args, started, last_refresh) =
                (args.clone(), started.clone(), last_refresh.clone());
            async move {
                let setup = {
                    let mut started = started.lock().await;
                    match &*started {
                        Some(s) => s.clone(),
                        None => {
                            let s = Setup::new(args, kinds, Arc::default(), Arc::default())
                                .await
                                .map(Arc::new)
                                .map_err(|e| {
                                    tracing::error!(error = %e, "cannot start");
                                    Diagnostic {
                                        error_type: if e.exit_code() == 1 {
                                            "RobotController.Unavailable"
                                        } else {
                                            "RobotController.Configuration"
                                        }
                                        .into(),
                                        error_message: format!("cannot start: {e}"),
                                    }
                                })?;
                            *last_refresh.lock().await = Instant::now();
                            *started = Some(s.clone());
                            s
                        }
                    }
                };
                invocation(&setup, &last_refresh).await.map_err(|e| {
                    tracing::error!(error = %e, "pass failed");
                    Diagnostic {
                        error_type: "RobotController.Pass".into(),
                        error_message: format!("{e:#}"),
                    }
                })
            }
        },
    );
    match lambda_runtime::run(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "lambda runtime stopped");
            ExitCode::FAILURE
        }
    }
}

/// One invocation on a started function: one pass.
async fn invocation(
    setup: &Arc<Setup>,
    last_refresh: &tokio::sync::Mutex<Instant>,
) -> anyhow::Result<PassSummary> {
    {
        let mut last = last_refresh.lock().await;
        if last.elapsed() >= setup.args.secret_refresh_interval {
            if let Err(e) = setup.control_plane.refresh(false).await {
                tracing::warn!(error = %e, "cannot re-read the kubeconfig; keeping the current one");
            }
            *last = Instant::now();
        }
    }
    let summary = match pass(setup).await {
        Ok(s) => s,
        Err(e) if setup.health.failing(&Check::Credentials) => {
            // Refused credentials: re-read them now and try once more.
            tracing::warn!(error = %e, "pass failed with refused credentials; re-reading them");
            setup.control_plane.refresh(true).await?;
            pass(setup).await?
        }
        Err(e) => return Err(e),
    };
    tracing::info!(
        seen = summary.seen,
        synced = summary.synced,
        failed = summary.failed,
        "pass complete"
    );
    Ok(summary)
}
