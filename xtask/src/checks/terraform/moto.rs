//! moto's server on a free loopback port, for as long as the guard lives.
//! It keeps everything in memory, so each run starts from nothing.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use serde_json::Value;

use super::cli::{run_captured, tail};

/// The region every run against moto uses.
pub const REGION: &str = "us-east-1";

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl Moto {
    /// Starts `moto_server` from `venv_bin`, logging to `log`, and waits
    /// until it answers. A port taken between choosing and binding it
    /// makes the server exit; that is retried on another port.
    pub fn start(venv_bin: &Path, log: &Path) -> Result<Moto> {
        let mut last_error = None;
        for _ in 0..3 {
            match Self::try_start(venv_bin, log) {
                Ok(moto) => return Ok(moto),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("moto did not start")))
    }

    fn try_start(venv_bin: &Path, log: &Path) -> Result<Moto> {
        let port = free_port()?;
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(venv_bin.join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // AWS managed policies (AmazonECSTaskExecutionRolePolicy, ...)
            // are only attachable when moto loads them.
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("cannot start moto_server")?;
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        moto.wait_ready(port, log)?;
        Ok(moto)
    }

    /// Polls moto's own API until it answers 200, the process exits, or
    /// the timeout passes.
    fn wait_ready(&mut self, port: u16, log: &Path) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if let Some(status) = self.child.try_wait()? {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                bail!(
                    "moto_server exited ({status}) before answering:\n{}",
                    tail(&text, 20)
                );
            }
            if answers(addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("moto_server did not answer on {addr} within {READY_TIMEOUT:?}");
            }
            // Connection refused comes back at once: pace the poll.
            std::thread::sleep(Duration::from_millis(50));
        }
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

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether `GET /moto-api/` answers 200.
fn answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /moto-api/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
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
