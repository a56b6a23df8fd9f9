//! moto's server on a free loopback port, for as long as the guard lives.
//! It keeps everything in memory, so each run starts from nothing.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result};

use serde_json::Value;

use super::cli::run_captured;

/// The region every run against moto uses.
pub const REGION: &str = "us-east-1";

/// testenv's moto, started from synchronous code.
pub struct Moto {
    // Owns the process; the runtime only served the start.
    _moto: testenv::moto::Moto,
    pub endpoint: String,
}

impl Moto {
    /// Starts `moto_server` from `venv_bin`, logging to `log`, and waits
    /// until it answers.
    pub fn start(venv_bin: &Path, log: &Path) -> Result<Moto> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let moto = runtime.block_on(testenv::moto::Moto::start(
            venv_bin,
            // AWS managed policies (AmazonECSTaskExecutionRolePolicy, ...)
            // are only attachable when moto loads them.
            &[("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")],
            log,
        ))?;
        Ok(Moto {
            endpoint: moto.url.clone(),
            _moto: moto,
        })
    }
}

impl Moto {
    /// The environment that points the terraform AWS provider (and any
    /// SDK) at this moto for every service, with throwaway credentials.
    pub fn provider_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
        ]
    }
}

/// The aws CLI from `venv_bin`, aimed at moto with throwaway credentials;
/// nothing of the user's AWS configuration is read.
pub struct Aws<'a> {
    pub venv_bin: &'a Path,
    pub endpoint: &'a str,
}

impl Aws<'_> {
    /// Points `cmd` (the aws CLI or a shell that calls it) at moto.
    pub fn env(&self, cmd: &mut Command) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.venv_bin.to_path_buf()];
        paths.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(paths).unwrap_or_default())
            .env("AWS_ENDPOINT_URL", self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
    }

    /// `aws <args> --output json`, parsed.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let mut cmd = Command::new(self.venv_bin.join("aws"));
        self.env(&mut cmd);
        let out = run_captured(cmd.args(args).args(["--output", "json"]))?;
        serde_json::from_str(&out).with_context(|| format!("aws {args:?} printed no JSON: {out}"))
    }
}
