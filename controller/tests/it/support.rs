//! A control plane, a robot server and the real controller binary, wired
//! as in production: the controller uses the controller kubeconfig (bound
//! only to infra/rbac), the test uses the admin one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::core::DynamicObject;
use robot_api::{Robot, RobotClient};
use robot_controller::api::{Family, Generation};
use robot_controller::kinds::robot::legacy::{LegacyRobot, RobotObject};
use robot_controller::kinds::robot::namespaced::{self, NamespacedRobot};
use robot_controller::managed::ManagedKind;
use robot_controller::managed::inuse::ConfigKind;
use serde_json::{Value, json};
use testenv::process::{ChildProcess, free_port, log_tail};
use testenv::{ControlPlane, CrdSet, Options, RobotServer, wait_for};

/// Generous bounds: the machine may be busy with other tests.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// The resources of one group family, both generations.
#[derive(Clone, Debug)]
pub struct Resources {
    pub family: Family,
    /// Legacy: Robot, ProviderConfig, ProviderConfigUsage (cluster-scoped).
    pub robot: ApiResource,
    pub provider_config: ApiResource,
    pub usage: ApiResource,
    /// Namespaced (v2): Robot, ProviderConfig, ClusterProviderConfig,
    /// ProviderConfigUsage.
    pub ns_robot: ApiResource,
    pub ns_provider_config: ApiResource,
    pub cluster_provider_config: ApiResource,
    pub ns_usage: ApiResource,
}

impl Resources {
    pub fn of(family: Family) -> Self {
        let [legacy_pc] = ConfigKind::of(Generation::Legacy) else {
            unreachable!("one legacy config kind")
        };
        let [pc, cpc] = ConfigKind::of(Generation::Namespaced) else {
            unreachable!("two namespaced config kinds")
        };
        Self {
            family,
            robot: LegacyRobot::api_resource(family),
            provider_config: legacy_pc.api_resource(family),
            usage: ConfigKind::usage_resource(Generation::Legacy, family),
            ns_robot: NamespacedRobot::api_resource(family),
            ns_provider_config: pc.api_resource(family),
            cluster_provider_config: cpc.api_resource(family),
            ns_usage: ConfigKind::usage_resource(Generation::Namespaced, family),
        }
    }
}

/// A namespaced (v2) Robot.
pub type NsRobot = namespaced::RobotObject;

pub struct Env {
    pub cp: ControlPlane,
    pub server: RobotServer,
    pub admin: kube::Client,
    pub res: Resources,
    pub dir: tempfile::TempDir,
    /// Endpoints ProviderConfigs were pointed at (fault proxies, a second
    /// server): the controllers this environment starts may call them.
    pub endpoints: std::sync::Mutex<Vec<String>>,
}

impl Env {
    /// Our CRDs, a robot server, and a ProviderConfig `default` for it.
    pub async fn start() -> Env {
        Self::start_with(CrdSet::Ours, Family::Crossplane, &[]).await
    }

    pub async fn start_with(crds: CrdSet, family: Family, server_args: &[&str]) -> Env {
        testenv::install_crypto_provider();
        let cp = ControlPlane::start(Options {
            crds,
            ..Options::default()
        })
        .await
        .expect("control plane starts");
        let server = RobotServer::start(server_args)
            .await
            .expect("robot server starts");
        let env = Self::with_control_plane(cp, server, Resources::of(family)).await;
        // A Crossplane v2 control plane: the namespaced generation too,
        // with the ClusterProviderConfig its Robots default to.
        if matches!(crds, CrdSet::Ours | CrdSet::OursUpbound) {
            env.cluster_provider_config("default", env.server.url())
                .await;
        }
        env
    }

    /// An environment around a control plane and server started elsewhere
    /// (with options of their own), with a ProviderConfig `default` and,
    /// when the CRDs are there, a ClusterProviderConfig `default`.
    pub async fn with_control_plane(cp: ControlPlane, server: RobotServer, res: Resources) -> Env {
        let admin = cp.admin_client().await.expect("admin client");
        let env = Env {
            cp,
            server,
            admin,
            res,
            dir: tempfile::tempdir().expect("temp dir"),
            endpoints: Default::default(),
        };
        env.provider_config("default", env.server.url()).await;
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(env.admin.clone());
        let v2 = format!(
            "{}.{}",
            env.res.cluster_provider_config.plural, env.res.cluster_provider_config.group
        );
        if crds.get_opt(&v2).await.ok().flatten().is_some() {
            env.cluster_provider_config("default", env.server.url())
                .await;
        }
        env
    }

