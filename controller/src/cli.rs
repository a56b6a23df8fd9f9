//! Flags and environment variables. Every flag reads `ROBOT_CONTROLLER_*`
//! too, because serverless platforms configure containers through env.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::{Family, Generation};
use robot_logging::LogFormat;

/// The health port without `--health-listen` or `PORT`.
pub const DEFAULT_HEALTH_PORT: u16 = 8080;

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
    /// Where the control plane's kubeconfig comes from: a path, `file:///path`,
    /// `env:VAR`, `in-cluster`, `aws-secretsmanager://<secret-id or ARN>[?region=&versionStage=&versionId=&jsonKey=]`,
    /// or `gcp-secretmanager://projects/<p>/secrets/<s>/versions/<v|latest>[?jsonKey=]`.
    /// Default: KUBECONFIG, ~/.kube/config, then in-cluster, as kubectl does.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_KUBECONFIG_SOURCE",
        value_name = "SOURCE"
    )]
    pub kubeconfig_source: Option<String>,

    /// Where the Upbound token comes from (same forms as
    /// --kubeconfig-source), for a kubeconfig whose user is Upbound's `up
    /// organization token` plugin (what `up ctx ... -f -` writes): the
    /// controller exchanges it for control-plane tokens itself. A robot
    /// token from `up robot token create`; `?jsonKey=token` reads the JSON
    /// file that command writes.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_UPBOUND_TOKEN_SOURCE",
        value_name = "SOURCE"
    )]
    pub upbound_token_source: Option<String>,

    /// Upbound's auth service, for the token exchange.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_UPBOUND_AUTH_ENDPOINT",
        default_value = crate::credentials::upbound::DEFAULT_ENDPOINT,
        value_name = "URL"
    )]
    pub upbound_auth_endpoint: String,

    /// Dangerous: run an exec plugin a kubeconfig from a secret names
    /// (other than those done natively: up, aws eks get-token,
    /// aws-iam-authenticator, gke-gcloud-auth-plugin). Whoever can write the
    /// secret can then run a command in the controller.
    #[arg(long, env = "ROBOT_CONTROLLER_INSECURE_KUBECONFIG_EXEC")]
    pub insecure_kubeconfig_exec: bool,

    /// Dangerous: use an auth-provider (oidc, gcp) a kubeconfig from a
    /// secret names; they run commands and read files.
    #[arg(long, env = "ROBOT_CONTROLLER_INSECURE_KUBECONFIG_AUTH_PROVIDER")]
    pub insecure_kubeconfig_auth_provider: bool,

    /// Dangerous: read local files a kubeconfig from a secret names
    /// (tokenFile, client-certificate, client-key, certificate-authority;
    /// the -data forms need no opt-in).
    #[arg(long, env = "ROBOT_CONTROLLER_INSECURE_KUBECONFIG_FILES")]
    pub insecure_kubeconfig_files: bool,

    /// Dangerous: send control-plane traffic through the proxy-url a
    /// kubeconfig from a secret names.
    #[arg(long, env = "ROBOT_CONTROLLER_INSECURE_KUBECONFIG_PROXY")]
    pub insecure_kubeconfig_proxy: bool,

    /// Dangerous: honour insecure-skip-tls-verify in a kubeconfig from a
    /// secret (no check of the control plane's identity).
    #[arg(long, env = "ROBOT_CONTROLLER_INSECURE_SKIP_TLS_VERIFY")]
    pub insecure_skip_tls_verify: bool,

    /// How often to re-read the kubeconfig (and server token) source; a
    /// change rebuilds the client without a restart. Also re-read at once
    /// when the control plane answers 401.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_SECRET_REFRESH_INTERVAL",
        default_value = "5m",
        value_parser = at_least_1s
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
    /// comma-separated. Required: `*` allows any URL (dangerous: whoever
    /// can write a ProviderConfig can then make the controller call any
    /// address in the private network), and is refused with
    /// --server-auth bearer or gcp-id-token.
    #[arg(long, env = "ROBOT_CONTROLLER_ALLOWED_ENDPOINTS", value_name = "URLS")]
    pub allowed_endpoints: Option<String>,

    /// Which provider-dummy API generation to serve; auto asks the control
    /// plane's discovery.
    #[arg(long, env = "ROBOT_CONTROLLER_API_GROUP", default_value = "auto")]
    pub api_group: ApiGroup,

    /// How often an in-sync resource is observed again to catch drift
    /// (jittered), unless its crossplane.io/poll-interval annotation says
    /// otherwise.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_POLL_INTERVAL",
        default_value = "1m",
        value_parser = at_least_1s
    )]
    pub poll_interval: Duration,

    /// The shortest poll a crossplane.io/poll-interval annotation may ask
    /// for; shorter ones are raised to it.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_MIN_POLL_INTERVAL",
        default_value = "10s",
        value_parser = at_least_1s
    )]
    pub min_poll_interval: Duration,

    /// Largest delay between retries of a failing Robot (backoff doubles from 1s).
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_MAX_BACKOFF",
        default_value = "30s",
        value_parser = at_least_1s
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

    /// Resources reconciled at once.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_CONCURRENCY",
        default_value_t = 64,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub concurrency: u16,

    /// Timeout of each call to the robot server.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_SERVER_TIMEOUT",
        default_value = "10s",
        value_parser = at_least_100ms
    )]
    pub server_timeout: Duration,

    /// Timeout of each request to the control plane (watches excepted:
    /// each lasts 30 s, and one silent for 45 s is dropped and resumed).
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_KUBE_TIMEOUT",
        default_value = "10s",
        value_parser = at_least_100ms
    )]
    pub kube_timeout: Duration,

    /// Longest time one reconcile may take; past it, the reconcile is
    /// abandoned and retried with backoff.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_RECONCILE_TIMEOUT",
        default_value = "1m",
        value_parser = at_least_1s
    )]
    pub reconcile_timeout: Duration,

    /// Record no Normal events (CreatedExternalResource, UpdatedExternalResource,
    /// DeletedExternalResource): one control-plane write fewer per change.
    /// Warning events are always recorded.
    #[arg(long, env = "ROBOT_CONTROLLER_NO_NORMAL_EVENTS")]
    pub no_normal_events: bool,

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
        value_parser = at_least_4s
    )]
    pub leader_election_duration: Duration,

    /// How long failures at start-up that may pass (a secret manager that
    /// cannot be reached yet) are retried, backing off, before exiting 1.
    /// Failures that cannot pass (a bad URI, a refused kubeconfig) exit 2
    /// at once.
    #[arg(
        long,
        env = "ROBOT_CONTROLLER_START_TIMEOUT",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    pub start_timeout: Duration,

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

