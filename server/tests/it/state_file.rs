//! `--state-file`: robots survive a crash (SIGKILL) and restart; a corrupt
//! file stops the server with exit 2 and is left alone; a torn temporary
//! file from an interrupted write is ignored.

use std::path::Path;

use robot_api::Robot;

use crate::harness::{Server, all_robots, launch};

fn start_on(path: &Path) -> Server {
    launch().arg("--state-file").arg(path).start()
}

#[tokio::test]
async fn robots_survive_a_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("robots.json");
    let mut server = start_on(&path);
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
    // Every answered change is on disk: no chance to flush on the way out.
    server.kill();

    let server = start_on(&path);
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
    let mut server = start_on(&path);
    server
        .client()
        .create(&Robot::new("saved", "red"))
        .await
        .unwrap();
    server.kill();
    // What a crash in the middle of writing the next change leaves.
    std::fs::write(
        dir.path().join("robots.json.tmp"),
        "{\"format\":\"robot-server-state\",\"version\":1,\"robots\":[{\"na",
    )
    .unwrap();

    let server = start_on(&path);
    let client = server.client();
    assert_eq!(all_robots(&client).await, vec![Robot::new("saved", "red")]);
    client.create(&Robot::new("more", "blue")).await.unwrap();
    assert_eq!(all_robots(&client).await.len(), 2);
}

#[tokio::test]
async fn a_second_server_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("robots.json");
    let _first = start_on(&path);
    let exited = launch().arg("--state-file").arg(&path).run_to_exit();
    assert_eq!(exited.code, Some(2), "{}", exited.output);
    assert!(exited.output.contains("in use"), "{}", exited.output);
}

#[test]
fn a_state_file_in_a_missing_directory_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("robots.json");
    let exited = launch().arg("--state-file").arg(&path).run_to_exit();
    assert_eq!(exited.code, Some(2), "{}", exited.output);
    assert!(exited.output.contains("no-such-dir"), "{}", exited.output);
}

#[tokio::test]
async fn without_a_state_file_a_restart_forgets_like_the_reference() {
    let mut server = crate::harness::start();
    server
        .client()
        .create(&Robot::new("fleeting", "c"))
        .await
        .unwrap();
    server.kill();
    let server = crate::harness::start();
    assert_eq!(server.client().get("fleeting").await.unwrap(), None);
}
