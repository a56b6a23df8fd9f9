//! `cargo xtask up | down | demo`: a local control plane, robot server and
//! controller in the background, and the guide's workflow against them.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testenv::CrdSet;
use testenv::devstack::{ControllerLaunch, ControllerStatus, Layout, Phase, State};

/// How long `up` waits for the stack (the controller alone gets 90 s).
const UP_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the demo waits for the controller to converge.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);

/// What testenv's network-namespace tests need: `(command, Debian package)`.
pub const NETNS_PACKAGES: &[(&str, &str)] = &[("ip", "iproute2"), ("nft", "nftables")];

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Crds {
    /// Ours, from infra/crds/ (the dummy.crossplane.io groups)
    Ours,
    /// Ours for the dummy.upbound.io groups, from infra/crds/upbound.io/
    OursUpbound,
    /// The reference set of the dummy.crossplane.io groups
    Crossplane,
    /// The reference set of the dummy.upbound.io groups
    Upbound,
}

impl From<Crds> for CrdSet {
    fn from(c: Crds) -> Self {
        match c {
            Crds::Ours => CrdSet::Ours,
            Crds::OursUpbound => CrdSet::OursUpbound,
            Crds::Crossplane => CrdSet::Crossplane,
            Crds::Upbound => CrdSet::Upbound,
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct UpArgs {
    /// Which CRDs the control plane gets.
    #[arg(long, value_enum, default_value = "ours")]
    pub crds: Crds,
    /// Extra flags for `robot-controller run`.
    #[arg(last = true, value_name = "CONTROLLER_ARGS")]
    pub controller_args: Vec<String>,
}

#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Leave the stack running at the end.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub up: UpArgs,
}

#[derive(Clone, Debug, clap::Args)]
pub struct SupervisorArgs {
    #[arg(long, value_enum)]
    pub crds: Crds,
    /// Do not start the controller, for this reason.
    #[arg(long)]
    pub skip_controller: Option<String>,
    #[arg(last = true)]
    pub controller_args: Vec<String>,
}

fn layout() -> Layout {
    Layout::new(testenv::workspace_root().join("target").join("dev"))
}

/// `target/dev/...` as the user would type it from the workspace root.
fn shown(path: &Path) -> String {
    path.strip_prefix(testenv::workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

pub fn up(args: &UpArgs) -> Result<State> {
    let layout = layout();
    if let Some(supervisor) = layout.running_supervisor() {
        println!(
            "up: already running (supervisor pid {}); `cargo xtask down` stops it",
            supervisor.pid
        );
        let state = layout
            .read_state()
            .context("the running stack has no readable state file")?;
        print_summary(&layout, &state);
        return Ok(state);
    }
    let crds = CrdSet::from(args.crds);
    crds.files()
        .with_context(|| format!("the control plane's CRDs (--crds {:?})", args.crds))?;
    layout.clean(false)?;
    std::fs::create_dir_all(layout.log_dir())?;

    eprintln!("up: kube-apiserver and etcd");
    let bins = testenv::binaries::ensure()?;
    eprintln!("up:   {}", bins.dir.display());
    eprintln!("up: building robot-server and robot-controller");
    testenv::build_binary("robot-server")?;
    let skip_controller = match testenv::build_binary("robot-controller") {
        Ok(_) => None,
        Err(e) => {
            eprintln!("up: the controller will not start: {e}");
            Some(format!("robot-controller does not build: {e}"))
        }
    };

    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let mut cmd = Command::new(exe);
    cmd.current_dir(testenv::workspace_root())
        .arg("dev-supervisor")
        .arg(format!("--crds={}", clap_name(args.crds)));
    if let Some(reason) = &skip_controller {
        cmd.arg(format!("--skip-controller={reason}"));
    }
    cmd.arg("--").args(&args.controller_args);
    let log = layout.log_dir().join("supervisor.log");
    let pid = testenv::process::spawn_detached(cmd, &log)?;
    testenv::devstack::record_supervisor(&layout, pid)?;
    eprintln!("up: starting (supervisor pid {pid}, log {})", shown(&log));

    let state = wait_until_up(&layout, pid, &log)?;
    print_summary(&layout, &state);
    Ok(state)
}

/// The value clap takes for `crds` (`ours-upbound`), from clap itself.
fn clap_name(crds: Crds) -> String {
    use clap::ValueEnum as _;
    crds.to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

fn wait_until_up(layout: &Layout, pid: u32, log: &Path) -> Result<State> {
    let deadline = Instant::now() + UP_TIMEOUT;
    let failed = |why: String| -> Result<State> {
        let tail = testenv::process::log_tail(log, 40);
        let _ = testenv::devstack::stop(layout, Duration::from_secs(30));
        let _ = layout.clean(true);
        bail!(
            "{why}\n--- last lines of {} ---\n{tail}\n--- (all logs in {})",
            shown(log),
            shown(&layout.log_dir())
        )
    };
    loop {
        match layout.read_state() {
            Some(state) if state.phase == Phase::Ready => return Ok(state),
            Some(state) if state.phase == Phase::Failed => {
                let error = state.error.unwrap_or_else(|| "no reason given".into());
                return failed(format!("up failed: {error}"));
            }
            _ => {}
        }
        if !testenv::process::is_running(pid) {
            return failed("up failed: the supervisor exited".into());
        }
        if Instant::now() >= deadline {
            return failed(format!("up timed out after {UP_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_summary(layout: &Layout, state: &State) {
    let unknown = "?".to_owned();
    println!(
        "up: control plane  {}",
        state.control_plane_url.as_ref().unwrap_or(&unknown)
    );
    println!(
        "up: robot server   {}",
        state.robot_server_url.as_ref().unwrap_or(&unknown)
    );
    match &state.controller {
        Some(ControllerStatus::Ready { health_url }) => {
            println!("up: controller     ready (health {health_url})");
        }
        Some(ControllerStatus::NotStarted { reason }) => {
            println!("up: controller     NOT STARTED: {reason}");
        }
        None => println!("up: controller     ?"),
    }
    println!("up: admin kubeconfig  {}", shown(&layout.kubeconfig()));
    println!("up: shell exports     source {}", shown(&layout.env_file()));
    println!("up: logs              {}/", shown(&layout.log_dir()));
    if let Err(missing) = testenv::kubectl_path() {
        println!("up: note: {missing}");
    }
    println!("up: stop with         cargo xtask down");
}

pub fn down() -> Result<()> {
    let layout = layout();
    let stopped = testenv::devstack::stop(&layout, Duration::from_secs(30))?;
    layout.clean(true)?;
    if stopped == 0 {
        println!("down: nothing was running");
    } else {
        println!("down: stopped; logs kept in {}", shown(&layout.log_dir()));
    }
    Ok(())
}

pub fn supervise(args: &SupervisorArgs) -> Result<()> {
    let launch = match &args.skip_controller {
        Some(reason) => ControllerLaunch::Skip(reason.clone()),
        None => ControllerLaunch::Run(args.controller_args.clone()),
    };
    testenv::devstack::supervise(&layout(), args.crds.into(), &launch)?;
    Ok(())
}

pub fn demo(args: &DemoArgs) -> Result<()> {
    let kubectl = testenv::kubectl_path()?;
    let layout = layout();
    let was_up = layout.running_supervisor().is_some();
    let state = up(&args.up)?;
    let result = run_demo(&Kubectl::new(kubectl, &layout), &state);
    if args.keep || was_up {
        println!("demo: the stack keeps running; `cargo xtask down` stops it");
    } else {
        down()?;
    }
    result
}

fn run_demo(kubectl: &Kubectl, state: &State) -> Result<()> {
    let group = state
        .api_group
        .clone()
        .context("the installed CRDs have no Robot kind")?;
    let server_url = state
        .robot_server_url
        .clone()
        .context("the robot server's URL is unknown")?;
    let server = server_addr(&server_url)?;
    let robot = format!("robot.iam.{group}/example");

    step("Point the provider at the robot server: ProviderConfig `default`");
    kubectl.apply(&format!(
        "apiVersion: {group}/v1alpha1\nkind: ProviderConfig\nmetadata:\n  name: default\n\
         spec:\n  endpoint: {server_url}\n"
    ))?;
    step("Ask for a yellow robot");
    kubectl.apply(&robot_yaml(&group, "yellow"))?;

    if let Some(ControllerStatus::NotStarted { reason }) = &state.controller {
        println!();
        println!("demo: STOPPED EARLY: the controller is not running ({reason}).");
        println!(
            "demo: The ProviderConfig and the Robot are applied, but nothing reconciles them."
        );
        bail!("demo incomplete: no controller");
    }

    step("Wait until the controller reports it Synced and Ready");
    let timeout = format!("--timeout={}s", CONVERGE_TIMEOUT.as_secs());
    kubectl.run(&["wait", "--for=condition=Synced", &timeout, &robot])?;
    kubectl.run(&["wait", "--for=condition=Ready", &timeout, &robot])?;
    kubectl.run(&["get", &format!("robots.iam.{group}")])?;
    kubectl.run(&["describe", &robot])?;
    step("The robot as the server holds it");
    show_robot(server, "yellow")?;

    step("Change its color to green");
    kubectl.apply(&robot_yaml(&group, "green"))?;
    show_robot(server, "green")?;

    step("Delete it");
    kubectl.run(&["delete", &robot, &timeout])?;
    kubectl.run(&["get", &format!("robots.iam.{group}")])?;
    wait_for_server(server, "the robot to be gone from the server", |r| {
        r.status == 404
    })?;
    println!("GET /robots?name=example -> 404: gone from the server too");

    // Crossplane v2: the namespaced generation, served beside the legacy one.
    let v2 = group.replacen("dummy.", "dummy.m.", 1);
    if kubectl
        .quiet(&["get", "crd", &format!("robots.iam.{v2}")])
        .is_ok()
    {
        step("Crossplane v2: a ClusterProviderConfig `default` and a namespaced Robot in team-a");
        kubectl.apply(&format!(
            "apiVersion: {v2}/v1alpha1\nkind: ClusterProviderConfig\nmetadata:\n  name: default\n\
             spec:\n  endpoint: {server_url}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n"
        ))?;
        kubectl.apply(&format!(
            "apiVersion: iam.{v2}/v1alpha1\nkind: Robot\nmetadata:\n  name: example\n  namespace: team-a\n\
             spec:\n  forProvider:\n    color: yellow\n  writeConnectionSecretToRef:\n    name: example-robot\n"
        ))?;
        let ns_robot = format!("robot.iam.{v2}/example");
        for condition in ["Synced", "Ready"] {
            kubectl.run(&[
                "-n",
                "team-a",
                "wait",
                &format!("--for=condition={condition}"),
                &timeout,
                &ns_robot,
            ])?;
        }
        kubectl.run(&["-n", "team-a", "get", &format!("robots.iam.{v2}")])?;
        step("Its connection details, in its own namespace");
        kubectl.run(&["-n", "team-a", "get", "secret", "example-robot"])?;
        show_robot(server, "yellow")?;
        step("Delete it");
        kubectl.run(&["-n", "team-a", "delete", &ns_robot, &timeout])?;
        wait_for_server(server, "the robot to be gone from the server", |r| {
            r.status == 404
        })?;
        println!("GET /robots?name=example -> 404: gone from the server too");
    }
    println!("\ndemo: done");
    Ok(())
}

fn robot_yaml(group: &str, color: &str) -> String {
    format!(
        "apiVersion: iam.{group}/v1alpha1\nkind: Robot\nmetadata:\n  name: example\n\
         spec:\n  forProvider:\n    color: {color}\n"
    )
}

fn step(what: &str) {
    println!("\n==> {what}");
}

fn server_addr(url: &str) -> Result<SocketAddr> {
    url.strip_prefix("http://")
        .and_then(|rest| rest.trim_end_matches('/').parse().ok())
        .with_context(|| format!("the robot server URL {url} is not http://IP:PORT"))
}

/// Waits until the server holds the robot with `color`, then prints it.
fn show_robot(server: SocketAddr, color: &str) -> Result<()> {
    let needle = format!("\"color\":\"{color}\"");
    let response = wait_for_server(
        server,
        &format!("the server to hold a {color} robot"),
        |r| r.status == 200 && r.body.replace(' ', "").contains(&needle),
    )?;
    println!(
        "GET /robots?name=example -> {} {}",
        response.status,
        response.body.trim()
    );
    Ok(())
}

fn wait_for_server(
    server: SocketAddr,
    what: &str,
    done: impl Fn(&testenv::http::Response) -> bool,
) -> Result<testenv::http::Response> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let response = testenv::http::get(server, "/robots?name=example", Duration::from_secs(5));
        match response {
            Ok(r) if done(&r) => return Ok(r),
            _ if Instant::now() >= deadline => {
                bail!(
                    "timed out after {CONVERGE_TIMEOUT:?} waiting for {what} (last: {response:?})"
                )
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// kubectl with the stack's admin kubeconfig, echoing each command.
struct Kubectl {
    path: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn new(path: PathBuf, layout: &Layout) -> Self {
        Self {
            path,
            kubeconfig: layout.kubeconfig(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        println!(
            "$ KUBECONFIG={} kubectl {}",
            shown(&self.kubeconfig),
            args.join(" ")
        );
        let mut cmd = Command::new(&self.path);
        cmd.env("KUBECONFIG", &self.kubeconfig).args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        let status = self.command(args).status().context("running kubectl")?;
        if !status.success() {
            bail!("kubectl {} failed: {status}", args.join(" "));
        }
        Ok(())
    }

    /// Runs kubectl without echoing it or its output: for a question.
    fn quiet(&self, args: &[&str]) -> Result<()> {
        let status = Command::new(&self.path)
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running kubectl")?;
        if !status.success() {
            bail!("kubectl {} failed: {status}", args.join(" "));
        }
        Ok(())
    }

    fn apply(&self, yaml: &str) -> Result<()> {
        for line in yaml.lines() {
            println!("    {line}");
        }
        let mut child = self
            .command(&["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .context("running kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(yaml.as_bytes())?;
        let status = child.wait()?;
        if !status.success() {
            bail!("kubectl apply failed: {status}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_robot_server_url() {
        assert_eq!(
            server_addr("http://127.0.0.1:9090").expect("addr"),
            "127.0.0.1:9090".parse().expect("addr")
        );
        assert!(server_addr("https://127.0.0.1:9090").is_err());
        assert!(server_addr("http://localhost:9090").is_err());
    }
}
