//! The control plane: etcd + kube-apiserver + RBAC + CRDs, with an admin and
//! a controller identity, each with its own kubeconfig.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;

use crate::apiserver::{self, ApiServer, ApiServerConfig};
use crate::etcd::{Etcd, EtcdConfig};
use crate::pki::Pki;
use crate::tokens::{Token, TokenUser, write_token_file};
use crate::workspace::write_private;
use crate::{Error, binaries, kubeconfig, manifests, wait_for};

/// The controller's user name; `infra/rbac/` binds exactly this user.
pub const CONTROLLER_USER: &str = "robot-controller";
/// The admin's user name (group `system:masters`).
pub const ADMIN_USER: &str = "testenv-admin";

/// Attempts at a start that lost a port race to another process.
const PORT_ATTEMPTS: usize = 3;

/// Which CRDs the control plane gets at start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CrdSet {
    /// Ours, from `infra/crds/*.yaml` (the `*.dummy.crossplane.io` groups):
    /// both generations, legacy and namespaced (`*.dummy.m.crossplane.io`),
    /// as a Crossplane v2 control plane has them.
    #[default]
    Ours,
    /// Ours for the `*.dummy.upbound.io` groups (both generations), from
    /// `infra/crds/upbound.io/*.yaml`.
    OursUpbound,
    /// Ours, the legacy (cluster-scoped) generation only, as a Crossplane
    /// v1 control plane has them.
    OursLegacy,
    /// The reference set of the `*.dummy.crossplane.io` groups.
    Crossplane,
    /// The reference set of the `*.dummy.upbound.io` groups.
    Upbound,
    /// No CRDs.
    None,
}

impl CrdSet {
    /// The directory the set is read from.
    pub fn dir(self) -> Option<PathBuf> {
        let reference = crate::provider_dummy_dir();
        match self {
            CrdSet::Ours | CrdSet::OursLegacy => {
                Some(crate::workspace_root().join("infra").join("crds"))
            }
            CrdSet::OursUpbound => Some(
                crate::workspace_root()
                    .join("infra")
                    .join("crds")
                    .join("upbound.io"),
            ),
            CrdSet::Crossplane => Some(reference.join("crds-crossplane.io")),
            CrdSet::Upbound => Some(reference.join("crds-upbound.io")),
            CrdSet::None => None,
        }
    }

    /// The set's YAML files; an error when the directory is missing or
    /// holds none, so a test never runs against a control plane without
    /// the CRDs it asked for.
    pub fn files(self) -> Result<Vec<PathBuf>, Error> {
        let Some(dir) = self.dir() else {
            return Ok(Vec::new());
        };
        let hint = match self {
            CrdSet::Ours | CrdSet::OursUpbound | CrdSet::OursLegacy => {
                "our CRDs are generated from the Rust types into infra/crds/"
            }
            _ => {
                "the reference CRDs are looked up in $ROBOT_BYOC_SHARED or \
                 <workspace>/../shared (anchors/provider-dummy), else <workspace>/testdata"
            }
        };
        let mut files = files_in(&format!("{self:?}"), &dir, hint)?;
        if self == CrdSet::OursLegacy {
            files.retain(|f| !is_namespaced_generation(f));
        }
        Ok(files)
    }

    /// The files of the set's namespaced (v2, `.m.` groups) generation.
    pub fn namespaced_files(self) -> Result<Vec<PathBuf>, Error> {
        let dir = match self {
            CrdSet::OursLegacy => CrdSet::Ours,
            other => other,
        };
        let mut files = dir.files()?;
        files.retain(|f| is_namespaced_generation(f));
        Ok(files)
    }
}

/// `dummy.m.crossplane.io_providerconfigs.yaml` and the like.
fn is_namespaced_generation(file: &Path) -> bool {
    file.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(".m."))
}

fn files_in(set: &str, dir: &Path, hint: &str) -> Result<Vec<PathBuf>, Error> {
    if !dir.is_dir() {
        return Err(Error::Crds(format!(
            "{set}: {} does not exist ({hint})",
            dir.display()
        )));
    }
    let files = manifests::yaml_files(dir)?;
    if files.is_empty() {
        return Err(Error::Crds(format!(
            "{set}: {} holds no *.yaml ({hint})",
            dir.display()
        )));
    }
    Ok(files)
}

