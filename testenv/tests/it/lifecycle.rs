//! Start, restart, rotate, stop: processes and data behave.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use testenv::{ControlPlane, CrdSet, Options, RobotServer};

use crate::support::{api_status, wait_gone, whoami};

fn bare() -> Options {
    Options {
        crds: CrdSet::None,
        ..Options::default()
    }
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

async fn has_namespace(client: &kube::Client, name: &str) -> bool {
    let api: Api<Namespace> = Api::all(client.clone());
    api.get_opt(name).await.expect("get namespace").is_some()
}

#[tokio::test]
async fn dropping_a_control_plane_ends_its_processes_and_removes_its_dir() {
    let cp = ControlPlane::start(bare()).await.expect("control plane");
    let pids: Vec<u32> = cp.processes().iter().map(|(_, pid)| *pid).collect();
    assert_eq!(pids.len(), 2, "{:?}", cp.processes());
    let dir = cp.dir().to_path_buf();
    assert!(dir.join("etcd-data").is_dir());
    cp.stop();
    // The guard reaps synchronously: gone right away, no waiting.
    for pid in &pids {
        assert!(
            !testenv::process::is_running(*pid),
            "pid {pid} outlived the control plane"
        );
    }
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

#[tokio::test]
async fn several_control_planes_run_side_by_side_and_stay_apart() {
    let (a, b, c) = tokio::join!(
        ControlPlane::start(bare()),
        ControlPlane::start(bare()),
        ControlPlane::start(bare())
    );
    let planes = [a.expect("a"), b.expect("b"), c.expect("c")];
    let mut urls: Vec<&str> = planes.iter().map(ControlPlane::url).collect();
    urls.sort_unstable();
    urls.dedup();
    assert_eq!(urls.len(), 3, "{urls:?}");
    let first = planes[0].admin_client().await.expect("client");
    create_namespace(&first, "only-in-the-first").await;
    assert!(has_namespace(&first, "only-in-the-first").await);
    for other in &planes[1..] {
        let client = other.admin_client().await.expect("client");
        assert!(!has_namespace(&client, "only-in-the-first").await);
    }
    // Each trusts only its own CA: a client of one cannot talk to another.
    let first_yaml = std::fs::read_to_string(planes[0].admin_kubeconfig_path()).expect("read");
    let crossed = first_yaml.replace(planes[0].url(), planes[1].url());
    let crossed = testenv::kubeconfig::client_from_yaml(&crossed, "crossed")
        .await
        .expect("client");
    assert!(whoami(&crossed).await.is_err(), "a foreign CA was accepted");
}

#[tokio::test]
async fn rotating_the_controller_token_revokes_the_old_one() {
    let mut cp = ControlPlane::start(bare()).await.expect("control plane");
    let admin = cp.admin_client().await.expect("client");
    create_namespace(&admin, "survives-the-restart").await;
    let before = cp.controller_client().await.expect("client");
    whoami(&before).await.expect("the first token works");
    let old_token = cp.controller_token();
    let old_pids = cp.processes();
    assert!(
        !format!("{cp:?}").contains(&old_token),
        "Debug shows the token"
    );

    let new_token = cp.rotate_controller_token().await.expect("rotate");
    assert_ne!(new_token, old_token);
    assert_eq!(cp.controller_token(), new_token);
    assert_eq!(
        api_status(whoami(&before).await),
        Some(401),
        "the old token still works"
    );

    let file = std::fs::read_to_string(cp.controller_kubeconfig_path()).expect("read");
    assert!(file.contains(&new_token) && !file.contains(&old_token));
    assert!(cp.controller_kubeconfig_yaml().contains(&new_token));
    let after = testenv::kubeconfig::client_from_file(cp.controller_kubeconfig_path(), "rotated")
        .await
        .expect("client");
    assert_eq!(
        whoami(&after).await.expect("the new token works").0,
        "robot-controller"
    );

    // Only the apiserver restarted; the data is still there.
    let new_pids = cp.processes();
    assert_eq!(old_pids[0], new_pids[0], "etcd must keep running");
    assert_ne!(old_pids[1], new_pids[1], "the apiserver must restart");
    let admin = cp.admin_client().await.expect("client");
    assert!(has_namespace(&admin, "survives-the-restart").await);
}

#[tokio::test]
async fn restarting_etcd_or_the_apiserver_keeps_the_data() {
    let mut cp = ControlPlane::start(bare()).await.expect("control plane");
    let admin = cp.admin_client().await.expect("client");
    create_namespace(&admin, "kept").await;
    let url = cp.url().to_owned();
    let etcd_before = cp.processes()[0].1;
    cp.restart_etcd().await.expect("restart etcd");
    assert_ne!(cp.processes()[0].1, etcd_before);
    assert!(!testenv::process::is_running(etcd_before));
    // The same client works: same URL, same CA, same token.
    assert!(has_namespace(&admin, "kept").await);
    cp.restart_apiserver().await.expect("restart apiserver");
    assert_eq!(cp.url(), url);
    let admin = cp.admin_client().await.expect("client");
    assert!(has_namespace(&admin, "kept").await);
}

/// Not a test of its own: the child process of
/// `children_die_when_the_test_process_is_killed`, which starts a control
/// plane and a robot server, prints their pids and waits to be killed.
#[tokio::test]
#[ignore = "helper process, started by children_die_when_the_test_process_is_killed"]
async fn helper_holding_a_control_plane() {
    if std::env::var_os("TESTENV_HOLD_HELPER").is_none() {
        return;
    }
    let cp = ControlPlane::start(bare()).await.expect("control plane");
    let server = RobotServer::start(&[]).await.expect("robot server");
    let mut pids: Vec<String> = cp.processes().iter().map(|(_, p)| p.to_string()).collect();
    pids.extend(server.pid().map(|p| p.to_string()));
    println!("HOLDING {} {}", cp.dir().display(), pids.join(" "));
    std::future::pending::<()>().await;
}

async fn children_die_when_the_test_process_gets(signal: &str) {
    let mut helper = Command::new(std::env::current_exe().expect("own path"))
        .args([
            "lifecycle::helper_holding_a_control_plane",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("TESTENV_HOLD_HELPER", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the helper");
    let stdout = helper.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("HOLDING "))
    })
    .await
    .expect("reader")
    .expect("the helper never reported its processes");
    let mut fields = line.split_whitespace().skip(1);
    let dir = std::path::PathBuf::from(fields.next().expect("dir"));
    let pids: Vec<u32> = fields.map(|p| p.parse().expect("pid")).collect();
    assert_eq!(pids.len(), 3, "{line}");
    for pid in &pids {
        assert!(testenv::process::is_running(*pid));
    }
    let status = Command::new("kill")
        .args([signal, &helper.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let _ = helper.wait();
    wait_gone(&pids).await;

    // Nothing could remove the killed test's temp dir; the next start does.
    assert!(dir.exists());
    let next = ControlPlane::start(bare()).await.expect("control plane");
    assert!(!dir.exists(), "{} was not swept", dir.display());
    drop(next);
}

#[tokio::test]
async fn children_die_when_the_test_process_is_killed() {
    children_die_when_the_test_process_gets("-KILL").await;
}

#[tokio::test]
async fn children_die_when_the_test_process_is_interrupted() {
    // Ctrl-C: SIGINT to the test process, whose children are in their own
    // process groups and so get no SIGINT from the terminal themselves.
    children_die_when_the_test_process_gets("-INT").await;
}
