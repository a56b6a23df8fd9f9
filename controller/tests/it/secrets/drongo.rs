//! drongo: Google Secret Manager on loopback.

use super::*;

/// drongo's server on a free loopback port: Google Secret Manager's REST API.
pub(crate) struct Drongo {
    _process: ChildProcess,
    pub(crate) url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drongo {
    pub(crate) async fn start() -> Drongo {
        // Installed by `cargo xtask tools`; a test never installs.
        let bin = testenv::python::GCP
            .find()
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap();
        let port = free_port(LOOPBACK).unwrap();
        let mut cmd = Command::new(bin.join("drongo"));
        cmd.args(["server", "--host", "127.0.0.1", "--port", &port.to_string()]);
        let log = dir.path().join("drongo.log");
        let mut process = ChildProcess::spawn("drongo", cmd, &log).unwrap();
        let addr = SocketAddr::new(LOOPBACK, port);
        let up = wait_for("drongo answers", CONVERGE, || {
            let exited = process.exit_status().is_some();
            async move {
                if exited {
                    return Some(false);
                }
                http_status(addr, "/v1/projects/p1/secrets")
                    .await
                    .map(|_| true)
            }
        })
        .await;
        assert!(
            matches!(up, Ok(true)),
            "drongo: {up:?}\n{}",
            log_tail(&log, 30)
        );
        Drongo {
            _process: process,
            url: format!("http://{addr}"),
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/v1/{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    /// Creates `projects/p1/secrets/<id>`.
    pub(crate) async fn create(&self, id: &str) {
        self.post(
            &format!("projects/p1/secrets?secretId={id}"),
            json!({ "replication": { "automatic": {} } }),
        )
        .await;
    }

    /// Adds a version holding `data`; returns its number.
    pub(crate) async fn add_version(&self, id: &str, data: &str) -> String {
        let v = self
            .post(
                &format!("projects/p1/secrets/{id}:addVersion"),
                json!({ "payload": { "data": b64(data.as_bytes()) } }),
            )
            .await;
        v["name"]
            .as_str()
            .and_then(|n| n.rsplit('/').next())
            .unwrap()
            .to_owned()
    }

    /// Disables a version: `latest` moves off it and reading it fails.
    pub(crate) async fn disable(&self, id: &str, version: &str) {
        self.post(
            &format!("projects/p1/secrets/{id}/versions/{version}:disable"),
            json!({}),
        )
        .await;
    }

    pub(crate) fn controller_env(&self) -> Vars {
        vec![(
            "ROBOT_CONTROLLER_GCP_SECRETMANAGER_ENDPOINT".into(),
            self.url.clone(),
        )]
    }
}
