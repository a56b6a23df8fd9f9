//! README.md checks, and `cargo xtask readme` to regenerate its reference
//! tables.
//!
//! - The option tables between `<!-- BEGIN GENERATED <binary> ... -->` and
//!   `<!-- END GENERATED -->` are what the binaries' `--help` says.
//! - Every relative link and `#anchor` of the Markdown resolves (lychee,
//!   offline); every repository path the README names in backticks exists; every `--flag` it names in prose is
//!   one of our binaries' or `cargo xtask`'s.
//! - Every shell block right after a `<!-- runnable -->` line runs, in order,
//!   in one shell, from the repository root, and succeeds.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::ci::Outcome;

const README: &str = "README.md";
const END: &str = "<!-- END GENERATED -->";
const RUNNABLE: &str = "<!-- runnable -->";

/// A generated table: the marker's name, the command whose options it
/// shows, and the variables it reads without a flag.
struct Table {
    name: &'static str,
    command: fn() -> Result<clap::Command>,
    env_only: &'static [(&'static str, &'static str)],
}

const TABLES: &[Table] = &[
    Table {
        name: "robot-controller run --help",
        command: || {
            let mut cli = <robot_controller::cli::Cli as clap::CommandFactory>::command();
            // Propagates the global arguments into the subcommands.
            cli.build();
            cli.find_subcommand("run")
                .cloned()
                .context("robot-controller has no `run`")
        },
        env_only: &[],
    },
    Table {
        name: "robot-server --help",
        command: || Ok(robot_server::cli::command()),
        env_only: robot_server::cli::ENV_ONLY,
    },
];

/// `cargo xtask readme`: rewrites the generated tables in place.
pub fn regenerate() -> Result<()> {
    let text = std::fs::read_to_string(README).context("reading README.md")?;
    let updated = with_tables(&text)?;
    if updated != text {
        std::fs::write(README, updated)?;
        println!("README.md: reference tables regenerated");
    }
    Ok(())
}

/// `cargo xtask ci --only readme`.
pub fn step() -> Result<Outcome> {
    let text = std::fs::read_to_string(README).context("reading README.md")?;
    let mut problems = Vec::new();
    if with_tables(&text)? != text {
        problems.push("the option tables are stale: run `cargo xtask readme`".to_owned());
    }
    problems.extend(missing_paths(&text, Path::new(".")));
    let known = known_flags();
    problems.extend(unknown_flags(&text, &known));
    if !problems.is_empty() {
        bail!("README.md:\n  {}", problems.join("\n  "));
    }
    links()?;
    let blocks = runnable_blocks(&text);
    run_blocks(&blocks)?;
    Ok(Outcome {
        note: Some(format!(
            "tables, links (lychee), paths and flags checked; {} runnable blocks ran",
            blocks.len()
        )),
        ..Outcome::default()
    })
}

/// `text` with every generated table replaced by a fresh one.
fn with_tables(text: &str) -> Result<String> {
    let mut out = text.to_owned();
    for table in TABLES {
        let begin = format!(
            "<!-- BEGIN GENERATED {} (cargo xtask readme) -->",
            table.name
        );
        let start = out
            .find(&begin)
            .with_context(|| format!("README.md has no `{begin}`"))?
            + begin.len();
        let end = start
            + out[start..]
                .find(END)
                .with_context(|| format!("README.md: `{begin}` has no `{END}`"))?;
        let rendered = options_table(&(table.command)()?, table.env_only);
        out.replace_range(start..end, &format!("\n{rendered}"));
    }
    Ok(out)
}

