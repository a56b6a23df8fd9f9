//! The command line: flags and environment variables of `robot-server`.
//! In the library so that other tools read the options from the one
//! definition (README tables, the Terraform env contract) instead of
//! parsing `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use robot_logging::LogFormat;

use crate::{Auth, BearerToken, Config, TokenError};

/// The bearer token itself, for platforms that inject secrets as env.
pub const TOKEN_ENV: &str = "ROBOT_SERVER_AUTH_TOKEN";

/// Cloud Run's: listen on `0.0.0.0:$PORT` when `--listen` is not given.
pub const PORT_ENV: &str = "PORT";

/// Where the reference server listens, and so do we unless told otherwise.
pub const DEFAULT_PORT: u16 = 9090;

/// Flags and environment variables of `robot-server`.
#[derive(Parser)]
#[command(
    name = "robot-server",
    version,
    about = "A robot store with provider-dummy's /robots API"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on [default: 0.0.0.0:9090, or 0.0.0.0:$PORT]
    #[arg(long, env = "ROBOT_SERVER_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// File holding the bearer token /robots and /v1/robots require (at
    /// least 32 bytes)
    #[arg(long, env = "ROBOT_SERVER_AUTH_TOKEN_FILE", value_name = "PATH")]
    pub auth_token_file: Option<PathBuf>,

    /// Serve /robots and /v1/robots without a token, to anyone who reaches
    /// the port: only where the platform authenticates callers first
    /// (Cloud Run with IAM)
    #[arg(long, env = "ROBOT_SERVER_NO_AUTH")]
    pub no_auth: bool,

    /// Keep robots across restarts in this file (default: in memory only)
    #[arg(long, env = "ROBOT_SERVER_STATE_FILE", value_name = "PATH")]
    pub state_file: Option<PathBuf>,

    /// Most connections served at once; more wait in the listen backlog
    /// until one closes
    #[arg(
        long,
        env = "ROBOT_SERVER_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = crate::DEFAULT_MAX_CONNECTIONS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_connections: usize,

    /// Longest time one request may take, e.g. 10s or 500ms
    #[arg(
        long,
        env = "ROBOT_SERVER_REQUEST_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub request_timeout: Duration,

    /// Log line format; auto is JSON unless stdout is a terminal
    #[arg(
        long,
        env = "ROBOT_SERVER_LOG_FORMAT",
        value_enum,
        default_value = "auto"
    )]
    pub log_format: LogFormat,

    /// Which logs to write (tracing EnvFilter syntax); per-request lines
    /// come with `info,robot_server::access=debug`
    #[arg(
        long,
        env = "ROBOT_SERVER_LOG",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log_filter: String,
}

/// Flags and environment that cannot work together. Never holds a token.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no auth token: set --auth-token-file (ROBOT_SERVER_AUTH_TOKEN_FILE) or ROBOT_SERVER_AUTH_TOKEN, \
         or pass --no-auth (ROBOT_SERVER_NO_AUTH=true) to let anyone who reaches the port use /robots"
    )]
    NoAuth,
    #[error("--no-auth (ROBOT_SERVER_NO_AUTH) and an auth token ({token}) are both set; set one")]
    NoAuthAndToken { token: &'static str },
    #[error(
        "both an auth token file (--auth-token-file, ROBOT_SERVER_AUTH_TOKEN_FILE) and ROBOT_SERVER_AUTH_TOKEN are set; set one"
    )]
    BothTokens,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("PORT={0:?} is not a port number")]
    Port(String),
}

impl Args {
    /// Where to listen: `--listen`, else `0.0.0.0:$PORT` (`port` is that
    /// variable), else `0.0.0.0:9090`.
    pub fn listen_addr(&self, port: Option<&str>) -> Result<SocketAddr, ConfigError> {
        Ok(match (self.listen, port) {
            (Some(listen), _) => listen,
            (None, Some(port)) => {
                let port: u16 = port
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError::Port(port.to_owned()))?;
                SocketAddr::from(([0, 0, 0, 0], port))
            }
            (None, None) => SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
        })
    }

    /// How to serve, `token` being `ROBOT_SERVER_AUTH_TOKEN`. Fails closed:
    /// without a token, `--no-auth` must say that none is wanted.
    pub fn config(&self, token: Option<&str>) -> Result<Config, ConfigError> {
        let auth = match (self.no_auth, &self.auth_token_file, token) {
            (_, Some(_), Some(_)) => return Err(ConfigError::BothTokens),
            (true, Some(_), None) => {
                return Err(ConfigError::NoAuthAndToken {
                    token: "--auth-token-file",
                });
            }
            (true, None, Some(_)) => {
                return Err(ConfigError::NoAuthAndToken { token: TOKEN_ENV });
            }
            (true, None, None) => Auth::None,
            (false, Some(path), None) => Auth::TokenFile(path.clone()),
            (false, None, Some(token)) => Auth::Token(BearerToken::new(token)?),
            (false, None, None) => return Err(ConfigError::NoAuth),
        };
        Ok(Config {
            state_file: self.state_file.clone(),
            request_timeout: self.request_timeout,
            max_connections: self.max_connections,
            ..Config::new(auth)
        })
    }
}

