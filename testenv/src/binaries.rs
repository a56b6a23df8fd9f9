//! Finds or builds `kube-apiserver` and `etcd`.
//!
//! No release download or container registry is reachable from where this
//! runs, so the binaries are built from pinned Go modules (`testenv/go`)
//! through the Go module proxy, once per machine, into a cache directory
//! keyed by version. `KUBEBUILDER_ASSETS` (as set up by controller-runtime's
//! envtest) points at existing binaries and skips the build.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The Kubernetes release the harness runs; k8s-openapi's `v1_36` matches.
pub const KUBERNETES_VERSION: &str = "v1.36.3";
/// The etcd release Kubernetes 1.36 is tested with.
pub const ETCD_VERSION: &str = "v3.6.8";

/// Where the two binaries are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub dir: PathBuf,
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
}

impl Binaries {
    fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            kube_apiserver: dir.join("kube-apiserver"),
            etcd: dir.join("etcd"),
        }
    }

    fn exist(&self) -> bool {
        self.kube_apiserver.is_file() && self.etcd.is_file()
    }
}

/// The per-machine cache: `$ROBOT_BYOC_CACHE`, else `$XDG_CACHE_HOME/robot-byoc`,
/// else `~/.cache/robot-byoc`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("ROBOT_BYOC_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("robot-byoc")
}

/// The cache directory of this version pair.
fn cache_dir() -> PathBuf {
    cache_root().join(format!(
        "control-plane-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}"
    ))
}

/// The binaries, from `KUBEBUILDER_ASSETS` or the cache; never builds them.
/// What tests call: a test does not install software, it says which
/// command does.
pub fn find() -> Result<Binaries, Error> {
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS") {
        return from_assets(Path::new(&dir));
    }
    let bins = Binaries::in_dir(&cache_dir());
    if bins.exist() {
        return Ok(bins);
    }
    Err(Error::MissingTool {
        tool: "kube-apiserver and etcd",
        hint: "`cargo xtask tools` builds them once (about 4 minutes), or set KUBEBUILDER_ASSETS",
    })
}

/// The binaries, from `KUBEBUILDER_ASSETS`, the cache, or a build (several
/// minutes, once per machine; concurrent callers wait for one build). What
/// xtask calls.
pub fn ensure() -> Result<Binaries, Error> {
    // KUBEBUILDER_ASSETS is never built into: find() says what it lacks.
    if std::env::var_os("KUBEBUILDER_ASSETS").is_some() {
        return find();
    }
    let dir = cache_dir();
    let bins = Binaries::in_dir(&dir);
    if bins.exist() {
        return Ok(bins);
    }
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    // One build per machine even when several tests ask at once.
    let lock_path = dir.join(".build.lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
    lock.lock().map_err(|e| io(&lock_path, e))?;
    if !bins.exist() {
        build(&dir)?;
    }
    Ok(bins)
}

/// The binaries in a `KUBEBUILDER_ASSETS` directory, which must hold both.
fn from_assets(dir: &Path) -> Result<Binaries, Error> {
    let bins = Binaries::in_dir(dir);
    if bins.exist() {
        return Ok(bins);
    }
    Err(Error::Binaries(format!(
        "KUBEBUILDER_ASSETS={} holds no kube-apiserver and etcd; unset it to build them",
        bins.dir.display()
    )))
}

fn build(out: &Path) -> Result<(), Error> {
    let go = which("go").ok_or_else(|| {
        Error::Binaries(
            "`go` is not on PATH; it is needed once to build kube-apiserver and etcd \
             (or point KUBEBUILDER_ASSETS at existing binaries)"
                .into(),
        )
    })?;
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("go");
    let staging = out.join(".staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
    // The version the apiserver reports and derives its API emulation from.
    let minor = KUBERNETES_VERSION
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .unwrap_or("0");
    let ldflags = format!(
        "-s -w \
         -X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION} \
         -X k8s.io/component-base/version.gitMajor=1 \
         -X k8s.io/component-base/version.gitMinor={minor} \
         -X k8s.io/client-go/pkg/version.gitVersion={KUBERNETES_VERSION}"
    );
    eprintln!(
        "testenv: building kube-apiserver {KUBERNETES_VERSION} and etcd {ETCD_VERSION} \
         from the Go module proxy (once per machine, a few minutes)"
    );
    let status = Command::new(go)
        .current_dir(&module)
        .args([
            "build",
            "-mod=readonly",
            "-trimpath",
            "-ldflags",
            &ldflags,
            "-o",
        ])
        .arg(&staging)
        .arg("./cmd/kube-apiserver")
        .arg("./cmd/etcd")
        .env("CGO_ENABLED", "0")
        .status()
        .map_err(|e| Error::Binaries(format!("cannot run go build: {e}")))?;
    if !status.success() {
        return Err(Error::Binaries(format!(
            "go build of kube-apiserver and etcd in {} failed ({status}); see its output above",
            module.display()
        )));
    }
    for name in ["kube-apiserver", "etcd"] {
        let (from, to) = (staging.join(name), out.join(name));
        std::fs::rename(&from, &to).map_err(|e| io(&to, e))?;
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok(())
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::path(path, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubebuilder_assets_must_hold_both_binaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = from_assets(dir.path()).expect_err("empty dir");
        assert!(error.to_string().contains("KUBEBUILDER_ASSETS="), "{error}");
        std::fs::write(dir.path().join("kube-apiserver"), "").expect("write");
        assert!(from_assets(dir.path()).is_err(), "etcd is missing");
        std::fs::write(dir.path().join("etcd"), "").expect("write");
        let bins = from_assets(dir.path()).expect("both there");
        assert_eq!(bins.etcd, dir.path().join("etcd"));
    }
}
