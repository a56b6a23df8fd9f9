//! The long versions of the fault and load suite (controller/tests/it/
//! faults.rs, scale.rs run the short ones in the test command):
//!
//! - `cargo xtask bench scale`: 10 000 Robots applied at once to the
//!   release controller (default flags): time to all Ready, control-plane
//!   requests by verb, robot-server requests, peak RSS; then a steady-state
//!   window (default 10 min): control-plane writes, robot-server calls per
//!   poll interval, CPU seconds.
//! - `cargo xtask bench server-soak`: the release robot server under many
//!   clients (default 128 keep-alive connections) for 10 minutes, each
//!   checking every answer; errors, throughput, RSS over time against the
//!   data it holds.
//! - `cargo xtask bench chaos`: the SIGKILL chaos test with many more runs
//!   (`ROBOT_CHAOS_RUNS`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testenv::process::ChildProcess;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::host::{build_release, cpu_seconds, get, loopback, mib, status_kib, wait_http};
use super::stack::Stack;

/// The controller's default poll interval: steady-state calls are
/// reported per interval.
const POLL_INTERVAL: Duration = Duration::from_secs(60);

/// Sums of a counter family by one label's value.
fn by_label(metrics: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for line in metrics.lines().filter(|l| l.starts_with(name)) {
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let key = line
            .split(&format!("{label}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_owned();
        *sums.entry(key).or_insert(0.0) += value;
    }
    sums
}

fn diff(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

struct Scrape {
    kube_by_verb: BTreeMap<String, f64>,
    kube_by_code: BTreeMap<String, f64>,
    server_by_method: BTreeMap<String, f64>,
}

impl Scrape {
    async fn take(controller: SocketAddr, server: SocketAddr) -> Result<Scrape> {
        let c = get(controller, "/metrics")
            .await
            .context("controller /metrics")?;
        let s = get(server, "/metrics")
            .await
            .context("robot-server /metrics")?;
        let robots: String = s
            .lines()
            .filter(|l| l.contains("route=\"/robots\""))
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Scrape {
            kube_by_verb: by_label(&c, "robot_controller_kube_requests_total", "verb"),
            kube_by_code: by_label(&c, "robot_controller_kube_requests_total", "code"),
            server_by_method: by_label(&robots, "robot_server_http_requests_total", "method"),
        })
    }
}

fn total(m: &BTreeMap<String, f64>) -> f64 {
    m.values().sum::<f64>() + 0.0 // an empty sum is -0.0, printed "-0"
}

fn writes(by_verb: &BTreeMap<String, f64>) -> f64 {
    by_verb
        .iter()
        .filter(|(v, _)| v.as_str() != "get" && v.as_str() != "watch")
        .map(|(_, n)| n)
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0, printed "-0"
}

/// `bench scale`: `n` Robots at once, then `steady` of nothing changing.
pub fn scale(n: usize, steady: Duration) -> Result<()> {
    let bins = build_release()?;
    testenv::install_crypto_provider();
    tokio::runtime::Runtime::new()?.block_on(async {
        let stack = Stack::start(&bins).await?;
        let (cp, server_addr) = (&stack.cp, stack.server_addr);
        let health = loopback()?;
        let controller = stack.controller(&bins, health)?;
        wait_http(health, "/readyz").await?;
        let pid = controller.id();
        println!(
            "scale: {n} Robots applied at once (64 concurrent creates) to the release controller, \
             default flags (poll 1m, concurrency 64, max reconcile rate 500/s), control plane, server \
             and controller on this machine's {} cores",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );

        let before = Scrape::take(health, server_addr).await?;
        let cpu0 = cpu_seconds(pid);
        // The control plane's own CPU: what bounds convergence on a small box.
        let control_plane_cpu = || -> f64 {
            cp.processes().iter().map(|(_, pid)| cpu_seconds(*pid)).sum()
        };
        let cp_cpu0 = control_plane_cpu();
        let started = Instant::now();
        let (created, ready) = tokio::join!(
            stack.create_robots(n, "scale"),
            stack.wait_all_ready(n, Duration::from_secs(1200))
        );
        created?;
        ready?;
        let took = started.elapsed();
        let after = Scrape::take(health, server_addr).await?;
        let verbs = diff(&before.kube_by_verb, &after.kube_by_verb);
        let codes = diff(&before.kube_by_code, &after.kube_by_code);
        let server_calls = diff(&before.server_by_method, &after.server_by_method);
        println!(
            "  all Ready+Synced {:.1}s after the first create ({:.0} Robots/s)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
        println!(
            "  control-plane requests {:.0} ({:.2}/Robot): by verb {verbs:?}; by code {codes:?}",
            total(&verbs),
            total(&verbs) / n as f64
        );
        println!(
            "  robot-server requests {:.0} ({:.2}/Robot): {server_calls:?}",
            total(&server_calls),
            total(&server_calls) / n as f64
        );
        println!(
            "  CPU while converging: kube-apiserver + etcd {:.1}s ({:.2} cores), controller {:.1}s; \
             controller RSS now {:.1} MiB, peak {:.1} MiB",
            control_plane_cpu() - cp_cpu0,
            (control_plane_cpu() - cp_cpu0) / took.as_secs_f64(),
            cpu_seconds(pid) - cpu0,
            mib(status_kib(pid, "VmRSS:")),
            mib(status_kib(pid, "VmHWM:"))
        );

        if !steady.is_zero() {
            // The last writes' own watch events settle first.
            tokio::time::sleep(Duration::from_secs(10)).await;
            let a = Scrape::take(health, server_addr).await?;
            let cpu_a = cpu_seconds(pid);
            let window = Instant::now();
            let mut peak = 0u64;
            while window.elapsed() < steady {
                tokio::time::sleep(Duration::from_secs(5)).await;
                peak = peak.max(status_kib(pid, "VmRSS:").unwrap_or(0));
            }
            let b = Scrape::take(health, server_addr).await?;
            let elapsed = window.elapsed();
            let verbs = diff(&a.kube_by_verb, &b.kube_by_verb);
            let server_calls = diff(&a.server_by_method, &b.server_by_method);
            let intervals = elapsed.as_secs_f64() / POLL_INTERVAL.as_secs_f64();
            println!(
                "  steady state over {:.0}s: control-plane writes {:.0}, requests {verbs:?}; \
                 robot-server calls {:.0} ({:.0} per {}s poll interval, {:.2} per Robot per interval) {server_calls:?}; \
                 controller CPU {:.1}s ({:.2}s/min); RSS max {:.1} MiB, end {:.1} MiB, peak since start {:.1} MiB",
                elapsed.as_secs_f64(),
                writes(&verbs),
                total(&server_calls),
                total(&server_calls) / intervals,
                POLL_INTERVAL.as_secs(),
                total(&server_calls) / intervals / n as f64,
                cpu_seconds(pid) - cpu_a,
                (cpu_seconds(pid) - cpu_a) * 60.0 / elapsed.as_secs_f64(),
                peak as f64 / 1024.0,
                mib(status_kib(pid, "VmRSS:")),
                mib(status_kib(pid, "VmHWM:"))
            );
        }
        // A fresh controller over the same, converged Robots: what holding
        // them costs, without the churn of converging (event cache,
        // freed-but-kept allocations).
        drop(controller);
        let health = loopback()?;
        let fresh = stack.controller(&bins, health)?;
        wait_http(health, "/readyz").await?;
        let ready_rss = status_kib(fresh.id(), "VmRSS:");
        // One poll interval and a little: every Robot observed once.
        tokio::time::sleep(POLL_INTERVAL + Duration::from_secs(10)).await;
        println!(
            "  a fresh controller over the {n} converged Robots: RSS {:.1} MiB when ready, {:.1} MiB after a poll interval \
             (peak {:.1} MiB)",
            mib(ready_rss),
            mib(status_kib(fresh.id(), "VmRSS:")),
            mib(status_kib(fresh.id(), "VmHWM:"))
        );
        drop(fresh);
        anyhow::Ok(())
    })
}

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
