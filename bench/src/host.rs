//! What the benchmarks share: the release build of our binaries, loopback
//! addresses, HTTP probes and what /proc says about a process.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use kube::core::{ApiResource, GroupVersionKind};
use testenv::process::free_port;

pub struct Binaries {
    pub server: PathBuf,
    pub controller: PathBuf,
}

/// Builds robot-server and robot-controller with the release profile:
/// figures are only ever taken of what users run.
pub fn build_release() -> Result<Binaries> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    crate::run_command(Command::new(cargo).args([
        "build",
        "--release",
        "--locked",
        "--quiet",
        "-p",
        "robot-server",
        "-p",
        "robot-controller",
    ]))?;
    // The control plane's binaries: found in the cache, or built once.
    testenv::binaries::ensure()?;
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| testenv::workspace_root().join("target"))
        .join("release");
    Ok(Binaries {
        server: dir.join("robot-server"),
        controller: dir.join("robot-controller"),
    })
}

pub fn loopback() -> Result<SocketAddr> {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    Ok(SocketAddr::new(ip, free_port(ip)?))
}

/// Which generation of Robots a run creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generation {
    /// Cluster-scoped, `iam.dummy.crossplane.io` (what provider-dummy serves).
    Legacy,
    /// Namespaced, `iam.dummy.m.crossplane.io`, in namespace `bench`, using
    /// the ClusterProviderConfig `default`.
    Namespaced,
    /// Cluster-scoped, `iam.dummy.upbound.io`: the groups of provider-dummy's
    /// newest upstream commit, for a side-by-side with it.
    Upbound,
}

impl Generation {
    /// The group of its ProviderConfig `default`.
    pub fn config_group(self) -> &'static str {
        match self {
            Generation::Upbound => "dummy.upbound.io",
            _ => "dummy.crossplane.io",
        }
    }

    pub fn robots(self) -> ApiResource {
        let group = match self {
            Generation::Legacy => "iam.dummy.crossplane.io",
            Generation::Namespaced => "iam.dummy.m.crossplane.io",
            Generation::Upbound => "iam.dummy.upbound.io",
        };
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, "v1alpha1", "Robot"),
            "robots",
        )
    }
}

/// The body of a 200 answer to `GET path`, or None.
pub async fn get(addr: SocketAddr, path: &'static str) -> Option<String> {
    tokio::task::spawn_blocking(move || {
        testenv::http::get(addr, path, Duration::from_secs(10)).ok()
    })
    .await
    .ok()
    .flatten()
    .filter(|r| r.status == 200)
    .map(|r| r.body)
}

pub async fn wait_http(addr: SocketAddr, path: &'static str) -> Result<()> {
    testenv::wait_for(
        &format!("{path} on {addr}"),
        Duration::from_secs(60),
        || get(addr, path),
    )
    .await?;
    Ok(())
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// KiB as MiB; NaN when the figure could not be read.
pub fn mib(kib: Option<u64>) -> f64 {
    kib.map(|k| k as f64 / 1024.0).unwrap_or(f64::NAN)
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which may hold spaces, in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of /proc/pid/stat, 12 and 13
    // here; Linux reports them in USER_HZ, 100 on every architecture.
    (ticks(11) + ticks(12)) / 100.0
}
