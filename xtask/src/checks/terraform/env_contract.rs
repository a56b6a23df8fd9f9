//! Every `ROBOT_CONTROLLER_*` / `ROBOT_SERVER_*` name that the Terraform
//! modules and the infra manifests set must be one the binaries read. The
//! names come from the binaries themselves, in process
//! ([`crate::checks::binaries`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::checks::binaries::{CLIS, robot_names};

/// The names each binary reads.
pub struct Contract {
    /// `ROBOT_CONTROLLER_` or `ROBOT_SERVER_` → (binary, names).
    binaries: Vec<(String, &'static str, BTreeSet<String>)>,
}

impl Contract {
    pub fn from_binaries() -> Self {
        Contract {
            binaries: CLIS
                .iter()
                .map(|c| (c.env_prefix(), c.name, c.env()))
                .collect(),
        }
    }

    /// Why `name` is not read, or `None` when a binary reads it.
    pub fn problem(&self, name: &str) -> Option<String> {
        match self
            .binaries
            .iter()
            .find(|(p, _, _)| name.starts_with(p.as_str()))
        {
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
}
