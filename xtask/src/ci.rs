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
        name: "machete",
        run: machete,
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
        name: "lambda",
        run: crate::checks::packaging::lambda::step,
    },
    Step {
        name: "packaging",
        run: crate::checks::packaging::step,
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

/// Steps that run side by side: in each group at most one builds (both
/// cores), the others mostly wait on one core (Python, Terraform, an
/// emulator). Each writes its own log, printed whole when the group ends.
const SIDE_BY_SIDE: &[&[&str]] = &[
    &["deny", "machete"],
    &["terraform", "checkov", "lambda"],
    &["schemathesis", "fuzz"],
];

/// Where a step run by a parent `ci` writes its outcome (JSON).
const OUTCOME_ENV: &str = "ROBOT_BYOC_CI_OUTCOME";

pub fn run(only: &[String]) -> Result<()> {
    let started = Instant::now();
    let steps: Vec<&Step> = STEPS
        .iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name))
        .collect();
    if steps.is_empty() {
        let names: Vec<_> = STEPS.iter().map(|s| s.name).collect();
        bail!("no step named {only:?}; steps are {names:?}");
    }
    let mut done: Vec<(&str, Duration, Outcome)> = Vec::new();
    let mut i = 0;
    while i < steps.len() {
        let group: Vec<&Step> = match SIDE_BY_SIDE.iter().find(|g| g.contains(&steps[i].name)) {
            Some(g) => steps[i..]
                .iter()
                .take_while(|s| g.contains(&s.name))
                .copied()
                .collect(),
            None => vec![steps[i]],
        };
        i += group.len();
        if let [step] = group[..] {
            let t = Instant::now();
            eprintln!("==> ci: {}", step.name);
            let outcome =
                (step.run)().with_context(|| format!("ci step `{}` failed", step.name))?;
            eprintln!("<== ci: {} ok in {}", step.name, fmt_duration(t.elapsed()));
            done.push((step.name, t.elapsed(), outcome));
        } else {
            done.extend(side_by_side(&group)?);
        }
    }
    if let Ok(path) = std::env::var(OUTCOME_ENV) {
        let (passed, ignored, _) = totals(&done);
        // The parent names the step; the note goes without that prefix.
        let notes: Vec<&str> = done
            .iter()
            .filter_map(|(_, _, o)| o.note.as_deref())
            .collect();
        std::fs::write(
            path,
            serde_json::json!({
                "passed": passed,
                "ignored": ignored,
                "note": notes.join("; "),
                "seconds": started.elapsed().as_secs_f64(),
            })
            .to_string(),
        )?;
        return Ok(());
    }
    let times: Vec<String> = done
        .iter()
        .map(|(name, took, _)| format!("{name} {}", fmt_duration(*took)))
        .collect();
    eprintln!("ci: step times: {}", times.join(", "));
    let (passed, ignored, notes) = totals(&done);
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!("; {notes}")
    };
    println!(
        "ci: ok: {} steps, {passed} tests passed, {ignored} ignored, in {}{notes}",
        steps.len(),
        fmt_duration(started.elapsed()),
    );
    Ok(())
}

fn totals(done: &[(&str, Duration, Outcome)]) -> (usize, usize, String) {
    let notes: Vec<String> = done
        .iter()
        .filter_map(|(name, _, o)| o.note.as_ref().map(|n| format!("{name}: {n}")))
        .collect();
    (
        done.iter().map(|(_, _, o)| o.tests_passed).sum(),
        done.iter().map(|(_, _, o)| o.tests_ignored).sum(),
        notes.join("; "),
    )
}

/// Runs `group` at once, each step as `xtask ci --only <step>` with its
/// output in target/ci/<step>.log; prints the logs in order, then fails
/// naming every step that failed.
fn side_by_side<'a>(group: &[&'a Step]) -> Result<Vec<(&'a str, Duration, Outcome)>> {
    let dir = std::path::Path::new("target/ci");
    std::fs::create_dir_all(dir)?;
    let names: Vec<&str> = group.iter().map(|s| s.name).collect();
    eprintln!("==> ci: {} (side by side)", names.join(", "));
    let mut running = Vec::new();
    for step in group {
        let log = dir.join(format!("{}.log", step.name));
        let outcome = dir.join(format!("{}.outcome.json", step.name));
        let _ = std::fs::remove_file(&outcome);
        let file = std::fs::File::create(&log)?;
        // The running binary, even if a build has replaced the file since.
        let child = Command::new("/proc/self/exe")
            .args(["ci", "--only", step.name])
            .env(OUTCOME_ENV, &outcome)
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start ci step `{}`", step.name))?;
        running.push((step.name, log, outcome, Instant::now(), child));
    }
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for (name, log, outcome, started, mut child) in running {
        let status = child.wait()?;
        let took = started.elapsed();
        eprintln!("--- ci: {name} ({}) ---", log.display());
        eprint!("{}", std::fs::read_to_string(&log).unwrap_or_default());
        if !status.success() {
            eprintln!("<== ci: {name} FAILED (its log above)");
            failed.push(name);
            continue;
        }
        // The step's own log ends with its `<== ci: ... ok` line.
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&outcome)?)
            .with_context(|| format!("ci step `{name}` left no outcome"))?;
        let count = |k: &str| json[k].as_u64().unwrap_or(0) as usize;
        // The step's own time: this wait may have started after it ended.
        let took = json["seconds"]
            .as_f64()
            .map_or(took, Duration::from_secs_f64);
        done.push((
            name,
            took,
            Outcome {
                tests_passed: count("passed"),
                tests_ignored: count("ignored"),
                note: json["note"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned),
            },
        ));
    }
    if !failed.is_empty() {
        bail!("ci steps failed: {}", failed.join(", "));
    }
    Ok(done)
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
    let deny = tools::DENY.ensure()?;
    // cargo-deny reads metadata for every platform; offline, that needs
    // every platform's crates (windows-sys, ...) downloaded, which no
    // build here does.
    tools::run(cargo().args(["fetch", "--locked"]))?;
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

