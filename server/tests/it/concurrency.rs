//! Many clients on the same names at once: exactly one wins each race, and
//! the loser sees the reference's answer.

use std::sync::Arc;

use robot_api::wire::messages;
use robot_api::{Error, Robot};
use tokio::sync::Barrier;

use robot_server::Config;

use crate::harness::{Raw, Serving, TestServer, all_robots, config, start};

const RACERS: usize = 32;

/// Runs `RACERS` copies of `request` at once, each on its own connection,
/// and returns their statuses and error messages.
async fn race<F, Fut>(server: &TestServer, request: F) -> Vec<(u16, String)>
where
    F: Fn(Raw, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = crate::harness::Answer> + Send,
{
    let barrier = Arc::new(Barrier::new(RACERS));
    // One client (building one loads the TLS roots: 30 ms): its pool
    // opens a connection for each request in flight, so the racers still
    // have a connection each and their requests are truly concurrent.
    let shared = Raw::new(server);
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let raw = shared.clone();
        let barrier = Arc::clone(&barrier);
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            // Warm the connection so the race is between requests, not handshakes.
            raw.get("/healthz").await;
            barrier.wait().await;
            let answer = request(raw, i).await;
            let message = if answer.status >= 400 {
                answer.error()
            } else {
                String::new()
            };
            (answer.status, message)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

fn count(results: &[(u16, String)], status: u16) -> usize {
    results.iter().filter(|(s, _)| *s == status).count()
}

async fn create_race(server: &TestServer, name: &str) {
    let name = name.to_owned();
    let results = race(server, move |raw, i| {
        let body = serde_json::to_string(&Robot::new(name.clone(), format!("color-{i}"))).unwrap();
        async move { raw.call("POST", "/robots", Some(&body)).await }
    })
    .await;
    assert_eq!(count(&results, 201), 1, "{results:?}");
    assert_eq!(count(&results, 400), RACERS - 1, "{results:?}");
    for (status, message) in &results {
        if *status == 400 {
            assert_eq!(message, messages::ALREADY_EXISTS);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_name_have_exactly_one_winner() {
    let server = start();
    for round in 0..8 {
        create_race(&server, &format!("contested {round}")).await;
    }
    assert_eq!(all_robots(&server.client()).await.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_winner_is_the_robot_stored() {
    let server = start();
    let results = race(&server, |raw, i| async move {
        let body = serde_json::to_string(&Robot::new("one", format!("color-{i}"))).unwrap();
        raw.call("POST", "/robots", Some(&body)).await
    })
    .await;
    let winner = results.iter().position(|(s, _)| *s == 201).unwrap();
    assert_eq!(
        server.client().get("one").await.unwrap(),
        Some(Robot::new("one", format!("color-{winner}")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_a_state_file_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("robots.json");
    let durable = || Config {
        state_file: Some(path.clone()),
        ..config()
    };
    let server = TestServer::start(durable());
    create_race(&server, "durable").await;
    let stored = server.client().get("durable").await.unwrap().unwrap();
    server.stop().unwrap();
    let server = TestServer::start(durable());
    assert_eq!(all_robots(&server.client()).await, vec![stored]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_renames_onto_one_name_have_exactly_one_winner() {
    let server = start();
    let client = server.client();
    for i in 0..RACERS {
        client
            .create(&Robot::new(format!("source {i}"), "c"))
            .await
            .unwrap();
    }
    let results = race(&server, |raw, i| async move {
        let body = serde_json::to_string(&Robot::new("target", format!("from {i}"))).unwrap();
        raw.call("PUT", &format!("/robots?name=source+{i}"), Some(&body))
            .await
    })
    .await;
    assert_eq!(count(&results, 200), 1, "{results:?}");
    assert_eq!(count(&results, 400), RACERS - 1, "{results:?}");
    // Nothing lost: the losers keep their sources.
    assert_eq!(all_robots(&client).await.len(), RACERS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deletes_of_one_name_have_exactly_one_winner() {
    let server = start();
    server
        .client()
        .create(&Robot::new("doomed", "c"))
        .await
        .unwrap();
    let results = race(&server, |raw, _| async move {
        raw.call("DELETE", "/robots?name=doomed", None).await
    })
    .await;
    assert_eq!(count(&results, 200), 1, "{results:?}");
    assert_eq!(count(&results, 404), RACERS - 1, "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_sees_already_exists_when_it_loses() {
    let server = start();
    let client = server.client();
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.create(&Robot::new("shared", format!("{i}"))).await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => won += 1,
            Err(Error::AlreadyExists) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
}
