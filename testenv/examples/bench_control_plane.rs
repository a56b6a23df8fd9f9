//! How long a control plane takes to become ready, and how much memory it
//! holds. Prints figures; asserts nothing. Method in testenv/BENCHMARKS.md.
//!
//!     cargo run -p testenv --example bench_control_plane [-- STARTS]

use std::time::{Duration, Instant};

use testenv::{ControlPlane, CrdSet, Options};

#[tokio::main]
async fn main() -> Result<(), testenv::Error> {
    let starts: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(7);
    // The binaries are built or found once, outside the timings.
    let t = Instant::now();
    let bins = tokio::task::spawn_blocking(testenv::binaries::ensure)
        .await
        .map_err(|e| testenv::Error::Binaries(e.to_string()))??;
    println!(
        "binaries: {} ({:.1}s)",
        bins.dir.display(),
        t.elapsed().as_secs_f64()
    );

    for (label, crds) in [("no CRDs", CrdSet::None), ("our CRDs", CrdSet::Ours)] {
        let mut ready = Vec::new();
        let mut etcd_rss = Vec::new();
        let mut apiserver_rss = Vec::new();
        for _ in 0..starts {
            let t = Instant::now();
            let cp = ControlPlane::start(Options {
                crds,
                ..Options::default()
            })
            .await?;
            ready.push(t.elapsed());
            for (name, pid) in cp.processes() {
                let kib = testenv::process::rss_kib(pid).unwrap_or(0);
                match name {
                    "etcd" => etcd_rss.push(kib),
                    _ => apiserver_rss.push(kib),
                }
            }
            cp.stop();
        }
        ready.sort();
        etcd_rss.sort_unstable();
        apiserver_rss.sort_unstable();
        let median = |v: &[Duration]| v[v.len() / 2].as_secs_f64();
        let mib = |v: &[u64]| v[v.len() / 2] as f64 / 1024.0;
        println!(
            "{label}: ready in median {:.2}s (min {:.2}s, max {:.2}s, {starts} starts); \
             RSS at ready, median: etcd {:.0} MiB, kube-apiserver {:.0} MiB, total {:.0} MiB",
            median(&ready),
            ready[0].as_secs_f64(),
            ready[ready.len() - 1].as_secs_f64(),
            mib(&etcd_rss),
            mib(&apiserver_rss),
            mib(&etcd_rss) + mib(&apiserver_rss),
        );
    }
    Ok(())
}
