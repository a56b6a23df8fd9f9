//! Flags and environment variables. Every flag reads `ROBOT_CONTROLLER_*`
//! too, because serverless platforms configure containers through env.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::crd::Generation;
use robot_logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "robot-controller",
    version,
    about = "Reconciles Robots in a remote control plane against a robot server in a private network.",
    long_about = "Reconciles Robots in a remote control plane against a robot server in a private \
                  network. It dials out to the control plane with a kubeconfig (from a file, an \
                  env var, or a cloud secret manager); nothing ever connects to it from outside."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a long-lived service: watch, reconcile, serve health (default).
    Run(RunArgs),
    /// One full pass over every Robot, then exit: 0 when all are Synced.
    Once(RunArgs),
    /// Serve AWS Lambda invocations; each does one pass like `once`. Also
    /// what runs with no subcommand when AWS_LAMBDA_RUNTIME_API is set.
    Lambda(RunArgs),
    /// Probe the /healthz of the instance these flags and variables
    /// describe (a container health check for images without a shell):
    /// exit 0 when it answers 200, 1 otherwise.
    Healthcheck(RunArgs),
    /// Print our CRDs (a superset of provider-dummy's) as YAML.
    Crds(CrdsArgs),
}

#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Where the control plane's kubeconfig comes from: a path, file:///path,
    /// env:VAR, in-cluster, aws-secretsmanager://<secret-id or ARN>[?region=&versionStage=&versionId=&jsonKey=],
    /// or gcp-secretmanager://projects/<p>/secrets/<s>/versions/<v|latest>[?jsonKey=].
    /// Default: KUBECONFIG, ~/.kube/config, then in-cluster, as kubectl does.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_KUBECONFIG_SOURCE",
        value_name = "SOURCE"
    )]
    pub kubeconfig_source: Option<String>,

    /// How often to re-read the kubeconfig (and server token) source; a
    /// change rebuilds the client without a restart. Also re-read at once
    /// when the control plane answers 401.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_SECRET_REFRESH_INTERVAL",
        default_value = "5m",
        value_parser = humantime::parse_duration
    )]
    pub secret_refresh_interval: Duration,

    /// Where the robot server's bearer token comes from (same forms as
    /// --kubeconfig-source). Implies --server-auth bearer.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_SERVER_TOKEN_SOURCE",
        value_name = "SOURCE"
    )]
    pub server_token_source: Option<String>,

    /// How to authenticate to the robot server.
    #[arg(long, env = "ROBOT_CONTROLLER_SERVER_AUTH", value_enum)]
    pub server_auth: Option<ServerAuth>,

    /// Robot server URLs (prefixes) a ProviderConfig may point at,
    /// comma-separated. Empty allows any.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_ALLOWED_ENDPOINTS",
        default_value = "",
        value_name = "URLS"
    )]
    pub allowed_endpoints: String,

    /// Which provider-dummy API generation to serve; auto asks the control
    /// plane's discovery.
    #[arg(long, env = "ROBOT_CONTROLLER_API_GROUP", default_value = "auto")]
    pub api_group: ApiGroup,

    /// How often an in-sync Robot is observed again to catch drift (jittered).
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_POLL_INTERVAL",
        default_value = "1m",
        value_parser = humantime::parse_duration
    )]
    pub poll_interval: Duration,

    /// Largest delay between retries of a failing Robot (backoff doubles from 1s).
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_MAX_BACKOFF",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    pub max_backoff: Duration,

    /// Reconciles per second that may call the robot server, across all
    /// Robots (0: unlimited).
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_MAX_RECONCILE_RATE",
        default_value_t = 500
    )]
    pub max_reconcile_rate: u32,

    /// Robots reconciled at once.
    #[arg(long, env = "ROBOT_CONTROLLER_CONCURRENCY", default_value_t = 64)]
    pub concurrency: u16,

    /// Timeout of each call to the robot server.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_SERVER_TIMEOUT",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub server_timeout: Duration,

    /// Address for /healthz, /readyz and /metrics. Default 0.0.0.0:8080, or
    /// 0.0.0.0:$PORT when PORT is set (Cloud Run).
    #[arg(long, env = "ROBOT_CONTROLLER_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,

    /// Hold a Lease in the control plane so only one instance reconciles;
    /// others wait (a rollout, a second task).
    #[arg(long, env = "ROBOT_CONTROLLER_LEADER_ELECTION")]
    pub leader_election: bool,

    /// Namespace of the leader-election Lease.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_LEADER_ELECTION_NAMESPACE",
        default_value = "default"
    )]
    pub leader_election_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_LEADER_ELECTION_NAME",
        default_value = "robot-controller"
    )]
    pub leader_election_name: String,

    /// How long a Lease stays valid without renewal: the longest a standby
    /// waits after the leader dies.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_LEADER_ELECTION_DURATION",
        default_value = "15s",
        value_parser = humantime::parse_duration
    )]
    pub leader_election_duration: Duration,

    /// Longest wait for in-flight reconciles on SIGTERM before exiting.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_SHUTDOWN_TIMEOUT",
        default_value = "8s",
        value_parser = humantime::parse_duration
    )]
    pub shutdown_timeout: Duration,

    /// Log format: json for log collectors, text for people; auto is json
    /// unless stdout is a terminal.
    #[arg(long, env = "ROBOT_CONTROLLER_LOG_FORMAT", default_value = "auto")]
    pub log_format: LogFormat,

    /// Log filter, as tracing's EnvFilter reads it (e.g. info,robot_controller=debug).
    #[arg(long, env = "ROBOT_CONTROLLER_LOG", default_value = "info")]
    pub log_filter: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServerAuth {
    /// No Authorization header.
    None,
    /// `Authorization: Bearer <token>` from --server-token-source.
    Bearer,
    /// A Google ID token for the server's URL from the metadata server
    /// (a robot server on Cloud Run behind IAM).
    GcpIdToken,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ApiGroup {
    Auto,
    #[value(name = "dummy.crossplane.io")]
    Crossplane,
    #[value(name = "dummy.upbound.io")]
    Upbound,
}

impl ApiGroup {
    pub fn forced(self) -> Option<Generation> {
        match self {
            ApiGroup::Auto => None,
            ApiGroup::Crossplane => Some(Generation::Crossplane),
            ApiGroup::Upbound => Some(Generation::Upbound),
        }
    }
}

#[derive(Clone, Debug, Args)]
pub struct CrdsArgs {
    /// API generation of the CRDs.
    #[arg(long, default_value = "dummy.crossplane.io")]
    pub generation: Generation,
    /// Write one file per CRD into this directory instead of printing.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

impl RunArgs {
    /// The health address: the flag, else `PORT` (Cloud Run), else 8080.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_listen.unwrap_or_else(|| {
            let port = std::env::var("PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(8080);
            SocketAddr::from(([0, 0, 0, 0], port))
        })
    }

    /// `--server-auth`, defaulting to bearer when a token source is given.
    pub fn server_auth(&self) -> ServerAuth {
        self.server_auth
            .unwrap_or(if self.server_token_source.is_some() {
                ServerAuth::Bearer
            } else {
                ServerAuth::None
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_an_env_var() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for sub in ["run", "once", "lambda", "healthcheck"] {
            let sub = cmd.find_subcommand(sub).unwrap();
            for arg in sub.get_arguments() {
                if arg.get_id() == "help" || arg.get_id() == "version" {
                    continue;
                }
                let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
                assert!(
                    env.starts_with("ROBOT_CONTROLLER_"),
                    "--{} has no ROBOT_CONTROLLER_ env var",
                    arg.get_id()
                );
            }
        }
    }

    #[test]
    fn subcommand_defaults_to_run() {
        let cli = Cli::try_parse_from(["robot-controller", "--poll-interval", "5s"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.poll_interval, Duration::from_secs(5));
        let cli = Cli::try_parse_from(["robot-controller", "once", "--concurrency", "3"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Once(a)) if a.concurrency == 3));
    }
}
