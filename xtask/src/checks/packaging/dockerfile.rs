//! The Dockerfiles held against the workspace, for what neither hadolint
//! (run next to this) nor a real build would catch: an image that builds
//! but ships the wrong thing. The header's usage line builds another file,
//! the entrypoint or `EXPOSE` is not the binary's, the user is not numeric,
//! a base image floats with its tag, a builder runs emulated, the
//! dependency layer is cooked with other flags than the build (so it caches
//! nothing), or the Rust, version or labels drift from the workspace.

use super::workspace::{Interface, Workspace};

/// One instruction, continuation lines joined, comments dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub line: usize,
    pub keyword: String,
    pub args: String,
}

/// Splits a Dockerfile into instructions (backslash continuations joined,
/// `#` comment lines, including parser directives, skipped).
pub fn instructions(text: &str) -> Result<Vec<Instruction>, String> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_none()) {
            continue;
        }
        let (continues, content) = match line.strip_suffix('\\') {
            Some(head) => (true, head.trim_end()),
            None => (false, line),
        };
        let entry = pending.get_or_insert_with(|| (n + 1, String::new()));
        if !entry.1.is_empty() && !content.is_empty() {
            entry.1.push(' ');
        }
        entry.1.push_str(content);
        if !continues && let Some((line_no, full)) = pending.take() {
            if full.is_empty() {
                continue;
            }
            let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
            if !keyword.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(format!("line {line_no}: `{keyword}` is not an instruction"));
            }
            out.push(Instruction {
                line: line_no,
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_owned(),
            });
        }
    }
    if let Some((line_no, _)) = pending {
        return Err(format!(
            "line {line_no}: the file ends inside a continued instruction"
        ));
    }
    Ok(out)
}

/// A `FROM`: its `--platform`, image and `AS` name.
struct FromLine<'a> {
    line: usize,
    platform: Option<&'a str>,
    image: &'a str,
    name: Option<&'a str>,
}

fn from(ins: &Instruction) -> FromLine<'_> {
    let words: Vec<&str> = ins.args.split_whitespace().collect();
    let platform = words.iter().find_map(|w| w.strip_prefix("--platform="));
    let rest: Vec<&str> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
    FromLine {
        line: ins.line,
        platform,
        image: rest.first().copied().unwrap_or_default(),
        name: rest.get(2).copied(),
    }
}

/// The instructions of `body` with `keyword`.
fn of<'a>(body: &'a [Instruction], keyword: &str) -> Vec<&'a Instruction> {
    body.iter().filter(|i| i.keyword == keyword).collect()
}

