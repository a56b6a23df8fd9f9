//! `cargo xtask ci --only lambda`: the controller's Lambda packages, built
//! with `cargo lambda build --release --output-format zip` for x86_64 and
//! arm64 (provided.al2023, the binary named `bootstrap`), their contents
//! checked, and the package for this machine's architecture run for real
//! under cargo-lambda's Lambda runtime emulator against a control plane
//! and a robot server: a cold and a warm invocation, timed.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use super::workspace::{Binary, Workspace};
use crate::ci::Outcome;
use crate::tools;

/// A Lambda architecture: cargo-lambda's flag, the ELF machine of the
/// binary it must produce, and the Rust target.
#[derive(Clone, Copy, Debug)]
pub struct Arch {
    pub name: &'static str,
    pub flag: &'static str,
    pub elf_machine: u16,
    pub triple: &'static str,
}

pub const ARCHES: [Arch; 2] = [
    Arch {
        name: "x86_64",
        flag: "--x86-64",
        elf_machine: 62,
        triple: "x86_64-unknown-linux-gnu",
    },
    Arch {
        name: "arm64",
        flag: "--arm64",
        elf_machine: 183,
        triple: "aarch64-unknown-linux-gnu",
    },
];

/// The glibc of Lambda's provided.al2023 runtime.
const AL2023_GLIBC: (u32, u32) = (2, 34);

/// The newest `GLIBC_x.y` symbol version an ELF binary names.
pub fn newest_glibc(binary: &[u8]) -> Option<(u32, u32)> {
    let needle = b"GLIBC_";
    let mut newest = None;
    for at in 0..binary.len().saturating_sub(needle.len()) {
        if &binary[at..at + needle.len()] != needle {
            continue;
        }
        let rest = &binary[at + needle.len()..];
        let digits = |s: &[u8]| -> Option<(u32, usize)> {
            let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
            let text = std::str::from_utf8(&s[..n]).ok()?;
            Some((text.parse().ok()?, n))
        };
        let Some((major, n)) = digits(rest) else {
            continue;
        };
        if rest.get(n) != Some(&b'.') {
            continue;
        }
        let Some((minor, _)) = digits(&rest[n + 1..]) else {
            continue;
        };
        newest = newest.max(Some((major, minor)));
    }
    newest
}

/// What a Lambda zip holds, as checked.
#[derive(Debug)]
pub struct Package {
    pub zip: PathBuf,
    pub zip_bytes: u64,
    pub bootstrap_bytes: u64,
}

/// Checks that `zip` holds exactly one executable `bootstrap`, an ELF
/// binary for `arch`.
pub fn check_zip(zip: &Path, arch: Arch) -> Result<Package> {
    let file = std::fs::File::open(zip).with_context(|| format!("opening {}", zip.display()))?;
    let zip_bytes = file.metadata()?.len();
    let mut archive =
        zip::ZipArchive::new(file).with_context(|| format!("{} is not a zip", zip.display()))?;
    let names: Vec<String> = archive
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: unreadable entry names", zip.display()))?;
    ensure!(
        names == ["bootstrap"],
        "{}: holds {names:?}, expected exactly [\"bootstrap\"]",
        zip.display()
    );
    let mut entry = archive.by_index(0)?;
    let mode = entry.unix_mode().unwrap_or(0);
    ensure!(
        mode & 0o111 != 0,
        "{}: bootstrap is not executable (mode {mode:o})",
        zip.display()
    );
    let bootstrap_bytes = entry.size();
    let mut binary = Vec::new();
    entry.read_to_end(&mut binary)?;
    ensure!(binary.len() >= 20, "bootstrap shorter than an ELF header");
    let header = &binary[..20];
    ensure!(
        &header[..4] == b"\x7fELF",
        "{}: bootstrap is not an ELF binary",
        zip.display()
    );
    let machine = u16::from_le_bytes([header[18], header[19]]);
    ensure!(
        machine == arch.elf_machine,
        "{}: bootstrap is for ELF machine {machine}, expected {} ({})",
        zip.display(),
        arch.elf_machine,
        arch.name
    );
    // provided.al2023 has glibc 2.34: a symbol from a newer glibc would
    // fail at the first cold start, not here.
    if let Some((major, minor)) = newest_glibc(&binary) {
        ensure!(
            (major, minor) <= AL2023_GLIBC,
            "{}: bootstrap needs GLIBC_{major}.{minor}; provided.al2023 has {}.{}",
            zip.display(),
            AL2023_GLIBC.0,
            AL2023_GLIBC.1
        );
    }
    Ok(Package {
        zip: zip.to_path_buf(),
        zip_bytes,
        bootstrap_bytes,
    })
}

