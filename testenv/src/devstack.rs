//! The background stack of `cargo xtask up`: a control plane, a robot
//! server and the controller, kept alive by one detached supervisor process
//! until `cargo xtask down`.
//!
//! The supervisor owns the three as guarded children, so stopping it (or
//! killing it) stops them all; its state file tells `up` when everything is
//! ready or what failed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde::{Deserialize, Serialize};

use crate::process::{ChildProcess, ProcessId, free_port};
use crate::{
    ControlPlane, CrdSet, Error, Options, RobotServer, RobotServerOptions, binary_path, http,
    wait_for,
};

/// How long the controller gets to answer /readyz 200.
const CONTROLLER_READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The files of a stack, all under one directory (`target/dev`).
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }

    pub fn controller_kubeconfig(&self) -> PathBuf {
        self.root.join("controller.kubeconfig")
    }

    /// Shell exports: `source target/dev/env`.
    pub fn env_file(&self) -> PathBuf {
        self.root.join("env")
    }

    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub fn pid_dir(&self) -> PathBuf {
        self.root.join("pids")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn supervisor_pid_file(&self) -> PathBuf {
        self.pid_dir().join("supervisor.pid")
    }

    fn control_plane_dir(&self) -> PathBuf {
        self.root.join("controlplane")
    }

    /// Removes everything but the logs (kept for a post-mortem).
    pub fn clean(&self, keep_logs: bool) -> Result<(), Error> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if keep_logs && path == self.log_dir() {
                continue;
            }
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| Error::path(&path, e))?;
        }
        Ok(())
    }

    /// The supervisor, if one runs.
    pub fn running_supervisor(&self) -> Option<ProcessId> {
        read_pid_file(&self.supervisor_pid_file()).filter(|p| p.is_running())
    }

    pub fn read_state(&self) -> Option<State> {
        let text = std::fs::read_to_string(self.state_file()).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write_state(&self, state: &State) -> Result<(), Error> {
        let json = serde_json::to_string_pretty(state).unwrap_or_default();
        crate::workspace::write_private(&self.state_file(), json.as_bytes())
    }
}

/// What the supervisor reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub phase: Phase,
    pub error: Option<String>,
    pub control_plane_url: Option<String>,
    pub robot_server_url: Option<String>,
    pub controller: Option<ControllerStatus>,
    /// The provider-dummy group of the installed Robot CRD, e.g.
    /// `dummy.crossplane.io` (Robots are `iam.<group>`).
    pub api_group: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Starting,
    Ready,
    Failed,
    Stopped,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "status")]
pub enum ControllerStatus {
    Ready { health_url: String },
    NotStarted { reason: String },
}

/// Whether the supervisor starts the controller.
#[derive(Clone, Debug)]
pub enum ControllerLaunch {
    /// `robot-controller run` with these extra flags.
    Run(Vec<String>),
    /// Not started, for this reason (e.g. it did not build).
    Skip(String),
}

/// Runs the stack until SIGTERM or SIGINT (blocking; builds its own
/// runtime). The state file says `ready` once all three are up, or `failed`
/// with the reason.
pub fn supervise(
    layout: &Layout,
    crds: CrdSet,
    controller: &ControllerLaunch,
) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    runtime.block_on(async {
        layout.write_state(&State::default())?;
        let stack = match Stack::start(layout, crds, controller).await {
            Ok(stack) => stack,
            Err(e) => {
                layout.write_state(&State {
                    phase: Phase::Failed,
                    error: Some(e.to_string()),
                    ..State::default()
                })?;
                return Err(e);
            }
        };
        layout.write_state(&stack.state())?;
        eprintln!("supervisor: ready; waiting for SIGTERM or SIGINT");
        wait_for_stop_signal().await?;
        eprintln!("supervisor: stopping");
        drop(stack);
        for name in ["etcd", "kube-apiserver", "robot-server", "robot-controller"] {
            let _ = std::fs::remove_file(layout.pid_dir().join(format!("{name}.pid")));
        }
        layout.write_state(&State {
            phase: Phase::Stopped,
            ..State::default()
        })
    })
}

