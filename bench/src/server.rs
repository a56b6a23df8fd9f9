//! `cargo xtask bench server`: drives the release `robot-server` on
//! loopback with wrk (Debian) and prints requests/s and latency for GET and
//! for POST+DELETE at 64 connections, idle RSS, RSS holding 100 000
//! robots, cold start (exec to the first 200 from /healthz, median of 20)
//! and the stripped binary's size.
//!
//! It measures the build the image ships: glibc linked statically
//! (`Dockerfile.server`). `ROBOT_SERVER_BENCH_STATIC_GLIBC=0` measures a
//! dynamically linked build instead.
//!
//! Also home of [`RunningServer`], which the CI steps use to run the binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Load generator settings: 64 connections over wrk's 2 threads (one per
/// core of the machine the aims were set for).
const CONNECTIONS: u32 = 64;
const WRK_THREADS: u32 = 2;
const LOAD_SECONDS: u32 = 10;
const WARMUP_SECONDS: u32 = 2;
/// Robots the GET load reads from.
const GET_ROBOTS: usize = 1000;
/// Robots held when the second RSS is read.
const MANY_ROBOTS: usize = 100_000;
const COLD_STARTS: usize = 20;

/// GETs spread over the robots created beforehand (`bench-0` ...).
const GET_SCRIPT: &str = r#"
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/robots?name=bench-" .. (n % 1000))
end
"#;

/// POSTs of new robots and DELETEs of those created 20 000 requests
/// earlier on the same wrk thread, alternating. The lag makes sure the POST
/// of a robot has been answered before its DELETE is sent: a thread has
/// only 32 connections, so a DELETE could meet a 404 only if one of them
/// stalled for 20 000 requests of the others (seconds).
const POST_DELETE_SCRIPT: &str = r#"
local LAG = 20000
local created, first, last, id = {}, 1, 0, 0
local delete_next = false
local prefix = "pd"
local verified = false
init = function(args) prefix = args[1] .. "-" .. tid end
request = function()
  -- wrk calls request() once on its first thread to check the script,
  -- and never sends that one: it must not enter the queue.
  if tid == 1 and not verified then
    verified = true
    return wrk.format("GET", "/healthz")
  end
  if delete_next and last - first + 1 >= LAG then
    delete_next = false
    local name = created[first]
    created[first] = nil
    first = first + 1
    return wrk.format("DELETE", "/robots?name=" .. name)
  end
  delete_next = true
  id = id + 1
  local name = prefix .. "-" .. id
  last = last + 1
  created[last] = name
  return wrk.format("POST", "/robots", {["Content-Type"] = "application/json"},
    '{"name":"' .. name .. '","color":"blue"}')
end
"#;

/// Shared by both scripts: thread ids, and one machine-readable line.
const COMMON_SCRIPT: &str = r#"
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
"#;

/// The 1-minute load average: other work on the machine skews the figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Set to 0 to link glibc dynamically, to see what the shared libraries
/// cost in memory and start-up time; by default glibc is linked statically
/// (`-C target-feature=+crt-static`), as in the image.
const STATIC_ENV: &str = "ROBOT_SERVER_BENCH_STATIC_GLIBC";

/// The target triple of a static glibc build: naming it keeps RUSTFLAGS
/// off build scripts and proc-macros, which cannot be static.
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

