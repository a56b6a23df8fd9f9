//! The generic reconciler, driven in-process against the real API server
//! with an in-memory external client (a fake of the external system only:
//! the Kubernetes side is real), so each step of the order of operations
//! can be checked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Api;
use kube::core::ObjectMeta;
use robot_controller::managed::usage::UsageTracker;
use robot_controller::managed::{
    ConnectionDetails, Connector, ExternalClient, ExternalError, Observation, Reconciler,
    ReconcilerConfig, SyncState, meta,
};
use robot_controller::providerconfig::{ProviderConfigObject, ProviderConfigSpec};
use robot_controller::ratelimit::RateLimiter;
use robot_controller::robot::{RobotObject, RobotObservation, RobotSpec, RobotStatus};
use serde_json::json;

use crate::support::{Env, annotation, condition};

/// What the fake external system holds and records.
#[derive(Default)]
struct World {
    robots: HashMap<String, String>,
    calls: Vec<String>,
    /// Fail the next observes with this message.
    observe_error: Option<String>,
    /// What the managed resource looked like in the API server at create.
    seen_at_create: Option<ObjectMeta>,
}

#[derive(Clone)]
struct Fake {
    world: Arc<Mutex<World>>,
    robots: Api<RobotObject>,
}

impl Fake {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }
}

impl Connector<RobotSpec, RobotStatus> for Fake {
    type Config = ProviderConfigObject;
    type Client = Fake;
    fn connect(&self, _: &RobotObject, _: &ProviderConfigObject) -> Result<Fake, ExternalError> {
        Ok(self.clone())
    }
}

impl ExternalClient<RobotSpec, RobotStatus> for Fake {
    async fn observe(
        &self,
        mr: &RobotObject,
        status: &mut RobotStatus,
    ) -> Result<Observation, ExternalError> {
        let mut w = self.world();
        w.calls.push("observe".into());
        if let Some(e) = &w.observe_error {
            return Err(ExternalError::new(e.clone()));
        }
        let name = meta::external_name(&mr.metadata);
        Ok(match w.robots.get(&name) {
            None => Observation::default(),
            Some(color) => {
                status.at_provider = Some(RobotObservation {
                    color: Some(color.clone()),
                });
                Observation {
                    exists: true,
                    up_to_date: *color == mr.spec.for_provider.color,
                    connection_details: ConnectionDetails::new(),
                }
            }
        })
    }

    async fn create(&self, mr: &RobotObject) -> Result<ConnectionDetails, ExternalError> {
        let stored = self
            .robots
            .get(&mr.metadata.name.clone().unwrap())
            .await
            .unwrap();
        let mut w = self.world();
        w.calls.push("create".into());
        w.seen_at_create = Some(stored.metadata);
        w.robots.insert(
            meta::external_name(&mr.metadata),
            mr.spec.for_provider.color.clone(),
        );
        Ok(ConnectionDetails::new())
    }

    async fn update(&self, mr: &RobotObject) -> Result<ConnectionDetails, ExternalError> {
        let mut w = self.world();
        w.calls.push("update".into());
        w.robots.insert(
            meta::external_name(&mr.metadata),
            mr.spec.for_provider.color.clone(),
        );
        Ok(ConnectionDetails::new())
    }

    async fn delete(&self, mr: &RobotObject) -> Result<(), ExternalError> {
        let mut w = self.world();
        w.calls.push("delete".into());
        w.robots.remove(&meta::external_name(&mr.metadata));
        Ok(())
    }
}

struct Rig {
    env: Env,
    fake: Fake,
    reconciler: Reconciler<RobotSpec, RobotStatus, Fake>,
}

impl Rig {
    async fn new() -> Rig {
        let env = Env::start().await;
        let fake = Fake {
            world: Arc::default(),
            robots: env.robots(),
        };
        let pc = Arc::new(ProviderConfigObject::new(
            "default",
            &env.res.provider_config,
            ProviderConfigSpec {
                endpoint: "http://unused".into(),
            },
        ));
        let reconciler = Reconciler::new(
            env.admin.clone(),
            env.res.robot.clone(),
            fake.clone(),
            Arc::new(move |name: &str| (name == "default").then(|| pc.clone())),
            "ProviderConfig".into(),
            UsageTracker::new(env.admin.clone(), env.res.usage.clone(), None),
            Arc::new(RateLimiter::per_second(0)),
            ReconcilerConfig::default(),
        );
        Rig {
            env,
            fake,
            reconciler,
        }
    }

    async fn reconcile(&self, name: &str) -> SyncState {
        let robot = self.env.robot(name).await.expect("robot exists");
        self.reconciler
            .reconcile(Arc::new(robot))
            .await
            .expect("reconcile")
            .state
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut self.fake.world().calls)
    }
}

