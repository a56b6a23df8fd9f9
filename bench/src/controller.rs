//! `cargo xtask bench controller`: the release controller with default
//! flags against a real control plane and the release robot server, all on
//! this machine. For N Robots applied at once: time until all are Ready and
//! Synced, control-plane requests per Robot while converging, robot-server
//! calls, controller RSS; then a steady-state window: control-plane writes
//! (should be none), requests, robot-server calls, CPU. And the time from
//! exec to the first finished reconcile (file source), median of 10.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::host::{
    Binaries, build_release, cpu_seconds, get, loopback, mib, status_kib, wait_http,
};
use super::stack::Stack;

/// Robots applied at once, per run; the last is the 10 000 of the targets.
pub const SIZES: &[usize] = &[100, 1000, 10_000];
const FIRST_RECONCILE_RUNS: usize = 10;

pub fn bench(sizes: &[usize], steady: Duration) -> Result<()> {
    let bins = build_release()?;
    testenv::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        println!("controller benchmark: release binaries, default flags, control plane on the same cores");
        for &n in sizes {
            let f = converge(&bins, n, steady).await.with_context(|| format!("{n} Robots"))?;
            f.print();
        }
        let first = first_reconcile(&bins).await?;
        println!("start to first finished reconcile (file source, median of {FIRST_RECONCILE_RUNS}): {first:?}");
        Ok(())
    })
}

struct Figures {
    n: usize,
    ready_after: Duration,
    kube_requests: f64,
    kube_writes: f64,
    server_calls: f64,
    rss_mib: f64,
    steady: Option<Steady>,
}

struct Steady {
    window: Duration,
    kube_requests: f64,
    kube_writes: f64,
    server_calls: f64,
    cpu_seconds: f64,
    rss_mib: f64,
}

impl Figures {
    fn print(&self) {
        let n = self.n as f64;
        println!(
            "{} Robots: all Ready+Synced {:.2}s after apply; control-plane requests {:.0} ({:.1}/Robot, writes {:.1}/Robot); \
             robot-server calls {:.0} ({:.1}/Robot); controller RSS {:.1} MiB",
            self.n,
            self.ready_after.as_secs_f64(),
            self.kube_requests,
            self.kube_requests / n,
            self.kube_writes / n,
            self.server_calls,
            self.server_calls / n,
            self.rss_mib,
        );
        if let Some(s) = &self.steady {
            let per_min = 60.0 / s.window.as_secs_f64();
            println!(
                "  steady state over {:?}: control-plane writes {:.0}/min, requests {:.0}/min, \
                 robot-server calls {:.0}/min, controller CPU {:.2}s/min, RSS {:.1} MiB",
                s.window,
                s.kube_writes * per_min,
                s.kube_requests * per_min,
                s.server_calls * per_min,
                s.cpu_seconds * per_min,
                s.rss_mib,
            );
        }
    }
}

async fn converge(bins: &Binaries, n: usize, steady: Duration) -> Result<Figures> {
    let stack = Stack::start(bins).await?;
    let health = loopback()?;
    let controller = stack.controller(bins, health)?;
    wait_http(health, "/readyz").await?;
    let before = Scrape::take(health, stack.server_addr).await?;
    let started = Instant::now();
    let (created, ready) = tokio::join!(
        stack.create_robots(n, "bench"),
        stack.wait_all_ready(n, Duration::from_secs(600))
    );
    created?;
    ready?;
    let ready_after = started.elapsed();
    let after = Scrape::take(health, stack.server_addr).await?;
    let rss = rss_mib(controller.id());
    let steady = if steady.is_zero() {
        None
    } else {
        // Let the last writes' watch events settle, then measure a window.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let a = Scrape::take(health, stack.server_addr).await?;
        let cpu0 = cpu_seconds(controller.id());
        tokio::time::sleep(steady).await;
        let b = Scrape::take(health, stack.server_addr).await?;
        Some(Steady {
            window: steady,
            kube_requests: b.kube_requests - a.kube_requests,
            kube_writes: b.kube_writes - a.kube_writes,
            server_calls: b.server_calls - a.server_calls,
            cpu_seconds: cpu_seconds(controller.id()) - cpu0,
            rss_mib: rss_mib(controller.id()),
        })
    };
    drop(controller);
    Ok(Figures {
        n,
        ready_after,
        kube_requests: after.kube_requests - before.kube_requests,
        kube_writes: after.kube_writes - before.kube_writes,
        server_calls: after.server_calls - before.server_calls,
        rss_mib: rss,
        steady,
    })
}

/// Exec to the first reconcile finished, with one Robot waiting.
async fn first_reconcile(bins: &Binaries) -> Result<Duration> {
    let stack = Stack::start(bins).await?;
    stack.create_robots(1, "first").await?;
    let mut times = Vec::new();
    for _ in 0..FIRST_RECONCILE_RUNS {
        let health = loopback()?;
        let started = Instant::now();
        let controller = stack.controller(bins, health)?;
        loop {
            let reconciles = get(health, "/metrics")
                .await
                .map(|m| sum(&m, "robot_controller_reconciles_total", |_| true))
                .unwrap_or(0.0);
            if reconciles >= 1.0 {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("no reconcile within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(started.elapsed());
        drop(controller);
    }
    times.sort();
    Ok(times[times.len() / 2])
}

struct Scrape {
    kube_requests: f64,
    kube_writes: f64,
    server_calls: f64,
}

impl Scrape {
    async fn take(controller: SocketAddr, server: SocketAddr) -> Result<Scrape> {
        let c = get(controller, "/metrics")
            .await
            .context("controller /metrics")?;
        let s = get(server, "/metrics")
            .await
            .context("robot-server /metrics")?;
        Ok(Scrape {
            kube_requests: sum(&c, "robot_controller_kube_requests_total", |_| true),
            kube_writes: sum(&c, "robot_controller_kube_requests_total", |l| {
                !l.contains("verb=\"get\"") && !l.contains("verb=\"watch\"")
            }),
            server_calls: sum(&s, "robot_server_http_requests_total", |l| {
                l.contains("route=\"/robots\"")
            }),
        })
    }
}

fn sum(metrics: &str, name: &str, filter: impl Fn(&str) -> bool) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && filter(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rss_mib(pid: u32) -> f64 {
    mib(status_kib(pid, "VmRSS:"))
}