/// Every way `text` (the Dockerfile of `interface`'s binary) disagrees with
/// the workspace or with how the images must be built.
pub fn check(text: &str, ws: &Workspace, interface: &Interface) -> Vec<String> {
    let all = match instructions(text) {
        Ok(all) => all,
        Err(e) => return vec![format!("cannot parse: {e}")],
    };
    let Some(last_from) = all.iter().rposition(|i| i.keyword == "FROM") else {
        return vec!["no FROM".into()];
    };
    let (builders, runtime) = all.split_at(last_from);
    let bin = &interface.binary.name;
    let mut problems = Vec::new();
    let mut fail = |line: usize, what: String| problems.push(format!("line {line}: {what}"));
    let runtime_line = runtime[0].line;

    // The usage line in the header builds this very file.
    let this = format!("Dockerfile.{}", interface.binary.dir);
    for (at, _) in text.match_indices("-f Dockerfile.") {
        let named: String = text[at + 3..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
        if named != this {
            fail(1, format!("the header builds with -f {named}, not {this}"));
        }
    }

    // Every image from a registry is pinned by digest (the tag stays for
    // people, the digest decides); builders run on the build machine and
    // cross-compile, or inherit that from the stage they start from.
    let mut stages: Vec<(Option<&str>, bool)> = Vec::new();
    for f in all.iter().filter(|i| i.keyword == "FROM").map(from) {
        let parent = stages.iter().find(|(n, _)| *n == Some(f.image));
        if parent.is_none()
            && f.image != "scratch"
            && !f.image.contains("@sha256:")
            && !f.image.contains("@${")
        {
            fail(
                f.line,
                format!("base image {} is not pinned by digest", f.image),
            );
        }
        let native = f.platform == Some("$BUILDPLATFORM") || parent.is_some_and(|(_, n)| *n);
        if f.line != runtime_line && !native {
            fail(
                f.line,
                format!(
                    "stage {} must run on --platform=$BUILDPLATFORM (no emulation)",
                    f.name.unwrap_or("?")
                ),
            );
        }
        stages.push((f.name, native));
    }

    // The dependency layer is cooked with the final build's flags, before it.
    let wanted = [
        "--release".to_owned(),
        "--locked".to_owned(),
        "--target".to_owned(),
        format!("--package {}", interface.binary.package),
        format!("--bin {bin}"),
    ];
    let mut lines = Vec::new();
    for cmd in ["cargo chef cook", "cargo build"] {
        let Some((line, words)) = of(builders, "RUN")
            .into_iter()
            .find_map(|r| command(&r.args, cmd).map(|w| (r.line, w)))
        else {
            fail(runtime_line, format!("no `{cmd}` in a build stage"));
            continue;
        };
        lines.push(line);
        for flag in wanted.iter().filter(|f| !has_flag(&words, f)) {
            fail(line, format!("`{cmd}` lacks `{flag}`"));
        }
    }
    if let [cook, build] = lines[..]
        && cook > build
    {
        fail(cook, "the dependency layer comes after the build".into());
    }

    // The runtime: no shell, a numeric non-root user (so runAsNonRoot can
    // verify it), the binary as the entrypoint, the binary's port.
    let base = from(&runtime[0]).image;
    if !(base.starts_with("gcr.io/distroless/") && !base.contains("debug") || base == "scratch") {
        fail(
            runtime_line,
            format!("runtime base {base} is neither distroless (non-debug) nor scratch"),
        );
    }
    let installed = format!("/usr/local/bin/{bin}");
    let copied = of(runtime, "COPY").iter().any(|c| {
        let w: Vec<&str> = c.args.split_whitespace().collect();
        matches!(w[..], [from, src, dst] if from.starts_with("--from=") && src.ends_with(&format!("/{bin}")) && dst == installed)
    });
    if !copied {
        fail(
            runtime_line,
            format!("expected `COPY --from=<builder> …/{bin} {installed}`"),
        );
    }
    let entrypoint = of(runtime, "ENTRYPOINT").last().map(|e| e.args.clone());
    if entrypoint
        .as_deref()
        .and_then(|e| serde_json::from_str::<Vec<String>>(e).ok())
        != Some(vec![installed.clone()])
    {
        fail(
            runtime_line,
            format!("ENTRYPOINT {entrypoint:?}, expected [\"{installed}\"]"),
        );
    }
    match of(runtime, "USER")
        .last()
        .map(|u| u.args.split(':').next().unwrap_or_default().to_owned())
    {
        Some(uid) if uid.parse::<u32>().is_ok_and(|u| u != 0) => {}
        Some(user) if user == "0" || user == "root" => {
            fail(runtime_line, format!("USER {user} is root"))
        }
        other => fail(
            runtime_line,
            format!("USER {other:?} must be a numeric non-root uid"),
        ),
    }
    let exposed: Vec<String> = of(runtime, "EXPOSE")
        .iter()
        .flat_map(|e| {
            e.args
                .split_whitespace()
                .map(|p| p.trim_end_matches("/tcp").to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    if exposed != [interface.port.to_string()] {
        fail(
            runtime_line,
            format!(
                "EXPOSE {exposed:?}, but {bin} listens on {} by default",
                interface.port
            ),
        );
    }

    // The builder's Rust is the pinned toolchain; labels and version are
    // the workspace's.
    let arg = |name: &str| {
        all.iter()
            .filter(|i| i.keyword == "ARG")
            .find_map(|a| a.args.strip_prefix(&format!("{name}=")).map(str::to_owned))
    };
    if let Some(pinned) = &ws.toolchain
        && (arg("RUST_VERSION").as_ref() != Some(pinned)
            || !text.contains("FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}"))
    {
        fail(
            runtime_line,
            format!(
                "build FROM rust:${{RUST_VERSION}} with ARG RUST_VERSION={pinned} (rust-toolchain.toml)"
            ),
        );
    }
    if arg("VERSION").as_deref() != Some(ws.version.as_str()) {
        fail(
            runtime_line,
            format!("ARG VERSION={} (the workspace's) is missing", ws.version),
        );
    }
    let labels: String = of(runtime, "LABEL")
        .iter()
        .map(|l| l.args.as_str())
        .collect();
    for (key, value) in [
        ("source", ws.repository.as_str()),
        ("licenses", ws.license.as_str()),
        ("title", bin.as_str()),
        ("version", "${VERSION}"),
    ] {
        if !labels.contains(&format!("org.opencontainers.image.{key}=\"{value}\"")) {
            fail(
                runtime_line,
                format!("no label org.opencontainers.image.{key}=\"{value}\""),
            );
        }
    }
    problems
}

/// The words of the first `cmd …` inside a RUN's shell text, up to the
/// next `&&`, `;` or `|`.
fn command(run: &str, cmd: &str) -> Option<Vec<String>> {
    let rest = &run[run.find(cmd)?..];
    let end = ["&&", ";", "|"]
        .iter()
        .filter_map(|sep| rest.find(sep))
        .min()
        .unwrap_or(rest.len());
    Some(
        rest[..end]
            .split_whitespace()
            .map(|w| w.trim_matches('"').to_owned())
            .collect(),
    )
}

/// Whether `words` has `flag` (`--bin x`, also written `--bin=x` or `-p x`).
fn has_flag(words: &[String], flag: &str) -> bool {
    match flag.split_once(' ') {
        None => words
            .iter()
            .any(|w| w == flag || w.starts_with(&format!("{flag}="))),
        Some((name, value)) => {
            let short = (name == "--package").then_some("-p");
            words
                .windows(2)
                .any(|w| (w[0] == name || Some(w[0].as_str()) == short) && w[1] == value)
                || words.contains(&format!("{name}={value}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::checks::packaging::workspace::Binary;
    use crate::checks::terraform::repo_root;

    fn ws() -> Workspace {
        Workspace {
            target_dir: repo_root().join("target"),
            version: "0.1.0".into(),
            license: "Apache-2.0".into(),
            repository: "https://github.com/robot-byoc/robot-byoc".into(),
            toolchain: Some("1.95.0".into()),
            binaries: Vec::new(),
        }
    }

    fn interface(dir: &str, name: &str, port: u16) -> Interface {
        Interface {
            binary: Binary {
                package: format!("robot-{dir}"),
                name: name.into(),
                dir: dir.into(),
            },
            env: BTreeSet::new(),
            port,
            subcommands: Vec::new(),
            defaults: Vec::new(),
        }
    }

    fn dockerfile(name: &str) -> String {
        std::fs::read_to_string(repo_root().join(name)).expect("Dockerfile readable")
    }

    fn problems_with(edit: impl Fn(&str) -> String) -> Vec<String> {
        let server = interface("server", "robot-server", 9090);
        check(&edit(&dockerfile("Dockerfile.server")), &ws(), &server)
    }

    #[test]
    fn both_dockerfiles_agree_with_the_workspace() {
        assert_eq!(problems_with(str::to_owned), Vec::<String>::new());
        let controller = interface("controller", "robot-controller", 8080);
        assert_eq!(
            check(&dockerfile("Dockerfile.controller"), &ws(), &controller),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_renamed_binary_or_port_breaks_it() {
        let renamed = interface("server", "robot-srv", 9191);
        let problems = check(&dockerfile("Dockerfile.server"), &ws(), &renamed);
        for expected in [
            "`cargo build` lacks `--bin robot-srv`",
            "`cargo chef cook` lacks",
            "ENTRYPOINT",
            "listens on 9191",
            "COPY",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected} not in {problems:#?}"
            );
        }
    }

    /// One edit per rule, each a build that would succeed and ship wrong.
    #[test]
    fn each_rule_catches_its_edit() {
        let cases = [
            (
                "static-debian12:nonroot@sha256:",
                "static-debian12:nonroot@x",
                "is not pinned by digest",
            ),
            (
                "-f Dockerfile.server",
                "-f Dockerfile.controller",
                "the header builds with -f Dockerfile.controller",
            ),
            (
                "cargo build --release --locked",
                "cargo build --release",
                "`cargo build` lacks `--locked`",
            ),
            ("USER 65532:65532", "USER 0", "is root"),
            ("USER 65532:65532", "USER nonroot", "numeric"),
            (
                "ENTRYPOINT [\"/usr/local/bin/robot-server\"]",
                "ENTRYPOINT /usr/local/bin/robot-server",
                "ENTRYPOINT",
            ),
            (
                "static-debian12:nonroot@",
                "static-debian12:debug-nonroot@",
                "neither distroless",
            ),
            (
                "ARG VERSION=0.1.0",
                "ARG VERSION=9.9.9",
                "ARG VERSION=0.1.0",
            ),
            (
                "licenses=\"Apache-2.0\"",
                "licenses=\"MIT\"",
                "licenses=\"Apache-2.0\"",
            ),
            ("EXPOSE 9090", "EXPOSE 8080", "EXPOSE [\"8080\"]"),
            (
                "ARG RUST_VERSION=1.95.0",
                "ARG RUST_VERSION=1.94.0",
                "rust-toolchain.toml",
            ),
            ("--platform=$BUILDPLATFORM ", "", "$BUILDPLATFORM"),
            ("cargo chef cook", "cargo chef kook", "no `cargo chef cook`"),
        ];
        for (from, to, expected) in cases {
            let problems = problems_with(|t| {
                assert!(t.contains(from), "{from} not in the Dockerfile");
                t.replacen(from, to, 1)
            });
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{from} -> {to}: expected {expected:?} in {problems:#?}"
            );
        }
    }

    #[test]
    fn malformed_dockerfiles_are_errors_not_passes() {
        for (text, expected) in [
            ("", "no FROM"),
            ("FROM a \\\n", "ends inside"),
            ("FROM a\n{oops}\n", "not an instruction"),
        ] {
            let problems = check(text, &ws(), &interface("server", "robot-server", 9090));
            assert!(
                problems.len() == 1 && problems[0].contains(expected),
                "{text:?}: {problems:#?}"
            );
        }
    }

    #[test]
    fn joins_continuations_and_skips_comments() {
        let text = "# syntax=docker/dockerfile:1\nFROM --platform=$BUILDPLATFORM img:1 AS b\nRUN a \\\n    && b\n";
        let all = instructions(text).expect("parses");
        assert_eq!((all[1].line, all[1].args.as_str()), (3, "a && b"));
        let f = from(&all[0]);
        assert_eq!(
            (f.platform, f.image, f.name),
            (Some("$BUILDPLATFORM"), "img:1", Some("b"))
        );
    }
}