/// One row per option of `cmd` (as its long help shows them), then one
/// per variable read without a flag.
fn options_table(cmd: &clap::Command, env_only: &[(&str, &str)]) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let code = |s: &str| {
        if s.is_empty() {
            String::new()
        } else {
            format!("`{}`", cell(s))
        }
    };
    let mut out =
        String::from("| option | environment variable | default | what |\n|---|---|---|---|\n");
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if arg.is_hide_set() || matches!(long, "help" | "version") {
            continue;
        }
        let mut flag = format!("--{long}");
        if arg.get_action().takes_values() {
            let names = arg
                .get_value_names()
                .map(|n| n.iter().map(|n| format!("<{n}>")).collect::<Vec<_>>())
                .unwrap_or_else(|| vec![format!("<{}>", arg.get_id().as_str().to_uppercase())]);
            flag = format!("{flag} {}", names.join(" "));
        }
        let env = match arg.get_env() {
            Some(env) if !arg.is_hide_env_set() => env.to_string_lossy().into_owned(),
            _ => String::new(),
        };
        let default = if arg.is_hide_default_value_set() || !arg.get_action().takes_values() {
            String::new()
        } else {
            let values: Vec<_> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy())
                .collect();
            values.join(",")
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            code(&flag),
            code(&env),
            code(&default),
            cell(&what(arg)),
        ));
    }
    for (var, what) in env_only {
        out.push_str(&format!("|  | {} |  | {} |\n", code(var), cell(what)));
    }
    out
}

/// An option's long help on one line: paragraphs joined by "; ", then its
/// possible values when they carry help (as clap's long help lists them).
fn what(arg: &clap::Arg) -> String {
    let help = arg
        .get_long_help()
        .or_else(|| arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let mut parts: Vec<String> = help
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect();
    let values: Vec<_> = arg
        .get_possible_values()
        .into_iter()
        .filter(|v| !v.is_hide_set())
        .collect();
    if values.iter().any(|v| v.get_help().is_some()) {
        let listed: Vec<String> = values
            .iter()
            .map(|v| match v.get_help() {
                Some(help) => format!("{}: {help}", v.get_name()),
                None => v.get_name().to_owned(),
            })
            .collect();
        parts.push(format!("Possible values: {}", listed.join("; ")));
    }
    parts.join("; ")
}

fn outside_code(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |l| {
        if l.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// Every local link and `#anchor` of the project's Markdown resolves, by
/// lychee offline (no network request; web links are left alone).
fn links() -> Result<()> {
    let lychee = crate::tools::LYCHEE.ensure()?;
    let markdown = String::from_utf8(
        Command::new("git")
            .args(["ls-files", "*.md"])
            .output()
            .context("listing Markdown files with git")?
            .stdout,
    )?;
    crate::tools::run(
        Command::new(lychee)
            .args(["--offline", "--include-fragments", "--no-progress"])
            .args(markdown.lines()),
    )
    .context("a local link or anchor in the Markdown is broken")
}

/// Repository paths named in inline code (`infra/rbac/`) that do not exist.
fn missing_paths(text: &str, root: &Path) -> Vec<String> {
    const TOP: &[&str] = &[
        "infra/",
        "terraform/",
        "controller/",
        "server/",
        "testenv/",
        "xtask/",
        "robot-api/",
        "logging/",
        "testdata/",
        ".ci/",
        "fuzz/",
    ];
    let mut problems = Vec::new();
    for span in inline_code(text) {
        let path = span.split_whitespace().next().unwrap_or_default();
        let named = TOP.iter().any(|t| path.starts_with(t)) || path.starts_with("Dockerfile.");
        if named && !path.contains(['*', '<', '$']) && !root.join(path).exists() {
            problems.push(format!("names a missing path `{path}`"));
        }
    }
    problems
}

/// Inline code spans outside fenced blocks.
fn inline_code(text: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    for line in outside_code(text) {
        let mut parts = line.split('`');
        parts.next();
        while let Some(code) = parts.next() {
            spans.push(code);
            parts.next();
        }
    }
    spans
}

/// The long flags of our binaries and of `cargo xtask`, every subcommand.
fn known_flags() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        out.extend(
            cmd.get_arguments()
                .filter_map(|a| a.get_long())
                .map(|l| format!("--{l}")),
        );
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut known = BTreeSet::new();
    let binaries = crate::checks::binaries::CLIS.iter().map(|c| (c.command)());
    for mut cmd in binaries.chain([crate::command()]) {
        cmd.build();
        walk(&cmd, &mut known);
    }
    known
}

fn flags_in(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2 && w.as_bytes()[2].is_ascii_lowercase())
        .map(str::to_owned)
        .collect()
}

/// `--flags` named in prose (inline code) that none of our commands has.
fn unknown_flags(text: &str, known: &BTreeSet<String>) -> Vec<String> {
    inline_code(text)
        .into_iter()
        // Spans that are a command of another tool name its flags, not ours.
        .filter(|span| {
            ![
                "kubectl",
                "docker",
                "aws ",
                "gcloud",
                "terraform",
                "cargo lambda",
                "cargo test",
                "cargo nextest",
                "cargo deny",
                "up ",
            ]
            .iter()
            .any(|tool| span.starts_with(tool))
        })
        .flat_map(flags_in)
        .filter(|f| !known.contains(f))
        .map(|f| format!("names a flag `{f}` that no command of ours has"))
        .collect()
}

/// The shell blocks marked runnable, in order.
fn runnable_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != RUNNABLE {
            continue;
        }
        let Some(fence) = lines.next() else { break };
        if !fence.trim_start().starts_with("```") {
            continue;
        }
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.trim_start().starts_with("```"))
            .collect();
        blocks.push(body.join("\n"));
    }
    blocks
}

