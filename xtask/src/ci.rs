//! `cargo xtask ci`: every check of the project, in order, installing what
//! each needs first. Ends with a one-line summary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::tools;

/// What a step reports for the summary line.
#[derive(Default)]
pub struct Outcome {
    pub tests_passed: usize,
    pub tests_ignored: usize,
    pub note: Option<String>,
}

pub struct Step {
    pub name: &'static str,
    pub run: fn() -> Result<Outcome>,
}

/// The steps, cheapest first, so a formatting slip fails in seconds.
pub const STEPS: &[Step] = &[
    Step {
        name: "fmt",
        run: fmt,
    },
    Step {
        name: "clippy",
        run: clippy,
    },
    Step {
        name: "deny",
        run: deny,
    },
    Step {
        name: "build",
        run: build,
    },
    Step {
        name: "test",
        run: test,
    },
    Step {
        name: "terraform",
        run: crate::checks::terraform::step,
    },
    Step {
        name: "checkov",
        run: crate::checks::checkov::step,
    },
    Step {
        name: "packaging",
        run: crate::checks::packaging::step,
    },
    Step {
        name: "lambda",
        run: crate::checks::packaging::lambda::step,
    },
    Step {
        name: "readme",
        run: crate::checks::readme::step,
    },
    Step {
        name: "schemathesis",
        run: schemathesis,
    },
    Step {
        name: "fuzz",
        run: fuzz,
    },
];

pub fn run(only: &[String]) -> Result<()> {
    let started = Instant::now();
    let mut total = Outcome::default();
    let mut notes = Vec::new();
    let steps: Vec<&Step> = STEPS
        .iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name))
        .collect();
    if steps.is_empty() {
        let names: Vec<_> = STEPS.iter().map(|s| s.name).collect();
        bail!("no step named {only:?}; steps are {names:?}");
    }
    for step in &steps {
        let t = Instant::now();
        eprintln!("==> ci: {}", step.name);
        let outcome = (step.run)().with_context(|| format!("ci step `{}` failed", step.name))?;
        eprintln!("<== ci: {} ok in {}", step.name, fmt_duration(t.elapsed()));
        total.tests_passed += outcome.tests_passed;
        total.tests_ignored += outcome.tests_ignored;
        if let Some(note) = outcome.note {
            notes.push(format!("{}: {note}", step.name));
        }
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!("; {}", notes.join("; "))
    };
    println!(
        "ci: ok: {} steps, {} tests passed, {} ignored, in {}{notes}",
        steps.len(),
        total.tests_passed,
        total.tests_ignored,
        fmt_duration(started.elapsed()),
    );
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn fmt() -> Result<Outcome> {
    tools::run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    Ok(Outcome::default())
}

fn clippy() -> Result<Outcome> {
    tools::run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        // The full tier's suites too.
        "--all-features",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    Ok(Outcome::default())
}

/// The dependency policy of `deny.toml`: licenses, bans and sources, all
/// offline. Advisories need the RustSec database from the network, so they
/// are left to a CI that can reach it (`cargo deny check advisories`).
fn deny() -> Result<Outcome> {
    let deny = tools::cargo_tool("cargo-deny", "0.20.2", "cargo-deny")?;
    tools::run(Command::new(deny).args([
        "--offline",
        "--locked",
        "check",
        "bans",
        "licenses",
        "sources",
    ]))?;
    Ok(Outcome::default())
}

fn build() -> Result<Outcome> {
    // Tests of one crate start the binaries of another; build them all first.
    // With the test step's features, so that it reuses this build.
    tools::run(cargo().args([
        "build",
        "--workspace",
        "--bins",
        "--locked",
        "--features",
        FULL_TIER,
    ]))?;
    // The control plane's binaries: found in the cache, or built once.
    let bins = testenv::binaries::ensure().context("getting kube-apiserver and etcd")?;
    // The emulators the tests start; tests find them, never install them.
    for venv in [
        tools::python::AWS,
        tools::python::GCP,
        tools::python::CARGO_LAMBDA,
    ] {
        venv.ensure()?;
    }
    // The private-network tests build network namespaces with a firewall.
    tools::apt(crate::dev::NETNS_PACKAGES)?;
    Ok(Outcome {
        note: Some(format!("control plane binaries in {}", bins.dir.display())),
        ..Outcome::default()
    })
}