    /// Applies an object of `ar` (server-side apply, as admin).
    pub async fn apply(&self, ar: &ApiResource, namespace: Option<&str>, object: Value) {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let api = match namespace {
            Some(ns) => Api::<DynamicObject>::namespaced_with(self.admin.clone(), ns, ar),
            None => Api::all_with(self.admin.clone(), ar),
        };
        api.patch(
            &name,
            &PatchParams::apply("robot-tests").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {} {name}: {e}", ar.kind));
    }

    /// Creates a namespace (no-op when it exists).
    pub async fn namespace(&self, name: &str) {
        let ar = ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&());
        self.apply(
            &ar,
            None,
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } }),
        )
        .await;
    }

    /// Lets the controllers started from now on call `endpoint`.
    pub fn allow(&self, endpoint: &str) {
        let mut e = self.endpoints.lock().unwrap();
        if !e.iter().any(|x| x == endpoint) {
            e.push(endpoint.to_owned());
        }
    }

    /// Creates or updates a ClusterProviderConfig (v2).
    pub async fn cluster_provider_config(&self, name: &str, endpoint: &str) {
        self.allow(endpoint);
        let ar = self.res.cluster_provider_config.clone();
        self.apply(
            &ar,
            None,
            json!({
                "apiVersion": ar.api_version,
                "kind": "ClusterProviderConfig",
                "metadata": { "name": name },
                "spec": { "endpoint": endpoint },
            }),
        )
        .await;
    }

    /// Creates or updates a namespaced ProviderConfig (v2).
    pub async fn ns_provider_config(&self, namespace: &str, name: &str, endpoint: &str) {
        self.allow(endpoint);
        let ar = self.res.ns_provider_config.clone();
        self.apply(
            &ar,
            Some(namespace),
            json!({
                "apiVersion": ar.api_version,
                "kind": "ProviderConfig",
                "metadata": { "name": name, "namespace": namespace },
                "spec": { "endpoint": endpoint },
            }),
        )
        .await;
    }

    pub fn ns_robots(&self, namespace: &str) -> Api<NsRobot> {
        Api::namespaced_with(
            self.admin.clone(),
            namespace,
            &self.res.ns_robot.clone().into(),
        )
    }

    /// Creates a namespaced Robot; `extra` is merged over the defaults.
    pub async fn create_ns_robot(
        &self,
        namespace: &str,
        name: &str,
        color: &str,
        extra: Value,
    ) -> NsRobot {
        let mut robot = json!({
            "apiVersion": self.res.ns_robot.api_version,
            "kind": "Robot",
            "metadata": { "name": name, "namespace": namespace },
            "spec": { "forProvider": { "color": color } },
        });
        merge(&mut robot, extra);
        let obj: DynamicObject = serde_json::from_value(robot).expect("robot json");
        let created = Api::<DynamicObject>::namespaced_with(
            self.admin.clone(),
            namespace,
            &self.res.ns_robot,
        )
        .create(&PostParams::default(), &obj)
        .await
        .expect("create namespaced Robot");
        serde_json::from_value(serde_json::to_value(created).unwrap()).unwrap()
    }

    pub async fn ns_robot(&self, namespace: &str, name: &str) -> Option<NsRobot> {
        self.ns_robots(namespace)
            .get_opt(name)
            .await
            .expect("get namespaced Robot")
    }

    /// As [`wait_condition`](Self::wait_condition), for a namespaced Robot.
    pub async fn wait_ns_condition(
        &self,
        namespace: &str,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> NsRobot {
        let what = format!("Robot {namespace}/{name} {type_}={status} {reason:?}");
        let result = wait_for(&what, CONVERGE, || async {
            let r = self.ns_robot(namespace, name).await?;
            let c = condition(&r, type_)?;
            (c.status == status && reason.is_none_or(|re| c.reason == re)).then_some(r)
        })
        .await;
        match result {
            Ok(r) => r,
            Err(e) => panic!(
                "{e}; Robot is {:#?}",
                self.ns_robot(namespace, name).await.map(|r| r.status)
            ),
        }
    }

    pub async fn wait_ns_ready(&self, namespace: &str, name: &str) -> NsRobot {
        self.wait_ns_condition(namespace, name, "Synced", "True", None)
            .await;
        self.wait_ns_condition(namespace, name, "Ready", "True", None)
            .await
    }

    pub async fn wait_ns_gone(&self, namespace: &str, name: &str) {
        wait_for(
            &format!("Robot {namespace}/{name} gone"),
            CONVERGE,
            || async { self.ns_robot(namespace, name).await.is_none().then_some(()) },
        )
        .await
        .expect("namespaced Robot deleted");
    }

    pub fn group(&self) -> String {
        self.res.family.provider_group()
    }

    pub fn robot_api_version(&self) -> String {
        self.res.robot.api_version.clone()
    }

    pub fn robots(&self) -> Api<RobotObject> {
        Api::all_with(self.admin.clone(), &self.res.robot.clone().into())
    }

    pub fn dynamic(&self, ar: &kube::core::ApiResource) -> Api<DynamicObject> {
        Api::all_with(self.admin.clone(), ar)
    }

    /// Creates or updates a ProviderConfig.
    pub async fn provider_config(&self, name: &str, endpoint: &str) {
        self.allow(endpoint);
        let pc = json!({
            "apiVersion": format!("{}/v1alpha1", self.group()),
            "kind": "ProviderConfig",
            "metadata": { "name": name },
            "spec": { "endpoint": endpoint },
        });
        let api = self.dynamic(&self.res.provider_config);
        api.patch(
            name,
            &PatchParams::apply("robot-tests").force(),
            &Patch::Apply(&pc),
        )
        .await
        .expect("apply ProviderConfig");
    }

    /// Creates a Robot; `spec` and `metadata` are merged over the defaults.
    pub async fn create_robot(&self, name: &str, color: &str, extra: Value) -> RobotObject {
        let mut robot = json!({
            "apiVersion": self.robot_api_version(),
            "kind": "Robot",
            "metadata": { "name": name },
            "spec": { "forProvider": { "color": color } },
        });
        merge(&mut robot, extra);
        let obj: DynamicObject = serde_json::from_value(robot).expect("robot json");
        let created = self
            .dynamic(&self.res.robot)
            .create(&PostParams::default(), &obj)
            .await
            .expect("create Robot");
        serde_json::from_value(serde_json::to_value(created).unwrap()).unwrap()
    }

    pub async fn patch_robot(&self, name: &str, patch: Value) {
        self.robots()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch Robot");
    }

    pub async fn set_color(&self, name: &str, color: &str) {
        self.patch_robot(
            name,
            json!({ "spec": { "forProvider": { "color": color } } }),
        )
        .await;
    }

    pub async fn delete_robot(&self, name: &str) {
        self.robots()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete Robot");
    }

    pub async fn robot(&self, name: &str) -> Option<RobotObject> {
        self.robots().get_opt(name).await.expect("get Robot")
    }

    /// Waits until the Robot's condition `type_` has `status` (and, if
    /// given, `reason`); returns the Robot as it then is.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> RobotObject {
        let what = format!("Robot {name} {type_}={status} {reason:?}");
        let result = wait_for(&what, CONVERGE, || async {
            let r = self.robot(name).await?;
            let c = condition(&r, type_)?;
            (c.status == status && reason.is_none_or(|re| c.reason == re)).then_some(r)
        })
        .await;
        match result {
            Ok(r) => r,
            Err(e) => panic!(
                "{e}; Robot is {:#?}",
                self.robot(name).await.map(|r| r.status)
            ),
        }
    }

    pub async fn wait_ready(&self, name: &str) -> RobotObject {
        self.wait_condition(name, "Synced", "True", None).await;
        self.wait_condition(name, "Ready", "True", None).await
    }

    pub async fn wait_gone(&self, name: &str) {
        wait_for(&format!("Robot {name} gone"), CONVERGE, || async {
            self.robot(name).await.is_none().then_some(())
        })
        .await
        .expect("Robot deleted");
    }

    /// Waits for an event with `reason` about the object named `name`, as
    /// `kubectl describe` would show it.
    pub async fn wait_event(&self, reason: &str, name: &str) {
        let events: Api<Event> = Api::namespaced(self.admin.clone(), "default");
        wait_for(&format!("event {reason} for {name}"), CONVERGE, || async {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.involved_object.name.as_deref() == Some(name)
                })
                .then_some(())
        })
        .await
        .expect("event recorded");
    }

    /// Waits for an event with `reason` about the object `name` in `namespace`.
    pub async fn wait_ns_event(&self, namespace: &str, reason: &str, name: &str) {
        let events: Api<Event> = Api::namespaced(self.admin.clone(), namespace);
        wait_for(
            &format!("event {reason} for {namespace}/{name}"),
            CONVERGE,
            || async {
                let list = events.list(&Default::default()).await.ok()?;
                list.items
                    .iter()
                    .any(|e| {
                        e.reason.as_deref() == Some(reason)
                            && e.involved_object.name.as_deref() == Some(name)
                    })
                    .then_some(())
            },
        )
        .await
        .expect("event recorded");
    }

    /// Waits until the Events of `reason` about `name` satisfy `done`.
    pub async fn wait_events(
        &self,
        reason: &str,
        name: &str,
        done: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.admin.clone(), "default");
        let done = &done;
        wait_for(&format!("events {reason} for {name}"), CONVERGE, || async {
            let list = events.list(&Default::default()).await.ok()?;
            let matching: Vec<Event> = list
                .items
                .into_iter()
                .filter(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.involved_object.name.as_deref() == Some(name)
                })
                .collect();
            done(&matching).then_some(matching)
        })
        .await
        .expect("events recorded")
    }

    pub fn server_client(&self) -> RobotClient {
        RobotClient::new(reqwest::Client::new(), self.server.url(), None).expect("client")
    }

    pub async fn server_robot(&self, name: &str) -> Option<Robot> {
        self.server_client()
            .get(name)
            .await
            .expect("get from robot server")
    }

    pub async fn server_robots(&self) -> Vec<Robot> {
        let client = self.server_client();
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = client
                .list(after.as_deref(), 1000)
                .await
                .expect("list robots");
            all.extend(page.items);
            match page.next {
                Some(n) => after = Some(n),
                None => return all,
            }
        }
    }

    /// Waits until the server holds `name` with `color`.
    pub async fn wait_server_color(&self, name: &str, color: &str) {
        wait_for(
            &format!("robot {name} is {color} in the server"),
            CONVERGE,
            || async {
                let r = self.server_client().get(name).await.ok().flatten()?;
                (r.color == color).then_some(())
            },
        )
        .await
        .expect("server converges");
    }

    /// `args`, with `--allowed-endpoints` this environment's server and
    /// every endpoint a ProviderConfig was given, unless they set it.
    pub fn with_allowlist(&self, args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if !args.contains(&"--allowed-endpoints") {
            let mut allowed = vec![self.server.url().to_owned()];
            allowed.extend(self.endpoints.lock().unwrap().iter().cloned());
            allowed.dedup();
            all.extend(["--allowed-endpoints".to_owned(), allowed.join(",")]);
        }
        all
    }

    /// Starts the real controller with the controller kubeconfig and `args`
    /// (allowed to call this environment's server unless they say).
    pub fn controller(&self, args: &[&str]) -> Controller {
        Controller::spawn(
            self.cp.controller_kubeconfig_path(),
            self.dir.path(),
            "run",
            &self.with_allowlist(args),
        )
    }

    /// Runs `robot-controller once`, returning its exit status and log.
    pub fn once(&self, args: &[&str]) -> (ExitStatus, String) {
        let log = self.dir.path().join(format!("once-{}.log", rand_suffix()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_robot-controller"));
        cmd.arg("once");
        if !args.contains(&"--kubeconfig-source") {
            cmd.arg("--kubeconfig-source")
                .arg(self.cp.controller_kubeconfig_path());
        }
        let status = cmd
            .args(self.with_allowlist(args))
            .env("ROBOT_CONTROLLER_LOG_FORMAT", "text")
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(
                std::fs::File::options()
                    .append(true)
                    .open(&log)
                    .expect("log"),
            )
            .status()
            .expect("run once");
        (status, std::fs::read_to_string(&log).unwrap_or_default())
    }
}

pub fn condition<'a, P: Clone>(
    r: &'a robot_controller::managed::Managed<P, robot_controller::kinds::robot::RobotStatus>,
    type_: &str,
) -> Option<&'a robot_controller::managed::conditions::Condition> {
    r.status
        .as_ref()
        .and_then(|s| robot_controller::managed::conditions::get(&s.resource.conditions, type_))
}

