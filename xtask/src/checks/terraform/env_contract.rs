//! Every `ROBOT_CONTROLLER_*` / `ROBOT_SERVER_*` name that the Terraform
//! modules and the infra manifests set must be one the binaries read. The
//! names come from the binaries themselves, in process: the `env` of every
//! argument of `robot_controller::cli::Cli` and `robot_server::cli::command()`
//! (all subcommands), the env-only names their help text lists, and the
//! env-only constants the code exports. Nothing is copied here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

/// The names each binary reads.
pub struct Contract {
    /// `ROBOT_CONTROLLER_` or `ROBOT_SERVER_` → (binary, names).
    binaries: Vec<(&'static str, &'static str, BTreeSet<String>)>,
}

impl Contract {
    pub fn from_binaries() -> Self {
        let mut controller = names_of(&robot_controller::cli::Cli::command());
        controller.insert(robot_controller::source::GCP_ENDPOINT_ENV.to_owned());
        let mut server = names_of(&robot_server::cli::command());
        server.insert(robot_server::cli::TOKEN_ENV.to_owned());
        Contract {
            binaries: vec![
                ("ROBOT_CONTROLLER_", "robot-controller", controller),
                ("ROBOT_SERVER_", "robot-server", server),
            ],
        }
    }

    /// Why `name` is not read, or `None` when a binary reads it.
    pub fn problem(&self, name: &str) -> Option<String> {
        match self.binaries.iter().find(|(p, _, _)| name.starts_with(p)) {
            Some((_, _, names)) if names.contains(name) => None,
            Some((_, bin, names)) => Some(format!(
                "{name}: {bin}'s command line has no such variable (it reads {})",
                names.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            None => Some(format!(
                "{name}: read by neither robot-controller (ROBOT_CONTROLLER_*) nor robot-server (ROBOT_SERVER_*)"
            )),
        }
    }

    /// The problems of every name in `names`.
    pub fn unknown<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        names.into_iter().filter_map(|n| self.problem(n)).collect()
    }
}

/// The env names a command and its subcommands read: each argument's
/// `env`, and the `ROBOT_*` names its help text lists as env-only.
fn names_of(cmd: &clap::Command) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut todo = vec![cmd];
    while let Some(cmd) = todo.pop() {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
                names.insert(env.to_owned());
            }
        }
        for help in [cmd.get_after_help(), cmd.get_after_long_help()]
            .into_iter()
            .flatten()
        {
            names.extend(robot_names(&help.to_string()));
        }
        todo.extend(cmd.get_subcommands());
    }
    names
}

/// Every `ROBOT_...` token in `text` (whole tokens: `[A-Z0-9_]` runs that
/// start with `ROBOT_` and are not part of a longer identifier).
pub fn robot_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find("ROBOT_") {
        let start = from + offset;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_uppercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if (start == 0 || !is_ident(bytes[start - 1]))
            && (end == bytes.len() || !is_ident(bytes[end]))
        {
            names.insert(text[start..end].to_owned());
        }
        from = end.max(start + 1);
    }
    names
}

/// The files whose `ROBOT_*` names are checked: every `.tf` under
/// `terraform/`, every manifest (`.yaml`, `.yml`, `.json`) under `infra/`.
pub fn sources(repo: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (dir, exts) in [
        ("terraform", &["tf"][..]),
        ("infra", &["yaml", "yml", "json"][..]),
    ] {
        let mut todo = vec![repo.join(dir)];
        while let Some(dir) = todo.pop() {
            for entry in
                std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
            {
                let entry = entry?;
                // tests/variables/variables.tf links to the module's own.
                if entry.file_type()?.is_symlink() {
                    continue;
                }
                let path = entry.path();
                let hidden = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if path.is_dir() && !hidden {
                    todo.push(path);
                } else if path
                    .extension()
                    .is_some_and(|e| exts.iter().any(|x| e == *x))
                {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Names set in `repo`'s Terraform and manifests that no binary reads, by
/// name, with the files that set them.
pub fn check(repo: &Path, contract: &Contract) -> Result<(usize, Vec<String>)> {
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let files = sources(repo)?;
    for path in &files {
        let text = std::fs::read_to_string(path)?;
        let shown = path
            .strip_prefix(repo)
            .unwrap_or(path)
            .display()
            .to_string();
        for name in robot_names(&text) {
            used.entry(name).or_default().push(shown.clone());
        }
    }
    let problems = used
        .iter()
        .filter_map(|(name, files)| {
            contract
                .problem(name)
                .map(|p| format!("{p}; set in {}", files.join(", ")))
        })
        .collect();
    Ok((files.len(), problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binaries_name_their_flags_and_env_only_variables() {
        let contract = Contract::from_binaries();
        for known in [
            "ROBOT_CONTROLLER_KUBECONFIG_SOURCE",
            "ROBOT_CONTROLLER_ALLOWED_ENDPOINTS",
            "ROBOT_CONTROLLER_GCP_SECRETMANAGER_ENDPOINT",
            "ROBOT_SERVER_LISTEN",
            "ROBOT_SERVER_AUTH_TOKEN",
        ] {
            assert_eq!(contract.problem(known), None, "{known}");
        }
    }

    #[test]
    fn a_misspelt_or_misplaced_name_is_reported_with_its_binary() {
        let contract = Contract::from_binaries();
        let problems = contract.unknown([
            "ROBOT_CONTROLLER_KUBECONFIG",
            "ROBOT_SERVER_ALLOWED_ENDPOINTS",
            "ROBOT_LOG",
            "ROBOT_SERVER_LOG",
        ]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("ROBOT_CONTROLLER_KUBECONFIG: robot-controller's"));
        assert!(problems[1].contains("robot-server's command line"));
        assert!(problems[2].contains("read by neither"));
    }

    #[test]
    fn finds_whole_tokens_only() {
        let names = robot_names(
            "ROBOT_SERVER_LISTEN = 1, xROBOT_NOPE, \"ROBOT_CONTROLLER_LOG\"\nROBOT_SERVER_LOGx",
        );
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(names, ["ROBOT_CONTROLLER_LOG", "ROBOT_SERVER_LISTEN"]);
    }
}