fn run_blocks(blocks: &[String]) -> Result<()> {
    // Whatever happens, leave no local stack running.
    let script = format!(
        "set -euo pipefail\ntrap 'cargo xtask down >/dev/null 2>&1 || true' EXIT\n{}\n",
        blocks.join("\n")
    );
    crate::tools::run(Command::new("bash").arg("-c").arg(script))
        .context("a runnable block of README.md failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Example {
        /// Address to listen on
        #[arg(
            long,
            env = "X_LISTEN",
            value_name = "ADDR",
            default_value = "0.0.0.0:9090"
        )]
        listen: String,
        /// Log format
        ///
        /// Second paragraph | with a pipe
        #[arg(long, env = "X_LOG_FORMAT", value_enum)]
        log_format: Option<Format>,
        /// A switch
        #[arg(long, hide = false)]
        switch: bool,
        #[arg(long, hide = true)]
        hidden: bool,
    }

    #[derive(Clone, clap::ValueEnum)]
    enum Format {
        /// JSON unless a terminal
        Auto,
        Text,
    }

    #[test]
    fn options_become_rows() {
        let cmd = <Example as clap::CommandFactory>::command();
        let table = options_table(&cmd, &[("X_TOKEN", "the token itself")]);
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(
            rows,
            [
                "| `--listen <ADDR>` | `X_LISTEN` | `0.0.0.0:9090` | Address to listen on |",
                "| `--log-format <LOG_FORMAT>` | `X_LOG_FORMAT` |  | Log format; Second paragraph \\| with a pipe; Possible values: auto: JSON unless a terminal; text |",
                "| `--switch` |  |  | A switch |",
                "|  | `X_TOKEN` |  | the token itself |",
            ]
        );
    }

    #[test]
    fn known_flags_are_every_command_s() {
        let known = known_flags();
        for flag in [
            "--kubeconfig-source",
            "--auth-token-file",
            "--only",
            "--no-auth",
        ] {
            assert!(known.contains(flag), "{flag} missing from {known:?}");
        }
    }

    #[test]
    fn paths_and_flags_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("infra/rbac")).unwrap();
        let text = "# Top\n`infra/rbac/` `infra/missing.yaml` `infra/<x>` `--known` `--unknown` `kubectl apply --dry-run`\n```sh\n[z](#ignored) `infra/also-ignored`\n```\n";
        assert_eq!(
            missing_paths(text, dir.path()),
            ["names a missing path `infra/missing.yaml`"]
        );
        let known = BTreeSet::from(["--known".to_owned()]);
        assert_eq!(
            unknown_flags(text, &known),
            ["names a flag `--unknown` that no command of ours has"]
        );
    }

    #[test]
    fn runnable_blocks_are_the_marked_ones() {
        let text = "x\n<!-- runnable -->\n```sh\necho one\necho two\n```\n```sh\necho not\n```\n<!-- runnable -->\n```sh\necho three\n```\n";
        assert_eq!(runnable_blocks(text), ["echo one\necho two", "echo three"]);
    }
}
