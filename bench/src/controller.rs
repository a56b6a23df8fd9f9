//! `cargo xtask bench controller`: the cost curve of convergence, and the
//! same runs against a second controller binary for a side-by-side.
//!
//! For each N (default 1 000 and 10 000; `--sizes 100000` for the long
//! one): a fresh control plane and robot server, N Robots created at once
//! by 64 concurrent clients, the clock from the first create until every
//! Robot is Ready and Synced. Then one steady-state window (default 60 s,
//! one default poll interval) with nothing changing.
//!
//! Every figure is taken from outside the controller, so that any
//! controller can be measured the same way: control-plane requests from the
//! apiserver's API Priority and Fairness counters (two FlowSchemas the
//! benchmark installs send the controller user's reads and writes to the
//! usual priority level under names of their own), robot-server calls from
//! the server's `/metrics`, CPU and memory from `/proc` for the controller,
//! kube-apiserver and etcd.
//!
//! `--reference PATH` runs each N again with that binary (e.g. the Go
//! provider-dummy), started with `--reference-args` and `KUBECONFIG`
//! pointing at the same controller user; the bench grants that user the
//! verbs a controller-runtime provider uses (`update` included), which
//! ours does without.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testenv::process::ChildProcess;

use super::host::{
    Binaries, Generation, build_release, cpu_seconds, get, loopback, mib, status_kib, wait_http,
};
use super::stack::Stack;

/// Robots applied at once, per run.
pub const SIZES: &[usize] = &[1000, 10_000];
const FIRST_RECONCILE_RUNS: usize = 10;
/// FlowSchemas the benchmark installs, one per direction.
const WRITES: &str = "bench-controller-writes";
const READS: &str = "bench-controller-reads";

/// What to run, and against what.
#[derive(Clone, Debug)]
pub struct Plan {
    pub sizes: Vec<usize>,
    pub generation: Generation,
    pub steady: Duration,
    /// Extra flags for our controller (e.g. `--no-normal-events`).
    pub args: Vec<String>,
    pub reference: Option<Reference>,
}

/// A second controller binary.
#[derive(Clone, Debug)]
pub struct Reference {
    pub path: PathBuf,
    pub args: Vec<String>,
}

pub fn bench(plan: &Plan) -> Result<()> {
    let bins = build_release()?;
    testenv::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        println!(
            "controller benchmark: {:?} Robots, release binaries, default flags{}, control plane on the same {} cores; load average before: {}",
            plan.generation,
            if plan.args.is_empty() { String::new() } else { format!(" plus {}", plan.args.join(" ")) },
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            load_average(),
        );
        let mut rows = Vec::new();
        for &n in &plan.sizes {
            let ours = converge(&bins, n, plan.generation, plan.steady, &Subject::Ours(plan.args.clone()))
                .await
                .with_context(|| format!("{n} Robots, robot-controller"))?;
            ours.print("robot-controller");
            rows.push(("robot-controller".to_owned(), ours));
            if let Some(r) = &plan.reference {
                let name = r
                    .path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "reference".into());
                let theirs = converge(&bins, n, plan.generation, plan.steady, &Subject::Reference(r.clone()))
                    .await
                    .with_context(|| format!("{n} Robots, {}", r.path.display()))?;
                theirs.print(&name);
                rows.push((name, theirs));
            }
        }
        println!("\n{}", Figures::HEADER);
        for (name, f) in &rows {
            println!("{}", f.row(name));
        }
        if plan.reference.is_none() && plan.args.is_empty() {
            let first = first_reconcile(&bins).await?;
            println!("\nstart to first finished reconcile (file source, median of {FIRST_RECONCILE_RUNS}): {first:?}");
        }
        println!("load average after: {}", load_average());
        Ok(())
    })
}

enum Subject {
    Ours(Vec<String>),
    Reference(Reference),
}

struct Figures {
    n: usize,
    ready_after: Duration,
    requests: Requests,
    server_calls: f64,
    controller_cpu: f64,
    apiserver_cpu: f64,
    etcd_cpu: f64,
    controller_peak_mib: f64,
    apiserver_mib: f64,
    etcd_mib: f64,
    steady: Option<Steady>,
}

struct Steady {
    window: Duration,
    requests: Requests,
    server_calls: f64,
    controller_cpu: f64,
    controller_mib: f64,
}

impl Figures {
    const HEADER: &str = "| controller | N | all Ready | writes (/Robot) | requests (/Robot) | robot-server calls (/Robot) | CPU s: controller, apiserver, etcd | peak RSS MiB: controller, apiserver, etcd | steady state per window: writes, requests, server calls, controller CPU s, RSS MiB |\n|---|---|---|---|---|---|---|---|---|";

