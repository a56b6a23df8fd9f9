//! README.md checks, and `cargo xtask readme` to regenerate its reference
//! tables.
//!
//! - The option tables between `<!-- BEGIN GENERATED <binary> ... -->` and
//!   `<!-- END GENERATED -->` are what the binaries' `--help` says.
//! - Every relative link and `#anchor` resolves; every repository path the
//!   README names in backticks exists; every `--flag` it names in prose is
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

/// Where a generated table comes from: the marker's name and the command
/// whose `--help` it shows.
const TABLES: &[(&str, &[&str])] = &[
    (
        "robot-controller run --help",
        &["robot-controller", "run", "--help"],
    ),
    ("robot-server --help", &["robot-server", "--help"]),
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
    problems.extend(broken_links(&text, Path::new(".")));
    problems.extend(missing_paths(&text, Path::new(".")));
    let known = known_flags()?;
    problems.extend(unknown_flags(&text, &known));
    if !problems.is_empty() {
        bail!("README.md:\n  {}", problems.join("\n  "));
    }
    let blocks = runnable_blocks(&text);
    run_blocks(&blocks)?;
    Ok(Outcome {
        note: Some(format!(
            "tables, links, paths and flags checked; {} runnable blocks ran",
            blocks.len()
        )),
        ..Outcome::default()
    })
}

fn binary(name: &str) -> Result<std::path::PathBuf> {
    // Built (a no-op when fresh): a stale binary would write stale tables.
    testenv::build_binary(name).with_context(|| format!("building {name}"))
}

fn help(args: &[&str]) -> Result<String> {
    let out = Command::new(binary(args[0])?)
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `text` with every generated table replaced by a fresh one.
fn with_tables(text: &str) -> Result<String> {
    let mut out = text.to_owned();
    for (name, args) in TABLES {
        let begin = format!("<!-- BEGIN GENERATED {name} (cargo xtask readme) -->");
        let start = out
            .find(&begin)
            .with_context(|| format!("README.md has no `{begin}`"))?
            + begin.len();
        let end = start
            + out[start..]
                .find(END)
                .with_context(|| format!("README.md: `{begin}` has no `{END}`"))?;
        let table = options_table(&help(args)?);
        out.replace_range(start..end, &format!("\n{table}"));
    }
    Ok(out)
}

/// One option of a `--help`.
#[derive(Debug, Default, PartialEq)]
struct HelpOption {
    flag: String,
    env: String,
    default: String,
    what: Vec<String>,
}

/// Reads clap's long help: option headers, their text, `[env: X=]`,
/// `[default: Y]`, possible values; and an "Environment only:" section.
fn parse_help(help: &str) -> Vec<HelpOption> {
    let mut options: Vec<HelpOption> = Vec::new();
    let mut env_only = false;
    for line in help.lines() {
        let trimmed = line.trim();
        if line.starts_with("Environment only:") {
            env_only = true;
            continue;
        }
        if env_only {
            if let Some((var, what)) = trimmed.split_once(char::is_whitespace)
                && !var.is_empty()
            {
                options.push(HelpOption {
                    env: var.to_owned(),
                    what: vec![what.trim().to_owned()],
                    ..HelpOption::default()
                });
                continue;
            }
            env_only = !trimmed.is_empty() || options.is_empty();
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if (2..=6).contains(&indent) && trimmed.starts_with('-') {
            options.push(HelpOption {
                flag: trimmed
                    .trim_start_matches("-h, ")
                    .trim_start_matches("-V, ")
                    .to_owned(),
                ..HelpOption::default()
            });
            continue;
        }
        let Some(current) = options.last_mut() else {
            continue;
        };
        if let Some(env) = trimmed
            .strip_prefix("[env: ")
            .and_then(|e| e.strip_suffix("=]"))
        {
            current.env = env.to_owned();
        } else if let Some(default) = trimmed
            .strip_prefix("[default: ")
            .and_then(|d| d.strip_suffix(']'))
        {
            current.default = default.to_owned();
        } else if trimmed.starts_with("[possible values:") || trimmed.is_empty() {
        } else if !trimmed.is_empty() && indent >= 8 {
            let words: Vec<&str> = trimmed
                .trim_start_matches("- ")
                .split_whitespace()
                .collect();
            current.what.push(words.join(" "));
        }
    }
    options.retain(|o| !o.flag.starts_with("--help") && !o.flag.starts_with("--version"));
    options
}

fn options_table(help: &str) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out =
        String::from("| option | environment variable | default | what |\n|---|---|---|---|\n");
    for o in parse_help(help) {
        let code = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("`{}`", cell(s))
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            code(&o.flag),
            code(&o.env),
            code(&o.default),
            cell(
                &o.what
                    .join("; ")
                    .replace("Possible values:;", "Possible values:")
            ),
        ));
    }
    out
}