#[tokio::test]
async fn create_follows_crossplanes_order() {
    let rig = Rig::new().await;
    rig.env.create_robot("r", "red", json!({})).await;

    assert_eq!(rig.reconcile("r").await, SyncState::Synced);
    assert_eq!(rig.calls(), ["observe", "create", "observe"]);
    let at_create = rig.fake.world().seen_at_create.clone().unwrap();
    assert!(
        meta::has_finalizer(&at_create, meta::FINALIZER),
        "finalizer before create"
    );
    assert!(
        meta::create_incomplete(&at_create),
        "pending recorded before create"
    );
    assert_eq!(
        at_create
            .annotations
            .unwrap()
            .get(meta::EXTERNAL_NAME)
            .map(String::as_str),
        Some("r")
    );

    let robot = rig.env.robot("r").await.unwrap();
    assert!(
        !meta::create_incomplete(&robot.metadata),
        "success recorded after create"
    );
    assert!(annotation(&robot, meta::CREATE_SUCCEEDED).is_some());
    assert_eq!(condition(&robot, "Ready").unwrap().reason, "Available");
    assert_eq!(
        condition(&robot, "Synced").unwrap().reason,
        "ReconcileSuccess"
    );

    // Nothing changed: a second reconcile observes and writes nothing.
    let version = robot.metadata.resource_version.clone();
    assert_eq!(rig.reconcile("r").await, SyncState::Synced);
    assert_eq!(rig.calls(), ["observe"]);
    assert_eq!(
        rig.env.robot("r").await.unwrap().metadata.resource_version,
        version
    );

    // A spec change is an update, not a create.
    rig.env.set_color("r", "blue").await;
    assert_eq!(rig.reconcile("r").await, SyncState::Synced);
    assert_eq!(rig.calls(), ["observe", "update"]);
    assert_eq!(rig.fake.world().robots["r"], "blue");
}

#[tokio::test]
async fn an_observe_error_is_never_read_as_absence() {
    let rig = Rig::new().await;
    rig.env.create_robot("r", "red", json!({})).await;
    rig.fake.world().observe_error = Some("connection refused".into());

    assert_eq!(rig.reconcile("r").await, SyncState::Failed);
    assert_eq!(rig.calls(), ["observe"], "no create on an observe error");
    let robot = rig.env.robot("r").await.unwrap();
    let synced = condition(&robot, "Synced").unwrap();
    assert_eq!(synced.reason, "ReconcileError");
    assert_eq!(
        synced.message.as_deref(),
        Some("observe failed: connection refused")
    );

    // Being deleted with the external system unreachable: the finalizer stays.
    rig.fake.world().observe_error = None;
    assert_eq!(rig.reconcile("r").await, SyncState::Synced);
    rig.calls();
    rig.fake.world().observe_error = Some("timed out".into());
    rig.env.delete_robot("r").await;
    assert_eq!(rig.reconcile("r").await, SyncState::Failed);
    assert_eq!(
        rig.calls(),
        ["observe"],
        "no delete, no finalize on an observe error"
    );
    let robot = rig.env.robot("r").await.expect("still there");
    assert!(meta::has_finalizer(&robot.metadata, meta::FINALIZER));

    // Reachable again: deleted outside, finalized.
    rig.fake.world().observe_error = None;
    assert_eq!(rig.reconcile("r").await, SyncState::Done);
    assert_eq!(rig.calls(), ["observe", "delete", "observe"]);
    assert!(rig.env.robot("r").await.is_none());
}

#[tokio::test]
async fn delete_of_a_missing_external_resource_just_finalizes() {
    let rig = Rig::new().await;
    rig.env.create_robot("r", "red", json!({})).await;
    assert_eq!(rig.reconcile("r").await, SyncState::Synced);
    rig.calls();
    rig.fake.world().robots.clear();
    rig.env.delete_robot("r").await;
    assert_eq!(rig.reconcile("r").await, SyncState::Done);
    assert_eq!(rig.calls(), ["observe"], "nothing to delete");
    assert!(rig.env.robot("r").await.is_none());
}

#[tokio::test]
async fn failures_back_off_exponentially_and_reset_on_success() {
    let rig = Rig::new().await;
    rig.env.create_robot("r", "red", json!({})).await;
    let uid = rig.env.robot("r").await.unwrap().metadata.uid.unwrap();
    let delays: Vec<_> = (0..6).map(|_| rig.reconciler.backoff(&uid)).collect();
    for pair in delays.windows(2).take(4) {
        assert!(pair[1] > pair[0], "{delays:?}");
    }
    assert!(delays[5] <= ReconcilerConfig::default().backoff_max.mul_f64(1.1));
    assert_eq!(rig.reconcile("r").await, SyncState::Synced);
    assert!(
        rig.reconciler.backoff(&uid) < delays[2],
        "reset after success"
    );
}
