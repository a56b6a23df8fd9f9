//! A managed kind is a registered unit: a kind-agnostic fake kind, defined
//! here and nowhere in the product, goes through the same list and the same
//! runtime as the Robots (the service, in process), against the real
//! control plane. Its CRD is generated from its Rust type and installed
//! after the service started: the supervisor picks it up.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::DynamicObject;
use kube::{CustomResource, CustomResourceExt};
use robot_controller::api::{Family, Generation};
use robot_controller::cli::Cli;
use robot_controller::managed::types::NamespacedResourceSpec;
use robot_controller::managed::{
    CommonSpec, ConnectionDetails, Connector, ExternalClient, ExternalError, Managed, ManagedKind,
    ManagedSpec, ManagedStatus, Observation, ResourceStatus, meta,
};
use robot_controller::provider::{Deps, ProviderConfigObject};
use robot_controller::runtime::{Kind, Registered};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use testenv::wait_for;
use tokio_util::sync::CancellationToken;

use crate::support::{CONVERGE, Env};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GadgetParameters {
    pub size: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GadgetStatus {
    #[serde(flatten)]
    pub resource: ResourceStatus,
}

impl ManagedStatus for GadgetStatus {
    fn resource_status(&self) -> &ResourceStatus {
        &self.resource
    }
    fn resource_status_mut(&mut self) -> &mut ResourceStatus {
        &mut self.resource
    }
    fn observation_differs(&self, _: &Self) -> bool {
        false
    }
}

/// A Gadget: the fake kind, namespaced, in a group of its own.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gadget.dummy.m.crossplane.io",
    version = "v1alpha1",
    kind = "Gadget",
    namespaced,
    status = "GadgetStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct GadgetSpec {
    #[serde(flatten)]
    pub resource: NamespacedResourceSpec,
    pub for_provider: GadgetParameters,
}

impl ManagedSpec for GadgetSpec {
    fn common(&self) -> CommonSpec<'_> {
        self.resource.common()
    }
}

type GadgetObject = Managed<GadgetSpec, GadgetStatus>;

/// The fake external system: gadgets by name.
fn gadgets() -> &'static Mutex<HashMap<String, String>> {
    static WORLD: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    WORLD.get_or_init(Mutex::default)
}

struct GadgetConnector;
struct GadgetClient;

impl Connector<GadgetSpec, GadgetStatus> for GadgetConnector {
    type Config = ProviderConfigObject;
    type Client = GadgetClient;
    fn connect(
        &self,
        _: &GadgetObject,
        _: &ProviderConfigObject,
    ) -> Result<GadgetClient, ExternalError> {
        Ok(GadgetClient)
    }
    fn target(&self, config: &ProviderConfigObject) -> Option<String> {
        Some(config.spec.endpoint.clone())
    }
}

impl ExternalClient<GadgetSpec, GadgetStatus> for GadgetClient {
    async fn observe(
        &self,
        mr: &GadgetObject,
        _: &mut GadgetStatus,
    ) -> Result<Observation, ExternalError> {
        let world = gadgets().lock().unwrap();
        Ok(match world.get(&meta::external_name(&mr.metadata)) {
            None => Observation::default(),
            Some(size) => Observation {
                exists: true,
                up_to_date: *size == mr.spec.for_provider.size,
                connection_details: ConnectionDetails::new(),
            },
        })
    }
    async fn create(&self, mr: &GadgetObject) -> Result<ConnectionDetails, ExternalError> {
        gadgets().lock().unwrap().insert(
            meta::external_name(&mr.metadata),
            mr.spec.for_provider.size.clone(),
        );
        Ok(ConnectionDetails::new())
    }
    async fn update(&self, mr: &GadgetObject) -> Result<ConnectionDetails, ExternalError> {
        self.create(mr).await
    }
    async fn delete(&self, mr: &GadgetObject) -> Result<(), ExternalError> {
        gadgets()
            .lock()
            .unwrap()
            .remove(&meta::external_name(&mr.metadata));
        Ok(())
    }
}