/// Subcommands (none: serve).
#[derive(clap::Subcommand)]
pub enum Command {
    /// Probe the /healthz of the server these flags and variables describe
    /// (a container health check for images without a shell): exit 0 when
    /// it answers 200, 1 otherwise.
    Healthcheck,
}

/// Variables read without a flag: name and what it is. One list for
/// `--help` and the README's table.
pub const ENV_ONLY: &[(&str, &str)] = &[
    (
        TOKEN_ENV,
        "the bearer token itself (instead of --auth-token-file); read once at start",
    ),
    (
        PORT_ENV,
        "listen on 0.0.0.0:$PORT when --listen is not given (Cloud Run)",
    ),
];

/// The command line as clap sees it: for tools that render or check the
/// options.
pub fn command() -> clap::Command {
    let env_only: String = ENV_ONLY
        .iter()
        .map(|(var, what)| format!("  {var:<24} {what}\n"))
        .collect();
    Args::command().after_help(format!(
        "Environment only:\n{env_only}\n\
         A token (--auth-token-file or {TOKEN_ENV}, at least 32 bytes) or --no-auth is required.\n\
         Exit codes: 0 after a graceful shutdown, 2 bad flags or configuration, 1 other failures."
    ))
}

/// The flags and variables of this process, exiting as clap does on a
/// bad one.
pub fn parse() -> Args {
    use clap::FromArgMatches as _;
    Args::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "cli-Test-Token-0123456789abcdef0123";

    fn args(flags: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("robot-server").chain(flags.iter().copied())).unwrap()
    }

    /// Platforms configure containers through the environment: no flag
    /// may be without its variable.
    #[test]
    fn every_flag_has_an_env_var() {
        let cmd = command();
        let subcommands = cmd.get_subcommands().flat_map(|s| s.get_arguments());
        let mut seen = 0;
        for arg in cmd.get_arguments().chain(subcommands) {
            if matches!(arg.get_id().as_str(), "help" | "version") {
                continue;
            }
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert!(
                env.starts_with("ROBOT_SERVER_"),
                "--{} has no ROBOT_SERVER_ env var",
                arg.get_id()
            );
            seen += 1;
        }
        assert!(seen >= 8, "only {seen} flags");
    }

    #[test]
    fn a_token_or_no_auth_is_required() {
        let err = args(&[]).config(None).unwrap_err();
        assert!(matches!(err, ConfigError::NoAuth), "{err}");
        let text = err.to_string();
        for needed in ["--auth-token-file", "ROBOT_SERVER_AUTH_TOKEN", "--no-auth"] {
            assert!(text.contains(needed), "{text}");
        }
        assert!(!text.contains('\n'), "one line: {text}");
        assert!(matches!(
            args(&["--no-auth"]).config(None).unwrap().auth,
            Auth::None
        ));
        assert!(matches!(
            args(&[]).config(Some(TOKEN)).unwrap().auth,
            Auth::Token(_)
        ));
        assert!(matches!(
            args(&["--auth-token-file", "/t"])
                .config(None)
                .unwrap()
                .auth,
            Auth::TokenFile(_)
        ));
    }

    #[test]
    fn no_auth_with_a_token_is_refused() {
        for (flags, token) in [
            (&["--no-auth"][..], Some(TOKEN)),
            (&["--no-auth", "--auth-token-file", "/t"], None),
        ] {
            let err = args(flags).config(token).unwrap_err();
            assert!(matches!(err, ConfigError::NoAuthAndToken { .. }), "{err}");
            assert!(!err.to_string().contains(TOKEN), "{err}");
        }
        let err = args(&["--auth-token-file", "/t"])
            .config(Some(TOKEN))
            .unwrap_err();
        assert!(matches!(err, ConfigError::BothTokens), "{err}");
    }

    /// A panic or a debug log of the configuration shows no token.
    #[test]
    fn a_config_never_prints_its_token() {
        let config = args(&["--state-file", "/s"]).config(Some(TOKEN)).unwrap();
        let text = format!("{config:?}");
        assert!(!text.contains(TOKEN), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }

    #[test]
    fn short_tokens_are_refused_without_showing_them() {
        let err = args(&[]).config(Some("tiny-s3cret")).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(text.contains("at least 32"), "{text}");
        assert!(!text.contains("tiny-s3cret"), "{text}");
    }

    #[test]
    fn listen_port_and_default() {
        let a = args(&[]);
        assert_eq!(a.listen_addr(None).unwrap().to_string(), "0.0.0.0:9090");
        assert_eq!(
            a.listen_addr(Some("8080")).unwrap().to_string(),
            "0.0.0.0:8080"
        );
        assert!(matches!(
            a.listen_addr(Some("http")),
            Err(ConfigError::Port(_))
        ));
        let a = args(&["--listen", "127.0.0.1:1"]);
        assert_eq!(
            a.listen_addr(Some("8080")).unwrap().to_string(),
            "127.0.0.1:1"
        );
    }
}
