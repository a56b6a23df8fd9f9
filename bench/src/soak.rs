//! The long versions of the fault and load suite (controller/tests/it/
//! faults.rs, scale.rs run the short ones in the test command):
//!
//! - `cargo xtask bench server-soak`: the release robot server under many
//!   clients (default 128 keep-alive connections) for 10 minutes, each
//!   checking every answer; errors, throughput, RSS over time against the
//!   data it holds.
//! - `cargo xtask bench chaos`: the SIGKILL chaos test with many more runs
//!   (`ROBOT_CHAOS_RUNS`).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testenv::process::ChildProcess;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::host::{build_release, get, loopback, mib, status_kib, wait_http};

/// `bench server-soak`: `clients` connections for `duration`, over a base
/// of robots stored beforehand.
pub fn server_soak(duration: Duration, clients: usize) -> Result<()> {
    let bins = build_release()?;
    const BASE: usize = 10_000;
    tokio::runtime::Runtime::new()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let addr = loopback()?;
        let mut cmd = Command::new(&bins.server);
        cmd.args([
            "--listen",
            &addr.to_string(),
            "--log-filter",
            "warn",
            "--no-auth",
        ]);
        let server = ChildProcess::spawn("robot-server", cmd, &dir.path().join("server.log"))?;
        wait_http(addr, "/healthz").await?;
        let pid = server.id();
        let idle = status_kib(pid, "VmRSS:");
        let mut base = Http::connect(addr).await?;
        for i in 0..BASE {
            let body = format!(r#"{{"name":"base-{i}","color":"grey"}}"#);
            base.expect("POST", "/robots", Some(&body), 201).await?;
        }
        let holding_base = status_kib(pid, "VmRSS:");
        println!(
            "server soak: release robot-server, {clients} keep-alive clients for {duration:?} over {BASE} stored robots; \
             each client loops create, get, replace, get, delete, get (404) on its own robot and lists a page every 50 loops, \
             checking every status and body"
        );

        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (stop, requests, errors, first_error) =
                (stop.clone(), requests.clone(), errors.clone(), first_error.clone());
            tasks.push(tokio::spawn(async move {
                let mut loops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let result = client_loop(addr, c, &mut loops, &stop, &requests).await;
                    if let Err(e) = result {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(format!("client {c}: {e:#}"));
                    }
                }
            }));
        }
        let started = Instant::now();
        let mut samples = Vec::new();
        while started.elapsed() < duration {
            tokio::time::sleep(Duration::from_secs(10)).await;
            samples.push((started.elapsed(), status_kib(pid, "VmRSS:").unwrap_or(0)));
        }
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        let elapsed = started.elapsed();
        let stored = get(addr, "/metrics")
            .await
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("robot_server_robots_stored "))
                    .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            })
            .unwrap_or(f64::NAN);
        let n = requests.load(Ordering::Relaxed);
        let after_warmup = samples
            .iter()
            .find(|(t, _)| *t >= Duration::from_secs(60))
            .or(samples.first())
            .map(|(_, k)| *k)
            .unwrap_or(0);
        let max = samples.iter().map(|(_, k)| *k).max().unwrap_or(0);
        let end = samples.last().map(|(_, k)| *k).unwrap_or(0);
        println!(
            "  {n} requests in {:.0}s ({:.0} req/s), errors {} {}",
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            errors.load(Ordering::Relaxed),
            first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .map(|e| format!("(first: {e})"))
                .unwrap_or_default()
        );
        println!(
            "  robots stored at the end {stored} (base {BASE}); RSS idle {:.1} MiB, holding the base {:.1} MiB, \
             after 1 min of load {:.1} MiB, max {:.1} MiB, end {:.1} MiB; samples every 10 s (MiB): {}",
            mib(idle),
            mib(holding_base),
            after_warmup as f64 / 1024.0,
            max as f64 / 1024.0,
            end as f64 / 1024.0,
            samples
                .iter()
                .map(|(_, k)| format!("{:.1}", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(" ")
        );
        drop(server);
        anyhow::Ok(())
    })
}

/// One client: a connection, reused until an error or the end.
async fn client_loop(
    addr: SocketAddr,
    client: usize,
    loops: &mut u64,
    stop: &AtomicBool,
    requests: &AtomicU64,
) -> Result<()> {
    let mut http = Http::connect(addr).await?;
    while !stop.load(Ordering::Relaxed) {
        *loops += 1;
        let name = format!("soak-{client}-{loops}");
        let path = format!("/robots?name={name}");
        let first = format!(r#"{{"name":"{name}","color":"red-{loops}"}}"#);
        let second = format!(r#"{{"name":"{name}","color":"blue-{loops}"}}"#);
        http.expect("POST", "/robots", Some(&first), 201).await?;
        let got = http.expect("GET", &path, None, 200).await?;
        if got != first {
            bail!("GET {name} answered {got}, not {first}");
        }
        http.expect("PUT", &path, Some(&second), 200).await?;
        let got = http.expect("GET", &path, None, 200).await?;
        if got != second {
            bail!("GET {name} answered {got}, not {second}");
        }
        http.expect("DELETE", &path, None, 200).await?;
        http.expect("GET", &path, None, 404).await?;
        requests.fetch_add(6, Ordering::Relaxed);
        if loops.is_multiple_of(50) {
            http.expect("GET", "/v1/robots?limit=100", None, 200)
                .await?;
            requests.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// A minimal HTTP/1.1 keep-alive client (the server always sends
/// Content-Length), so the load does not depend on a client library.
struct Http {
    stream: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl Http {
    async fn connect(addr: SocketAddr) -> Result<Http> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream: BufReader::new(stream),
            addr,
        })
    }

    /// Sends a request; fails unless the answer has `status`; returns the body.
    async fn expect(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        status: u16,
    ) -> Result<String> {
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let got: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{method} {path}: bad status line {line:?}"))?;
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if self.stream.read_line(&mut header).await? == 0 {
                bail!("{method} {path}: connection closed in the headers");
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse()?;
            }
        }
        let mut answer = vec![0u8; length];
        self.stream.read_exact(&mut answer).await?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        if got != status {
            bail!("{method} {path}: {got} (wanted {status}): {answer}");
        }
        Ok(answer)
    }
}

/// `bench chaos`: the SIGKILL chaos test with `runs` runs.
pub fn chaos(runs: usize, seed: Option<u64>) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "test",
        "--locked",
        "-p",
        "robot-controller",
        "--test",
        "it",
        "--",
        "--exact",
        "faults::sigkill_at_random_points_loses_nothing",
        "--nocapture",
    ])
    .env("ROBOT_CHAOS_RUNS", runs.to_string());
    if let Some(seed) = seed {
        cmd.env("ROBOT_CHAOS_SEED", seed.to_string());
    }
    println!("chaos: {runs} runs of 4 SIGKILLs each (see the `fault report` line)");
    crate::run_command(&mut cmd)
}