    fn print(&self, name: &str) {
        println!(
            "{name}, {} Robots: all Ready+Synced {:.1}s after the first create; control-plane writes {:.0}, requests {:.0}; \
             robot-server calls {:.0}; CPU controller {:.1}s, kube-apiserver {:.1}s, etcd {:.1}s; \
             peak RSS controller {:.1} MiB, kube-apiserver {:.0} MiB, etcd {:.0} MiB",
            self.n,
            self.ready_after.as_secs_f64(),
            self.requests.writes,
            self.requests.total(),
            self.server_calls,
            self.controller_cpu,
            self.apiserver_cpu,
            self.etcd_cpu,
            self.controller_peak_mib,
            self.apiserver_mib,
            self.etcd_mib,
        );
        if let Some(s) = &self.steady {
            println!(
                "  steady state over {:?}: writes {:.0}, requests {:.0}, robot-server calls {:.0}, controller CPU {:.2}s, RSS {:.1} MiB",
                s.window,
                s.requests.writes,
                s.requests.total(),
                s.server_calls,
                s.controller_cpu,
                s.controller_mib,
            );
        }
    }

    fn row(&self, name: &str) -> String {
        let n = self.n as f64;
        let steady = self
            .steady
            .as_ref()
            .map(|s| {
                format!(
                    "{:.0}, {:.0}, {:.0}, {:.2}, {:.1}",
                    s.requests.writes,
                    s.requests.total(),
                    s.server_calls,
                    s.controller_cpu,
                    s.controller_mib
                )
            })
            .unwrap_or_default();
        format!(
            "| {name} | {} | {:.1} s | {:.0} ({:.2}) | {:.0} ({:.2}) | {:.0} ({:.2}) | {:.1}, {:.1}, {:.1} | {:.1}, {:.0}, {:.0} | {steady} |",
            self.n,
            self.ready_after.as_secs_f64(),
            self.requests.writes,
            self.requests.writes / n,
            self.requests.total(),
            self.requests.total() / n,
            self.server_calls,
            self.server_calls / n,
            self.controller_cpu,
            self.apiserver_cpu,
            self.etcd_cpu,
            self.controller_peak_mib,
            self.apiserver_mib,
            self.etcd_mib,
        )
    }
}

/// The controller user's requests, as the apiserver dispatched them.
#[derive(Clone, Copy, Default)]
struct Requests {
    writes: f64,
    reads: f64,
}

impl Requests {
    fn total(&self) -> f64 {
        self.writes + self.reads
    }
    fn since(&self, before: &Requests) -> Requests {
        Requests {
            writes: self.writes - before.writes,
            reads: self.reads - before.reads,
        }
    }
}

/// A snapshot of every counter the figures are differences of.
struct Snapshot {
    requests: Requests,
    server_calls: f64,
    controller_cpu: f64,
    apiserver_cpu: f64,
    etcd_cpu: f64,
}

impl Snapshot {
    async fn take(stack: &Stack, controller: u32) -> Result<Snapshot> {
        let metrics = stack.apiserver_metrics().await?;
        let dispatched = |schema: &str| {
            sum(
                &metrics,
                "apiserver_flowcontrol_dispatched_requests_total",
                |l| l.contains(&format!("flow_schema=\"{schema}\"")),
            )
        };
        let server = get(stack.server_addr, "/metrics")
            .await
            .context("robot-server /metrics")?;
        let process = |name: &str| stack.process(name).map(cpu_seconds).unwrap_or(f64::NAN);
        Ok(Snapshot {
            requests: Requests {
                writes: dispatched(WRITES),
                reads: dispatched(READS),
            },
            server_calls: sum(&server, "robot_server_http_requests_total", |l| {
                l.contains("route=\"/robots")
            }),
            controller_cpu: cpu_seconds(controller),
            apiserver_cpu: process("kube-apiserver"),
            etcd_cpu: process("etcd"),
        })
    }
}

/// Sends the controller user's requests to the usual priority level under
/// two FlowSchemas of the benchmark's, so the apiserver counts them apart
/// from the benchmark's own (admin, exempt) and its loopback traffic.
fn flow_schemas() -> String {
    let schema = |name: &str, verbs: &str| {
        format!(
            r#"apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata:
  name: {name}
spec:
  priorityLevelConfiguration:
    name: global-default
  matchingPrecedence: 450
  distinguisherMethod:
    type: ByUser
  rules:
    - subjects:
        - kind: User
          user:
            name: {user}
      resourceRules:
        - verbs: [{verbs}]
          apiGroups: ["*"]
          resources: ["*"]
          clusterScope: true
          namespaces: ["*"]
      nonResourceRules:
        - verbs: [{verbs}]
          nonResourceURLs: ["*"]
"#,
            user = testenv::CONTROLLER_USER,
        )
    };
    format!(
        "{}---\n{}",
        schema(WRITES, "create, update, patch, delete, deletecollection"),
        schema(READS, "get, list, watch")
    )
}

/// What a controller-runtime provider needs beyond our RBAC (`update`,
/// the Lease of its leader election): granted only in reference runs.
const REFERENCE_RBAC: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: bench-reference
rules:
  - apiGroups: ["dummy.crossplane.io", "iam.dummy.crossplane.io", "dummy.upbound.io", "iam.dummy.upbound.io", "coordination.k8s.io", ""]
    resources: ["*"]
    verbs: ["*"]
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: bench-reference
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: bench-reference
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: robot-controller
"#;