/// GitHub's anchor for a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
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

/// `[text](target)` links whose target is a missing file or anchor.
fn broken_links(text: &str, root: &Path) -> Vec<String> {
    let anchors: BTreeSet<String> = outside_code(text)
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| slug(h.trim_start_matches('#')))
        .collect();
    let mut problems = Vec::new();
    for line in outside_code(text) {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            rest = &rest[end..];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
            if path.is_empty() {
                if !anchors.contains(anchor) {
                    problems.push(format!("link to a missing anchor #{anchor}"));
                }
            } else if !root.join(path).exists() {
                problems.push(format!("link to a missing file {path}"));
            }
        }
    }
    problems
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

/// The flags of our binaries and of `cargo xtask`'s user-facing commands.
fn known_flags() -> Result<BTreeSet<String>> {
    let mut helps = Vec::new();
    for args in [
        &["robot-controller", "--help"][..],
        &["robot-controller", "crds", "--help"],
        &["robot-server", "--help"],
    ] {
        helps.push(help(args)?);
    }
    // xtask's own help is rendered in-process: re-running our binary would
    // fail once `cargo test --workspace` has relinked it (the running file
    // is then "(deleted)").
    let mut xtask = crate::command();
    for sub in ["ci", "up", "demo", "bench"] {
        let cmd = xtask
            .find_subcommand_mut(sub)
            .with_context(|| format!("cargo xtask has no `{sub}`"))?;
        helps.push(cmd.render_long_help().to_string());
    }
    Ok(helps.iter().flat_map(|h| flags_in(h)).collect())
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

    const HELP: &str = "Usage: x [OPTIONS]\n\nOptions:\n      --listen <ADDR>\n          Address to listen on\n          \n          [env: X_LISTEN=]\n          [default: 0.0.0.0:9090]\n\n      --log-format <F>\n          Log format\n\n          Possible values:\n          - auto: JSON unless a terminal\n          - text\n          \n          [env: X_LOG_FORMAT=]\n\n  -h, --help\n          Print help\n\nEnvironment only:\n  X_TOKEN  the token itself\n  PORT     the port\n\nExit codes: 0.\n";

    #[test]
    fn help_becomes_rows() {
        let opts = parse_help(HELP);
        assert_eq!(opts.len(), 4, "{opts:#?}");
        assert_eq!(opts[0].flag, "--listen <ADDR>");
        assert_eq!(opts[0].env, "X_LISTEN");
        assert_eq!(opts[0].default, "0.0.0.0:9090");
        assert_eq!(
            opts[1].what,
            [
                "Log format",
                "Possible values:",
                "auto: JSON unless a terminal",
                "text"
            ]
        );
        assert_eq!(opts[2].env, "X_TOKEN");
        assert_eq!(opts[3].env, "PORT");
        let table = options_table(HELP);
        assert!(
            table.contains(
                "| `--listen <ADDR>` | `X_LISTEN` | `0.0.0.0:9090` | Address to listen on |"
            ),
            "{table}"
        );
    }

    #[test]
    fn links_paths_and_flags_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("infra/rbac")).unwrap();
        let text = "# Top\n## Two words\n[a](#two-words) [b](#nowhere) [c](infra/rbac) [d](infra/nope) [e](https://x)\n\
                    `infra/rbac/` `infra/missing.yaml` `infra/<x>` `--known` `--unknown` `kubectl apply --dry-run`\n```sh\n[z](#ignored) `infra/also-ignored`\n```\n";
        assert_eq!(
            broken_links(text, dir.path()),
            [
                "link to a missing anchor #nowhere",
                "link to a missing file infra/nope"
            ]
        );
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