/// PATH with the cargo-lambda venv first: its `python3` carries the
/// `ziglang` package, which cargo-lambda uses as the cross linker.
fn path_with(venv_bin: &Path) -> std::ffi::OsString {
    let mut paths = vec![venv_bin.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap_or_default()
}

/// `cargo lambda build` of `bin` for `arch` into `out`; the zip's path.
fn build(venv_bin: &Path, repo: &Path, bin: &Binary, arch: Arch, out: &Path) -> Result<PathBuf> {
    let mut cmd = Command::new(venv_bin.join("cargo-lambda"));
    cmd.args([
        "lambda",
        "build",
        "--release",
        "--locked",
        "--output-format",
        "zip",
    ])
    .arg(arch.flag)
    .args(["--package", &bin.package, "--bin", &bin.name])
    .arg("--lambda-dir")
    .arg(out)
    .current_dir(repo)
    .env("PATH", path_with(venv_bin))
    // Kept across runs, like the fuzz target: a cold release build of
    // the controller takes many minutes on two cores.
    .env("CARGO_TARGET_DIR", tools::cache_dir().join("lambda-target"))
    .env_remove("CARGO");
    let started = Instant::now();
    let output = cmd.output().context("cannot start cargo lambda")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        bail!(
            "cargo lambda build {} failed ({}):\n{}",
            arch.flag,
            output.status,
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
    eprintln!(
        "lambda: built {} in {}",
        arch.name,
        crate::ci::fmt_duration(started.elapsed())
    );
    Ok(out.join(&bin.name).join("bootstrap.zip"))
}

fn loud(what: &str, why: &str) {
    let bar = "!".repeat(78);
    eprintln!("\n{bar}\n!! NOT DONE: {what}\n!! because: {why}\n{bar}\n");
}

pub fn step() -> Result<Outcome> {
    let repo = crate::checks::terraform::repo_root();
    let ws = Workspace::load(&repo)?;
    let bin = ws
        .binary_in("controller")
        .context("no shipped binary in controller/")?
        .clone();
    let venv = tools::python::CARGO_LAMBDA.ensure()?;
    // The Rust standard library for both targets (a no-op when present).
    tools::run(
        Command::new("rustup")
            .args(["target", "add"])
            .args(ARCHES.map(|a| a.triple))
            .current_dir(&repo),
    )?;
    let out = ws.target_dir.join("lambda");
    let mut notes = Vec::new();
    let mut checks = 0;
    let mut host_package = None;
    // Lambda's name for this machine's architecture.
    let host = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    };
    for arch in ARCHES {
        let zip = match build(&venv, &repo, &bin, arch, &out.join(arch.name)) {
            Ok(zip) => zip,
            // The cross build may fail where the native one works; the
            // native package is the one run below, so it must build.
            Err(e) if arch.name != host => {
                loud(
                    &format!("the {} Lambda package", arch.name),
                    &format!("{e:#}"),
                );
                notes.push(format!(
                    "{} PACKAGE NOT BUILT (see the message above)",
                    arch.name.to_uppercase()
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        let package = check_zip(&zip, arch)?;
        eprintln!(
            "lambda: {}: {} ({} bytes zipped, bootstrap {} bytes)",
            arch.name,
            package.zip.display(),
            package.zip_bytes,
            package.bootstrap_bytes
        );
        notes.push(format!(
            "{} zip {:.1} MiB (bootstrap {:.1} MiB)",
            arch.name,
            package.zip_bytes as f64 / 1048576.0,
            package.bootstrap_bytes as f64 / 1048576.0
        ));
        checks += 1;
        if arch.name == host {
            host_package = Some(package);
        }
    }
    let package = host_package.context("no package for this machine's architecture to run")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let timing = runtime.block_on(smoke(&venv, &package.zip))?;
    notes.push(format!(
        "bootstrap under the emulator: cold invocation {} ms, warm {} ms",
        timing.cold.as_millis(),
        timing.warm.as_millis()
    ));
    checks += 1;
    Ok(Outcome {
        tests_passed: checks,
        note: Some(notes.join("; ")),
        ..Outcome::default()
    })
}

struct Timing {
    cold: Duration,
    warm: Duration,
}

/// The packaged `bootstrap`, started as Lambda starts it, invoked twice.
async fn smoke(venv: &Path, zip: &Path) -> Result<Timing> {
    testenv::install_crypto_provider();
    let scratch = tempfile::tempdir()?;
    let bootstrap = scratch.path().join("bootstrap");
    {
        let mut archive = zip::ZipArchive::new(std::fs::File::open(zip)?)?;
        let mut entry = archive.by_name("bootstrap")?;
        let mut file = std::fs::File::create(&bootstrap)?;
        std::io::copy(&mut entry, &mut file)?;
    }
    std::fs::set_permissions(
        &bootstrap,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;

    let cp = testenv::ControlPlane::start(testenv::Options::default()).await?;
    let server = testenv::RobotServer::start(&[]).await?;
    let group = "dummy.crossplane.io";
    cp.apply_yaml(&format!(
        "apiVersion: {group}/v1alpha1\nkind: ProviderConfig\nmetadata:\n  name: default\nspec:\n  endpoint: {}\n\
         ---\napiVersion: iam.{group}/v1alpha1\nkind: Robot\nmetadata:\n  name: packaged\nspec:\n  forProvider:\n    color: yellow\n",
        server.url()
    ))
    .await?;

    let cargo_lambda = venv.join("cargo-lambda");
    let port = testenv::process::free_port(std::net::Ipv4Addr::LOCALHOST.into())?;
    let emulator_log = scratch.path().join("emulator.log");
    let mut watch = Command::new(&cargo_lambda);
    watch
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "--invoke-address",
            "127.0.0.1",
        ])
        .args(["--invoke-port", &port.to_string()])
        // It reads the workspace's metadata even when it runs no function.
        .current_dir(testenv::workspace_root())
        .env("NO_COLOR", "1");
    let _emulator =
        testenv::process::ChildProcess::spawn("cargo lambda watch", watch, &emulator_log)?;
    let runtime_api = testenv::wait_for("the Lambda emulator", Duration::from_secs(60), || async {
        let log = std::fs::read_to_string(&emulator_log).ok()?;
        if log.contains("Error:") {
            return Some(Err(log));
        }
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        log.lines()
            .find_map(|l| l.split_once("AWS_LAMBDA_RUNTIME_API="))
            .map(|(_, v)| Ok(v.trim().to_owned()))
    })
    .await?
    .map_err(|log| anyhow::anyhow!("the Lambda emulator failed:\n{log}"))?;

    let function_log = scratch.path().join("bootstrap.log");
    let mut function = Command::new(&bootstrap);
    function
        .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env(
            "ROBOT_CONTROLLER_KUBECONFIG_SOURCE",
            cp.controller_kubeconfig_path(),
        )
        // Fail-closed default: the allowlist is required, as in the module.
        .env("ROBOT_CONTROLLER_ALLOWED_ENDPOINTS", server.url())
        .env("ROBOT_CONTROLLER_LOG_FORMAT", "json");
    let started = Instant::now();
    let _function = testenv::process::ChildProcess::spawn("bootstrap", function, &function_log)?;
    let invoke = || {
        let mut cmd = Command::new(&cargo_lambda);
        cmd.args(["lambda", "invoke", "_", "--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            .args(["--data-ascii", r#"{"source":"robot-byoc.schedule"}"#])
            .args(["--output-format", "json"])
            .env("NO_COLOR", "1");
        let out = cmd.output().context("cannot run cargo lambda invoke")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "invoke failed ({}): {stdout}{}\nbootstrap log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                testenv::process::log_tail(&function_log, 30)
            );
        }
        let summary: Value =
            serde_json::from_str(&stdout).with_context(|| format!("not JSON: {stdout}"))?;
        ensure!(
            summary["seen"] == 1 && summary["synced"] == 1 && summary["failed"] == 0,
            "unexpected summary {summary}"
        );
        Ok(())
    };
    invoke()?;
    let cold = started.elapsed();
    let warm_started = Instant::now();
    invoke()?;
    let warm = warm_started.elapsed();
    let robot = testenv::http::get(
        server.addr(),
        "/robots?name=packaged",
        Duration::from_secs(5),
    )?;
    ensure!(
        robot.status == 200 && robot.body.contains("yellow"),
        "the robot server holds {} {}",
        robot.status,
        robot.body
    );
    Ok(Timing { cold, warm })
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use zip::write::SimpleFileOptions;

    use super::*;

    fn zip_with(entries: &[(&str, u32, &[u8])]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut w = zip::ZipWriter::new(file.reopen().unwrap());
        for (name, mode, bytes) in entries {
            w.start_file(*name, SimpleFileOptions::default().unix_permissions(*mode))
                .unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap();
        file
    }

    fn elf(machine: u16) -> Vec<u8> {
        let mut header = b"\x7fELF".to_vec();
        header.resize(18, 0);
        header.extend(machine.to_le_bytes());
        header.resize(64, 0);
        header
    }

    #[test]
    fn finds_the_newest_glibc_version_named() {
        assert_eq!(
            newest_glibc(b"x GLIBC_2.17\0GLIBC_2.9\0GLIBC_2.30\0"),
            Some((2, 30))
        );
        assert_eq!(newest_glibc(b"GLIBC_PRIVATE GLIBC_ GLIBC_2."), None);
        let mut too_new = elf(62);
        too_new.extend(b"GLIBC_2.38\0");
        let zip = zip_with(&[("bootstrap", 0o755, &too_new)]);
        let err = check_zip(zip.path(), ARCHES[0]).unwrap_err();
        assert!(format!("{err:#}").contains("needs GLIBC_2.38"), "{err:#}");
    }

    #[test]
    fn accepts_one_executable_bootstrap_for_the_arch() {
        let zip = zip_with(&[("bootstrap", 0o755, &elf(183))]);
        let package = check_zip(zip.path(), ARCHES[1]).expect("valid");
        assert_eq!(package.bootstrap_bytes, 64);
    }

    #[test]
    fn rejects_wrong_names_modes_arches_and_non_zips() {
        let cases = [
            (
                zip_with(&[("robot-controller", 0o755, &elf(62))]),
                "expected exactly",
            ),
            (
                zip_with(&[("bootstrap", 0o755, &elf(62)), ("extra", 0o644, b"x")]),
                "expected exactly",
            ),
            (
                zip_with(&[("bootstrap", 0o644, &elf(62))]),
                "not executable",
            ),
            (zip_with(&[("bootstrap", 0o755, &elf(183))]), "expected 62"),
            (
                zip_with(&[("bootstrap", 0o755, b"#!/bin/sh\necho hi\n----")]),
                "not an ELF",
            ),
            (zip_with(&[("bootstrap", 0o755, b"short")]), "shorter than"),
        ];
        for (zip, expected) in cases {
            let err = check_zip(zip.path(), ARCHES[0]).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{expected}: {err:#}");
        }
        let not_zip = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_zip.path(), b"not a zip").unwrap();
        assert!(
            format!("{:#}", check_zip(not_zip.path(), ARCHES[0]).unwrap_err())
                .contains("not a zip")
        );
    }
}
