//! `lambda`: the AWS Lambda handler, one pass per invocation.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use crate::cli::RunArgs;
use crate::telemetry::Check;

use super::Setup;
use super::pass::{PassSummary, pass};
use super::registry::Registered;

/// `lambda`: each invocation (a schedule tick, or any event) runs one pass
/// and answers with its summary. Clients and credentials stay cached while
/// the function is warm, re-read after --secret-refresh-interval.
pub async fn lambda(args: RunArgs, kinds: &'static [&'static dyn Registered]) -> ExitCode {
    let setup = match Setup::new(args, kinds, Arc::default(), Arc::default()).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(e.exit_code());
        }
    };
    let last_refresh = Arc::new(tokio::sync::Mutex::new(Instant::now()));
    let handler = lambda_runtime::service_fn(
        move |_event: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let setup = setup.clone();
            let last_refresh = last_refresh.clone();
            async move {
                {
                    let mut last = last_refresh.lock().await;
                    if last.elapsed() >= setup.args.secret_refresh_interval {
                        if let Err(e) = setup.control_plane.refresh(false).await {
                            tracing::warn!(error = %e, "cannot re-read the kubeconfig; keeping the current one");
                        }
                        *last = Instant::now();
                    }
                }
                let summary = match pass(&setup).await {
                    Ok(s) => s,
                    Err(e) if setup.health.failing(&Check::Credentials) => {
                        // Refused credentials: re-read them now and try once more.
                        tracing::warn!(error = %e, "pass failed with refused credentials; re-reading them");
                        setup.control_plane.refresh(true).await?;
                        pass(&setup).await?
                    }
                    Err(e) => return Err(e.into()),
                };
                tracing::info!(
                    seen = summary.seen,
                    synced = summary.synced,
                    failed = summary.failed,
                    "pass complete"
                );
                Ok::<PassSummary, lambda_runtime::Error>(summary)
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