/// How to start a control plane.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub crds: CrdSet,
    /// A TokenReview webhook (`http://host:port/path`) the apiserver asks
    /// about bearer tokens its static token file does not know: how a
    /// control plane that accepts short-lived tokens (Upbound's, EKS's,
    /// GKE's) is stood in for. Every request is asked anew (no cache), so
    /// a token's expiry is real.
    pub token_webhook: Option<String>,
    /// Where to keep data, keys and logs; emptied at start and left in
    /// place at the end. `None`: a temp dir, removed at the end.
    pub dir: Option<PathBuf>,
}

/// A running control plane. Dropping it kills its processes and removes its
/// temp dir.
pub struct ControlPlane {
    // Fields drop in order: processes before the directory they write to.
    apiserver: Option<ApiServer>,
    etcd: Option<Etcd>,
    apiserver_config: ApiServerConfig,
    etcd_config: EtcdConfig,
    admin_token: Token,
    controller_token: Token,
    admin_kubeconfig: PathBuf,
    controller_kubeconfig: PathBuf,
    url: String,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("url", &self.url)
            .field("dir", &self.dir)
            .field("processes", &self.processes())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts a control plane on a free loopback port and returns once it is
    /// ready: RBAC from `infra/rbac/` applied, the CRDs Established.
    pub async fn start(opts: Options) -> Result<ControlPlane, Error> {
        Self::start_on(opts, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// As [`start`](Self::start), listening on `address` instead of
    /// loopback: for a control plane that a network namespace must reach
    /// (see [`crate::netns`]). The serving certificate covers it.
    pub async fn start_on(opts: Options, address: IpAddr) -> Result<ControlPlane, Error> {
        crate::install_crypto_provider();
        let crd_files = opts.crds.files()?;
        let crds = manifests::read_files(&crd_files)?;
        let rbac = manifests::read_files(&manifests::yaml_files(&rbac_dir())?)?;

        let bins = binaries::find()?;

        let (temp, dir) = match &opts.dir {
            Some(dir) => {
                if dir.exists() {
                    std::fs::remove_dir_all(dir).map_err(|e| Error::path(dir, e))?;
                }
                std::fs::create_dir_all(dir).map_err(|e| Error::path(dir, e))?;
                (None, dir.clone())
            }
            None => {
                let temp = crate::process::temp_dir("cp")?;
                let dir = temp.path().to_path_buf();
                (Some(temp), dir)
            }
        };

        let extra_address = (!address.is_loopback()).then_some(address);
        let pki = Pki::generate(&dir.join("pki"), extra_address)?;
        let admin_token = Token::generate()?;
        let controller_token = Token::generate()?;
        let token_file = dir.join("tokens.csv");
        let webhook_config = match &opts.token_webhook {
            Some(url) => {
                let path = dir.join("token-webhook.kubeconfig");
                write_private(&path, webhook_kubeconfig(url).as_bytes())?;
                Some(path)
            }
            None => None,
        };

        let mut etcd_config = EtcdConfig::new(&bins.etcd, &dir)?;
        let apiserver_config = ApiServerConfig::new(
            &bins.kube_apiserver,
            &dir,
            address,
            etcd_config.client_url(),
            pki,
            token_file,
            webhook_config,
        )?;

        let mut attempt = 0;
        let etcd = loop {
            attempt += 1;
            match Etcd::start(&etcd_config).await {
                Err(e) if e.is_port_conflict() && attempt < PORT_ATTEMPTS => {
                    etcd_config = etcd_config.with_new_ports()?;
                }
                other => break other?,
            }
        };

        let mut cp = ControlPlane {
            apiserver: None,
            etcd: Some(etcd),
            url: apiserver_config.url(),
            apiserver_config: ApiServerConfig {
                etcd_url: etcd_config.client_url(),
                ..apiserver_config
            },
            etcd_config,
            admin_token,
            controller_token,
            admin_kubeconfig: dir.join("admin.kubeconfig"),
            controller_kubeconfig: dir.join("controller.kubeconfig"),
            dir,
            _temp: temp,
        };
        cp.write_token_file()?;

        let mut attempt = 0;
        loop {
            attempt += 1;
            cp.url = cp.apiserver_config.url();
            cp.write_kubeconfigs()?;
            match cp.start_apiserver().await {
                Err(e) if e.is_port_conflict() && attempt < PORT_ATTEMPTS => {
                    cp.apiserver_config = cp.apiserver_config.with_new_port()?;
                }
                other => break other?,
            }
        }

        let admin = cp.admin_client().await?;
        // The apiserver creates `default` shortly after it reports ready;
        // the leader-election Role lives there.
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        wait_for("namespace default", Duration::from_secs(30), || async {
            namespaces.get_opt("default").await.ok().flatten()
        })
        .await?;
        manifests::apply(&admin, &rbac).await?;
        manifests::apply(&admin, &crds).await?;
        Ok(cp)
    }

    /// `https://<address>:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where data, keys, kubeconfigs and logs (`*.log`) are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn admin_kubeconfig_path(&self) -> &Path {
        &self.admin_kubeconfig
    }

    pub fn controller_kubeconfig_path(&self) -> &Path {
        &self.controller_kubeconfig
    }

    /// The controller's kubeconfig, as a secret manager would hand it out.
    pub fn controller_kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml(CONTROLLER_USER, &self.controller_token)
    }