/// No dependency a crate declares and never uses.
fn machete() -> Result<Outcome> {
    tools::run(Command::new(tools::MACHETE.ensure()?).arg("--skip-target-dir"))?;
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
/// (`full-tier`), whose tools the build step installed; nextest's `ci`
/// profile (.config/nextest.toml): no fail-fast, no retries, JUnit.
fn test() -> Result<Outcome> {
    let nextest = tools::NEXTEST.ensure()?;
    let mut outcome = nextest_run(
        &nextest,
        &["--workspace", "--locked", "--features", FULL_TIER],
    )?;
    // nextest does not run doctests.
    outcome.tests_passed += cargo_test(&["--workspace", "--locked", "--doc"])?.tests_passed;
    outcome.note = Some("JUnit in target/nextest/ci/junit.xml".into());
    Ok(outcome)
}

/// The features that turn on the full tier's test suites.
const FULL_TIER: &str = "robot-controller/full-tier,testenv/full-tier";

/// `cargo nextest run --profile ci` with `args`, echoing its output and
/// counting the results from its summary line.
fn nextest_run(nextest: &std::path::Path, args: &[&str]) -> Result<Outcome> {
    let mut cmd = Command::new(nextest);
    cmd.args(["nextest", "run", "--profile", "ci", "--no-tests", "fail"])
        .args(args);
    let mut outcome = None;
    // nextest reports on stderr.
    echo_lines(&mut cmd, Stream::Stderr, |line| {
        outcome = parse_nextest_summary(line).or(outcome.take());
    })?;
    outcome.context("cargo nextest printed no summary line")
}

/// Reads `Summary [ 12.3s] 180 tests run: 180 passed, 3 skipped`.
fn parse_nextest_summary(line: &str) -> Option<Outcome> {
    let (_, rest) = line
        .trim()
        .strip_prefix("Summary")?
        .split_once("tests run:")?;
    // Parts read `N word`, sometimes with a remark: `355 passed (1 slow)`.
    let count = |word: &str| -> usize {
        rest.split(',')
            .find_map(|part| {
                let mut words = part.split_whitespace();
                let n = words.next()?.parse().ok()?;
                (words.next()? == word).then_some(n)
            })
            .unwrap_or(0)
    };
    Some(Outcome {
        tests_passed: count("passed"),
        tests_ignored: count("skipped"),
        note: None,
    })
}

/// Runs `cargo test` with the given arguments, echoing its output and
/// counting the results.
fn cargo_test(args: &[&str]) -> Result<Outcome> {
    let mut cmd = cargo();
    cmd.arg("test").args(args);
    let mut outcome = Outcome::default();
    echo_lines(&mut cmd, Stream::Stdout, |line| {
        if let Some((passed, ignored)) = parse_test_result(line) {
            outcome.tests_passed += passed;
            outcome.tests_ignored += ignored;
        }
    })?;
    Ok(outcome)
}

enum Stream {
    Stdout,
    Stderr,
}

/// Runs `cmd`, echoing the lines of `stream` where they would have gone
/// and handing each to `on_line`; fails unless it exits 0.
fn echo_lines(cmd: &mut Command, stream: Stream, mut on_line: impl FnMut(&str)) -> Result<()> {
    match stream {
        Stream::Stdout => cmd.stdout(Stdio::piped()),
        Stream::Stderr => cmd.stderr(Stdio::piped()),
    };
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let piped: Option<Box<dyn std::io::Read>> = match stream {
        Stream::Stdout => child.stdout.take().map(|o| Box::new(o) as _),
        Stream::Stderr => child.stderr.take().map(|e| Box::new(e) as _),
    };
    if let Some(piped) = piped {
        for line in BufReader::new(piped).lines() {
            let line = line?;
            match stream {
                Stream::Stdout => println!("{line}"),
                Stream::Stderr => eprintln!("{line}"),
            }
            on_line(&line);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
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
    let cargo_fuzz = tools::FUZZ.ensure()?;
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

    #[test]
    fn side_by_side_groups_are_consecutive_steps() {
        let names: Vec<&str> = STEPS.iter().map(|s| s.name).collect();
        for group in SIDE_BY_SIDE {
            let first = names.iter().position(|n| *n == group[0]);
            let first = first.unwrap_or_else(|| panic!("no step {}", group[0]));
            assert_eq!(
                &names[first..first + group.len()],
                *group,
                "a group runs together only if its steps follow each other"
            );
        }
    }

    #[test]
    fn reads_nextest_summaries() {
        let outcome =
            parse_nextest_summary("     Summary [ 424.113s] 183 tests run: 180 passed, 3 skipped")
                .expect("a summary");
        assert_eq!((outcome.tests_passed, outcome.tests_ignored), (180, 3));
        let outcome = parse_nextest_summary(
            "     Summary [   1.0s] 3 tests run: 1 passed, 1 failed, 1 timed out, 0 skipped",
        )
        .expect("a summary");
        assert_eq!((outcome.tests_passed, outcome.tests_ignored), (1, 0));
        let outcome = parse_nextest_summary(
            "     Summary [ 502.124s] 355 tests run: 355 passed (1 slow), 2 skipped",
        )
        .expect("a summary");
        assert_eq!((outcome.tests_passed, outcome.tests_ignored), (355, 2));
        assert!(parse_nextest_summary("        PASS [   0.01s] x::y").is_none());
    }
}