pub fn bench() -> Result<()> {
    // Installed by `cargo xtask bench` (a bench installs nothing itself).
    if std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!(
            "wrk is not installed: run `cargo xtask bench server`, which installs it, or apt-get install wrk"
        );
    }
    let static_glibc = std::env::var(STATIC_ENV).map_or(true, |v| v != "0");
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "--locked",
        "--package",
        "robot-server",
        "--bin",
        "robot-server",
    ]);
    let binary = if static_glibc {
        build
            .args(["--target", STATIC_TARGET])
            .env("RUSTFLAGS", "-C target-feature=+crt-static");
        binary(&format!("{STATIC_TARGET}/release"))
    } else {
        binary("release")
    };
    crate::run_command(&mut build)?;
    let size = std::fs::metadata(&binary)
        .with_context(|| format!("reading {}", binary.display()))?
        .len();
    let stripped = !has_symbol_table(&binary)?;

    eprintln!("bench: cold start, {COLD_STARTS} runs");
    let mut starts = Vec::new();
    for _ in 0..COLD_STARTS {
        starts.push(cold_start(&binary)?);
    }
    starts.sort();
    let cold = starts[COLD_STARTS / 2];

    let mut server = RunningServer::start(&binary, &["--no-auth"], &[])?;
    let idle_rss = server.rss_kib()?;
    let idle_rss_anon = server.status_kib("RssAnon:")?;
    let scripts = tempfile_dir()?;
    let get_script = scripts.join("get.lua");
    let post_delete_script = scripts.join("post_delete.lua");
    std::fs::write(&get_script, format!("{COMMON_SCRIPT}{GET_SCRIPT}"))?;
    std::fs::write(
        &post_delete_script,
        format!("{COMMON_SCRIPT}{POST_DELETE_SCRIPT}"),
    )?;

    eprintln!("bench: creating {GET_ROBOTS} robots to GET");
    create_robots(server.addr, "bench-", 0..GET_ROBOTS, 1)?;
    let load_before = load_average();
    eprintln!("bench: GET load");
    let shared = Placement::Shared;
    wrk(server.addr, &get_script, WARMUP_SECONDS, &[], shared)?;
    let cpu_before = server.cpu_seconds()?;
    let get = wrk(server.addr, &get_script, LOAD_SECONDS, &[], shared)?;
    let get_cpu_us = (server.cpu_seconds()? - cpu_before) * 1e6 / get.requests as f64;
    eprintln!("bench: POST+DELETE load");
    wrk(
        server.addr,
        &post_delete_script,
        WARMUP_SECONDS,
        &["warm"],
        shared,
    )?;
    let post_delete = wrk(
        server.addr,
        &post_delete_script,
        LOAD_SECONDS,
        &["run"],
        shared,
    )?;
    let load_after = load_average();
    let after_load_rss = server.rss_kib()?;
    server.stop()?;

    // The same GET load with the server and wrk on a core each, so that
    // neither waits for the other's time slice.
    eprintln!("bench: GET load, server and wrk pinned to a core each");
    let mut server =
        RunningServer::start(&binary, &["--no-auth"], &[("TOKIO_WORKER_THREADS", "1")])?;
    crate::run_command(
        Command::new("taskset")
            .args(["--all-tasks", "--cpu-list", "--pid", "0"])
            .arg(server.child.id().to_string())
            .stdout(Stdio::null()),
    )?;
    create_robots(server.addr, "bench-", 0..GET_ROBOTS, 1)?;
    wrk(
        server.addr,
        &get_script,
        WARMUP_SECONDS,
        &[],
        Placement::Pinned,
    )?;
    let get_pinned = wrk(
        server.addr,
        &get_script,
        LOAD_SECONDS,
        &[],
        Placement::Pinned,
    )?;
    server.stop()?;

    // A fresh server, so the figure is the robots' cost and not the load's.
    let mut server = RunningServer::start(&binary, &["--no-auth"], &[])?;
    eprintln!("bench: creating {MANY_ROBOTS} robots");
    create_robots(server.addr, "robot-", 0..MANY_ROBOTS, 4)?;
    let full_rss = server.rss_kib()?;
    server.stop()?;
    let _ = std::fs::remove_dir_all(&scripts);

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(str::trim)
                    .map(str::to_owned)
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    let linking = if static_glibc {
        "glibc linked statically"
    } else {
        "glibc linked dynamically"
    };
    println!("robot-server, release build, {linking}, loopback; {cores} cores ({cpu})");
    println!(
        "load: wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{LOAD_SECONDS}s after a {WARMUP_SECONDS}s warm-up, on the same machine"
    );
    println!(
        "1-minute load average before the loads {load_before}, after {load_after} \
         (the loads themselves add about 2; more means other work competed)"
    );
    println!("{}", get.line("GET /robots?name="));
    println!("{}", post_delete.line("POST+DELETE /robots"));
    println!("{}", get_pinned.line("GET, pinned (1+1 core)"));
    println!(
        "server CPU per GET:           {get_cpu_us:.1} µs (user + system, from /proc/<pid>/stat)"
    );
    println!("idle RSS:                     {}", mib(idle_rss));
    println!("RSS after the loads:          {}", mib(after_load_rss));
    println!("RSS holding {MANY_ROBOTS} robots:  {}", mib(full_rss));
    println!(
        "idle memory by kind:          {} anonymous (heap, stacks), {} file-backed (code of the binary and shared libraries)",
        mib(idle_rss_anon),
        mib(idle_rss.saturating_sub(idle_rss_anon))
    );
    println!(
        "cold start (median of {COLD_STARTS}):    {:.2} ms (min {:.2}, max {:.2})",
        ms(cold),
        ms(starts[0]),
        ms(starts[COLD_STARTS - 1])
    );
    println!(
        "binary size:                  {:.2} MB ({size} bytes, {})",
        size as f64 / 1e6,
        if stripped { "stripped" } else { "NOT stripped" }
    );
    println!();
    let aims = [
        ("GET p99 under 1 ms", get.p99_us < 1000),
        (
            "no error under load",
            get.errors() == 0 && post_delete.errors() == 0,
        ),
        ("idle RSS at most 3 MiB", idle_rss <= 3 * 1024),
        ("cold start at most 5 ms", cold <= Duration::from_millis(5)),
        (
            "stripped binary at most 5 MB",
            stripped && size <= 5_000_000,
        ),
    ];
    for (aim, met) in aims {
        println!("aim: {aim}: {}", if met { "met" } else { "MISSED" });
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// `robot-server` as cargo builds it for `profile` ("debug", "release",
/// or "<target triple>/release").
pub fn binary(profile: &str) -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join(profile).join("robot-server")
}

