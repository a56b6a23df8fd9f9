//! The Dockerfiles, read as instructions and held against the workspace:
//! the build command, package and binary names, runtime user, port and
//! entrypoint must be the ones the workspace and the binary itself state.
//! No image can be built here (no Docker engine, no registry), so this is
//! what stands between a renamed binary and a broken image.

use super::workspace::{Interface, Workspace};

/// One instruction, continuation lines joined, comments dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub line: usize,
    pub keyword: String,
    pub args: String,
}

/// A build stage: its `FROM` and the instructions up to the next one.
#[derive(Clone, Debug)]
pub struct Stage {
    pub from: Instruction,
    pub base: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub body: Vec<Instruction>,
}

impl Stage {
    fn all(&self, keyword: &str) -> impl Iterator<Item = &Instruction> {
        self.body.iter().filter(move |i| i.keyword == keyword)
    }
    fn last(&self, keyword: &str) -> Option<&Instruction> {
        self.all(keyword).last()
    }
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

/// Groups instructions into stages; global `ARG`s before the first `FROM`
/// are returned separately.
pub fn stages(all: Vec<Instruction>) -> Result<(Vec<Instruction>, Vec<Stage>), String> {
    let mut globals = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for ins in all {
        if ins.keyword == "FROM" {
            let mut words = ins.args.split_whitespace().peekable();
            let mut platform = None;
            while let Some(flag) = words.next_if(|w| w.starts_with("--")) {
                if let Some(p) = flag.strip_prefix("--platform=") {
                    platform = Some(p.to_owned());
                }
            }
            let base = words
                .next()
                .ok_or_else(|| format!("line {}: FROM without an image", ins.line))?
                .to_owned();
            let name = match (words.next(), words.next()) {
                (Some(as_), Some(name)) if as_.eq_ignore_ascii_case("AS") => Some(name.to_owned()),
                (None, None) => None,
                _ => {
                    return Err(format!(
                        "line {}: cannot read `FROM {}`",
                        ins.line, ins.args
                    ));
                }
            };
            stages.push(Stage {
                from: ins,
                base,
                name,
                platform,
                body: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.body.push(ins);
        } else if ins.keyword == "ARG" {
            globals.push(ins);
        } else {
            return Err(format!(
                "line {}: {} before the first FROM",
                ins.line, ins.keyword
            ));
        }
    }
    if stages.is_empty() {
        return Err("no FROM".into());
    }
    Ok((globals, stages))
}

/// Every way `dockerfile` (the one for `interface`'s binary) disagrees
/// with the workspace or with how the images must be built.
pub fn check(text: &str, ws: &Workspace, interface: &Interface) -> Vec<String> {
    let bin = &interface.binary;
    let (globals, stages) = match instructions(text).and_then(stages) {
        Ok(parsed) => parsed,
        Err(e) => return vec![format!("cannot parse: {e}")],
    };
    let mut problems = Vec::new();
    let mut fail = |line: usize, what: String| problems.push(format!("line {line}: {what}"));

    let (runtime, builders) = stages.split_last().expect("stages() returns at least one");
    if builders.is_empty() {
        fail(
            runtime.from.line,
            "single stage: build and runtime must be separate stages".into(),
        );
    }

    // Every image from a registry is pinned by digest (an earlier stage is
    // not an image); the tag stays for people, the digest decides.
    for (i, s) in stages.iter().enumerate() {
        let is_stage = stages[..i]
            .iter()
            .any(|e| e.name.as_deref() == Some(s.base.as_str()));
        if !is_stage
            && s.base != "scratch"
            && !s.base.contains("@sha256:")
            && !s.base.contains("@${")
        {
            fail(
                s.from.line,
                format!("base image {} is not pinned by digest", s.base),
            );
        }
    }
    // The usage line in the header builds this very file.
    if let Some(other) = ["Dockerfile.server", "Dockerfile.controller"]
        .into_iter()
        .find(|f| {
            text.contains(&format!("-f {f}"))
                && Some(*f)
                    != bin
                        .name
                        .strip_prefix("robot-")
                        .map(|n| format!("Dockerfile.{n}"))
                        .as_deref()
        })
    {
        fail(
            1,
            format!("the header builds with -f {other}, not this Dockerfile"),
        );
    }

    // Builders run on the build machine's platform and cross-compile. A
    // stage built FROM an earlier stage runs where that one does.
    let mut platforms: Vec<(Option<&str>, Option<&str>)> = Vec::new();
    for s in builders {
        let inherited = platforms
            .iter()
            .find(|(name, _)| *name == Some(s.base.as_str()))
            .and_then(|(_, p)| *p);
        let platform = s.platform.as_deref().or(inherited);
        platforms.push((s.name.as_deref(), platform));
        if platform != Some("$BUILDPLATFORM") {
            fail(
                s.from.line,
                format!(
                    "stage {} must run on --platform=$BUILDPLATFORM and cross-compile (no emulation)",
                    s.name.as_deref().unwrap_or("?")
                ),
            );
        }
    }

    // The build: a dependency layer cooked with the same flags as the
    // final `cargo build`, and the final build itself.
    let runs: Vec<&Instruction> = builders.iter().flat_map(|s| s.all("RUN")).collect();
    let build = runs
        .iter()
        .find(|r| commands(&r.args, "cargo build").next().is_some());
    let cook = runs
        .iter()
        .find(|r| commands(&r.args, "cargo chef cook").next().is_some());
    let prepare = runs
        .iter()
        .find(|r| commands(&r.args, "cargo chef prepare").next().is_some());
    let wanted = [
        "--release".to_owned(),
        "--locked".to_owned(),
        format!("--package {}", bin.package),
        format!("--bin {}", bin.name),
    ];
    match build {
        None => fail(
            runtime.from.line,
            "no `cargo build` in a build stage".into(),
        ),
        Some(b) => {
            let cmd = commands(&b.args, "cargo build").next().unwrap_or_default();
            for flag in &wanted {
                if !has_flag(&cmd, flag) {
                    fail(b.line, format!("`cargo build` lacks `{flag}`"));
                }
            }
            if !cmd.contains("--target") {
                fail(
                    b.line,
                    "`cargo build` must name the --target it cross-compiles for".into(),
                );
            }
        }
    }
    match (cook, build) {
        (None, _) => fail(
            runtime.from.line,
            "no dependency layer (`cargo chef cook`)".into(),
        ),
        (Some(c), Some(b)) => {
            let cmd = commands(&c.args, "cargo chef cook")
                .next()
                .unwrap_or_default();
            for flag in &wanted {
                if !has_flag(&cmd, flag) {
                    fail(
                        c.line,
                        format!("`cargo chef cook` lacks `{flag}` (the final build has it)"),
                    );
                }
            }
            if !cmd.contains("--target") {
                fail(
                    c.line,
                    "`cargo chef cook` must cook for the same --target as the build".into(),
                );
            }
            if c.line > b.line {
                fail(c.line, "the dependency layer comes after the build".into());
            }
            // Sources arrive after the dependency layer, or it caches nothing.
            let copies_all_before_cook = builders
                .iter()
                .filter(|s| s.all("RUN").any(|r| r.line == c.line))
                .flat_map(|s| s.all("COPY"))
                .any(|copy| copy.line < c.line && copy.args.split_whitespace().next() == Some("."));
            if copies_all_before_cook {
                fail(
                    c.line,
                    "the sources are copied before the dependency layer".into(),
                );
            }
        }
        _ => {}
    }
    match prepare {
        None => fail(runtime.from.line, "no `cargo chef prepare`".into()),
        Some(p) => {
            let cmd = commands(&p.args, "cargo chef prepare")
                .next()
                .unwrap_or_default();
            if !has_flag(&cmd, &format!("--bin {}", bin.name)) {
                fail(
                    p.line,
                    format!("`cargo chef prepare` must prune to `--bin {}`", bin.name),
                );
            }
        }
    }

    // TARGETARCH: declared where the build runs, both architectures mapped.
    let declares_targetarch = builders.iter().any(|s| {
        s.all("ARG")
            .any(|a| a.args.split('=').next() == Some("TARGETARCH"))
    });
    if !declares_targetarch {
        fail(
            runtime.from.line,
            "no build stage declares ARG TARGETARCH".into(),
        );
    }
    let builder_text: String = runs
        .iter()
        .map(|r| r.args.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for (arch, triple) in [
        ("amd64", "x86_64-unknown-linux-gnu"),
        ("arm64", "aarch64-unknown-linux-gnu"),
    ] {
        if !builder_text.contains(&format!("{arch})")) || !builder_text.contains(triple) {
            fail(
                runtime.from.line,
                format!("TARGETARCH {arch} is not mapped to {triple}"),
            );
        }
    }

    // The runtime stage: no shell, non-root, the binary as the entrypoint.
    let distroless =
        runtime.base.starts_with("gcr.io/distroless/") && !runtime.base.contains("debug");
    if !(distroless || runtime.base == "scratch") {
        fail(
            runtime.from.line,
            format!(
                "runtime base {} is neither distroless (non-debug) nor scratch",
                runtime.base
            ),
        );
    }
    if let Some(run) = runtime.last("RUN") {
        fail(
            run.line,
            "RUN in the runtime stage: there is no shell there".into(),
        );
    }
    let installed = format!("/usr/local/bin/{}", bin.name);
    let copy = runtime.all("COPY").find(|c| c.args.starts_with("--from="));
    match copy {
        None => fail(
            runtime.from.line,
            "the runtime stage copies nothing from a build stage".into(),
        ),
        Some(c) => {
            let words: Vec<&str> = c.args.split_whitespace().collect();
            let from = words[0].trim_start_matches("--from=");
            if !builders.iter().any(|s| s.name.as_deref() == Some(from)) {
                fail(c.line, format!("COPY --from={from}: no such build stage"));
            }
            let source_name = words.get(1).and_then(|s| s.rsplit('/').next());
            if source_name != Some(bin.name.as_str()) || words.get(2) != Some(&installed.as_str()) {
                fail(
                    c.line,
                    format!(
                        "expected `COPY --from=<builder> …/{} {installed}`",
                        bin.name
                    ),
                );
            }
        }
    }
    match runtime.last("USER") {
        None => fail(runtime.from.line, "no USER in the runtime stage".into()),
        Some(u) => {
            let user = u.args.split(':').next().unwrap_or_default();
            let non_root = match user.parse::<u32>() {
                Ok(uid) => uid != 0,
                Err(_) => user != "root",
            };
            if !non_root {
                fail(u.line, format!("USER {} is root", u.args));
            }
            if user.parse::<u32>().is_err() {
                fail(
                    u.line,
                    "USER must be numeric, so runAsNonRoot can verify it".into(),
                );
            }
        }
    }
    let exposed: Vec<&str> = runtime
        .all("EXPOSE")
        .flat_map(|e| e.args.split_whitespace())
        .collect();
    let port = interface.port.to_string();
    let expected_ports = [port.as_str()];
    if exposed != expected_ports && exposed != [format!("{port}/tcp").as_str()] {
        fail(
            runtime.from.line,
            format!(
                "EXPOSE {exposed:?}, but {} listens on {port} by default",
                bin.name
            ),
        );
    }
    let entrypoints: Vec<&Instruction> = stages.iter().flat_map(|s| s.all("ENTRYPOINT")).collect();
    match runtime.last("ENTRYPOINT") {
        None => fail(
            runtime.from.line,
            "no ENTRYPOINT in the runtime stage".into(),
        ),
        Some(e) => {
            match serde_json::from_str::<Vec<String>>(&e.args) {
                Ok(argv) if argv == [installed.clone()] => {}
                Ok(argv) => fail(
                    e.line,
                    format!("ENTRYPOINT {argv:?}, expected [\"{installed}\"]"),
                ),
                Err(_) => fail(e.line, "ENTRYPOINT must be exec form (a JSON array)".into()),
            }
            if entrypoints.len() > 1 {
                fail(e.line, "more than one ENTRYPOINT".into());
            }
        }
    }
    if let Some(cmd) = runtime.last("CMD")
        && serde_json::from_str::<Vec<String>>(&cmd.args).is_err()
    {
        fail(cmd.line, "CMD in shell form needs a shell".into());
    }

    // The builder's Rust is the toolchain the workspace pins.
    if let Some(pinned) = &ws.toolchain {
        let rust_arg = globals
            .iter()
            .chain(builders.iter().flat_map(|s| s.all("ARG")))
            .find_map(|a| a.args.strip_prefix("RUST_VERSION="));
        let from_rust = builders
            .iter()
            .any(|s| s.base.starts_with("rust:${RUST_VERSION}"));
        if rust_arg != Some(pinned.as_str()) || !from_rust {
            fail(
                runtime.from.line,
                format!(
                    "build FROM rust:${{RUST_VERSION}} with ARG RUST_VERSION={pinned} (rust-toolchain.toml), found {rust_arg:?}"
                ),
            );
        }
    }

    // OCI labels, and the version's default from the workspace.
    let labels = labels(runtime);
    for (key, expected) in [
        ("org.opencontainers.image.source", ws.repository.as_str()),
        ("org.opencontainers.image.licenses", ws.license.as_str()),
        ("org.opencontainers.image.title", bin.name.as_str()),
    ] {
        match labels.iter().find(|(k, _)| k == key) {
            Some((_, v)) if v == expected => {}
            Some((_, v)) => fail(
                runtime.from.line,
                format!("label {key}={v}, expected {expected}"),
            ),
            None => fail(runtime.from.line, format!("no label {key}")),
        }
    }
    match labels
        .iter()
        .find(|(k, _)| k == "org.opencontainers.image.version")
    {
        None => fail(
            runtime.from.line,
            "no label org.opencontainers.image.version".into(),
        ),
        Some((_, v)) => {
            let arg_default = runtime
                .all("ARG")
                .chain(globals.iter())
                .find_map(|a| a.args.strip_prefix("VERSION="));
            if v != "${VERSION}" || arg_default != Some(ws.version.as_str()) {
                fail(
                    runtime.from.line,
                    format!(
                        "the version label must be ${{VERSION}} with ARG VERSION={} (the workspace's)",
                        ws.version
                    ),
                );
            }
        }
    }
    problems
}

/// The `cmd …` commands inside a RUN's shell text, up to the next `&&`,
/// `;` or `|`.
fn commands<'a>(run: &'a str, cmd: &'a str) -> impl Iterator<Item = String> + 'a {
    run.match_indices(cmd).map(move |(at, _)| {
        let rest = &run[at..];
        let end = ["&&", ";", "|"]
            .iter()
            .filter_map(|sep| rest.find(sep))
            .min()
            .unwrap_or(rest.len());
        rest[..end].split_whitespace().collect::<Vec<_>>().join(" ")
    })
}

/// Whether `cmd` has `flag` (`--bin x`, also written `--bin=x` or `-p x`).
fn has_flag(cmd: &str, flag: &str) -> bool {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let wanted: Vec<&str> = flag.split_whitespace().collect();
    match wanted.as_slice() {
        [name] => words.contains(name),
        [name, value] => {
            let short = (*name == "--package").then_some("-p");
            words
                .windows(2)
                .any(|w| (w[0] == *name || Some(w[0]) == short) && w[1].trim_matches('"') == *value)
                || words.contains(&format!("{name}={value}").as_str())
        }
        _ => false,
    }
}

/// `LABEL k="v" k2="v2"` pairs of a stage, quotes removed.
fn labels(stage: &Stage) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for label in stage.all("LABEL") {
        let mut rest = label.args.as_str();
        while let Some((key, after)) = rest.trim_start().split_once('=') {
            let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
                match quoted.find('"') {
                    Some(end) => (&quoted[..end], &quoted[end + 1..]),
                    None => (quoted, ""),
                }
            } else {
                after.split_once(char::is_whitespace).unwrap_or((after, ""))
            };
            out.push((key.trim().to_owned(), value.to_owned()));
            rest = next;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::checks::packaging::workspace::Binary;
    use crate::checks::terraform::repo_root;

    fn ws() -> Workspace {
        Workspace {
            root: repo_root(),
            target_dir: repo_root().join("target"),
            version: "0.1.0".into(),
            license: "Apache-2.0".into(),
            repository: "https://github.com/robot-byoc/robot-byoc".into(),
            toolchain: Some("1.95.0".into()),
            binaries: Vec::new(),
        }
    }

    fn interface(dir: &str, package: &str, name: &str, port: u16) -> Interface {
        Interface {
            binary: Binary {
                package: package.into(),
                name: name.into(),
                dir: dir.into(),
            },
            env: BTreeSet::new(),
            port,
            subcommands: Vec::new(),
            defaults: Vec::new(),
        }
    }

    fn server() -> Interface {
        interface("server", "robot-server", "robot-server", 9090)
    }

    fn dockerfile(name: &str) -> String {
        std::fs::read_to_string(repo_root().join(name)).expect("Dockerfile readable")
    }

    fn problems_with(edit: impl Fn(&str) -> String) -> Vec<String> {
        check(&edit(&dockerfile("Dockerfile.server")), &ws(), &server())
    }

    #[test]
    fn both_dockerfiles_agree_with_these_facts() {
        assert_eq!(
            check(&dockerfile("Dockerfile.server"), &ws(), &server()),
            Vec::<String>::new()
        );
        let controller = interface("controller", "robot-controller", "robot-controller", 8080);
        assert_eq!(
            check(&dockerfile("Dockerfile.controller"), &ws(), &controller),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_renamed_binary_breaks_it() {
        let renamed = interface("server", "robot-server", "robot-srv", 9090);
        let problems = check(&dockerfile("Dockerfile.server"), &ws(), &renamed);
        for expected in [
            "lacks `--bin robot-srv`",
            "ENTRYPOINT",
            "prune to `--bin robot-srv`",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected} not in {problems:#?}"
            );
        }
    }

    #[test]
    fn a_port_the_binary_does_not_use_breaks_it() {
        let problems = check(
            &dockerfile("Dockerfile.server"),
            &ws(),
            &interface("server", "robot-server", "robot-server", 9191),
        );
        assert!(
            problems.iter().any(|p| p.contains("listens on 9191")),
            "{problems:#?}"
        );
    }

    #[test]
    fn flags_unlocked_builds_root_shells_and_shell_form_entrypoints() {
        let cases: [(&str, &str, &str); 11] = [
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
                "exec form",
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
                "org.opencontainers.image.licenses=\"Apache-2.0\"",
                "org.opencontainers.image.licenses=\"MIT\"",
                "licenses=MIT",
            ),
            ("EXPOSE 9090", "EXPOSE 8080", "EXPOSE [\"8080\"]"),
            (
                "ARG RUST_VERSION=1.95.0",
                "ARG RUST_VERSION=1.94.0",
                "rust-toolchain.toml",
            ),
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
    fn flags_a_missing_dependency_layer_and_emulated_builds() {
        let problems = problems_with(|t| {
            let start = t
                .find("RUN source /etc/cargo-target.sh \\\n    && cargo chef cook")
                .expect("cook");
            let end = start + t[start..].find("\nCOPY . .").expect("copy after cook");
            format!("{}{}", &t[..start], &t[end + 1..])
        });
        assert!(
            problems.iter().any(|p| p.contains("no dependency layer")),
            "{problems:#?}"
        );
        let problems = problems_with(|t| t.replace("--platform=$BUILDPLATFORM ", ""));
        assert!(
            problems.iter().any(|p| p.contains("$BUILDPLATFORM")),
            "{problems:#?}"
        );
        let problems = problems_with(|t| t.replace("arm64)", "aarch64)"));
        assert!(
            problems.iter().any(|p| p.contains("TARGETARCH arm64")),
            "{problems:#?}"
        );
    }

    #[test]
    fn malformed_dockerfiles_are_errors_not_passes() {
        for (text, expected) in [
            ("", "no FROM"),
            ("RUN true\n", "before the first FROM"),
            ("FROM a \\\n", "ends inside"),
            ("FROM\n", "without an image"),
            ("FROM a b c d\n", "cannot read"),
            ("FROM a\n{oops}\n", "not an instruction"),
        ] {
            let problems = check(text, &ws(), &server());
            assert!(
                problems.len() == 1 && problems[0].contains(expected),
                "{text:?}: {problems:#?}"
            );
        }
    }

    #[test]
    fn reads_instructions_and_labels() {
        let text = "# syntax=docker/dockerfile:1\nARG V=1\nFROM --platform=$BUILDPLATFORM img:1 AS b\n\
                    RUN a \\\n    && b\nFROM scratch\nLABEL x=\"a b\" y=c\n";
        let (globals, stages) = stages(instructions(text).expect("parses")).expect("stages");
        assert_eq!(globals.len(), 1);
        assert_eq!(stages[0].platform.as_deref(), Some("$BUILDPLATFORM"));
        assert_eq!(stages[0].body[0].args, "a && b");
        assert_eq!(stages[0].body[0].line, 4);
        assert_eq!(
            labels(&stages[1]),
            [
                ("x".to_owned(), "a b".to_owned()),
                ("y".to_owned(), "c".to_owned())
            ]
        );
    }
}