    /// The CA that signs the apiserver's certificate (and client ones), PEM.
    pub fn ca_pem(&self) -> &str {
        &self.apiserver_config.pki.ca_pem
    }

    /// The controller's kubeconfig with a client certificate (the `-data`
    /// forms) instead of a token.
    pub fn controller_cert_kubeconfig_yaml(&self) -> String {
        kubeconfig::render_with_user(
            &self.url,
            &self.apiserver_config.pki.ca_pem,
            CONTROLLER_USER,
            kubeconfig::UserCredential::Certificate {
                cert_pem: &self.apiserver_config.pki.controller_cert_pem,
                key_pem: &self.apiserver_config.pki.controller_key_pem,
            },
        )
    }

    pub fn controller_token(&self) -> String {
        self.controller_token.expose().to_owned()
    }

    /// A client acting as `system:masters`.
    pub async fn admin_client(&self) -> Result<kube::Client, Error> {
        kubeconfig::client_from_yaml(
            &self.kubeconfig_yaml(ADMIN_USER, &self.admin_token),
            "admin client",
        )
        .await
    }

    /// A client acting as the controller: only what `infra/rbac/` grants.
    pub async fn controller_client(&self) -> Result<kube::Client, Error> {
        kubeconfig::client_from_yaml(&self.controller_kubeconfig_yaml(), "controller client").await
    }

    /// `kubectl --kubeconfig=<admin kubeconfig>`. When kubectl is missing,
    /// the command prints what is missing and exits 127.
    pub fn kubectl(&self) -> Command {
        let mut cmd = match crate::kubectl_path() {
            Ok(kubectl) => Command::new(kubectl),
            Err(missing) => return explain_missing(&missing.to_string()),
        };
        cmd.arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()));
        cmd
    }

    /// Applies a YAML stream as admin (server-side apply).
    pub async fn apply_yaml(&self, yaml: &str) -> Result<(), Error> {
        let admin = self.admin_client().await?;
        manifests::apply_yaml(&admin, yaml, "apply_yaml").await
    }

    /// Installs CRD (or other manifest) files as admin, waiting until the
    /// CRDs are Established and served.
    pub async fn install_files(&self, files: &[PathBuf]) -> Result<(), Error> {
        let admin = self.admin_client().await?;
        manifests::apply(&admin, &manifests::read_files(files)?).await
    }

    /// Issues a new controller token and revokes the old one: the token
    /// file is rewritten and the apiserver restarted (etcd keeps running).
    /// The controller kubeconfig file is rewritten. Returns the new token.
    pub async fn rotate_controller_token(&mut self) -> Result<String, Error> {
        self.controller_token = Token::generate()?;
        self.write_token_file()?;
        self.restart_apiserver().await?;
        self.write_kubeconfigs()?;
        Ok(self.controller_token())
    }

    /// Kills the apiserver and starts it again on the same port.
    pub async fn restart_apiserver(&mut self) -> Result<(), Error> {
        self.apiserver = None;
        self.start_apiserver().await
    }

    /// Kills etcd and starts it again on the same ports and data; returns
    /// once the apiserver reports ready again.
    pub async fn restart_etcd(&mut self) -> Result<(), Error> {
        self.etcd = None;
        self.etcd = Some(Etcd::start(&self.etcd_config).await?);
        let admin = self.admin_client().await?;
        wait_for(
            "kube-apiserver /readyz after the etcd restart",
            Duration::from_secs(60),
            || {
                let admin = admin.clone();
                async move { apiserver::is_ready(&admin).await.then_some(()) }
            },
        )
        .await
    }

    /// Stops everything; the same as dropping it.
    pub fn stop(self) {}

    /// The running processes: `("etcd", pid)`, `("kube-apiserver", pid)`.
    pub fn processes(&self) -> Vec<(&'static str, u32)> {
        let mut found = Vec::new();
        if let Some(etcd) = &self.etcd {
            found.push(("etcd", etcd.process.id()));
        }
        if let Some(apiserver) = &self.apiserver {
            found.push(("kube-apiserver", apiserver.process.id()));
        }
        found
    }

    async fn start_apiserver(&mut self) -> Result<(), Error> {
        let admin = self.admin_client().await?;
        self.apiserver = Some(ApiServer::start(&self.apiserver_config, &admin).await?);
        Ok(())
    }

    fn kubeconfig_yaml(&self, user: &str, token: &Token) -> String {
        kubeconfig::render(
            &self.url,
            &self.apiserver_config.pki.ca_pem,
            user,
            token.expose(),
        )
    }

    fn write_kubeconfigs(&self) -> Result<(), Error> {
        write_private(
            &self.admin_kubeconfig,
            self.kubeconfig_yaml(ADMIN_USER, &self.admin_token)
                .as_bytes(),
        )?;
        write_private(
            &self.controller_kubeconfig,
            self.controller_kubeconfig_yaml().as_bytes(),
        )
    }

    fn write_token_file(&self) -> Result<(), Error> {
        write_token_file(
            &self.apiserver_config.token_file,
            &[
                TokenUser {
                    token: &self.admin_token,
                    user: ADMIN_USER,
                    groups: &["system:masters"],
                },
                // No groups: the apiserver adds system:authenticated, as a
                // managed control plane does for an API token.
                TokenUser {
                    token: &self.controller_token,
                    user: CONTROLLER_USER,
                    groups: &[],
                },
            ],
        )
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // The apiserver first, so it does not log a storm of etcd errors.
        self.apiserver = None;
        self.etcd = None;
    }
}

