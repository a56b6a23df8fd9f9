//! Names that break the reference client (`&`, `#`, `%`, `+`, spaces,
//! non-ASCII) round-trip exactly through percent-encoded queries.

use robot_api::Robot;

use crate::harness::{Raw, Serving, all_robots, raw_request, start};

const AWKWARD: &[&str] = &[
    "a&b c",
    "x#1",
    "100%",
    "ümlaut",
    "a+b",
    "+",
    "%2B",
    " leading and trailing ",
    "name=value",
    "?q",
    "a/b",
    "tab\there",
    "日本語のロボット",
    "🤖",
];

#[tokio::test]
async fn awkward_names_round_trip_through_the_client() {
    let server = start();
    let client = server.client();
    for name in AWKWARD {
        client.create(&Robot::new(*name, "green")).await.unwrap();
    }
    for name in AWKWARD {
        assert_eq!(
            client.get(name).await.unwrap(),
            Some(Robot::new(*name, "green")),
            "{name:?}"
        );
        client
            .update(name, &Robot::new(*name, "red"))
            .await
            .unwrap();
    }
    let mut expected: Vec<Robot> = AWKWARD.iter().map(|n| Robot::new(*n, "red")).collect();
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(all_robots(&client).await, expected);
    // "a+b" and "a b" are different robots.
    assert_eq!(client.get("a b").await.unwrap(), None);
    for name in AWKWARD {
        assert!(client.delete(name).await.unwrap(), "{name:?}");
    }
    assert_eq!(all_robots(&client).await, vec![]);
}

#[tokio::test]
async fn queries_decode_as_forms_do() {
    let server = start();
    let client = server.client();
    let raw = Raw::new(&server);
    for name in ["a&b c", "x#1", "100%", "ümlaut", "a+b"] {
        client.create(&Robot::new(name, "c")).await.unwrap();
    }
    for (query, name) in [
        ("name=a%26b%20c", "a&b c"),
        ("name=a%26b+c", "a&b c"),
        ("name=x%231", "x#1"),
        ("name=100%25", "100%"),
        ("name=%C3%BCmlaut", "ümlaut"),
        ("name=a%2Bb", "a+b"),
        ("&name=a%2Bb", "a+b"),
    ] {
        let answer = raw.get(&format!("/robots?{query}")).await;
        assert_eq!(answer.status, 200, "{query}");
        assert_eq!(answer.robot().name, name, "{query}");
    }
}

/// What the reference client sends for these names, unescaped: `+` is a
/// space (as Go reads it), `#` ends the URL, and a bare `%` is kept.
#[tokio::test]
async fn unescaped_names_from_the_reference_client() {
    let server = start();
    let client = server.client();
    client.create(&Robot::new("100%", "c")).await.unwrap();
    client.create(&Robot::new("a b", "c")).await.unwrap();
    for (target, expected) in [
        ("/robots?&name=100%", Some("100%")),
        ("/robots?&name=a+b", Some("a b")),
        ("/robots?&name=x#1", None),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (status, body) = raw_request(server.addr, request.as_bytes());
        match expected {
            Some(name) => {
                assert_eq!(status, 200, "{target}: {body}");
                assert_eq!(serde_json::from_str::<Robot>(&body).unwrap().name, name);
            }
            None => assert!(status == 404 || status == 400, "{target}: {status} {body}"),
        }
    }
}
