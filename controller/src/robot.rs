//! The Robot managed resource: its spec and status, and its external client
//! over the robot server's HTTP API. Everything Crossplane-generic is in
//! [`crate::managed`]; this file is all a second kind would need to add.

use std::sync::Arc;

use tokio::sync::Notify;

use kube::CustomResource;
use robot_api::{AuthHeader, Authorizer, Robot as WireRobot, RobotClient};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::endpoints::AllowedEndpoints;
use crate::managed::{
    ConnectionDetails, Connector, ExternalClient, ExternalError, Managed, ManagedSpec,
    ManagedStatus, Observation, ResourceSpec, ResourceStatus, meta,
};
use crate::providerconfig::ProviderConfigObject;

/// A RobotSpec defines the desired state of a Robot.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "iam.dummy.crossplane.io",
    version = "v1alpha1",
    kind = "Robot",
    root = "RobotCrd",
    status = "RobotStatus",
    category = "crossplane",
    category = "managed",
    category = "dummy",
    doc = "A Robot is an example API type.",
    printcolumn = r#"{"name": "READY", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].status"}"#,
    printcolumn = r#"{"name": "SYNCED", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Synced')].status"}"#,
    printcolumn = r#"{"name": "EXTERNAL-NAME", "type": "string", "jsonPath": ".metadata.annotations.crossplane\\.io/external-name"}"#,
    printcolumn = r#"{"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RobotSpec {
    #[serde(flatten)]
    pub resource: ResourceSpec,
    /// RobotParameters are the configurable fields of a Robot.
    pub for_provider: RobotParameters,
}

/// RobotParameters are the configurable fields of a Robot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RobotParameters {
    /// Color is the color of the robot.
    pub color: String,
}

/// A RobotStatus represents the observed state of a Robot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RobotStatus {
    #[serde(flatten)]
    pub resource: ResourceStatus,
    /// RobotObservation are the observable fields of a Robot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_provider: Option<RobotObservation>,
}

/// RobotObservation are the observable fields of a Robot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RobotObservation {
    /// Color is the robot's color as the robot server holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

/// A Robot of either API generation.
pub type RobotObject = Managed<RobotSpec, RobotStatus>;

impl ManagedSpec for RobotSpec {
    fn resource_spec(&self) -> &ResourceSpec {
        &self.resource
    }
}

impl ManagedStatus for RobotStatus {
    fn resource_status(&self) -> &ResourceStatus {
        &self.resource
    }
    fn resource_status_mut(&mut self) -> &mut ResourceStatus {
        &mut self.resource
    }
    fn observation_differs(&self, stored: &Self) -> bool {
        let stored = stored.at_provider.as_ref().and_then(|o| o.color.as_ref());
        let ours = self.at_provider.as_ref().and_then(|o| o.color.as_ref());
        stored.is_some() && stored != ours
    }
}

/// Connects Robots to the robot server their ProviderConfig names.
pub struct RobotConnector {
    http: reqwest::Client,
    auth: Option<AuthHeader>,
    allowed: Arc<AllowedEndpoints>,
    /// Told when the server refuses our token, so it is re-read at once.
    refused: Option<Arc<Notify>>,
    /// Per-server credentials; replaces `auth` when set.
    authorizer: Option<Arc<dyn Authorizer>>,
}

impl RobotConnector {
    pub fn new(
        http: reqwest::Client,
        auth: Option<AuthHeader>,
        allowed: Arc<AllowedEndpoints>,
        refused: Option<Arc<Notify>>,
    ) -> Self {
        Self {
            http,
            auth,
            allowed,
            refused,
            authorizer: None,
        }
    }

    /// Asks `authorizer` for each server's credentials (an ID token whose
    /// audience is that server).
    pub fn with_authorizer(mut self, authorizer: Option<Arc<dyn Authorizer>>) -> Self {
        self.authorizer = authorizer;
        self
    }
}

impl Connector<RobotSpec, RobotStatus> for RobotConnector {
    type Config = ProviderConfigObject;
    type Client = RobotExternal;

    fn connect(
        &self,
        _mr: &RobotObject,
        config: &ProviderConfigObject,
    ) -> Result<RobotExternal, ExternalError> {
        let endpoint = config.spec.endpoint.trim();
        if endpoint.is_empty() {
            return Err(ExternalError::new(
                "the ProviderConfig has no spec.endpoint",
            ));
        }
        let mut client = RobotClient::new(self.http.clone(), endpoint, self.auth.clone())
            .map_err(|e| ExternalError::new(e.to_string()))?;
        if let Some(authorizer) = &self.authorizer {
            client = client.with_authorizer(authorizer.clone());
        }
        self.allowed.check(endpoint).map_err(ExternalError::new)?;
        Ok(RobotExternal {
            client,
            endpoint: endpoint.to_owned(),
            refused: self.refused.clone(),
        })
    }
}

/// The robot server, as seen by one Robot.
pub struct RobotExternal {
    client: RobotClient,
    endpoint: String,
    refused: Option<Arc<Notify>>,
}

impl RobotExternal {
    fn wire(mr: &RobotObject) -> WireRobot {
        WireRobot::new(
            meta::external_name(&mr.metadata),
            mr.spec.for_provider.color.clone(),
        )
    }

    fn external(&self, e: robot_api::Error) -> ExternalError {
        if let (robot_api::Error::Unauthorized { .. }, Some(refused)) = (&e, &self.refused) {
            refused.notify_one();
        }
        ExternalError::new(e.to_string())
    }

    fn details(&self, robot: &WireRobot) -> ConnectionDetails {
        ConnectionDetails::from([
            ("endpoint".to_owned(), self.endpoint.as_bytes().to_vec()),
            ("name".to_owned(), robot.name.as_bytes().to_vec()),
            ("color".to_owned(), robot.color.as_bytes().to_vec()),
        ])
    }
}

impl ExternalClient<RobotSpec, RobotStatus> for RobotExternal {
    async fn observe(
        &self,
        mr: &RobotObject,
        status: &mut RobotStatus,
    ) -> Result<Observation, ExternalError> {
        let desired = Self::wire(mr);
        // Only a 404 reads as "does not exist"; any other trouble is an error.
        let Some(found) = self
            .client
            .get(&desired.name)
            .await
            .map_err(|e| self.external(e))?
        else {
            return Ok(Observation::default());
        };
        status.at_provider = Some(RobotObservation {
            color: Some(found.color.clone()),
        });
        Ok(Observation {
            exists: true,
            up_to_date: found.color == desired.color,
            connection_details: self.details(&found),
        })
    }

    async fn create(&self, mr: &RobotObject) -> Result<ConnectionDetails, ExternalError> {
        let robot = Self::wire(mr);
        match self.client.create(&robot).await {
            // Names are deterministic: an existing robot of this name is the
            // one to manage; the next observe brings its color in line.
            Ok(()) | Err(robot_api::Error::AlreadyExists) => Ok(self.details(&robot)),
            Err(e) => Err(self.external(e)),
        }
    }

    async fn update(&self, mr: &RobotObject) -> Result<ConnectionDetails, ExternalError> {
        let robot = Self::wire(mr);
        self.client
            .update(&robot.name, &robot)
            .await
            .map_err(|e| self.external(e))?;
        Ok(self.details(&robot))
    }

    async fn delete(&self, mr: &RobotObject) -> Result<(), ExternalError> {
        // Gone already counts as deleted.
        self.client
            .delete(&meta::external_name(&mr.metadata))
            .await
            .map(|_| ())
            .map_err(|e| self.external(e))
    }
}
