//! `terraform test`, run in a scratch copy of a directory: the variable
//! validations of each module (`tests/variables/`, no provider) and the
//! AWS module's runs against moto (`tests/*.tftest.hcl`).

use std::path::Path;

use anyhow::{Context as _, Result, bail};

use super::cli::{Terraform, run_captured};

/// `terraform init` and `terraform test` in `dir`, with `env` set;
/// returns how many runs passed.
pub fn run(
    terraform: &Terraform,
    dir: &Path,
    test_directory: &str,
    env: &[(&'static str, String)],
) -> Result<usize> {
    run_captured(terraform.command(dir).args([
        "init",
        "-backend=false",
        "-input=false",
        "-no-color",
        &format!("-test-directory={test_directory}"),
    ]))
    .with_context(|| format!("terraform init in {}", dir.display()))?;
    let mut cmd = terraform.command(dir);
    cmd.args([
        "test",
        "-no-color",
        &format!("-test-directory={test_directory}"),
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out =
        run_captured(&mut cmd).with_context(|| format!("terraform test in {}", dir.display()))?;
    passed(&out).with_context(|| format!("terraform test in {} said:\n{out}", dir.display()))
}

/// Reads `Success! 43 passed, 0 failed.`
fn passed(out: &str) -> Result<usize> {
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Success! "))
        .context("no `Success!` line")?;
    let n: usize = line
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .context("no count of passed runs")?;
    if n == 0 {
        bail!("terraform test ran nothing");
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary() {
        assert_eq!(
            passed("  run \"a\"... pass\n\nSuccess! 43 passed, 0 failed.\n").unwrap(),
            43
        );
        assert!(passed("Success! 0 passed, 0 failed.").is_err());
        assert!(passed("Failure! 1 passed, 1 failed.").is_err());
    }
}
