//! Python tools from PyPI in pinned virtualenvs, installed once per machine
//! into the cache ([`crate::binaries::cache_root`]) by `cargo xtask tools`
//! (or `ci`); tests only [`find`](PythonTools::find) them. Concurrent
//! installers wait for one install behind a file lock.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What stops a tool set from being installed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{tools} is not installed: `cargo xtask tools` installs it (into {venv})")]
    NotInstalled { tools: &'static str, venv: String },
    #[error("python3 is needed to install {tools}; install Debian's python3 and python3-venv")]
    NoPython { tools: &'static str },
    #[error("installing {tools}: {what}: {source}")]
    Io {
        tools: &'static str,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("installing {tools}: {command} failed ({status}):\n{output}")]
    Command {
        tools: &'static str,
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },
}

/// A Python tool set, pinned. The venv's name carries a hash of the pins,
/// so changing a pin builds a new venv instead of mutating the old one.
#[derive(Clone, Copy, Debug)]
pub struct PythonTools {
    pub name: &'static str,
    pub requirements: &'static [&'static str],
}

/// moto's server (AWS APIs on loopback) and the aws CLI.
pub const AWS: PythonTools = PythonTools {
    name: "aws",
    requirements: &["moto[server]==5.2.5", "awscli==1.45.11"],
};

/// drongo: Google Secret Manager's REST API on loopback.
pub const GCP: PythonTools = PythonTools {
    name: "gcp",
    requirements: &["drongo==0.8.0"],
};

/// cargo-lambda: builds Lambda zips and runs its local runtime emulator.
pub const CARGO_LAMBDA: PythonTools = PythonTools {
    name: "cargo-lambda",
    requirements: &["cargo-lambda==1.9.2"],
};

impl PythonTools {
    /// The venv, whether installed yet or not.
    pub fn venv(&self) -> PathBuf {
        let digest = fnv1a(self.requirements.join("\n").as_bytes());
        crate::binaries::cache_root().join(format!("venv-{}-{digest:016x}", self.name))
    }

    /// The venv's `bin` directory if it is installed; never installs. What
    /// tests call.
    pub fn find(&self) -> Result<PathBuf, Error> {
        let venv = self.venv();
        if venv.join(".installed").exists() {
            return Ok(venv.join("bin"));
        }
        Err(Error::NotInstalled {
            tools: self.name,
            venv: venv.display().to_string(),
        })
    }

    /// The venv's `bin` directory, creating and filling the venv if needed.
    /// Blocking: call it from `spawn_blocking` in async code. What xtask
    /// calls.
    pub fn ensure(&self) -> Result<PathBuf, Error> {
        let venv = self.venv();
        let bin = venv.join("bin");
        let marker = venv.join(".installed");
        if marker.exists() {
            return Ok(bin);
        }
        let io = |what: &Path, source| Error::Io {
            tools: self.name,
            what: what.display().to_string(),
            source,
        };
        let root = crate::binaries::cache_root();
        std::fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
        // One install per machine even when several tests ask at once.
        let lock_path = root.join(format!(".venv-{}.lock", self.name));
        let lock = std::fs::File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
        lock.lock().map_err(|e| io(&lock_path, e))?;
        if marker.exists() {
            return Ok(bin);
        }
        eprintln!("testenv: installing {} into {}", self.name, venv.display());
        if venv.exists() {
            // A half-built venv from an interrupted install.
            std::fs::remove_dir_all(&venv).map_err(|e| io(&venv, e))?;
        }
        let python = find_program("python3").ok_or(Error::NoPython { tools: self.name })?;
        self.run(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
        self.run(
            Command::new(bin.join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(self.requirements),
        )?;
        std::fs::write(&marker, self.requirements.join("\n")).map_err(|e| io(&marker, e))?;
        Ok(bin)
    }

    fn run(&self, cmd: &mut Command) -> Result<(), Error> {
        let command = format!("{cmd:?}");
        let out = cmd.output().map_err(|source| Error::Io {
            tools: self.name,
            what: format!("starting {command}"),
            source,
        })?;
        if out.status.success() {
            return Ok(());
        }
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        Err(Error::Command {
            tools: self.name,
            command,
            status: out.status,
            output,
        })
    }
}

/// The first `name` on `PATH`.
fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A stable, dependency-free hash for cache keys.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn venv_names_follow_the_pins() {
        // Unchanged from xtask's scheme, so existing caches stay valid.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        let a = AWS.venv();
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("venv-aws-") && name.len() == "venv-aws-".len() + 16);
        let changed = PythonTools {
            name: "aws",
            requirements: &["moto[server]==5.2.6"],
        };
        assert_ne!(changed.venv(), a);
    }
}
