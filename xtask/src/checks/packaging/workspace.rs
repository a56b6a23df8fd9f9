//! What the packaging files must agree with, read from the workspace
//! itself: package and binary names from `cargo metadata`, and each
//! binary's environment variables and default port from its own
//! `clap::Command` ([`crate::checks::binaries`]).
//! Nothing here is copied from the code, so a renamed binary, flag or env
//! var breaks the checks instead of a user's deployment.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::checks::binaries::Cli;

/// The workspace's shared package metadata and its shipped binaries.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub target_dir: PathBuf,
    pub version: String,
    pub license: String,
    pub repository: String,
    /// The toolchain `rust-toolchain.toml` pins (`channel`), if any.
    pub toolchain: Option<String>,
    pub binaries: Vec<Binary>,
}

/// A binary that ships: a bin target of a publishable package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binary {
    pub package: String,
    pub name: String,
    /// The package's directory name (`server`, `controller`): the suffix of
    /// its `Dockerfile.<dir>` and the name of its container everywhere.
    pub dir: String,
}

impl Workspace {
    /// `cargo metadata --no-deps` of the workspace at `root`.
    pub fn load(root: &Path) -> Result<Workspace> {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
            .current_dir(root)
            .output()
            .context("cannot run cargo metadata")?;
        if !out.status.success() {
            bail!(
                "cargo metadata failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut ws = Self::from_metadata(&String::from_utf8_lossy(&out.stdout))?;
        let toolchain_file = root.join("rust-toolchain.toml");
        if toolchain_file.is_file() {
            let text = std::fs::read_to_string(&toolchain_file)?;
            ws.toolchain = Some(
                toolchain_channel(&text)
                    .with_context(|| format!("{} names no channel", toolchain_file.display()))?,
            );
        }
        Ok(ws)
    }

    pub fn from_metadata(json: &str) -> Result<Workspace> {
        let meta: Value = serde_json::from_str(json).context("cargo metadata is not JSON")?;
        let text = |v: &Value, what: &str| -> Result<String> {
            v.as_str()
                .map(str::to_owned)
                .with_context(|| format!("cargo metadata has no {what}"))
        };
        let packages = meta["packages"]
            .as_array()
            .context("cargo metadata lists no packages")?;
        let mut binaries = Vec::new();
        let mut shipped = Vec::new();
        for p in packages {
            // `publish = false` reads as an empty registry list: dev tools.
            if p["publish"].as_array().is_some_and(Vec::is_empty) {
                continue;
            }
            let manifest = PathBuf::from(text(&p["manifest_path"], "manifest_path")?);
            let dir = manifest
                .parent()
                .and_then(Path::file_name)
                .map(|d| d.to_string_lossy().into_owned())
                .context("a manifest path without a directory")?;
            let bins: Vec<String> = p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "bin"))
                })
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect();
            if bins.is_empty() {
                continue;
            }
            shipped.push(p);
            for name in bins {
                binaries.push(Binary {
                    package: text(&p["name"], "package name")?,
                    name,
                    dir: dir.clone(),
                });
            }
        }
        let first = shipped
            .first()
            .context("the workspace ships no binary (no publishable package with a bin target)")?;
        // The images share one version, licence and source: the workspace's.
        for key in ["version", "license", "repository"] {
            if shipped.iter().any(|p| p[key] != first[key]) {
                bail!("the shipped packages disagree on {key}");
            }
        }
        Ok(Workspace {
            target_dir: PathBuf::from(text(&meta["target_directory"], "target_directory")?),
            version: text(&first["version"], "version")?,
            license: text(&first["license"], "license")?,
            repository: text(&first["repository"], "repository")?,
            toolchain: None,
            binaries,
        })
    }

    /// The binary whose package lives in `dir` (`server`, `controller`).
    pub fn binary_in(&self, dir: &str) -> Option<&Binary> {
        self.binaries.iter().find(|b| b.dir == dir)
    }

    /// Each shipped binary's outside, from its command line in process.
    pub fn interfaces(&self) -> Result<Vec<Interface>> {
        self.binaries
            .iter()
            .map(|b| {
                let cli = Cli::named(&b.name).with_context(|| {
                    format!(
                        "{} ships, but xtask's binaries::CLIS does not list it",
                        b.name
                    )
                })?;
                Ok(Interface {
                    binary: b.clone(),
                    env: cli.env(),
                    port: cli.port,
                    subcommands: cli.subcommands(),
                    defaults: cli.defaults(),
                })
            })
            .collect()
    }
}

/// A binary's outside: the env vars it reads and the port it listens on by
/// default.
#[derive(Clone, Debug)]
pub struct Interface {
    pub binary: Binary,
    pub env: BTreeSet<String>,
    pub port: u16,
    /// Subcommands the top-level help lists (`run`, `once`, ...).
    pub subcommands: Vec<String>,
    /// Defaults of flags, by env var (`ROBOT_CONTROLLER_SHUTDOWN_TIMEOUT` ->
    /// `8s`).
    pub defaults: Vec<(String, String)>,
}

impl Interface {
    /// The defaults of flags whose env var ends with `suffix`.
    pub fn defaults_ending(&self, suffix: &str) -> Vec<(&str, &str)> {
        self.defaults
            .iter()
            .filter(|(v, _)| v.ends_with(suffix))
            .map(|(v, d)| (v.as_str(), d.as_str()))
            .collect()
    }
}

/// `channel = "…"` of a rust-toolchain.toml.
pub fn toolchain_channel(toml: &str) -> Option<String> {
    toml.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "channel").then(|| value.trim().trim_matches('"').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Binary {
        Binary {
            package: "robot-server".into(),
            name: "robot-server".into(),
            dir: "server".into(),
        }
    }

    #[test]
    fn reads_the_toolchain_channel() {
        let toml = "[toolchain]\nchannel = \"1.95.0\"\ncomponents = [\"clippy\"]\n";
        assert_eq!(toolchain_channel(toml).as_deref(), Some("1.95.0"));
        assert_eq!(toolchain_channel("[toolchain]\n"), None);
    }

    #[test]
    fn reads_shipped_binaries_from_cargo_metadata() {
        let meta = r#"{"workspace_root":"/w","target_directory":"/w/target","packages":[
          {"name":"robot-server","version":"0.1.0","license":"Apache-2.0","repository":"https://x/y",
           "publish":null,"manifest_path":"/w/server/Cargo.toml",
           "targets":[{"name":"robot-server","kind":["bin"]},{"name":"robot_server","kind":["lib"]}]},
          {"name":"robot-api","version":"0.1.0","license":"Apache-2.0","repository":"https://x/y",
           "publish":null,"manifest_path":"/w/robot-api/Cargo.toml","targets":[{"name":"robot_api","kind":["lib"]}]},
          {"name":"xtask","version":"0.1.0","license":"Apache-2.0","repository":null,
           "publish":[],"manifest_path":"/w/xtask/Cargo.toml","targets":[{"name":"xtask","kind":["bin"]}]}]}"#;
        let ws = Workspace::from_metadata(meta).expect("parses");
        assert_eq!(ws.binaries, [server()]);
        assert_eq!(ws.version, "0.1.0");
        assert_eq!(ws.repository, "https://x/y");
        assert_eq!(ws.binary_in("server"), Some(&server()));
        assert!(Workspace::from_metadata("{}").is_err());
        assert!(Workspace::from_metadata("not json").is_err());
    }
}