async fn wait_for_stop_signal() -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::io("listening for SIGTERM", e))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("listening for SIGINT", e))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

struct Stack {
    // Dropped in this order: the controller first, the control plane last.
    // Held only to keep the controller alive until the stack drops.
    _controller: Option<ChildProcess>,
    controller_status: ControllerStatus,
    server: RobotServer,
    control_plane: ControlPlane,
    api_group: Option<String>,
}

impl Stack {
    async fn start(
        layout: &Layout,
        crds: CrdSet,
        controller: &ControllerLaunch,
    ) -> Result<Self, Error> {
        let log_dir = layout.log_dir();
        std::fs::create_dir_all(&log_dir).map_err(|e| Error::path(&log_dir, e))?;
        std::fs::create_dir_all(layout.pid_dir()).map_err(|e| Error::path(&layout.pid_dir(), e))?;
        eprintln!("supervisor: starting the control plane");
        let control_plane = ControlPlane::start(Options {
            crds,
            dir: Some(layout.control_plane_dir()),
            ..Options::default()
        })
        .await?;
        std::fs::copy(control_plane.admin_kubeconfig_path(), layout.kubeconfig())
            .map_err(|e| Error::path(&layout.kubeconfig(), e))?;
        std::fs::copy(
            control_plane.controller_kubeconfig_path(),
            layout.controller_kubeconfig(),
        )
        .map_err(|e| Error::path(&layout.controller_kubeconfig(), e))?;
        for (name, pid) in control_plane.processes() {
            write_pid_file(layout, name, pid)?;
        }

        eprintln!("supervisor: starting the robot server");
        let server = RobotServer::start_with(RobotServerOptions {
            log_dir: Some(log_dir.clone()),
            ..RobotServerOptions::default()
        })
        .await?;
        if let Some(pid) = server.pid() {
            write_pid_file(layout, "robot-server", pid)?;
        }

        let launch = match controller {
            ControllerLaunch::Run(args) => {
                // The local server is the one a ProviderConfig may name.
                let mut args = args.clone();
                if !args.iter().any(|a| a == "--allowed-endpoints") {
                    args.extend(["--allowed-endpoints".to_owned(), server.url().to_owned()]);
                }
                start_controller(layout, &args).await?
            }
            ControllerLaunch::Skip(reason) => Err(reason.clone()),
        };
        let (controller, controller_status) = match launch {
            Ok((process, health_url)) => {
                write_pid_file(layout, "robot-controller", process.id())?;
                (Some(process), ControllerStatus::Ready { health_url })
            }
            Err(reason) => (None, ControllerStatus::NotStarted { reason }),
        };
        let stack = Self {
            _controller: controller,
            controller_status,
            server,
            control_plane,
            api_group: robot_groups(crds).into_iter().next(),
        };
        std::fs::write(layout.env_file(), stack.env_file(layout))
            .map_err(|e| Error::path(&layout.env_file(), e))?;
        Ok(stack)
    }

    fn state(&self) -> State {
        State {
            phase: Phase::Ready,
            error: None,
            control_plane_url: Some(self.control_plane.url().to_owned()),
            robot_server_url: Some(self.server.url().to_owned()),
            controller: Some(self.controller_status.clone()),
            api_group: self.api_group.clone(),
        }
    }

    fn env_file(&self, layout: &Layout) -> String {
        let mut lines = vec![
            "# Written by `cargo xtask up`. Load with: source target/dev/env".to_owned(),
            export("KUBECONFIG", &layout.kubeconfig().display().to_string()),
            export("ROBOT_SERVER_URL", self.server.url()),
            export(
                "ROBOT_CONTROLLER_KUBECONFIG",
                &layout.controller_kubeconfig().display().to_string(),
            ),
        ];
        if let ControllerStatus::Ready { health_url } = &self.controller_status {
            lines.push(export("ROBOT_CONTROLLER_HEALTH_URL", health_url));
        }
        if let Some(group) = &self.api_group {
            lines.push(export("ROBOT_API_GROUP", group));
        }
        lines.join("\n") + "\n"
    }
}

/// `export NAME='value'`, quoted for sh.
fn export(name: &str, value: &str) -> String {
    format!("export {name}='{}'", value.replace('\'', r"'\''"))
}

