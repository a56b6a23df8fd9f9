//! What the packaging files must agree with, read from the workspace
//! itself: package and binary names from `cargo metadata`, and each
//! binary's environment variables and default port from its own `--help`.
//! Nothing here is copied from the code, so a renamed binary, flag or env
//! var breaks the checks instead of a user's deployment.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// The workspace's shared package metadata and its shipped binaries.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub root: PathBuf,
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
            root: PathBuf::from(text(&meta["workspace_root"], "workspace_root")?),
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

    /// Builds the shipped binaries (debug) and reads their `--help`.
    pub fn interfaces(&self) -> Result<Vec<Interface>> {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--locked", "--quiet"])
            .current_dir(&self.root);
        for b in &self.binaries {
            cmd.args(["--package", &b.package, "--bin", &b.name]);
        }
        crate::tools::run(&mut cmd)?;
        self.binaries
            .iter()
            .map(|b| {
                let path = self.target_dir.join("debug").join(&b.name);
                Interface::of_program(b.clone(), &path)
            })
            .collect()
    }
}

/// A binary's outside: the env vars it reads and the port it listens on by
/// default, as its `--help` states them.
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
    /// Runs `program --help`, and `program <sub> --help` for each
    /// subcommand it lists.
    pub fn of_program(binary: Binary, program: &Path) -> Result<Interface> {
        let help = |args: &[&str]| -> Result<String> {
            let out = Command::new(program)
                .args(args)
                .output()
                .with_context(|| format!("cannot run {}", program.display()))?;
            if !out.status.success() {
                bail!("{} {args:?} failed: {}", program.display(), out.status);
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let top = help(&["--help"])?;
        let mut texts = vec![top.clone()];
        for sub in subcommands(&top) {
            texts.push(help(&[&sub, "--help"])?);
        }
        Self::from_help(binary, &texts)
    }

    pub fn from_help(binary: Binary, helps: &[String]) -> Result<Interface> {
        let mut env = BTreeSet::new();
        let mut defaults = Vec::new();
        let mut ports = BTreeSet::new();
        for help in helps {
            for flag in flag_blocks(help) {
                let Some(var) = between(&flag, "[env: ", "=") else {
                    continue;
                };
                env.insert(var.to_owned());
                if let Some(default) = between(&flag, "[default: ", "]") {
                    defaults.push((var.to_owned(), default.to_owned()));
                }
                if var.ends_with("_LISTEN") {
                    let port = default_port(&flag).with_context(|| {
                        format!(
                            "{}: the help of {var} names no default 0.0.0.0:<port>",
                            binary.name
                        )
                    })?;
                    ports.insert(port);
                }
            }
            env.extend(environment_only(help));
        }
        let port = match ports.len() {
            1 => ports.into_iter().next().unwrap_or_default(),
            0 => bail!(
                "{}: no flag with an env var *_LISTEN in --help",
                binary.name
            ),
            _ => bail!("{}: several listen ports in --help: {ports:?}", binary.name),
        };
        defaults.sort();
        defaults.dedup();
        Ok(Interface {
            binary,
            env,
            port,
            subcommands: helps.first().map(|h| subcommands(h)).unwrap_or_default(),
            defaults,
        })
    }

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

/// The subcommands clap lists under `Commands:` (not `help`).
fn subcommands(help: &str) -> Vec<String> {
    let Some(start) = help.find("\nCommands:\n") else {
        return Vec::new();
    };
    help[start + "\nCommands:\n".len()..]
        .lines()
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Each option's text in clap's long help: from its `-x, --flag` or
/// `--flag` line to the next one.
fn flag_blocks(help: &str) -> Vec<String> {
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let starts_flag =
            (2..=6).contains(&indent) && (trimmed.starts_with("--") || trimmed.starts_with('-'));
        if starts_flag {
            blocks.push(String::new());
        }
        if let Some(block) = blocks.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

/// Names listed in an `Environment only:` section: `  NAME  what`.
fn environment_only(help: &str) -> Vec<String> {
    let Some(start) = help.find("Environment only:") else {
        return Vec::new();
    };
    help[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

/// The port of the first `0.0.0.0:<port>` in a flag's help.
fn default_port(flag: &str) -> Option<u16> {
    let at = flag.find("0.0.0.0:")? + "0.0.0.0:".len();
    let digits: String = flag[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER_HELP: &str = "A robot store\n\nUsage: robot-server [OPTIONS]\n\nOptions:\n      \
        --listen <ADDR>\n          Address to listen on [default: 0.0.0.0:9090, or 0.0.0.0:$PORT]\n          \n          \
        [env: ROBOT_SERVER_LISTEN=]\n\n      --request-timeout <DURATION>\n          Longest time\n          \n          \
        [env: ROBOT_SERVER_REQUEST_TIMEOUT=]\n          [default: 10s]\n\n  -h, --help\n          Print help\n\n\
        Environment only:\n  ROBOT_SERVER_AUTH_TOKEN  the bearer token itself\n  PORT                     listen on $PORT\n\n\
        Exit codes: 0 after a graceful shutdown.\n";

    fn server() -> Binary {
        Binary {
            package: "robot-server".into(),
            name: "robot-server".into(),
            dir: "server".into(),
        }
    }

    #[test]
    fn reads_env_vars_defaults_and_the_listen_port_from_help() {
        let i = Interface::from_help(server(), &[SERVER_HELP.to_owned()]).expect("parses");
        assert_eq!(i.port, 9090);
        assert_eq!(
            i.env.iter().map(String::as_str).collect::<Vec<_>>(),
            [
                "PORT",
                "ROBOT_SERVER_AUTH_TOKEN",
                "ROBOT_SERVER_LISTEN",
                "ROBOT_SERVER_REQUEST_TIMEOUT"
            ]
        );
        assert_eq!(
            i.defaults_ending("_REQUEST_TIMEOUT")
                .first()
                .map(|(_, d)| *d),
            Some("10s")
        );
        assert_eq!(
            i.defaults_ending("_LISTEN").first().map(|(_, d)| *d),
            Some("0.0.0.0:9090, or 0.0.0.0:$PORT")
        );
        assert_eq!(i.defaults_ending("_LOG").first().map(|(_, d)| *d), None);
    }

    #[test]
    fn help_without_a_listen_port_is_an_error() {
        let help = SERVER_HELP.replace("0.0.0.0:9090, or 0.0.0.0:$PORT", "any");
        let err = Interface::from_help(server(), &[help]).unwrap_err();
        assert!(err.to_string().contains("ROBOT_SERVER_LISTEN"), "{err:#}");
        let err = Interface::from_help(server(), &["Usage: x\n".into()]).unwrap_err();
        assert!(err.to_string().contains("no flag"), "{err:#}");
    }

    #[test]
    fn reads_the_toolchain_channel() {
        let toml = "[toolchain]\nchannel = \"1.95.0\"\ncomponents = [\"clippy\"]\n";
        assert_eq!(toolchain_channel(toml).as_deref(), Some("1.95.0"));
        assert_eq!(toolchain_channel("[toolchain]\n"), None);
    }

    #[test]
    fn lists_subcommands_but_not_help() {
        let top = "Usage: c [COMMAND]\n\nCommands:\n  run     Run\n  once    One pass\n  help    Print this\n\nOptions:\n";
        assert_eq!(subcommands(top), ["run", "once"]);
        assert!(subcommands("Usage: x\n").is_empty());
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
