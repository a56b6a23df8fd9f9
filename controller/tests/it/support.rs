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
use kube::core::DynamicObject;
use robot_api::{Robot, RobotClient};
use robot_controller::crd::Generation;
use robot_controller::robot::RobotObject;
use robot_controller::runtime::Resources;
use serde_json::{Value, json};
use testenv::process::{ChildProcess, free_port, log_tail};
use testenv::{ControlPlane, CrdSet, Options, RobotServer, wait_for};

/// Generous bounds: the machine may be busy with other tests.
pub const CONVERGE: Duration = Duration::from_secs(60);

pub struct Env {
    pub cp: ControlPlane,
    pub server: RobotServer,
    pub admin: kube::Client,
    pub res: Resources,
    pub dir: tempfile::TempDir,
}

impl Env {
    /// Our CRDs, a robot server, and a ProviderConfig `default` for it.
    pub async fn start() -> Env {
        Self::start_with(CrdSet::Ours, Generation::Crossplane, &[]).await
    }

    pub async fn start_with(crds: CrdSet, generation: Generation, server_args: &[&str]) -> Env {
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
        let admin = cp.admin_client().await.expect("admin client");
        let env = Env {
            cp,
            server,
            admin,
            res: Resources::of(generation),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        env.provider_config("default", env.server.url()).await;
        env
    }

    pub fn group(&self) -> &'static str {
        self.res.generation.provider_group()
    }

    pub fn robot_api_version(&self) -> String {
        format!("{}/v1alpha1", self.res.generation.robot_group())
    }

    pub fn robots(&self) -> Api<RobotObject> {
        Api::all_with(self.admin.clone(), &self.res.robot)
    }

    pub fn dynamic(&self, ar: &kube::core::ApiResource) -> Api<DynamicObject> {
        Api::all_with(self.admin.clone(), ar)
    }

    /// Creates or updates a ProviderConfig.
    pub async fn provider_config(&self, name: &str, endpoint: &str) {
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

    /// Starts the real controller with the controller kubeconfig and `args`.
    pub fn controller(&self, args: &[&str]) -> Controller {
        Controller::spawn(
            self.cp.controller_kubeconfig_path(),
            self.dir.path(),
            "run",
            args,
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
            .args(args)
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

pub fn condition<'a>(
    r: &'a RobotObject,
    type_: &str,
) -> Option<&'a robot_controller::managed::conditions::Condition> {
    r.status
        .as_ref()
        .and_then(|s| robot_controller::managed::conditions::get(&s.resource.conditions, type_))
}

pub fn annotation<'a>(r: &'a RobotObject, key: &str) -> Option<&'a str> {
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
    pub fn spawn(kubeconfig: &Path, dir: &Path, mode: &str, args: &[&str]) -> Controller {
        let kubeconfig = kubeconfig.to_str().expect("UTF-8 kubeconfig path");
        let args: Vec<&str> = ["--kubeconfig-source", kubeconfig]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        Self::spawn_with(dir, mode, &args, &[])
    }

    /// `robot-controller <mode> <args>` with `env` added; the kubeconfig
    /// source is one of `args` (or `env`), never `$KUBECONFIG`.
    pub fn spawn_with(
        dir: &Path,
        mode: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> Controller {
        let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("free port");
        let health = SocketAddr::from(([127, 0, 0, 1], port));
        let log = dir.join(format!("controller-{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_robot-controller"));
        cmd.arg(mode)
            .arg("--health-listen")
            .arg(health.to_string())
            .args(args)
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
