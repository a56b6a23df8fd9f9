//! Private networks for the BYOC direction tests.
//!
//! A [`PrivateNetwork`] is a network namespace joined to this one by a veth
//! pair, with a stateful firewall inside it that lets its processes open
//! connections out (like a NAT gateway) and drops every connection opened
//! from outside. Whatever listens inside is reachable from inside only; a
//! control plane listening on the [`gateway_address`] is reachable from
//! inside.
//!
//! The end-to-end shape, with the controller inside next to the server:
//!
//! ```no_run
//! # async fn e2e() -> Result<(), testenv::Error> {
//! use testenv::netns::PrivateNetwork;
//! use testenv::process::ChildProcess;
//! use testenv::{ControlPlane, Options, RobotServer};
//!
//! let net = PrivateNetwork::create()?;
//! let cp = ControlPlane::start_on(Options::default(), net.gateway_address().into()).await?;
//! let server = RobotServer::start_in(&net, &[]).await?;
//! let health = std::net::SocketAddr::from((net.private_address(), 8080));
//! let mut cmd = net.command(testenv::binary_path("robot-controller")?);
//! cmd.arg("run")
//!     .arg("--kubeconfig-source")
//!     .arg(cp.controller_kubeconfig_path())
//!     .arg(format!("--health-listen={health}"));
//! let log = cp.dir().join("robot-controller.log");
//! let _controller = ChildProcess::spawn("robot-controller", cmd, &log)?;
//! // Probes of anything inside run inside:
//! let ready = net.run(move || {
//!     testenv::http::get(health, "/readyz", std::time::Duration::from_secs(2))
//! })?;
//! // ProviderConfig endpoint: server.url(), reachable from inside only.
//! # let _ = (ready, server);
//! # Ok(())
//! # }
//! ```
//!
//! Drop the processes before the network (declare the network first).
//!
//! [`gateway_address`]: PrivateNetwork::gateway_address

use std::ffi::OsStr;
use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::thread::LinkNameSpaceType;

use crate::Error;
use crate::workspace::find_on_path;

const NAME_PREFIX: &str = "rbyoc-";

/// Why this machine cannot create network namespaces, or `None` if it can.
/// Tests that need them skip with this reason.
pub fn unsupported_reason() -> Option<String> {
    if find_on_path("ip").is_none() {
        return Some("iproute2's `ip` is not installed".into());
    }
    if !rustix::process::geteuid().is_root() {
        return Some("creating network namespaces needs root".into());
    }
    let probe = format!("{NAME_PREFIX}probe-{}", std::process::id());
    if let Err(e) = ip(&["netns", "add", &probe]) {
        return Some(format!("the kernel refused a network namespace: {e}"));
    }
    let _ = ip(&["netns", "del", &probe]);
    None
}

/// A network namespace joined to ours by a veth pair, outbound-only.
pub struct PrivateNetwork {
    handle: NetnsHandle,
    host_link: String,
    gateway: Ipv4Addr,
    private: Ipv4Addr,
}

impl fmt::Debug for PrivateNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateNetwork")
            .field("name", &self.handle.name)
            .field("gateway", &self.gateway)
            .field("private", &self.private)
            .finish()
    }
}

/// A reference to a namespace for running commands and threads inside it.
#[derive(Clone)]
pub struct NetnsHandle {
    name: Arc<str>,
    fd: Arc<OwnedFd>,
}

impl fmt::Debug for NetnsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NetnsHandle").field(&self.name).finish()
    }
}