/// Which group family to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ApiGroup {
    Auto,
    #[value(name = "dummy.crossplane.io")]
    Crossplane,
    #[value(name = "dummy.upbound.io")]
    Upbound,
}

impl ApiGroup {
    pub fn forced(self) -> Option<Family> {
        match self {
            ApiGroup::Auto => None,
            ApiGroup::Crossplane => Some(Family::Crossplane),
            ApiGroup::Upbound => Some(Family::Upbound),
        }
    }
}

#[derive(Clone, Debug, Args)]
pub struct CrdsArgs {
    /// The group family of the CRDs.
    #[arg(long, default_value = "dummy.crossplane.io")]
    pub api_group: Family,
    /// Which generation: the legacy cluster-scoped kinds, the namespaced
    /// (Crossplane v2) ones, or both.
    #[arg(long, default_value = "all")]
    pub generation: CrdGeneration,
    /// Write one file per CRD into this directory instead of printing.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// `crds --generation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CrdGeneration {
    Legacy,
    Namespaced,
    All,
}

impl CrdGeneration {
    pub fn generations(self) -> &'static [Generation] {
        match self {
            CrdGeneration::Legacy => &[Generation::Legacy],
            CrdGeneration::Namespaced => &[Generation::Namespaced],
            CrdGeneration::All => &Generation::ALL,
        }
    }
}

fn at_least(text: &str, min: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < min {
        return Err(format!(
            "{text} is too short: at least {}",
            humantime::format_duration(min)
        ));
    }
    Ok(d)
}

fn at_least_100ms(text: &str) -> Result<Duration, String> {
    at_least(text, Duration::from_millis(100))
}

fn at_least_1s(text: &str) -> Result<Duration, String> {
    at_least(text, Duration::from_secs(1))
}

/// A lease shorter than this leaves too little of its last quarter to
/// notice a lost leadership in.
fn at_least_4s(text: &str) -> Result<Duration, String> {
    at_least(text, Duration::from_secs(4))
}

impl RunArgs {
    /// What a kubeconfig from a secret may ask for.
    pub fn kubeconfig_permissions(&self) -> crate::kubeconfig::Permissions {
        crate::kubeconfig::Permissions {
            exec: self.insecure_kubeconfig_exec,
            auth_provider: self.insecure_kubeconfig_auth_provider,
            files: self.insecure_kubeconfig_files,
            proxy: self.insecure_kubeconfig_proxy,
            skip_tls_verify: self.insecure_skip_tls_verify,
        }
    }

    /// The health address: the flag, else `PORT` (Cloud Run), else 8080.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_listen.unwrap_or_else(|| {
            let port = std::env::var("PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(DEFAULT_HEALTH_PORT);
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
    fn zero_and_absurd_values_are_refused() {
        for (flag, value) in [
            ("--secret-refresh-interval", "0s"),
            ("--poll-interval", "0s"),
            ("--poll-interval", "500ms"),
            ("--min-poll-interval", "0s"),
            ("--concurrency", "0"),
            ("--max-backoff", "0s"),
            ("--server-timeout", "0s"),
            ("--kube-timeout", "10ms"),
            ("--reconcile-timeout", "0s"),
            ("--leader-election-duration", "2s"),
        ] {
            let e = Cli::try_parse_from(["robot-controller", flag, value])
                .err()
                .unwrap_or_else(|| panic!("{flag} {value} accepted"));
            assert_eq!(e.exit_code(), 2, "{flag} {value}");
            let text = e.to_string();
            assert!(text.contains(flag), "{flag}: {text}");
        }
        assert!(Cli::try_parse_from(["robot-controller", "--poll-interval", "1s"]).is_ok());
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