pub fn annotation<'a, P: Clone>(
    r: &'a robot_controller::managed::Managed<P, robot_controller::kinds::robot::RobotStatus>,
    key: &str,
) -> Option<&'a str> {
    r.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A running controller process; killed on drop.
pub struct Controller {
    process: ChildProcess,
    pub health: SocketAddr,
    log: PathBuf,
}

impl Controller {
    pub fn spawn<S: AsRef<str>>(
        kubeconfig: &Path,
        dir: &Path,
        mode: &str,
        args: &[S],
    ) -> Controller {
        let kubeconfig = kubeconfig.to_str().expect("UTF-8 kubeconfig path");
        let args: Vec<&str> = ["--kubeconfig-source", kubeconfig]
            .into_iter()
            .chain(args.iter().map(AsRef::as_ref))
            .collect();
        Self::spawn_with(dir, mode, &args, &[])
    }

    /// `robot-controller <mode> <args>` with `env` added; the kubeconfig
    /// source is one of `args` (or `env`), never `$KUBECONFIG`.
    pub fn spawn_with<S: AsRef<str>>(
        dir: &Path,
        mode: &str,
        args: &[S],
        env: &[(String, String)],
    ) -> Controller {
        let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("free port");
        let health = SocketAddr::from(([127, 0, 0, 1], port));
        let log = dir.join(format!("controller-{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_robot-controller"));
        cmd.arg(mode)
            .arg("--health-listen")
            .arg(health.to_string())
            .args(args.iter().map(AsRef::as_ref))
            .env_remove("KUBECONFIG")
            .env("ROBOT_CONTROLLER_LOG_FORMAT", "text")
            .env("ROBOT_CONTROLLER_LOG", "info,robot_controller=debug")
            .envs(env.iter().map(|(k, v)| (k, v)));
        let process = ChildProcess::spawn("robot-controller", cmd, &log).expect("spawn controller");
        Controller {
            process,
            health,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 40)
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let addr = self.health;
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            testenv::http::get(addr, &path, Duration::from_secs(2)).ok()
        })
        .await
        .ok()
        .flatten()
        .map(|r| (r.status, r.body))
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn wait_ready(&mut self) {
        self.wait_readyz("controller /readyz", |status, _| status == 200)
            .await;
    }

    /// Waits until `/readyz` answers as `ok` wants; returns the body.
    pub async fn wait_readyz(&mut self, what: &str, ok: impl Fn(u16, &str) -> bool) -> String {
        let result = wait_for(what, CONVERGE, || async {
            match self.get("/readyz").await {
                Some((status, body)) if ok(status, &body) => Some(body),
                _ => None,
            }
        })
        .await;
        match result {
            Ok(body) => body,
            Err(e) => panic!(
                "{e}; exit: {:?}; log:\n{}",
                self.process.exit_status(),
                self.log_tail()
            ),
        }
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// The sum of a counter family in /metrics, over labels matching `filter`.
    pub async fn metric_sum(&self, name: &str, filter: impl Fn(&str) -> bool) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(name) && filter(l))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// 1 while this instance leads.
    pub async fn leader(&self) -> f64 {
        self.metric_sum("robot_controller_leader", |_| true).await
    }

    pub async fn reconciles(&self) -> f64 {
        self.metric_sum("robot_controller_reconciles_total", |_| true)
            .await
    }

    /// Control-plane requests that can change something (not get/watch).
    pub async fn writes(&self) -> f64 {
        self.metric_sum("robot_controller_kube_requests_total", |l| {
            !l.contains("verb=\"get\"") && !l.contains("verb=\"watch\"")
        })
        .await
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.process.id() as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Waits for the process to exit, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.process.exit_status() {
                return Some(s);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // A failed test shows what the controller was saying.
        if std::thread::panicking() {
            eprintln!(
                "--- controller log ({}) ---\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
    }
}
