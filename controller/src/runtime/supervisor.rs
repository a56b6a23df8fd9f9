//! Serves whatever the control plane has, as it changes: both generations
//! at once when both are installed, and each kind as soon as its CRD is
//! served. A CRD that is missing at start (under safe-start, a managed
//! resource definition that is not active yet), that appears later, or
//! that is removed never stops the process: the kind's controller starts
//! when its CRD appears and stops when it goes, and `/readyz` lists the
//! kinds that wait and why.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::core::{DynamicObject, PartialObjectMeta};
use kube::runtime::reflector;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{Family, Generation};
use crate::managed::inuse::ConfigKind;
use crate::telemetry::Check;

use super::registry::{GenerationShared, KindContext};
use super::{Served, Setup, controllers, discover};

/// How often discovery is asked again: the longest a new CRD waits.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);

struct Unit {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Unit {
    fn spawn(
        stop: CancellationToken,
        f: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        Self {
            stop,
            task: tokio::spawn(f),
        }
    }

    async fn shut_down(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

/// A unit dropped without a shutdown (abandoned after --shutdown-timeout,
/// or on loss of leadership) stops at once: nothing it spawned runs on.
impl Drop for Unit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct RunningGeneration {
    family: Family,
    unit: Unit,
    shared: Arc<GenerationShared>,
    /// By index in the setup's list of kinds.
    kinds: HashMap<usize, Unit>,
}

/// Runs until `stop`; then stops every controller, letting in-flight
/// reconciles finish (the caller bounds how long).
pub(super) async fn supervise(setup: &Arc<Setup>, stop: CancellationToken) {
    let mut running: HashMap<Generation, RunningGeneration> = HashMap::new();
    let mut warned_both = false;
    loop {
        match discover(&setup.client()).await {
            Ok(served) => {
                apply(setup, &served, &mut running, &stop, &mut warned_both).await;
            }
            // Keep what runs: its watches retry on their own.
            Err(e) => setup.health.set(
                Check::Crds,
                Some(format!("cannot read the control plane's discovery: {e}")),
            ),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(DISCOVERY_INTERVAL) => {}
        }
    }
    for (_, generation) in running.drain() {
        stop_generation(generation).await;
    }
}

async fn stop_generation(generation: RunningGeneration) {
    // Kinds first (they use the generation's caches), all at once.
    let stops: Vec<_> = generation
        .kinds
        .into_values()
        .map(Unit::shut_down)
        .collect();
    futures::future::join_all(stops).await;
    generation.unit.shut_down().await;
}

async fn apply(
    setup: &Arc<Setup>,
    served: &Served,
    running: &mut HashMap<Generation, RunningGeneration>,
    stop: &CancellationToken,
    warned_both: &mut bool,
) {
    let forced = setup.args.api_group.forced();
    for generation in Generation::ALL {
        let family = served.family_for(generation, forced);
        if forced.is_none()
            && !*warned_both
            && Family::ALL
                .iter()
                .all(|f| served.has_generation(generation, *f))
        {
            *warned_both = true;
            tracing::warn!(
                "the control plane serves both dummy.crossplane.io and dummy.upbound.io; \
                 serving dummy.crossplane.io (choose with --api-group)"
            );
        }
        // A generation whose config kinds went (or changed family) stops.
        if let Some(r) = running.get(&generation)
            && (Some(r.family) != family || r.unit.task.is_finished())
            && let Some(r) = running.remove(&generation)
        {
            tracing::warn!(
                %generation,
                group = %generation.provider_group(r.family),
                "the control plane no longer serves these ProviderConfig kinds; stopping their controllers"
            );
            stop_generation(r).await;
        }
        let Some(family) = family else {
            continue;
        };
        let r = running
            .entry(generation)
            .or_insert_with(|| start_generation(setup, family, generation, stop));
        for (index, kind) in setup.kinds.iter().enumerate() {
            if kind.generation() != generation {
                continue;
            }
            let id = kind.id(family);
            let ar = kind.api_resource(family);
            let is_served = served.has(&ar);
            let finished = r.kinds.get(&index).is_some_and(|u| u.task.is_finished());
            if (!is_served || finished)
                && let Some(unit) = r.kinds.remove(&index)
            {
                if !is_served {
                    tracing::warn!(kind = %id, "the control plane no longer serves this kind; its controller stopped");
                }
                unit.shut_down().await;
            }
            if is_served && !r.kinds.contains_key(&index) {
                tracing::info!(kind = %id, "the control plane serves this kind; starting its controller");
                setup.health.clear(|c| *c == Check::Waiting(id.clone()));
                let token = stop.child_token();
                let ctx = KindContext {
                    setup: setup.clone(),
                    shared: r.shared.clone(),
                    stop: token.clone(),
                };
                r.kinds.insert(index, Unit::spawn(token, kind.run(ctx)));
            }
        }
    }
    report(setup, served, running, forced);
}

fn start_generation(
    setup: &Arc<Setup>,
    family: Family,
    generation: Generation,
    stop: &CancellationToken,
) -> RunningGeneration {
    tracing::info!(%generation, group = %generation.provider_group(family), "serving this generation's ProviderConfig kinds");
    let usage_writer = reflector::store::Writer::<PartialObjectMeta<DynamicObject>>::new(
        ConfigKind::usage_resource(generation, family),
    );
    let shared = Arc::new(GenerationShared {
        family,
        generation,
        usages: usage_writer.as_reader(),
        config_changes: tokio::sync::broadcast::channel(1024).0,
    });
    let token = stop.child_token();
    let unit = Unit::spawn(
        token.clone(),
        controllers::run_generation(setup.clone(), shared.clone(), usage_writer, token),
    );
    RunningGeneration {
        family,
        unit,
        shared,
        kinds: HashMap::new(),
    }
}

/// `/readyz`: no generation at all is a failure; a kind that waits for its
/// CRD is a note.
fn report(
    setup: &Setup,
    served: &Served,
    running: &HashMap<Generation, RunningGeneration>,
    forced: Option<Family>,
) {
    if running.is_empty() {
        setup.health.set(
            Check::Crds,
            Some(
                "the control plane serves no provider-dummy CRDs (Robot, ProviderConfig) yet"
                    .into(),
            ),
        );
    } else {
        setup.health.set(Check::Crds, None);
    }
    let shown_family = forced
        .or_else(|| running.values().map(|r| r.family).next())
        .unwrap_or(Family::Crossplane);
    let mut notes = Vec::new();
    for kind in setup.kinds {
        let generation = kind.generation();
        let family = running
            .get(&generation)
            .map(|r| r.family)
            .unwrap_or(shown_family);
        let id = kind.id(family);
        let ar = kind.api_resource(family);
        let why = if !running.contains_key(&generation) {
            Some(format!(
                "the control plane serves no {} ProviderConfig kinds yet",
                generation.provider_group(family)
            ))
        } else if !served.has(&ar) {
            Some(format!(
                "the control plane does not serve {}/{} (CRD not installed, or its ManagedResourceDefinition not active)",
                ar.plural, ar.api_version
            ))
        } else {
            None
        };
        if let Some(why) = why {
            notes.push((id, why));
        }
    }
    // Replaced whole: a family change must not leave stale lines behind.
    setup.health.clear(|c| matches!(c, Check::Waiting(_)));
    for (id, why) in notes {
        setup.health.set(Check::Waiting(id), Some(why));
    }
}
