//! One etcd member on loopback, tuned for tests.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{ChildProcess, free_port};
use crate::{Error, http, wait_for};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// How long etcd gets to answer /health.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where an etcd member listens and keeps its data; kept across restarts.
#[derive(Clone, Debug)]
pub(crate) struct EtcdConfig {
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
}

impl EtcdConfig {
    pub(crate) fn new(binary: &Path, dir: &Path) -> Result<Self, Error> {
        Ok(Self {
            binary: binary.to_path_buf(),
            data_dir: dir.join("etcd-data"),
            log: dir.join("etcd.log"),
            client_port: free_port(LOOPBACK)?,
            peer_port: free_port(LOOPBACK)?,
        })
    }

    /// The same member on fresh ports (after a port conflict).
    pub(crate) fn with_new_ports(&self) -> Result<Self, Error> {
        Ok(Self {
            client_port: free_port(LOOPBACK)?,
            peer_port: free_port(LOOPBACK)?,
            ..self.clone()
        })
    }

    pub(crate) fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

pub(crate) struct Etcd {
    pub process: ChildProcess,
}

impl Etcd {
    /// Starts the member and waits until it reports healthy.
    pub(crate) async fn start(config: &EtcdConfig) -> Result<Self, Error> {
        let client = config.client_url();
        let peer = format!("http://127.0.0.1:{}", config.peer_port);
        let mut cmd = Command::new(&config.binary);
        cmd.arg("--name=testenv")
            .arg(format!("--data-dir={}", config.data_dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=testenv={peer}"))
            // Tests never survive a machine crash; fsync only slows them.
            .arg("--unsafe-no-fsync=true")
            .arg("--log-level=warn")
            // A ceiling, not an allocation: the 100 000-Robot benchmark
            // holds several GiB of revisions between compactions.
            .arg("--quota-backend-bytes=8589934592");
        let mut process = ChildProcess::spawn("etcd", cmd, &config.log)?;
        let health = SocketAddr::from(([127, 0, 0, 1], config.client_port));
        let ready = wait_for("etcd to report healthy", READY_TIMEOUT, || {
            let exited = process.exit_status().is_some();
            async move {
                if exited {
                    return Some(false);
                }
                let probe = tokio::task::spawn_blocking(move || {
                    http::get(health, "/health", Duration::from_secs(2))
                })
                .await;
                match probe {
                    Ok(Ok(r)) if r.status == 200 && r.body.contains("\"health\":\"true\"") => {
                        Some(true)
                    }
                    _ => None,
                }
            }
        })
        .await;
        match ready {
            Ok(true) => Ok(Self { process }),
            Ok(false) => Err(process.start_error("etcd")),
            Err(timeout) => Err(Error::Start {
                what: "etcd".into(),
                detail: format!("{timeout}; {}", process.start_error("etcd")),
            }),
        }
    }
}
