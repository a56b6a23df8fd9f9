//! Every row of the reference server's table (provider-dummy README), in
//! the reference's order of checks, through raw HTTP and robot-api's client.

use robot_api::wire::messages;
use robot_api::{Error, Robot};

use crate::harness::{Raw, Serving, all_robots, raw_request, start};

const MY_ROBOT: &str = r#"{"name":"myrobot","color":"green"}"#;

#[tokio::test]
async fn post_creates_with_201_and_an_empty_body() {
    let server = start();
    let raw = Raw::new(&server);
    let created = raw.call("POST", "/robots", Some(MY_ROBOT)).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.body, "");
    let got = raw.get("/robots?name=myrobot").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers.get("content-type").unwrap(), "application/json");
    assert_eq!(got.robot(), Robot::new("myrobot", "green"));
}

#[tokio::test]
async fn post_of_a_taken_name_is_400_already_exists_and_keeps_the_first() {
    let server = start();
    let raw = Raw::new(&server);
    assert_eq!(
        raw.call("POST", "/robots", Some(MY_ROBOT)).await.status,
        201
    );
    let again = raw
        .call(
            "POST",
            "/robots",
            Some(r#"{"name":"myrobot","color":"red"}"#),
        )
        .await;
    assert_eq!(again.status, 400);
    assert_eq!(again.error(), messages::ALREADY_EXISTS);
    assert_eq!(
        raw.get("/robots?name=myrobot").await.robot(),
        Robot::new("myrobot", "green")
    );
}

#[tokio::test]
async fn post_of_a_body_that_is_not_json_is_400() {
    let server = start();
    let raw = Raw::new(&server);
    let answer = raw.call("POST", "/robots", Some("not json")).await;
    assert_eq!(answer.status, 400);
    assert!(answer.error().contains("not a robot as JSON"), "{answer:?}");
}

#[tokio::test]
async fn get_of_an_unknown_name_or_no_name_is_404_robot_not_found() {
    let server = start();
    let raw = Raw::new(&server);
    for path in [
        "/robots?name=nobody",
        "/robots",
        "/robots?name=",
        "/robots?other=x",
    ] {
        let answer = raw.get(path).await;
        assert_eq!(answer.status, 404, "{path}");
        assert_eq!(answer.error(), messages::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn put_replaces_with_200_and_an_empty_body() {
    let server = start();
    let raw = Raw::new(&server);
    raw.call("POST", "/robots", Some(MY_ROBOT)).await;
    let replaced = raw
        .call(
            "PUT",
            "/robots?name=myrobot",
            Some(r#"{"name":"myrobot","color":"yellow"}"#),
        )
        .await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.body, "");
    assert_eq!(
        raw.get("/robots?name=myrobot").await.robot(),
        Robot::new("myrobot", "yellow")
    );
}

#[tokio::test]
async fn put_may_rename() {
    let server = start();
    let raw = Raw::new(&server);
    raw.call("POST", "/robots", Some(MY_ROBOT)).await;
    let renamed = raw
        .call(
            "PUT",
            "/robots?name=myrobot",
            Some(r#"{"name":"other","color":"blue"}"#),
        )
        .await;
    assert_eq!(renamed.status, 200);
    assert_eq!(raw.get("/robots?name=myrobot").await.status, 404);
    assert_eq!(
        raw.get("/robots?name=other").await.robot(),
        Robot::new("other", "blue")
    );
}

#[tokio::test]
async fn put_checks_name_then_body_then_existence() {
    let server = start();
    let raw = Raw::new(&server);
    // No name: 400 even with a bad body, since the name is checked first.
    for path in ["/robots", "/robots?name=", "/robots?&name="] {
        let answer = raw.call("PUT", path, Some("not json")).await;
        assert_eq!(answer.status, 400, "{path}");
        assert_eq!(answer.error(), messages::MISSING_NAME, "{path}");
    }
    // Unknown name with a bad body: the body is checked before existence.
    let answer = raw.call("PUT", "/robots?name=nobody", Some("{")).await;
    assert_eq!(answer.status, 400);
    assert!(answer.error().contains("not a robot as JSON"));
    // Unknown name with a good body: 404.
    let answer = raw.call("PUT", "/robots?name=nobody", Some(MY_ROBOT)).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.error(), messages::NOT_FOUND);
    assert_eq!(raw.get("/robots?name=myrobot").await.status, 404);
}

#[tokio::test]
async fn delete_removes_with_200_and_then_404() {
    let server = start();
    let raw = Raw::new(&server);
    raw.call("POST", "/robots", Some(MY_ROBOT)).await;
    let deleted = raw.call("DELETE", "/robots?name=myrobot", None).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body, "");
    assert_eq!(raw.get("/robots?name=myrobot").await.status, 404);
    let again = raw.call("DELETE", "/robots?name=myrobot", None).await;
    assert_eq!(again.status, 404);
    assert_eq!(again.error(), messages::NOT_FOUND);
}

#[tokio::test]
async fn delete_without_a_name_is_400_missing_name() {
    let server = start();
    let raw = Raw::new(&server);
    for path in ["/robots", "/robots?name="] {
        let answer = raw.call("DELETE", path, None).await;
        assert_eq!(answer.status, 400, "{path}");
        assert_eq!(answer.error(), messages::MISSING_NAME, "{path}");
    }
}

#[tokio::test]
async fn any_other_method_is_405_method_not_allowed() {
    let server = start();
    let raw = Raw::new(&server);
    raw.call("POST", "/robots", Some(MY_ROBOT)).await;
    for method in ["PATCH", "OPTIONS", "TRACE", "BREW"] {
        let answer = raw.call(method, "/robots?name=myrobot", None).await;
        assert_eq!(answer.status, 405, "{method}");
        assert_eq!(answer.error(), messages::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(
            answer.headers.get("allow").unwrap(),
            "GET, POST, PUT, DELETE",
            "{method}"
        );
    }
    // HEAD, which the reference also refuses; its answer has no body.
    let answer = raw.call("HEAD", "/robots?name=myrobot", None).await;
    assert_eq!(answer.status, 405);
    assert_eq!(
        raw.get("/robots?name=myrobot").await.robot(),
        Robot::new("myrobot", "green")
    );
}

/// The reference client's URLs: `?&name=` and no Content-Type.
#[tokio::test]
async fn the_reference_clients_requests_work() {
    let server = start();
    let post = format!(
        "POST /robots HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{MY_ROBOT}",
        MY_ROBOT.len()
    );
    assert_eq!(
        raw_request(server.addr, post.as_bytes()),
        (201, String::new())
    );
    let (status, body) = raw_request(
        server.addr,
        b"GET /robots?&name=myrobot HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Robot>(&body).unwrap(),
        Robot::new("myrobot", "green")
    );
}

/// The same contract through the typed client the controller uses.
#[tokio::test]
async fn robot_api_client_covers_the_contract() {
    let server = start();
    let client = server.client();
    assert_eq!(client.get("myrobot").await.unwrap(), None);
    client
        .create(&Robot::new("myrobot", "green"))
        .await
        .unwrap();
    assert!(matches!(
        client.create(&Robot::new("myrobot", "red")).await,
        Err(Error::AlreadyExists)
    ));
    assert_eq!(
        client.get("myrobot").await.unwrap(),
        Some(Robot::new("myrobot", "green"))
    );
    client
        .update("myrobot", &Robot::new("myrobot", "yellow"))
        .await
        .unwrap();
    assert!(matches!(
        client.update("nobody", &Robot::new("nobody", "x")).await,
        Err(Error::NotFound { .. })
    ));
    client
        .update("myrobot", &Robot::new("renamed", "blue"))
        .await
        .unwrap();
    assert_eq!(
        all_robots(&client).await,
        vec![Robot::new("renamed", "blue")]
    );
    assert!(client.delete("renamed").await.unwrap());
    assert!(!client.delete("renamed").await.unwrap());
    assert_eq!(all_robots(&client).await, vec![]);
}