/// The fake kind's registration: the one module a new kind adds.
struct FakeGadget;

impl ManagedKind for FakeGadget {
    type Spec = GadgetSpec;
    type Status = GadgetStatus;
    type Connector = GadgetConnector;
    type Deps = Deps;
    const KIND: &'static str = "Gadget";
    const PLURAL: &'static str = "gadgets";
    const SERVICE: &'static str = "gadget";
    const GENERATION: Generation = Generation::Namespaced;
    const EXTERNAL_SPACE: &'static str = "gadget";
    fn crd(_: Family) -> CustomResourceDefinition {
        Gadget::crd()
    }
    fn connector(_: &Deps) -> GadgetConnector {
        GadgetConnector
    }
}

/// The list, as a provider with Robots and Gadgets would have it: the
/// product's kinds plus one entry.
static KINDS: &[&dyn Registered] = &[
    &Kind::<robot_controller::kinds::robot::legacy::LegacyRobot>::NEW,
    &Kind::<robot_controller::kinds::robot::namespaced::NamespacedRobot>::NEW,
    &Kind::<FakeGadget>::NEW,
];

#[tokio::test]
async fn a_fake_kind_goes_through_the_same_list_and_runtime() {
    let env = Env::start().await;
    env.namespace("lab").await;
    let health = testenv::process::free_port(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        .expect("free port");
    let kubeconfig = env.cp.admin_kubeconfig_path().to_str().unwrap().to_owned();
    let health_listen = format!("127.0.0.1:{health}");
    let cli = Cli::try_parse_from([
        "robot-controller",
        "--kubeconfig-source",
        &kubeconfig,
        "--allowed-endpoints",
        env.server.url(),
        "--health-listen",
        &health_listen,
        "--poll-interval",
        "2s",
    ])
    .expect("flags");
    let stop = CancellationToken::new();
    let service = tokio::spawn(robot_controller::runtime::serve(
        cli.run,
        KINDS,
        stop.clone(),
    ));

    // Robots work as ever beside it.
    env.create_robot("r", "red", json!({})).await;
    env.wait_ready("r").await;

    // The Gadget CRD arrives later; the supervisor starts its controller.
    let crds: Api<CustomResourceDefinition> = Api::all(env.admin.clone());
    crds.create(&PostParams::default(), &Gadget::crd())
        .await
        .expect("install the Gadget CRD");
    let ar = FakeGadget::api_resource(Family::Crossplane);
    let gadget_api = Api::<DynamicObject>::namespaced_with(env.admin.clone(), "lab", &ar);
    let gadget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": ar.api_version,
        "kind": "Gadget",
        "metadata": { "name": "g1", "namespace": "lab" },
        "spec": { "forProvider": { "size": "large" } },
    }))
    .unwrap();
    // The CRD may take a moment to be served.
    wait_for("the Gadget is accepted", CONVERGE, || async {
        gadget_api
            .create(&PostParams::default(), &gadget)
            .await
            .ok()
    })
    .await
    .unwrap();
    wait_for("the Gadget is Ready and Synced", CONVERGE, || async {
        let g = gadget_api.get("g1").await.ok()?;
        let conditions = g.data["status"]["conditions"].as_array()?.clone();
        let is = |t: &str| {
            conditions
                .iter()
                .any(|c| c["type"] == t && c["status"] == "True")
        };
        (is("Ready") && is("Synced")).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        gadgets().lock().unwrap().get("g1").map(String::as_str),
        Some("large")
    );

    // Finalized and deleted like any managed resource.
    gadget_api
        .delete("g1", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the Gadget is gone", CONVERGE, || async {
        gadget_api.get_opt("g1").await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
    assert!(gadgets().lock().unwrap().get("g1").is_none());

    stop.cancel();
    let code = tokio::time::timeout(CONVERGE, service)
        .await
        .expect("stops")
        .expect("joins");
    assert_eq!(code, std::process::ExitCode::SUCCESS);
}
