//! The shipped binaries' command lines, read in process from their own
//! `clap::Command`s: the one source for every check that must agree with a
//! flag, an env var, a default or a port (Dockerfiles, manifests,
//! Terraform, README). Nothing is copied from the code, so a renamed flag
//! or variable breaks a check instead of a user's deployment.

use std::collections::BTreeSet;

use clap::CommandFactory as _;

/// A shipped binary's command line.
pub struct Cli {
    pub name: &'static str,
    pub command: fn() -> clap::Command,
    /// Variables it reads without a flag, and what they are.
    pub env_only: &'static [(&'static str, &'static str)],
    /// The port it listens on by default (the health port for the
    /// controller).
    pub port: u16,
}

pub const CLIS: &[Cli] = &[
    Cli {
        name: "robot-controller",
        command: robot_controller::cli::Cli::command,
        env_only: &[
            (
                robot_controller::source::GCP_ENDPOINT_ENV,
                "the Secret Manager endpoint (emulators)",
            ),
            ("PORT", "the health port when --health-listen is not given"),
        ],
        port: robot_controller::cli::DEFAULT_HEALTH_PORT,
    },
    Cli {
        name: "robot-server",
        command: robot_server::cli::command,
        env_only: robot_server::cli::ENV_ONLY,
        port: robot_server::cli::DEFAULT_PORT,
    },
];

impl Cli {
    pub fn named(name: &str) -> Option<&'static Cli> {
        CLIS.iter().find(|c| c.name == name)
    }

    /// `ROBOT_CONTROLLER_`: the prefix of every variable it owns.
    pub fn env_prefix(&self) -> String {
        format!("{}_", self.name.to_ascii_uppercase().replace('-', "_"))
    }

    /// Every variable it reads: each argument's `env`, in every
    /// subcommand, and the env-only ones.
    pub fn env(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> =
            self.env_only.iter().map(|(n, _)| n.to_string()).collect();
        names.extend(
            self.flags()
                .into_iter()
                .filter_map(|a| a.get_env().and_then(|e| e.to_str()).map(str::to_owned)),
        );
        names
    }

    /// `(variable, default)` of every flag that has both.
    pub fn defaults(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .flags()
            .into_iter()
            .filter_map(|a| {
                let env = a.get_env()?.to_str()?.to_owned();
                let values: Vec<String> = a
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                (!values.is_empty()).then(|| (env, values.join(",")))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The names of its subcommands (`run`, `once`, ...).
    pub fn subcommands(&self) -> Vec<String> {
        (self.command)()
            .get_subcommands()
            .map(|s| s.get_name().to_owned())
            .collect()
    }

    /// Every argument of the command and its subcommands.
    fn flags(&self) -> Vec<clap::Arg> {
        let mut out = Vec::new();
        let mut todo = vec![(self.command)()];
        while let Some(cmd) = todo.pop() {
            out.extend(cmd.get_arguments().cloned());
            todo.extend(cmd.get_subcommands().cloned());
        }
        out
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_env_vars_defaults_ports_and_subcommands_in_process() {
        let server = Cli::named("robot-server").expect("listed");
        let env = server.env();
        for known in [
            "ROBOT_SERVER_LISTEN",
            "ROBOT_SERVER_AUTH_TOKEN",
            "ROBOT_SERVER_REQUEST_TIMEOUT",
            "PORT",
        ] {
            assert!(env.contains(known), "{known} in {env:?}");
        }
        assert_eq!(server.port, 9090);
        assert!(
            server
                .defaults()
                .contains(&("ROBOT_SERVER_REQUEST_TIMEOUT".into(), "10s".into()))
        );
        let controller = Cli::named("robot-controller").expect("listed");
        assert_eq!(controller.env_prefix(), "ROBOT_CONTROLLER_");
        assert!(controller.subcommands().iter().any(|s| s == "once"));
        assert!(
            controller
                .env()
                .contains("ROBOT_CONTROLLER_ALLOWED_ENDPOINTS")
        );
        assert!(Cli::named("robot-nope").is_none());
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
