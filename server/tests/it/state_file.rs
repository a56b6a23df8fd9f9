//! The state file: robots survive a crash (SIGKILL) and restart; a corrupt
//! file stops the server with exit 2 and is left alone; a torn temporary
//! file from an interrupted write is ignored.

use std::path::Path;

use robot_api::Robot;
use robot_server::Config;

use crate::harness::{Serving, TestServer, all_robots, config, launch, start, start_error};

fn durable(path: &Path) -> Config {
    Config {
        state_file: Some(path.to_owned()),
        ..config()
    }
}

/// The binary, killed: every answered change is on disk already.
#[tokio::test]
async fn robots_survive_a_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("robots.json");
    let mut server = launch().arg("--state-file").arg(&path).start();
    let client = server.client();
    for name in ["a&b c", "x#1", "100%", "ümlaut", "keep", "gone", "old"] {
        client.create(&Robot::new(name, "green")).await.unwrap();
    }
    client
        .update("keep", &Robot::new("keep", "yellow"))
        .await
        .unwrap();
    client
        .update("old", &Robot::new("new", "blue"))
        .await
        .unwrap();
    client.delete("gone").await.unwrap();
    let before = all_robots(&client).await;
    assert_eq!(before.len(), 6);
    // No chance to flush on the way out.
    server.kill();

    let server = launch().arg("--state-file").arg(&path).start();
    let client = server.client();
    assert_eq!(all_robots(&client).await, before);
    assert_eq!(
        client.get("new").await.unwrap(),
        Some(Robot::new("new", "blue"))
    );
    assert_eq!(client.get("old").await.unwrap(), None);
    assert_eq!(client.get("gone").await.unwrap(), None);
}

#[test]
fn a_corrupt_file_stops_the_server_with_exit_2_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("robots.json");
    for content in [
        "",
        "{\"format\":\"robot-server-state\",\"version\":1,\"robots\":[{\"name\":\"a\",\"col",
        "not json at all",
        "{\"format\":\"robot-server-state\",\"version\":1,\"robots\":[{\"name\":\"\",\"color\":\"\"}]}",
    ] {
        std::fs::write(&path, content).unwrap();
        let exited = launch().arg("--state-file").arg(&path).run_to_exit();
        assert_eq!(exited.code, Some(2), "{content:?}: {}", exited.output);
        assert!(
            exited.output.contains(&path.display().to_string()),
            "the message names the file: {}",
            exited.output
        );
        assert!(exited.output.contains("corrupt"), "{}", exited.output);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
    }
}

#[tokio::test]
async fn a_torn_temporary_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("robots.json");
    let server = TestServer::start(durable(&path));
    server
        .client()
        .create(&Robot::new("saved", "red"))
        .await
        .unwrap();
    server.stop().unwrap();
    // What a crash in the middle of writing the next change leaves (and
    // what versions with a fixed temporary name left).
    let torn = [".robots.json.Xy12Ab.tmp", "robots.json.tmp"];
    for name in torn {
        std::fs::write(
            dir.path().join(name),
            "{\"format\":\"robot-server-state\",\"version\":1,\"robots\":[{\"na",
        )
        .unwrap();
    }

    let server = TestServer::start(durable(&path));
    let client = server.client();
    for name in torn {
        assert!(!dir.path().join(name).exists(), "{name} is left");
    }
    assert_eq!(all_robots(&client).await, vec![Robot::new("saved", "red")]);
    client.create(&Robot::new("more", "blue")).await.unwrap();
    assert_eq!(all_robots(&client).await.len(), 2);
}

#[test]
fn a_second_server_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("robots.json");
    let first = TestServer::start(durable(&path));
    // The first has the file once it answers.
    assert_eq!(
        crate::harness::blocking_get(first.addr, "/healthz", None).0,
        200
    );
    let err = start_error(durable(&path));
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn a_state_file_in_a_missing_directory_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("robots.json");
    let err = start_error(durable(&path));
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

#[tokio::test]
async fn without_a_state_file_a_restart_forgets_like_the_reference() {
    let server = start();
    server
        .client()
        .create(&Robot::new("fleeting", "c"))
        .await
        .unwrap();
    server.stop().unwrap();
    let server = start();
    assert_eq!(server.client().get("fleeting").await.unwrap(), None);
}
