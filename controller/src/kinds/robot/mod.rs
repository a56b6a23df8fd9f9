//! The Robot managed resource, in both generations ([`legacy`]: the
//! cluster-scoped `iam.dummy.crossplane.io` Robot; [`namespaced`]: the
//! Crossplane v2 `iam.dummy.m.crossplane.io` Robot), and its external
//! client over the robot server's HTTP API, which both share. Everything
//! Crossplane-generic is in [`crate::managed`].

pub mod legacy;
pub mod namespaced;

use robot_api::{Robot as WireRobot, RobotClient};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::managed::{
    ConnectionDetails, Connector, ExternalClient, ExternalError, Managed, ManagedSpec,
    ManagedStatus, Observation, ResourceStatus, meta,
};
use crate::provider::{Deps, ProviderConfigObject};

/// Names shared by both Robot kinds: one robot server, one robot per name.
pub const EXTERNAL_SPACE: &str = "robot";

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

/// The spec of either Robot kind.
pub trait RobotSpec: ManagedSpec {
    fn for_provider(&self) -> &RobotParameters;
}

/// Connects Robots to the robot server their ProviderConfig names.
pub struct RobotConnector {
    deps: Deps,
}

impl RobotConnector {
    pub fn new(deps: &Deps) -> Self {
        Self { deps: deps.clone() }
    }
}

impl<S: RobotSpec> Connector<S, RobotStatus> for RobotConnector {
    type Config = ProviderConfigObject;
    type Client = RobotExternal;

    fn connect(
        &self,
        _mr: &Managed<S, RobotStatus>,
        config: &ProviderConfigObject,
    ) -> Result<RobotExternal, ExternalError> {
        let endpoint = config.spec.endpoint.trim();
        if endpoint.is_empty() {
            return Err(ExternalError::permanent(
                "the ProviderConfig has no spec.endpoint",
            ));
        }
        // Both checks before anything is sent: the URL's shape, then the
        // allowlist.
        let mut client = RobotClient::new(self.deps.http.clone(), endpoint, self.deps.auth.clone())
            .map_err(|e| ExternalError::permanent(e.to_string()))?;
        self.deps
            .allowed
            .check(endpoint)
            .map_err(ExternalError::permanent)?;
        if let Some(authorizer) = &self.deps.authorizer {
            client = client.with_authorizer(authorizer.clone());
        }
        Ok(RobotExternal {
            client,
            endpoint: endpoint.to_owned(),
            refused: self.deps.refused.clone(),
        })
    }

    fn target(&self, config: &ProviderConfigObject) -> Option<String> {
        normalized_endpoint(&config.spec.endpoint)
    }
}

/// One robot server, however its URL is spelled: scheme, host, port and
/// path without a trailing slash.
fn normalized_endpoint(endpoint: &str) -> Option<String> {
    let url = url::Url::parse(endpoint.trim()).ok()?;
    Some(format!(
        "{}://{}:{}{}",
        url.scheme(),
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?,
        url.path().trim_end_matches('/')
    ))
}

/// The robot server, as seen by one Robot.
pub struct RobotExternal {
    client: RobotClient,
    endpoint: String,
    refused: Option<std::sync::Arc<tokio::sync::Notify>>,
}

impl RobotExternal {
    fn wire<S: RobotSpec>(mr: &Managed<S, RobotStatus>) -> WireRobot {
        WireRobot::new(
            meta::external_name(&mr.metadata),
            mr.spec.for_provider().color.clone(),
        )
    }

    fn external(&self, e: robot_api::Error) -> ExternalError {
        let unauthorized = matches!(e, robot_api::Error::Unauthorized { .. });
        if let (true, Some(refused)) = (unauthorized, &self.refused) {
            refused.notify_one();
        }
        ExternalError {
            // A refused token is re-read at once: worth a retry soon.
            transient: e.is_transient() || unauthorized,
            message: e.to_string(),
        }
    }

    fn details(&self, robot: &WireRobot) -> ConnectionDetails {
        ConnectionDetails::from([
            ("endpoint".to_owned(), self.endpoint.as_bytes().to_vec()),
            ("name".to_owned(), robot.name.as_bytes().to_vec()),
            ("color".to_owned(), robot.color.as_bytes().to_vec()),
        ])
    }
}

impl<S: RobotSpec> ExternalClient<S, RobotStatus> for RobotExternal {
    async fn observe(
        &self,
        mr: &Managed<S, RobotStatus>,
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

    async fn create(
        &self,
        mr: &Managed<S, RobotStatus>,
    ) -> Result<ConnectionDetails, ExternalError> {
        let robot = Self::wire(mr);
        match self.client.create(&robot).await {
            // Names are deterministic: an existing robot of this name is the
            // one to manage; the next observe brings its color in line.
            Ok(()) | Err(robot_api::Error::AlreadyExists) => Ok(self.details(&robot)),
            Err(e) => Err(self.external(e)),
        }
    }

    async fn update(
        &self,
        mr: &Managed<S, RobotStatus>,
    ) -> Result<ConnectionDetails, ExternalError> {
        let robot = Self::wire(mr);
        self.client
            .update(&robot.name, &robot)
            .await
            .map_err(|e| self.external(e))?;
        Ok(self.details(&robot))
    }

    async fn delete(&self, mr: &Managed<S, RobotStatus>) -> Result<(), ExternalError> {
        // Gone already counts as deleted.
        self.client
            .delete(&meta::external_name(&mr.metadata))
            .await
            .map(|_| ())
            .map_err(|e| self.external(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_however_its_url_is_spelled() {
        let n = |e| normalized_endpoint(e);
        assert_eq!(n("http://Robots.internal:80/"), n("http://robots.internal"));
        assert_eq!(n("https://r.example/api/"), n("https://r.example:443/api"));
        assert_ne!(n("http://r:9090"), n("http://r:9091"));
        assert_ne!(n("http://r/a"), n("http://r/b"));
        assert_eq!(n("not a url"), None);
    }
}