/// Starts `robot-controller run` and waits for /readyz. `Ok(Err(reason))`
/// when there is no controller to start (not built, no `run` subcommand);
/// `Err` when it was started and failed.
async fn start_controller(
    layout: &Layout,
    extra_args: &[String],
) -> Result<Result<(ChildProcess, String), String>, Error> {
    let binary = match tokio::task::spawn_blocking(|| binary_path("robot-controller")).await {
        Ok(Ok(binary)) => binary,
        Ok(Err(e)) => return Ok(Err(format!("robot-controller is not built: {e}"))),
        Err(e) => return Ok(Err(format!("robot-controller is not built: {e}"))),
    };
    let supports_run = {
        let binary = binary.clone();
        tokio::task::spawn_blocking(move || has_run_subcommand(&binary))
            .await
            .unwrap_or(false)
    };
    if !supports_run {
        return Ok(Err(format!(
            "{} has no `run` subcommand yet",
            binary.display()
        )));
    }
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let health = SocketAddr::new(loopback, free_port(loopback)?);
    let mut cmd = Command::new(&binary);
    cmd.arg("run")
        .arg("--kubeconfig-source")
        .arg(layout.controller_kubeconfig())
        .arg("--health-listen")
        .arg(health.to_string())
        .args(extra_args);
    eprintln!("supervisor: starting the controller");
    let log = layout.log_dir().join("robot-controller.log");
    let mut process = ChildProcess::spawn("robot-controller", cmd, &log)?;
    let ready = wait_for("robot-controller /readyz", CONTROLLER_READY_TIMEOUT, || {
        let exited = process.exit_status().is_some();
        async move {
            if exited {
                return Some(false);
            }
            let probe = tokio::task::spawn_blocking(move || {
                http::get(health, "/readyz", Duration::from_secs(2))
            })
            .await;
            matches!(probe, Ok(Ok(r)) if r.status == 200).then_some(true)
        }
    })
    .await;
    match ready {
        Ok(true) => Ok(Ok((process, format!("http://{health}")))),
        Ok(false) => Err(process.start_error("robot-controller")),
        Err(timeout) => Err(Error::Start {
            what: "robot-controller".into(),
            detail: format!("{timeout}; {}", process.start_error("robot-controller")),
        }),
    }
}

/// Whether `<binary> --help` lists a `run` subcommand (given 10 s, in case
/// a binary ignores `--help` and starts working).
fn has_run_subcommand(binary: &Path) -> bool {
    let Ok(mut child) = Command::new(binary)
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
    let Ok(output) = child.wait_with_output() else {
        return false;
    };
    lists_run(&String::from_utf8_lossy(&output.stdout))
}

/// Finds `run` as a subcommand in clap-style help.
fn lists_run(help: &str) -> bool {
    help.lines()
        .any(|line| line.starts_with("  ") && line.split_whitespace().next() == Some("run"))
}

/// The provider-dummy groups whose Robot CRD the set installs, the
/// guide's `dummy.crossplane.io` first.
pub fn robot_groups(crds: CrdSet) -> Vec<String> {
    let Ok(docs) = crds.files().and_then(|f| crate::manifests::read_files(&f)) else {
        return Vec::new();
    };
    let mut groups: Vec<String> = docs
        .iter()
        .filter(|d| d.gvk.kind == "CustomResourceDefinition")
        .filter(|d| d.object.data["spec"]["names"]["kind"] == "Robot")
        .filter_map(|d| d.object.data["spec"]["group"].as_str())
        .filter_map(|g| g.strip_prefix("iam.").map(str::to_owned))
        .collect();
    groups.sort_by_key(|g| g != "dummy.crossplane.io");
    groups.dedup();
    groups
}

fn write_pid_file(layout: &Layout, name: &str, pid: u32) -> Result<(), Error> {
    let path = layout.pid_dir().join(format!("{name}.pid"));
    let id = ProcessId::of(pid).ok_or_else(|| Error::Start {
        what: name.to_owned(),
        detail: format!("pid {pid} is not running"),
    })?;
    std::fs::write(&path, id.to_line()).map_err(|e| Error::path(&path, e))
}

