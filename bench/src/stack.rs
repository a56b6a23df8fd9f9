//! A control plane with our CRDs, the release robot server and its
//! ProviderConfig `default`: what the controller benchmarks run against.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use testenv::process::ChildProcess;
use testenv::{ControlPlane, CrdSet, Options};

use super::controller::Reference;
use super::host::{Binaries, Generation, loopback, wait_http};

/// Robots created concurrently by the benchmark's own client.
const APPLY_CONCURRENCY: usize = 64;

pub struct Stack {
    pub cp: ControlPlane,
    pub admin: kube::Client,
    // Kept alive for the run; killed on drop.
    _server: ChildProcess,
    pub server_addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub generation: Generation,
}

impl Stack {
    pub async fn start(bins: &Binaries, generation: Generation) -> Result<Stack> {
        let cp = ControlPlane::start(Options {
            crds: match generation {
                Generation::Upbound => CrdSet::OursUpbound,
                _ => CrdSet::Ours,
            },
            ..Options::default()
        })
        .await?;
        let admin = cp.admin_client().await?;
        let dir = tempfile::tempdir()?;
        let server_addr = loopback()?;
        let mut cmd = Command::new(&bins.server);
        cmd.args([
            "--listen",
            &server_addr.to_string(),
            "--log-filter",
            "warn",
            "--no-auth",
        ]);
        let server = ChildProcess::spawn("robot-server", cmd, &dir.path().join("server.log"))?;
        wait_http(server_addr, "/healthz").await?;
        let group = generation.config_group();
        let pc = json!({
            "apiVersion": format!("{group}/v1alpha1"),
            "kind": "ProviderConfig",
            "metadata": { "name": "default" },
            "spec": { "endpoint": format!("http://{server_addr}") },
        });
        let pcs = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, "v1alpha1", "ProviderConfig"),
            "providerconfigs",
        );
        Api::<DynamicObject>::all_with(admin.clone(), &pcs)
            .patch(
                "default",
                &PatchParams::apply("bench").force(),
                &Patch::Apply(&pc),
            )
            .await?;
        if generation == Generation::Namespaced {
            cp.apply_yaml(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: bench}}\n---\n\
                 apiVersion: dummy.m.crossplane.io/v1alpha1\nkind: ClusterProviderConfig\n\
                 metadata: {{name: default}}\nspec: {{endpoint: 'http://{server_addr}'}}\n"
            ))
            .await?;
        }
        Ok(Stack {
            cp,
            admin,
            _server: server,
            server_addr,
            dir,
            generation,
        })
    }

    /// The release controller with default flags (and `extra`), allowed to
    /// call the bench's robot server, serving health on `health`; killed
    /// when dropped.
    pub fn controller_with(
        &self,
        bins: &Binaries,
        health: SocketAddr,
        extra: &[String],
    ) -> Result<ChildProcess> {
        // For profiling: ROBOT_BENCH_WRAPPER="heaptrack -o /tmp/h" runs the
        // controller under that command (its figures are then the wrapper's).
        let wrapper = std::env::var("ROBOT_BENCH_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(&bins.controller);
                c
            }
            None => Command::new(&bins.controller),
        };
        cmd.arg("run")
            .arg("--kubeconfig-source")
            .arg(self.cp.controller_kubeconfig_path())
            .args([
                "--health-listen",
                &health.to_string(),
                "--log-filter",
                "warn",
                "--allowed-endpoints",
                &format!("http://{}", self.server_addr),
            ])
            .args(extra);
        let log = self
            .dir
            .path()
            .join(format!("controller-{}.log", health.port()));
        Ok(ChildProcess::spawn("robot-controller", cmd, &log)?)
    }

    /// A second controller binary, with the controller user's kubeconfig in
    /// `KUBECONFIG`.
    pub fn reference(&self, r: &Reference) -> Result<ChildProcess> {
        let mut cmd = Command::new(&r.path);
        cmd.args(&r.args)
            .env("KUBECONFIG", self.cp.controller_kubeconfig_path());
        let log = self.dir.path().join("reference.log");
        Ok(ChildProcess::spawn("reference controller", cmd, &log)?)
    }

    /// The pid of a control-plane process (`kube-apiserver`, `etcd`).
    pub fn process(&self, name: &str) -> Option<u32> {
        self.cp
            .processes()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, pid)| pid)
    }

    /// The apiserver's own `/metrics`.
    pub async fn apiserver_metrics(&self) -> Result<String> {
        let request = http::Request::get("/metrics").body(Vec::new())?;
        Ok(self.admin.request_text(request).await?)
    }

    /// Creates `n` yellow Robots `<prefix>-000000` and on.
    pub async fn create_robots(&self, n: usize, prefix: &str) -> Result<()> {
        let ar = self.generation.robots();
        let api: Api<DynamicObject> = match self.generation {
            Generation::Legacy | Generation::Upbound => Api::all_with(self.admin.clone(), &ar),
            Generation::Namespaced => Api::namespaced_with(self.admin.clone(), "bench", &ar),
        };
        futures::stream::iter(0..n)
            .map(|i| {
                let api = api.clone();
                let api_version = ar.api_version.clone();
                async move {
                    let robot: DynamicObject = serde_json::from_value(json!({
                        "apiVersion": api_version,
                        "kind": "Robot",
                        "metadata": { "name": format!("{prefix}-{i:06}") },
                        "spec": { "forProvider": { "color": "yellow" } },
                    }))?;
                    api.create(&PostParams::default(), &robot).await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(APPLY_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Waits until `n` Robots are Ready and Synced, watching (not polling).
    pub async fn wait_all_ready(&self, n: usize, timeout: Duration) -> Result<()> {
        let api: Api<DynamicObject> = Api::all_with(self.admin.clone(), &self.generation.robots());
        let ready = Mutex::new(HashSet::new());
        let count = AtomicUsize::new(0);
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .try_for_each(|r| {
                let ok = ["Ready", "Synced"].iter().all(|t| is_true(&r, t));
                if ok
                    && ready
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(r.metadata.name.clone().unwrap_or_default())
                {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                async { Ok(()) }
            });
        let done = async {
            while count.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            r = stream => bail!("watch ended: {r:?}"),
            _ = done => Ok(()),
            _ = tokio::time::sleep(timeout) => bail!(
                "only {} of {n} Robots Ready after {timeout:?}",
                count.load(Ordering::Relaxed)
            ),
        }
    }
}

fn is_true(r: &DynamicObject, type_: &str) -> bool {
    r.data["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == type_ && c["status"] == "True")
    })
}
