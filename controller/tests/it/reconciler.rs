//! The generic reconciler with the real control-plane side (its
//! `KubeWriter` against the real API server) and an in-memory external
//! client: what only a real apiserver shows (merge patches, the order of
//! writes as another reader sees it). The decisions themselves are the
//! case table in `managed::reconciler_tests`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::core::ObjectMeta;
use robot_controller::api::{Family, Generation};
use robot_controller::kinds::robot::legacy::{LegacyRobot, RobotObject, RobotSpec};
use robot_controller::kinds::robot::{RobotObservation, RobotStatus};
use robot_controller::managed::claims::Claims;
use robot_controller::managed::events::Events;
use robot_controller::managed::inuse::ConfigKind;
use robot_controller::managed::kube_writer::KubeWriter;
use robot_controller::managed::{
    ConfigKey, ConnectionDetails, Connector, ExternalClient, ExternalError, ManagedKind,
    Observation, Reconciler, ReconcilerConfig, SyncState, meta,
};
use robot_controller::provider::ProviderConfigObject;
use robot_controller::provider::types::ProviderConfigSpec;
use robot_controller::ratelimit::RateLimiter;
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

/// The legacy Robot's types and group, with the fake external system.
struct FakeRobot;

impl ManagedKind for FakeRobot {
    type Spec = RobotSpec;
    type Status = RobotStatus;
    type Connector = Fake;
    type Deps = Fake;
    const KIND: &'static str = "Robot";
    const PLURAL: &'static str = "robots";
    const SERVICE: &'static str = "iam";
    const GENERATION: Generation = Generation::Legacy;
    const EXTERNAL_SPACE: &'static str = "robot";
    fn crd(family: Family) -> CustomResourceDefinition {
        LegacyRobot::crd(family)
    }
    fn connector(fake: &Fake) -> Fake {
        fake.clone()
    }
}

impl Connector<RobotSpec, RobotStatus> for Fake {
    type Config = ProviderConfigObject;
    type Client = Fake;
    fn connect(&self, _: &RobotObject, _: &ProviderConfigObject) -> Result<Fake, ExternalError> {
        Ok(self.clone())
    }
    fn target(&self, config: &ProviderConfigObject) -> Option<String> {
        Some(config.spec.endpoint.clone())
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
            return Err(ExternalError::transient(e.clone()));
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
    reconciler: Reconciler<FakeRobot, KubeWriter>,
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
        let family = env.res.family;
        let events = Events::new(env.admin.clone(), "robot-tests");
        let reconciler = Reconciler::new(
            family,
            fake.clone(),
            Arc::new(move |key: &ConfigKey| (key.name == "default").then(|| pc.clone())),
            Arc::new(Claims::default()),
            KubeWriter::new(
                env.admin.clone(),
                FakeRobot::api_resource(family),
                ConfigKind::usage_resource(Generation::Legacy, family),
                None,
                events,
            ),
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
    assert_eq!(
        at_create
            .annotations
            .unwrap()
            .get(meta::EXTERNAL_NAME)
            .map(String::as_str),
        Some("r")
    );

    let robot = rig.env.robot("r").await.unwrap();
    assert_eq!(
        annotation(&robot, meta::CREATE_SUCCEEDED),
        None,
        "no bookkeeping"
    );
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
