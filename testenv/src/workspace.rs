//! Where things are: the workspace, the shared reference data, our binaries
//! and the tools the harness calls.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The Cargo workspace this crate belongs to.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The shared reference material: `$ROBOT_BYOC_SHARED`, else
/// `<workspace>/../shared`.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("ROBOT_BYOC_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("..").join("shared"),
    }
}

/// The provider-dummy reference material (CRDs of both API groups):
/// `<shared>/anchors/provider-dummy` when the shared dir has it, else the
/// copy vendored in `<workspace>/testdata/provider-dummy` (a fresh clone).
pub fn provider_dummy_dir() -> PathBuf {
    let shared = shared_dir().join("anchors").join("provider-dummy");
    if shared.is_dir() || std::env::var_os("ROBOT_BYOC_SHARED").is_some() {
        return shared;
    }
    workspace_root().join("testdata").join("provider-dummy")
}

/// The profile directory the running executable was built into
/// (`target/debug` for `target/debug/deps/testenv-…` or `target/debug/xtask`).
fn current_profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let name = dir.file_name()?.to_str()?;
    if name == "deps" || name == "examples" {
        return dir.parent().map(Path::to_path_buf);
    }
    Some(dir.to_path_buf())
}

/// `target/<profile>/<name>`, next to the running executable, building the
/// package of the same name with cargo when the binary is missing.
pub fn binary_path(name: &str) -> Result<PathBuf, Error> {
    let path = profile_dir(name)?.join(name);
    if path.is_file() {
        return Ok(path);
    }
    eprintln!("testenv: {} is missing; building it", path.display());
    build_binary(name)
}

/// Builds the binary `name` of the package `name` with cargo (a no-op when
/// it is up to date) into the running executable's target directory.
pub fn build_binary(name: &str) -> Result<PathBuf, Error> {
    let profile_dir = profile_dir(name)?;
    let path = profile_dir.join(name);
    let target_dir = profile_dir.parent().ok_or_else(|| Error::Build {
        package: name.to_owned(),
        detail: format!("{} has no parent", profile_dir.display()),
    })?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(workspace_root())
        .args(["build", "--quiet", "--package", name, "--bin", name])
        .env("CARGO_TARGET_DIR", target_dir);
    if release {
        cargo.arg("--release");
    }
    let status = cargo.status().map_err(|e| Error::Build {
        package: name.to_owned(),
        detail: format!("cannot run cargo: {e}"),
    })?;
    if !status.success() || !path.is_file() {
        return Err(Error::Build {
            package: name.to_owned(),
            detail: format!("cargo build --package {name} failed ({status})"),
        });
    }
    Ok(path)
}

fn profile_dir(name: &str) -> Result<PathBuf, Error> {
    current_profile_dir()
        .or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target"));
            Some(target.join("debug"))
        })
        .ok_or_else(|| Error::Build {
            package: name.to_owned(),
            detail: "cannot tell where the target directory is".into(),
        })
}

/// `kubectl` on `PATH`, or an error saying how to get it.
pub fn kubectl_path() -> Result<PathBuf, Error> {
    find_on_path("kubectl").ok_or(Error::MissingTool {
        tool: "kubectl",
        hint: "install it (https://kubernetes.io/docs/tasks/tools/, or Debian's \
               kubernetes-client) and put it on PATH",
    })
}

pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Writes a file only its owner can read: keys, tokens, kubeconfigs.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    // Replace rather than truncate, so a reader never sees half a file and
    // an existing file's looser mode is not kept.
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::path(&tmp, e))?;
    file.write_all(bytes).map_err(|e| Error::path(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::path(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_workspace_and_the_shared_reference_data() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("testenv").is_dir());
        let reference = provider_dummy_dir();
        for set in ["crds-crossplane.io", "crds-upbound.io"] {
            assert!(
                reference.join(set).is_dir(),
                "{} has no {set}",
                reference.display()
            );
        }
    }

    #[test]
    fn a_missing_tool_is_named() {
        assert!(find_on_path("surely-no-such-tool-robot-byoc").is_none());
        let error = Error::MissingTool {
            tool: "kubectl",
            hint: "install it",
        };
        assert_eq!(error.to_string(), "kubectl is not installed: install it");
    }
}