/// The kubeconfig an apiserver reads its TokenReview webhook from.
fn webhook_kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: webhook\n  cluster:\n    server: {url}\nusers:\n- name: apiserver\n  user: {{}}\ncontexts:\n- name: webhook\n  context:\n    cluster: webhook\n    user: apiserver\ncurrent-context: webhook\n"
    )
}

/// A command that prints `message` on stderr and exits 127 (the shell's
/// "command not found"), whatever arguments are appended to it.
fn explain_missing(message: &str) -> Command {
    let mut sh = Command::new("sh");
    sh.args(["-c", "echo \"$1\" >&2; exit 127", "sh", message]);
    sh
}

fn rbac_dir() -> PathBuf {
    crate::workspace_root().join("infra").join("rbac")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_crd_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing =
            files_in("Ours", &dir.path().join("crds"), "generate them").expect_err("missing dir");
        assert!(
            missing
                .to_string()
                .contains("does not exist (generate them)"),
            "{missing}"
        );
        std::fs::write(dir.path().join("README.md"), "not a CRD").expect("write");
        let empty = files_in("Ours", dir.path(), "generate them").expect_err("no yaml");
        assert!(empty.to_string().contains("holds no *.yaml"), "{empty}");
        std::fs::write(dir.path().join("a.yaml"), "").expect("write");
        assert_eq!(files_in("Ours", dir.path(), "").expect("files").len(), 1);
    }

    #[test]
    fn a_missing_kubectl_explains_itself() {
        let output = explain_missing("kubectl is not installed: install it")
            .args(["get", "crds"])
            .output()
            .expect("sh");
        assert_eq!(output.status.code(), Some(127));
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "kubectl is not installed: install it\n"
        );
    }

    #[test]
    fn both_reference_sets_are_found() {
        for set in [CrdSet::Crossplane, CrdSet::Upbound] {
            let files = set.files().expect("reference CRDs");
            assert_eq!(files.len(), 4, "{set:?}: {files:?}");
        }
        assert!(CrdSet::None.files().expect("none").is_empty());
    }

    #[test]
    fn our_sets_split_by_generation() {
        let all = CrdSet::Ours.files().expect("ours");
        let legacy = CrdSet::OursLegacy.files().expect("legacy");
        let namespaced = CrdSet::OursLegacy.namespaced_files().expect("v2");
        assert!(!legacy.is_empty() && !namespaced.is_empty());
        assert_eq!(legacy.len() + namespaced.len(), all.len());
        assert!(namespaced.iter().all(|f| is_namespaced_generation(f)));
        assert!(!legacy.iter().any(|f| is_namespaced_generation(f)));
    }
}
