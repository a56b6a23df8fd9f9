//! Every `ROBOT_*` environment variable the Terraform sets must be one the
//! binaries read, spelled the same way. The binaries' flag lists live in
//! the project contract (notes/contract.md, "robot-server" and
//! "robot-controller": every flag also reads the env var shown, or
//! `ROBOT_CONTROLLER_<FLAG_IN_UPPER_SNAKE>`); they are copied here until
//! this check can read them from each binary's `--help`.

use std::collections::BTreeSet;

/// robot-server: `--listen`, `--auth-token-file`, the token itself (env
/// only), `--no-auth`, `--state-file`, `--request-timeout`,
/// `--max-connections`, `--log-format`, `--log-filter`.
pub const SERVER_ENV: &[&str] = &[
    "ROBOT_SERVER_LISTEN",
    "ROBOT_SERVER_AUTH_TOKEN_FILE",
    "ROBOT_SERVER_AUTH_TOKEN",
    "ROBOT_SERVER_NO_AUTH",
    "ROBOT_SERVER_STATE_FILE",
    "ROBOT_SERVER_REQUEST_TIMEOUT",
    "ROBOT_SERVER_MAX_CONNECTIONS",
    "ROBOT_SERVER_LOG_FORMAT",
    "ROBOT_SERVER_LOG",
];

/// robot-controller: `--kubeconfig-source`, `--server-token-source`,
/// `--server-auth`, `--secret-refresh-interval`, `--allowed-endpoints`,
/// `--api-group`, `--poll-interval`, `--max-reconcile-rate`,
/// `--concurrency`, `--health-listen`, `--leader-election`,
/// `--leader-election-namespace`, `--log-format`, `--log-filter`.
pub const CONTROLLER_ENV: &[&str] = &[
    "ROBOT_CONTROLLER_KUBECONFIG_SOURCE",
    "ROBOT_CONTROLLER_SERVER_TOKEN_SOURCE",
    "ROBOT_CONTROLLER_SERVER_AUTH",
    "ROBOT_CONTROLLER_SECRET_REFRESH_INTERVAL",
    "ROBOT_CONTROLLER_ALLOWED_ENDPOINTS",
    "ROBOT_CONTROLLER_API_GROUP",
    "ROBOT_CONTROLLER_POLL_INTERVAL",
    "ROBOT_CONTROLLER_MAX_RECONCILE_RATE",
    "ROBOT_CONTROLLER_CONCURRENCY",
    "ROBOT_CONTROLLER_HEALTH_LISTEN",
    "ROBOT_CONTROLLER_LEADER_ELECTION",
    "ROBOT_CONTROLLER_LEADER_ELECTION_NAMESPACE",
    "ROBOT_CONTROLLER_LOG_FORMAT",
    "ROBOT_CONTROLLER_LOG",
];

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
        let standalone_start = start == 0 || !is_ident(bytes[start - 1]);
        let standalone_end = end == bytes.len() || !is_ident(bytes[end]);
        if standalone_start && standalone_end {
            names.insert(text[start..end].to_owned());
        }
        from = end.max(start + 1);
    }
    names
}

/// The names in `names` that no binary reads, with the reason.
pub fn unknown<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    names
        .into_iter()
        .filter_map(|name| {
            let known = if name.starts_with("ROBOT_SERVER_") {
                SERVER_ENV.contains(&name)
            } else if name.starts_with("ROBOT_CONTROLLER_") {
                CONTROLLER_ENV.contains(&name)
            } else {
                false
            };
            (!known).then(|| format!("{name} is read by neither robot-server nor robot-controller"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::terraform::repo_root;

    fn terraform_sources() -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut dirs = vec![repo_root().join("terraform")];
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir).expect("terraform/ is readable");
            for entry in entries {
                let path = entry.expect("directory entry").path();
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if path.is_dir() && !name.starts_with('.') {
                    dirs.push(path);
                } else if name.ends_with(".tf") {
                    let text = std::fs::read_to_string(&path).expect("a .tf file is readable");
                    out.push((path.display().to_string(), text));
                }
            }
        }
        assert!(
            out.len() >= 8,
            "expected the modules and examples, found {}",
            out.len()
        );
        out
    }

    #[test]
    fn every_robot_env_var_in_terraform_is_one_the_binaries_read() {
        let mut problems = Vec::new();
        for (path, text) in terraform_sources() {
            for problem in unknown(robot_names(&text).iter().map(String::as_str)) {
                problems.push(format!("{path}: {problem}"));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn both_modules_give_the_controller_its_kubeconfig_source_and_allowed_endpoints() {
        for module in ["aws", "gcp"] {
            let main = std::fs::read_to_string(
                repo_root().join(format!("terraform/modules/{module}/main.tf")),
            )
            .expect("module main.tf is readable");
            let names = robot_names(&main);
            for needed in [
                "ROBOT_CONTROLLER_KUBECONFIG_SOURCE",
                "ROBOT_CONTROLLER_ALLOWED_ENDPOINTS",
            ] {
                assert!(
                    names.contains(needed),
                    "{module} module does not set {needed}"
                );
            }
        }
    }

    #[test]
    fn finds_whole_tokens_only() {
        let names = robot_names(
            "ROBOT_SERVER_LISTEN = 1, xROBOT_NOPE, \"ROBOT_CONTROLLER_LOG\"\nROBOT_SERVER_LOGx",
        );
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(names, ["ROBOT_CONTROLLER_LOG", "ROBOT_SERVER_LISTEN"]);
    }

    #[test]
    fn a_misspelt_or_misplaced_name_is_reported() {
        let problems = unknown([
            "ROBOT_CONTROLLER_KUBECONFIG",
            "ROBOT_SERVER_ALLOWED_ENDPOINTS",
            "ROBOT_LOG",
            "ROBOT_SERVER_LOG",
        ]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("ROBOT_CONTROLLER_KUBECONFIG "));
    }
}
