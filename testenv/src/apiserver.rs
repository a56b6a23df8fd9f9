//! kube-apiserver with TLS, static bearer tokens and RBAC: what a managed
//! control plane looks like from outside.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::pki::Pki;
use crate::process::{ChildProcess, free_port};
use crate::{Error, wait_for};

/// How long the apiserver gets to report ready (its first start on a cold
/// machine takes a few seconds; a busy 2-core CI box more).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Debug)]
pub(crate) struct ApiServerConfig {
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub bind: IpAddr,
    pub port: u16,
    pub etcd_url: String,
    pub pki: Pki,
    pub token_file: PathBuf,
    /// A TokenReview webhook's kubeconfig, when there is one.
    pub webhook_config: Option<PathBuf>,
}

impl ApiServerConfig {
    pub(crate) fn new(
        binary: &Path,
        dir: &Path,
        bind: IpAddr,
        etcd_url: String,
        pki: Pki,
        token_file: PathBuf,
        webhook_config: Option<PathBuf>,
    ) -> Result<Self, Error> {
        Ok(Self {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            log: dir.join("kube-apiserver.log"),
            bind,
            port: free_port(bind)?,
            etcd_url,
            pki,
            token_file,
            webhook_config,
        })
    }

    pub(crate) fn with_new_port(&self) -> Result<Self, Error> {
        Ok(Self {
            port: free_port(self.bind)?,
            ..self.clone()
        })
    }

    pub(crate) fn url(&self) -> String {
        match self.bind {
            IpAddr::V4(ip) => format!("https://{ip}:{}", self.port),
            IpAddr::V6(ip) => format!("https://[{ip}]:{}", self.port),
        }
    }

    fn command(&self) -> Command {
        let path = |p: &Path| p.display().to_string();
        let mut cmd = Command::new(&self.binary);
        cmd.arg(format!("--etcd-servers={}", self.etcd_url))
            .arg(format!("--bind-address={}", self.bind))
            .arg(format!("--advertise-address={}", self.bind))
            .arg(format!("--secure-port={}", self.port))
            .arg(format!(
                "--cert-dir={}",
                path(&self.dir.join("apiserver-certs"))
            ))
            .arg(format!("--tls-cert-file={}", path(&self.pki.serving_cert)))
            .arg(format!(
                "--tls-private-key-file={}",
                path(&self.pki.serving_key)
            ))
            .arg(format!("--token-auth-file={}", path(&self.token_file)))
            .arg(format!("--client-ca-file={}", path(&self.pki.ca_cert)))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!(
                "--service-account-key-file={}",
                path(&self.pki.service_account_pub)
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                path(&self.pki.service_account_key)
            ))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--allow-privileged=false")
            .arg("--profiling=false")
            // No controller-manager runs: nothing would create the default
            // service account that this admission plugin waits for.
            .arg("--disable-admission-plugins=ServiceAccount");
        if let Some(webhook) = &self.webhook_config {
            cmd.arg(format!(
                "--authentication-token-webhook-config-file={}",
                path(webhook)
            ))
            .arg("--authentication-token-webhook-version=v1")
            // Asked on every request: an expired token is refused at once.
            .arg("--authentication-token-webhook-cache-ttl=0s");
        }
        cmd
    }
}

pub(crate) struct ApiServer {
    pub process: ChildProcess,
}

impl ApiServer {
    /// Starts the apiserver and waits until `/readyz` answers 200 to `admin`.
    pub(crate) async fn start(
        config: &ApiServerConfig,
        admin: &kube::Client,
    ) -> Result<Self, Error> {
        let mut process = ChildProcess::spawn("kube-apiserver", config.command(), &config.log)?;
        let ready = wait_for("kube-apiserver /readyz", READY_TIMEOUT, || {
            let exited = process.exit_status().is_some();
            let client = admin.clone();
            async move {
                if exited {
                    return Some(false);
                }
                is_ready(&client).await.then_some(true)
            }
        })
        .await;
        match ready {
            Ok(true) => Ok(Self { process }),
            Ok(false) => Err(process.start_error("kube-apiserver")),
            Err(timeout) => Err(Error::Start {
                what: "kube-apiserver".into(),
                detail: format!("{timeout}; {}", process.start_error("kube-apiserver")),
            }),
        }
    }
}

/// `GET /readyz` answers 200: storage reachable, RBAC bootstrapped, every
/// post-start hook done.
pub(crate) async fn is_ready(client: &kube::Client) -> bool {
    let Ok(request) = http_request("/readyz") else {
        return false;
    };
    client
        .request_text(request)
        .await
        .is_ok_and(|body| body.trim() == "ok")
}

fn http_request(path: &str) -> Result<::http::Request<Vec<u8>>, ::http::Error> {
    ::http::Request::get(path).body(Vec::new())
}
