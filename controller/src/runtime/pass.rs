//! One pass over every Robot, without watches: `once`, and each Lambda
//! invocation.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::core::{DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::{self};
use kube::runtime::watcher;
use serde::Serialize;

use crate::cli::RunArgs;
use crate::managed::events::Events;
use crate::managed::{ConfigLookup, ReconcilerConfig, SyncState};
use crate::providerconfig::{InUseReconciler, ProviderConfigObject};
use crate::robot::RobotObject;

use super::{EXIT_CONFIG, Resources, Setup};

/// What one pass over every Robot found (`once`, and each Lambda
/// invocation's answer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PassSummary {
    pub robots_seen: usize,
    pub synced: usize,
    pub failed: usize,
    pub paused: usize,
    pub deleted: usize,
    pub duration_ms: u128,
    /// Names of Robots not synced, with their reason (first ten).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl PassSummary {
    pub fn ok(&self) -> bool {
        self.failed == 0
    }
}

/// One pass: every Robot reconciled once (retried on a stale view), then
/// every ProviderConfig's users counted.
pub async fn pass(setup: &Setup) -> anyhow::Result<PassSummary> {
    let started = Instant::now();
    let Some(generation) = setup.discover().await? else {
        anyhow::bail!("the control plane serves no provider-dummy CRDs (Robot, ProviderConfig)");
    };
    let res = Resources::of(generation);
    let client = setup.client();

    let pcs: Api<ProviderConfigObject> = Api::all_with(client.clone(), &res.provider_config);
    let configs: HashMap<String, Arc<ProviderConfigObject>> = pcs
        .list(&ListParams::default())
        .await?
        .into_iter()
        .map(|pc| (pc.name_any(), Arc::new(pc)))
        .collect();
    let configs = Arc::new(configs);
    let lookup: ConfigLookup<ProviderConfigObject> = {
        let configs = configs.clone();
        Arc::new(move |name: &str| configs.get(name).cloned())
    };
    let reconciler = setup.reconciler(&res, lookup, None);

    let robots: Api<RobotObject> = Api::all_with(client.clone(), &res.robot);
    let list = robots.list(&ListParams::default()).await?;
    let mut summary = PassSummary {
        robots_seen: list.items.len(),
        ..PassSummary::default()
    };
    let results: Vec<(String, Result<SyncState, String>)> = futures::stream::iter(list.items)
        .map(|robot| {
            let reconciler = &reconciler;
            let robots = &robots;
            async move {
                let name = robot.name_any();
                let mut current = Arc::new(robot);
                for _ in 0..5 {
                    match reconciler.reconcile(current.clone()).await {
                        Ok(o) if o.state == SyncState::Stale => match robots.get_opt(&name).await {
                            Ok(Some(fresh)) => current = Arc::new(fresh),
                            Ok(None) => return (name, Ok(SyncState::Done)),
                            Err(e) => return (name, Err(e.to_string())),
                        },
                        Ok(o) => return (name, Ok(o.state)),
                        Err(e) => return (name, Err(e.to_string())),
                    }
                }
                (
                    name,
                    Err("the Robot kept changing while being reconciled".into()),
                )
            }
        })
        .buffer_unordered(usize::from(setup.args.concurrency.max(1)))
        .collect()
        .await;
    for (name, result) in results {
        match result {
            Ok(SyncState::Synced) => summary.synced += 1,
            Ok(SyncState::Paused) => summary.paused += 1,
            Ok(SyncState::Done) => summary.deleted += 1,
            Ok(SyncState::Failed | SyncState::Stale) => {
                summary.failed += 1;
                if summary.failures.len() < 10 {
                    summary
                        .failures
                        .push(format!("{name}: {}", failure_reason(&robots, &name).await));
                }
            }
            Err(e) => {
                summary.failed += 1;
                if summary.failures.len() < 10 {
                    summary.failures.push(format!("{name}: {e}"));
                }
            }
        }
    }

    // Users of each ProviderConfig, from a fresh list of usages.
    let usage_api: Api<DynamicObject> = Api::all_with(client.clone(), &res.usage);
    let usages = usage_api.list_metadata(&ListParams::default()).await?;
    let writer =
        reflector::store::Writer::<PartialObjectMeta<DynamicObject>>::new(res.usage.clone());
    let store = writer.as_reader();
    let mut writer = writer;
    writer.apply_watcher_event(&watcher::Event::Init);
    for u in usages.items {
        writer.apply_watcher_event(&watcher::Event::InitApply(u));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let in_use = InUseReconciler::new(
        client.clone(),
        res.provider_config.clone(),
        store,
        Events::new(client, &ReconcilerConfig::default().controller_name),
    );
    for pc in configs.values() {
        in_use.reconcile(pc.clone()).await?;
    }

    summary.duration_ms = started.elapsed().as_millis();
    Ok(summary)
}

/// The Synced message of a Robot, for the pass summary.
async fn failure_reason(robots: &Api<RobotObject>, name: &str) -> String {
    robots
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|r| {
            r.status.and_then(|s| {
                crate::managed::conditions::get(
                    &s.resource.conditions,
                    crate::managed::conditions::TYPE_SYNCED,
                )
                .and_then(|c| c.message.clone())
            })
        })
        .unwrap_or_else(|| "not synced".into())
}

/// `once`: one pass, then exit 0 when every Robot is Synced.
pub async fn once(args: RunArgs) -> ExitCode {
    let setup = match Setup::new(args, Arc::default(), Arc::default()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match pass(&setup).await {
        Ok(summary) => {
            tracing::info!(
                robots = summary.robots_seen,
                synced = summary.synced,
                failed = summary.failed,
                paused = summary.paused,
                deleted = summary.deleted,
                duration_ms = summary.duration_ms as u64,
                "pass complete"
            );
            for f in &summary.failures {
                tracing::warn!(robot = %f, "not synced");
            }
            if summary.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "pass failed");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_serialize_for_lambda() {
        let s = PassSummary {
            robots_seen: 2,
            synced: 1,
            failed: 1,
            ..PassSummary::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["robots_seen"], 2);
        assert!(!s.ok());
    }
}
