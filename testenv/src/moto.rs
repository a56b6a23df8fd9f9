//! moto's server (AWS APIs, in memory) on a free loopback port, for as long
//! as the guard lives: one launcher for the controller's tests and xtask's
//! Terraform and ECS checks. Each start begins from nothing.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::Error;
use crate::process::{ChildProcess, free_port, log_tail};

/// How long moto may take to answer after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Moto {
    _process: ChildProcess,
    /// `http://127.0.0.1:<port>`: the endpoint for SDKs and the aws CLI.
    pub url: String,
}

impl Moto {
    /// Starts `moto_server` from `venv_bin` with `env` added, logging to
    /// `log`, and returns once `GET /moto-api/` answers 200. A port taken
    /// between choosing and binding it makes moto exit; that start is
    /// retried on another port.
    pub async fn start(venv_bin: &Path, env: &[(&str, &str)], log: &Path) -> Result<Moto, Error> {
        let mut attempt = 1;
        loop {
            match Self::try_start(venv_bin, env, log).await {
                Err(Error::Start { .. }) if attempt < 3 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn try_start(venv_bin: &Path, env: &[(&str, &str)], log: &Path) -> Result<Moto, Error> {
        let ip = Ipv4Addr::LOCALHOST.into();
        let port = free_port(ip)?;
        let mut cmd = Command::new(venv_bin.join("moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied());
        let mut process = ChildProcess::spawn("moto_server", cmd, log)?;
        let addr = SocketAddr::new(ip, port);
        let answered = crate::wait_for("moto_server to answer", READY_TIMEOUT, || {
            let exited = process.exit_status();
            async move {
                if let Some(status) = exited {
                    return Some(Err(status));
                }
                let probe = tokio::task::spawn_blocking(move || {
                    crate::http::get(addr, "/moto-api/", Duration::from_secs(5))
                });
                let response = probe.await.ok()?.ok()?;
                (response.status == 200).then_some(Ok(()))
            }
        })
        .await?;
        if let Err(status) = answered {
            return Err(Error::Start {
                what: "moto_server".into(),
                detail: format!("exited ({status}) before answering:\n{}", log_tail(log, 20)),
            });
        }
        Ok(Moto {
            _process: process,
            url: format!("http://{addr}"),
        })
    }
}
