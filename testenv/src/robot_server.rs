//! The real `robot-server` binary on a free loopback port, or inside a
//! private network namespace.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::netns::{NetnsHandle, PrivateNetwork};
use crate::process::{ChildProcess, free_port};
use crate::{Error, binary_path, http, wait_for};

/// How long the server gets to answer /healthz.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The port the server listens on inside a private network, as in its
/// container.
pub const PRIVATE_PORT: u16 = 9090;

/// How to start a robot server.
#[derive(Clone, Debug, Default)]
pub struct RobotServerOptions {
    /// Extra flags (`--listen` is added, and `--no-auth` unless they give
    /// `--auth-token-file`).
    pub args: Vec<String>,
    /// Where `robot-server.log` goes; a temp dir if `None`.
    pub log_dir: Option<PathBuf>,
    /// Run inside this network namespace, listening on its private address
    /// and port 9090; reachable only from inside.
    pub netns: Option<(NetnsHandle, Ipv4Addr)>,
}

/// A running robot server; killed on drop.
pub struct RobotServer {
    process: Option<ChildProcess>,
    binary: PathBuf,
    addr: SocketAddr,
    url: String,
    args: Vec<String>,
    log: PathBuf,
    netns: Option<NetnsHandle>,
    _temp: Option<tempfile::TempDir>,
}

impl fmt::Debug for RobotServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The args may hold a token; show only where it runs.
        f.debug_struct("RobotServer")
            .field("url", &self.url)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl RobotServer {
    /// Starts `target/<profile>/robot-server` (built if missing) on a free
    /// loopback port with `args`, and waits for `/healthz`. Without
    /// `--auth-token-file` in `args` it runs with `--no-auth`: the server
    /// refuses to start with neither.
    pub async fn start(args: &[&str]) -> Result<RobotServer, Error> {
        Self::start_with(RobotServerOptions {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..RobotServerOptions::default()
        })
        .await
    }

    /// Starts it inside `net`, on its private address, port 9090: reachable
    /// from inside the namespace only.
    pub async fn start_in(net: &PrivateNetwork, args: &[&str]) -> Result<RobotServer, Error> {
        Self::start_with(RobotServerOptions {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            netns: Some((net.handle(), net.private_address())),
            ..RobotServerOptions::default()
        })
        .await
    }

    pub async fn start_with(opts: RobotServerOptions) -> Result<RobotServer, Error> {
        let binary = tokio::task::spawn_blocking(|| binary_path("robot-server"))
            .await
            .map_err(|e| Error::Build {
                package: "robot-server".into(),
                detail: e.to_string(),
            })??;
        let (temp, log_dir) = match opts.log_dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir).map_err(|e| Error::path(&dir, e))?;
                (None, dir)
            }
            None => {
                let temp = crate::process::temp_dir("server")?;
                let dir = temp.path().to_path_buf();
                (Some(temp), dir)
            }
        };
        let (addr, netns) = match opts.netns {
            Some((handle, ip)) => (SocketAddr::from((ip, PRIVATE_PORT)), Some(handle)),
            None => {
                let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
                (SocketAddr::new(ip, free_port(ip)?), None)
            }
        };
        let mut server = RobotServer {
            process: None,
            binary,
            addr,
            url: format!("http://{addr}"),
            args: opts.args,
            log: log_dir.join("robot-server.log"),
            netns,
            _temp: temp,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match server.spawn_and_wait().await {
                // Another process took the port between our probe and the
                // server's bind; on loopback any other port will do.
                Err(e) if e.is_port_conflict() && server.netns.is_none() && attempt < 3 => {
                    server.addr.set_port(free_port(server.addr.ip())?);
                    server.url = format!("http://{}", server.addr);
                }
                other => break other?,
            }
        }
        Ok(server)
    }

    /// `http://<address>:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ChildProcess::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// SIGKILL: a crash, no graceful shutdown.
    pub async fn kill(&mut self) {
        self.process = None;
    }

    /// Starts it again (after [`kill`](Self::kill), or killing it first)
    /// on the same address with the same flags.
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.process = None;
        self.spawn_and_wait().await
    }

    async fn spawn_and_wait(&mut self) -> Result<(), Error> {
        let mut cmd = match &self.netns {
            Some(ns) => ns.command(&self.binary),
            None => Command::new(&self.binary),
        };
        cmd.args(&self.args).arg(format!("--listen={}", self.addr));
        if !self.args.iter().any(|a| names_auth(a)) {
            cmd.arg("--no-auth");
        }
        let mut process = ChildProcess::spawn("robot-server", cmd, &self.log)?;
        let (addr, netns) = (self.addr, self.netns.clone());
        let ready = wait_for("robot-server /healthz", READY_TIMEOUT, || {
            let exited = process.exit_status().is_some();
            let netns = netns.clone();
            async move {
                if exited {
                    return Some(false);
                }
                healthy(addr, netns).await.then_some(true)
            }
        })
        .await;
        match ready {
            Ok(true) => {
                self.process = Some(process);
                Ok(())
            }
            Ok(false) => Err(process.start_error("robot-server")),
            Err(timeout) => Err(Error::Start {
                what: "robot-server".into(),
                detail: format!("{timeout}; {}", process.start_error("robot-server")),
            }),
        }
    }
}

/// Whether the flag `arg` says how the server authenticates.
fn names_auth(arg: &str) -> bool {
    let flag = arg.split_once('=').map_or(arg, |(flag, _)| flag);
    flag == "--auth-token-file" || flag == "--no-auth"
}

async fn healthy(addr: SocketAddr, netns: Option<NetnsHandle>) -> bool {
    let probe = move || http::get(addr, "/healthz", Duration::from_secs(2));
    let result = tokio::task::spawn_blocking(move || match netns {
        Some(ns) => ns.run(probe).ok(),
        None => Some(probe()),
    })
    .await;
    matches!(result, Ok(Some(Ok(r))) if r.status == 200)
}

#[cfg(test)]
mod tests {
    use super::names_auth;

    #[test]
    fn auth_flags_are_recognised() {
        assert!(names_auth("--auth-token-file"));
        assert!(names_auth("--auth-token-file=/t"));
        assert!(names_auth("--no-auth"));
        assert!(!names_auth("--state-file=/s"));
        assert!(!names_auth("/run/--no-auth"));
    }
}