/// Both tiers: the default one and the suites against real components
/// (`full-tier`), whose tools the build step installed.
fn test() -> Result<Outcome> {
    // Every suite runs even when one fails, so one run shows all failures
    // (a failing controller suite once hid the testenv suite's).
    cargo_test(&[
        "--workspace",
        "--locked",
        "--no-fail-fast",
        "--features",
        FULL_TIER,
    ])
}

/// The features that turn on the full tier's test suites.
const FULL_TIER: &str = "robot-controller/full-tier,testenv/full-tier";

/// Runs `cargo test` with the given arguments, echoing its output and
/// counting the results.
pub fn cargo_test(args: &[&str]) -> Result<Outcome> {
    let mut child = cargo()
        .arg("test")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let mut outcome = Outcome::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            if let Some((passed, ignored)) = parse_test_result(&line) {
                outcome.tests_passed += passed;
                outcome.tests_ignored += ignored;
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    Ok(outcome)
}

/// Reads `test result: ok. 12 passed; 0 failed; 1 ignored; ...`.
fn parse_test_result(line: &str) -> Option<(usize, usize)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let count = |word: &str| -> Option<usize> {
        rest.split([';', '.'])
            .map(str::trim)
            .find_map(|part| part.strip_suffix(word)?.trim().parse().ok())
    };
    Some((count(" passed")?, count(" ignored").unwrap_or(0)))
}

pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// API fuzzing: schemathesis against robot-server's own /openapi.json,
/// with auth and a state file on so every documented answer can occur.
fn schemathesis() -> Result<Outcome> {
    let venv = tools::python::SCHEMATHESIS.ensure()?;
    tools::run(cargo().args([
        "build",
        "--locked",
        "--package",
        "robot-server",
        "--bin",
        "robot-server",
    ]))?;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("robots.json");
    let token_file = dir.path().join("token");
    // The server refuses tokens under 32 bytes.
    let token = "schemathesis-token-0123456789abcdef";
    std::fs::write(&token_file, token)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let server = runtime.block_on(testenv::RobotServer::start(&[
        "--state-file",
        &state.to_string_lossy(),
        "--auth-token-file",
        &token_file.to_string_lossy(),
    ]))?;
    tools::run(
        Command::new(venv.join("schemathesis"))
            .args(["run", &format!("{}/openapi.json", server.url())])
            .args([
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
            ])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--max-examples", "100", "--seed", "1", "--no-color"])
            .env("SCHEMATHESIS_HOOKS", ""),
    )?;
    drop(server);
    Ok(Outcome::default())
}

/// A short cargo-fuzz run of robot-server's request handling (fuzz/);
/// skipped with a note where no nightly toolchain is installed.
fn fuzz() -> Result<Outcome> {
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        return Ok(Outcome {
            note: Some("skipped: no nightly toolchain".into()),
            ..Outcome::default()
        });
    }
    let cargo_fuzz = tools::cargo_tool("cargo-fuzz", "0.13.2", "cargo-fuzz")?;
    tools::run(
        Command::new(cargo_fuzz)
            .args(["fuzz", "run", "--fuzz-dir", "fuzz", "--sanitizer", "none"])
            .args([
                "robots_request",
                "--",
                "-max_total_time=25",
                "-dict=fuzz/robots.dict",
            ])
            // cargo-fuzz calls `cargo`, which must be nightly's.
            .env_remove("CARGO")
            .env("RUSTUP_TOOLCHAIN", "nightly")
            // Kept across runs: a cold nightly build of the target takes
            // minutes on two cores, a warm one seconds.
            .env("CARGO_TARGET_DIR", tools::cache_dir().join("fuzz-target")),
    )?;
    Ok(Outcome::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cargo_test_summaries() {
        assert_eq!(
            parse_test_result(
                "test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s"
            ),
            Some((12, 3))
        );
        assert_eq!(parse_test_result("running 3 tests"), None);
    }
}