impl NetnsHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs inside the namespace. Spawn it through
    /// [`ChildProcess`](crate::process::ChildProcess) to tie it to the test.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let fd = Arc::clone(&self.fd);
        // SAFETY: setns is a single syscall, async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                rustix::thread::move_into_link_name_space(
                    fd.as_fd(),
                    Some(LinkNameSpaceType::Network),
                )
                .map_err(std::io::Error::from)
            });
        }
        cmd
    }

    /// Runs `f` on a new thread that has entered the namespace: sockets it
    /// opens are inside. Blocks until `f` returns.
    pub fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let fd = Arc::clone(&self.fd);
        let thread = std::thread::Builder::new()
            .name(format!("in-{}", self.name))
            .spawn(move || {
                rustix::thread::move_into_link_name_space(
                    fd.as_fd(),
                    Some(LinkNameSpaceType::Network),
                )
                .map(|()| f())
            })
            .map_err(|e| Error::io("starting a thread", e))?;
        match thread.join() {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Error::Netns(format!("entering {}: {e}", self.name))),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl PrivateNetwork {
    /// Creates the namespace, the veth pair, addresses, the default route
    /// out, and the firewall. Needs root, `ip` (iproute2) and `nft`
    /// (nftables).
    pub fn create() -> Result<Self, Error> {
        if find_on_path("nft").is_none() {
            return Err(Error::MissingTool {
                tool: "nft",
                hint: "the private network's firewall needs Debian's `nftables` \
                       package (`cargo xtask tools` installs it)",
            });
        }
        sweep_stale();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let taken = ip_output(&["-4", "-o", "addr", "show"])?;
        let (index, gateway, private) = loop {
            let index = NEXT.fetch_add(1, Ordering::Relaxed);
            let (gateway, private) = subnet(pid, index);
            if !taken.contains(&format!(" {gateway}/")) {
                break (index, gateway, private);
            }
        };
        let name = format!("{NAME_PREFIX}{pid}-{index}");
        let host_link = format!("rb{pid}h{index}");
        let private_link = format!("rb{pid}p{index}");
        ip(&["netns", "add", &name])?;
        // From here on, Drop removes what was made.
        let fd = std::fs::File::open(format!("/run/netns/{name}"))
            .map_err(|e| Error::io(format!("opening /run/netns/{name}"), e))?;
        let net = Self {
            handle: NetnsHandle {
                name: name.as_str().into(),
                fd: Arc::new(OwnedFd::from(fd)),
            },
            host_link: host_link.clone(),
            gateway,
            private,
        };
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", name.as_str()];
            all.extend_from_slice(args);
            ip(&all)
        };
        ip(&[
            "link",
            "add",
            &host_link,
            "type",
            "veth",
            "peer",
            "name",
            &private_link,
            "netns",
            &name,
        ])?;
        ip(&["addr", "add", &format!("{gateway}/30"), "dev", &host_link])?;
        ip(&["link", "set", &host_link, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        inside(&[
            "addr",
            "add",
            &format!("{private}/30"),
            "dev",
            &private_link,
        ])?;
        inside(&["link", "set", &private_link, "up"])?;
        inside(&["route", "add", "default", "via", &gateway.to_string()])?;
        net.nft_script(&firewall(&private_link))?;
        Ok(net)
    }

    pub fn name(&self) -> &str {
        &self.handle.name
    }

    /// Our end of the veth pair: listen here to be reachable from inside.
    pub fn gateway_address(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The namespace's end: what listens here is reachable from inside only.
    pub fn private_address(&self) -> Ipv4Addr {
        self.private
    }

    pub fn handle(&self) -> NetnsHandle {
        self.handle.clone()
    }

    /// See [`NetnsHandle::command`].
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.handle.command(program)
    }

    /// See [`NetnsHandle::run`].
    pub fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.handle.run(f)
    }

    /// How many connection attempts from outside the firewall has dropped.
    pub fn dropped_inbound_connections(&self) -> Result<u64, Error> {
        let output = self
            .command("nft")
            .args(["--json", "list", "counter", "inet", "byoc", "inbound"])
            .output()
            .map_err(|e| Error::io("running nft", e))?;
        if !output.status.success() {
            return Err(Error::Netns(format!(
                "nft list counter: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let json: serde_json::Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| Error::Netns(format!("nft's JSON: {e}")))?;
        json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|item| item["counter"]["packets"].as_u64())
            .ok_or_else(|| Error::Netns(format!("no counter in nft's output: {json}")))
    }

    fn nft_script(&self, script: &str) -> Result<(), Error> {
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io("running nft", e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| Error::io("writing to nft", e))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|e| Error::io("running nft", e))?;
        if !output.status.success() {
            return Err(Error::Netns(format!(
                "nft -f: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }
}

impl Drop for PrivateNetwork {
    fn drop(&mut self) {
        // Deleting one end of the pair deletes both, even while a process
        // still holds the namespace open.
        let _ = ip(&["link", "del", &self.host_link]);
        let _ = ip(&["netns", "del", &self.handle.name]);
    }
}

/// Established and related packets (answers to connections opened from
/// inside) pass; new connections arriving on the veth are counted and
/// dropped, as a NAT gateway drops them. Dropped, not rejected: the outside
/// sees a timeout, exactly as from the internet.
fn firewall(private_link: &str) -> String {
    format!(
        "table inet byoc {{
  counter inbound {{ }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname \"lo\" accept
    ct state established,related accept
    iifname \"{private_link}\" counter name \"inbound\" drop
  }}
}}
"
    )
}

/// A /30 in 100.64.0.0/10 (shared address space, never routed on the
/// internet) derived from our pid and a counter, so concurrent test
/// processes pick different ones: `(gateway, private)`.
fn subnet(pid: u32, index: u32) -> (Ipv4Addr, Ipv4Addr) {
    let subnets = 1u32 << 20;
    let n = (pid.wrapping_mul(64).wrapping_add(index)) % subnets;
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0)) + n * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// Removes namespaces (and so their veth pairs) of test processes that died.
fn sweep_stale() {
    let Ok(list) = ip_output(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = owner.filter(|pid| !crate::process::is_running(*pid)) {
            let index = rest.rsplit('-').next().unwrap_or_default();
            let _ = ip(&["link", "del", &format!("rb{pid}h{index}")]);
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), Error> {
    ip_output(args).map(drop)
}

fn ip_output(args: &[&str]) -> Result<String, Error> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::io("running ip (iproute2)", e))?;
    if !output.status.success() {
        return Err(Error::Netns(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_distinct_slash_30s_in_shared_address_space() {
        let (g, p) = subnet(4_194_303, 7);
        assert_eq!(u32::from(p), u32::from(g) + 1);
        assert_eq!(u32::from(g) % 4, 1);
        for (gw, _) in [
            subnet(1, 0),
            subnet(4_194_303, 63),
            subnet(u32::MAX, u32::MAX),
        ] {
            let o = gw.octets();
            assert_eq!(o[0], 100);
            assert!((64..128).contains(&o[1]), "{gw}");
        }
        assert_ne!(subnet(1000, 0), subnet(1000, 1));
        assert_ne!(subnet(1000, 0), subnet(1001, 0));
    }

    #[test]
    fn interface_names_fit_the_kernel_limit() {
        let longest = format!("rb{}h{}", 4_194_304, 999);
        assert!(longest.len() <= 15, "{longest}");
    }
}