fn read_pid_file(path: &Path) -> Option<ProcessId> {
    ProcessId::parse(&std::fs::read_to_string(path).ok()?)
}

/// Records the supervisor's pid (written by `up`, which started it).
pub fn record_supervisor(layout: &Layout, pid: u32) -> Result<(), Error> {
    std::fs::create_dir_all(layout.pid_dir()).map_err(|e| Error::path(&layout.pid_dir(), e))?;
    write_pid_file(layout, "supervisor", pid)
}

/// Stops the stack: SIGTERM to the supervisor (which stops its children),
/// SIGKILL after `grace`; then SIGKILL to any child a crashed supervisor
/// left (normally none: they die with it). Returns how many processes were
/// running.
pub fn stop(layout: &Layout, grace: Duration) -> Result<usize, Error> {
    let mut stopped = 0;
    if let Some(supervisor) = layout.running_supervisor() {
        stopped += 1;
        supervisor
            .signal(Signal::TERM)
            .map_err(|e| Error::io("signalling the supervisor", e))?;
        let deadline = Instant::now() + grace;
        while supervisor.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if supervisor.is_running() {
            let _ = supervisor.signal(Signal::KILL);
        }
    }
    let Ok(entries) = std::fs::read_dir(layout.pid_dir()) else {
        return Ok(stopped);
    };
    for entry in entries.flatten() {
        if let Some(id) = read_pid_file(&entry.path()).filter(|p| p.is_running()) {
            stopped += 1;
            let _ = id.signal(Signal::KILL);
        }
    }
    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_run_in_clap_help_only_as_a_subcommand() {
        let help = "Usage: robot-controller [OPTIONS] [COMMAND]\n\nCommands:\n  run     Reconcile until stopped\n  once    One pass\n\nOptions:\n  -h, --help\n";
        assert!(lists_run(help));
        assert!(!lists_run(""));
        assert!(!lists_run(
            "Usage: robot-controller\n\nThis will run forever\n"
        ));
        assert!(!lists_run("  running  not a subcommand\n"));
    }

    #[test]
    fn env_values_are_quoted_for_sh() {
        assert_eq!(export("A", "/x y/z"), "export A='/x y/z'");
        assert_eq!(export("A", "it's"), r"export A='it'\''s'");
    }

    #[test]
    fn the_guide_group_comes_first() {
        assert_eq!(robot_groups(CrdSet::Crossplane), ["dummy.crossplane.io"]);
        assert_eq!(robot_groups(CrdSet::Upbound), ["dummy.upbound.io"]);
        assert!(robot_groups(CrdSet::None).is_empty());
    }

    #[test]
    fn state_round_trips_through_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path());
        assert!(layout.read_state().is_none());
        let state = State {
            phase: Phase::Ready,
            controller: Some(ControllerStatus::NotStarted {
                reason: "no run".into(),
            }),
            ..State::default()
        };
        layout.write_state(&state).expect("write");
        let back = layout.read_state().expect("read");
        assert_eq!(back.phase, Phase::Ready);
        assert_eq!(back.controller, state.controller);
        std::fs::write(layout.state_file(), "{not json").expect("write");
        assert!(layout.read_state().is_none());
    }

    #[test]
    fn stopping_with_no_stack_is_a_no_op_and_clean_keeps_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path().join("dev"));
        assert_eq!(stop(&layout, Duration::from_secs(1)).expect("stop"), 0);
        std::fs::create_dir_all(layout.log_dir()).expect("mkdir");
        std::fs::create_dir_all(layout.pid_dir()).expect("mkdir");
        // A pid file of a process that is gone must not be signalled.
        std::fs::write(layout.supervisor_pid_file(), "999999999 1\n").expect("write");
        std::fs::write(layout.env_file(), "x").expect("write");
        assert_eq!(stop(&layout, Duration::from_secs(1)).expect("stop"), 0);
        layout.clean(true).expect("clean");
        assert!(layout.log_dir().is_dir());
        assert!(!layout.env_file().exists() && !layout.pid_dir().exists());
        layout.clean(false).expect("clean");
        assert!(!layout.log_dir().exists());
    }
}