async fn converge(
    bins: &Binaries,
    n: usize,
    generation: Generation,
    steady: Duration,
    subject: &Subject,
) -> Result<Figures> {
    let stack = Stack::start(bins, generation).await?;
    stack.cp.apply_yaml(&flow_schemas()).await?;
    let controller = match subject {
        Subject::Ours(args) => {
            let health = loopback()?;
            let c = stack.controller_with(bins, health, args)?;
            wait_http(health, "/readyz").await?;
            c
        }
        Subject::Reference(r) => {
            let rbac = REFERENCE_RBAC.replace("robot-controller", testenv::CONTROLLER_USER);
            stack.cp.apply_yaml(&rbac).await?;
            let c = stack.reference(r)?;
            // No readiness endpoint we know of: started once it has listed.
            testenv::wait_for(
                "the reference controller to list",
                Duration::from_secs(60),
                || async {
                    let s = Snapshot::take(&stack, c.id()).await.ok()?;
                    (s.requests.reads >= 2.0).then_some(())
                },
            )
            .await?;
            c
        }
    };
    let pid = controller.id();
    let before = Snapshot::take(&stack, pid).await?;
    let started = Instant::now();
    let (created, ready) = tokio::join!(
        stack.create_robots(n, "bench"),
        stack.wait_all_ready(n, Duration::from_secs(3600))
    );
    created?;
    if let Err(e) = ready {
        bail!(
            "{e}; controller log:\n{}",
            testenv::process::log_tail(controller.log_path(), 20)
        );
    }
    let ready_after = started.elapsed();
    let after = Snapshot::take(&stack, pid).await?;
    let peak = |name: &str| mib(stack.process(name).and_then(|p| status_kib(p, "VmHWM:")));
    let mut figures = Figures {
        n,
        ready_after,
        requests: after.requests.since(&before.requests),
        server_calls: after.server_calls - before.server_calls,
        controller_cpu: after.controller_cpu - before.controller_cpu,
        apiserver_cpu: after.apiserver_cpu - before.apiserver_cpu,
        etcd_cpu: after.etcd_cpu - before.etcd_cpu,
        controller_peak_mib: mib(status_kib(pid, "VmHWM:")),
        apiserver_mib: peak("kube-apiserver"),
        etcd_mib: peak("etcd"),
        steady: None,
    };
    if !steady.is_zero() {
        // The last writes' own watch events settle first.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let a = Snapshot::take(&stack, pid).await?;
        tokio::time::sleep(steady).await;
        let b = Snapshot::take(&stack, pid).await?;
        figures.steady = Some(Steady {
            window: steady,
            requests: b.requests.since(&a.requests),
            server_calls: b.server_calls - a.server_calls,
            controller_cpu: b.controller_cpu - a.controller_cpu,
            controller_mib: mib(status_kib(pid, "VmRSS:")),
        });
        figures.controller_peak_mib = mib(status_kib(pid, "VmHWM:"));
    }
    drop(controller);
    Ok(figures)
}

/// Exec to the first reconcile finished, with one Robot waiting.
async fn first_reconcile(bins: &Binaries) -> Result<Duration> {
    let stack = Stack::start(bins, Generation::Legacy).await?;
    stack.create_robots(1, "first").await?;
    let mut times = Vec::new();
    for _ in 0..FIRST_RECONCILE_RUNS {
        let health = loopback()?;
        let started = Instant::now();
        let controller: ChildProcess = stack.controller_with(bins, health, &[])?;
        loop {
            let reconciles = get(health, "/metrics")
                .await
                .map(|m| sum(&m, "robot_controller_reconciles_total", |_| true))
                .unwrap_or(0.0);
            if reconciles >= 1.0 {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("no reconcile within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(started.elapsed());
        drop(controller);
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// The sum of a counter family's samples whose line passes `filter`.
fn sum(metrics: &str, name: &str, filter: impl Fn(&str) -> bool) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && filter(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0, printed "-0"
}

/// `/proc/loadavg`'s three averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatched_requests_are_summed_per_flow_schema() {
        let metrics = "# HELP x\n\
            apiserver_flowcontrol_dispatched_requests_total{flow_schema=\"bench-controller-writes\",priority_level=\"global-default\"} 40\n\
            apiserver_flowcontrol_dispatched_requests_total{flow_schema=\"exempt\",priority_level=\"exempt\"} 900\n\
            apiserver_flowcontrol_dispatched_requests_total{flow_schema=\"bench-controller-reads\",priority_level=\"global-default\"} 7\n";
        let of = |s: &str| {
            sum(
                metrics,
                "apiserver_flowcontrol_dispatched_requests_total",
                |l| l.contains(&format!("flow_schema=\"{s}\"")),
            )
        };
        assert_eq!(of(WRITES), 40.0);
        assert_eq!(of(READS), 7.0);
        assert_eq!(of("nothing"), 0.0);
        assert!(flow_schemas().contains("verbs: [get, list, watch]"));
    }
}