/// Whether the ELF file still has a `.symtab` section.
fn has_symbol_table(binary: &Path) -> Result<bool> {
    let bytes = std::fs::read(binary)?;
    Ok(bytes.windows(b".symtab\0".len()).any(|w| w == b".symtab\0"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("robot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Time from exec to the first 200 from /healthz. The port is picked free
/// beforehand; connection attempts spin until the listener is up.
fn cold_start(binary: &Path) -> Result<Duration> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args([
            "--listen",
            &addr.to_string(),
            "--log-format",
            "json",
            "--no-auth",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting robot-server")?;
    let result = loop {
        if started.elapsed() > Duration::from_secs(10) {
            break Err(anyhow::anyhow!(
                "robot-server did not answer /healthz within 10 s"
            ));
        }
        let Ok(stream) = TcpStream::connect(addr) else {
            std::thread::yield_now();
            continue;
        };
        let mut conn = Connection::new(stream)?;
        match conn.request("GET", "/healthz", None) {
            Ok(200) => break Ok(started.elapsed()),
            _ => continue,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Creates robots `<prefix><i>` for `range`, over `connections` keep-alive
/// connections in parallel.
fn create_robots(
    addr: SocketAddr,
    prefix: &str,
    range: std::ops::Range<usize>,
    connections: usize,
) -> Result<()> {
    let indices: Vec<usize> = range.collect();
    let chunk = indices.len().div_ceil(connections).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = indices
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || -> Result<()> {
                    let mut conn = Connection::new(TcpStream::connect(addr)?)?;
                    for i in part {
                        let body = format!(r#"{{"name":"{prefix}{i}","color":"green"}}"#);
                        let status = conn.request("POST", "/robots", Some(&body))?;
                        if status != 201 {
                            bail!("creating {prefix}{i}: status {status}");
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a robot-creating thread panicked"))??;
        }
        Ok(())
    })
}

/// One keep-alive HTTP/1.1 connection, enough for set-up and probes.
struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    fn new(stream: TcpStream) -> Result<Self> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// Sends a request and reads the answer; returns its status.
    fn request(&mut self, method: &str, target: &str, body: Option<&str>) -> Result<u16> {
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.reader.get_mut().write_all(request.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no HTTP status in {line:?}"))?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut discard = vec![0; length];
        self.reader.read_exact(&mut discard)?;
        Ok(status)
    }
}

/// What wrk measured.
struct Load {
    requests: u64,
    duration_us: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    non_2xx: u64,
    socket_errors: u64,
}

impl Load {
    fn errors(&self) -> u64 {
        self.non_2xx + self.socket_errors
    }

    fn line(&self, what: &str) -> String {
        let rps = self.requests as f64 / (self.duration_us as f64 / 1e6);
        format!(
            "{what:<22}{rps:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  max {:.1} ms  \
             errors {} (non-2xx {}, socket {}) of {} requests",
            self.p50_us as f64 / 1000.0,
            self.p99_us as f64 / 1000.0,
            self.max_us as f64 / 1000.0,
            self.errors(),
            self.non_2xx,
            self.socket_errors,
            self.requests,
        )
    }
}

/// Where the load generator runs.
#[derive(Clone, Copy)]
enum Placement {
    /// Its threads and the server's share every core.
    Shared,
    /// One wrk thread on CPU 1 (the server is pinned to CPU 0).
    Pinned,
}

fn wrk(
    addr: SocketAddr,
    script: &Path,
    seconds: u32,
    script_args: &[&str],
    placement: Placement,
) -> Result<Load> {
    let (mut command, threads) = match placement {
        Placement::Shared => (Command::new("wrk"), WRK_THREADS),
        Placement::Pinned => {
            let mut taskset = Command::new("taskset");
            taskset.args(["--cpu-list", "1", "wrk"]);
            (taskset, 1)
        }
    };
    let output = command
        .arg(format!("-t{threads}"))
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(script)
        .arg(format!("http://{addr}"))
        .arg("--")
        .args(script_args)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {}\n{text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .with_context(|| format!("wrk printed no RESULT line:\n{text}"))?;
    let field = |key: &str| -> Result<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .with_context(|| format!("no {key} in {line:?}"))?
            .parse()
            .with_context(|| format!("{key} in {line:?}"))
    };
    Ok(Load {
        requests: field("requests")?,
        duration_us: field("duration_us")?,
        p50_us: field("p50_us")?,
        p99_us: field("p99_us")?,
        max_us: field("max_us")?,
        non_2xx: field("non2xx")?,
        socket_errors: field("socket_errors")?,
    })
}

/// A `robot-server` process on a loopback port, stopped (SIGKILL) on drop.
pub struct RunningServer {
    child: Child,
    pub addr: SocketAddr,
}

impl RunningServer {
    /// Starts `binary` on an ephemeral loopback port with `args` and `envs`,
    /// and waits until it logs the address it listens on.
    pub fn start(binary: &Path, args: &[&str], envs: &[(&str, &str)]) -> Result<Self> {
        let mut command = Command::new(binary);
        command
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("robot-server's stdout")?;
        let (tx, rx) = mpsc::channel();
        // Reads on until the process ends, so the pipe never fills.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(addr) = listening_address(&line) {
                    sent = tx.send(addr).is_ok();
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => Ok(Self { child, addr }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("robot-server did not start listening ({status})")
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// CPU time the process has used (user + system, all threads).
    fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name, which is in parentheses.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<f64> {
            Ok(fields
                .get(i)
                .context("short /proc/<pid>/stat")?
                .parse::<f64>()?)
        };
        // utime and stime are the 14th and 15th fields; `rest` starts at the 3rd.
        Ok((ticks(11)? + ticks(12)?) / clock_ticks_per_second())
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        self.status_kib("VmRSS:")
    }

    /// A `kB` line of /proc/<pid>/status.
    fn status_kib(&self, key: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {key} in /proc/<pid>/status"))
    }

    /// SIGTERM, then the exit status (SIGKILL after `limit`).
    pub fn terminate(&mut self, limit: Duration) -> Result<ExitStatus> {
        crate::run_command(Command::new("kill").args(["-TERM", &self.child.id().to_string()]))?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("robot-server did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(&mut self) -> Result<()> {
        let status = self.terminate(Duration::from_secs(10))?;
        if !status.success() {
            bail!("robot-server exited with {status} after SIGTERM");
        }
        Ok(())
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The kernel's clock tick (`getconf CLK_TCK`), 100 on Linux in practice.
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The address of robot-server's JSON "listening" log line.
fn listening_address(line: &str) -> Option<SocketAddr> {
    if !line.contains(r#""message":"listening""#) {
        return None;
    }
    let rest = &line[line.find(r#""address":""#)? + r#""address":""#.len()..];
    rest[..rest.find('"')?].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listening_line() {
        let line = r#"{"timestamp":"t","severity":"INFO","message":"listening","target":"robot_server::serve","address":"127.0.0.1:4321","auth":false}"#;
        assert_eq!(
            listening_address(line),
            Some(SocketAddr::from(([127, 0, 0, 1], 4321)))
        );
        assert_eq!(listening_address(r#"{"message":"other"}"#), None);
    }
}
