//! Every malformed input gets a 4xx with a JSON error body, and changes
//! nothing: after each one, the robots are exactly as before.

use std::io::Write;
use std::net::TcpStream;

use robot_api::wire::{MAX_BODY_BYTES, MAX_COLOR_BYTES, MAX_NAME_BYTES, messages};
use robot_api::{Robot, RobotClient};

use crate::harness::{Raw, Serving, TestServer, all_robots, read_answer, start};

/// A server holding a few robots, and those robots.
async fn seeded() -> (TestServer, RobotClient, Vec<Robot>) {
    let server = start();
    let client = server.client();
    for (name, color) in [("alpha", "red"), ("beta", "green"), ("ümlaut", "blue")] {
        client.create(&Robot::new(name, color)).await.unwrap();
    }
    let robots = all_robots(&client).await;
    assert_eq!(robots.len(), 3);
    (server, client, robots)
}

struct Case {
    method: &'static str,
    target: String,
    body: Option<String>,
    status: u16,
    /// A part of the error message.
    needle: String,
}

fn case(method: &'static str, target: &str, body: Option<&str>, status: u16, needle: &str) -> Case {
    Case {
        method,
        target: target.to_owned(),
        body: body.map(str::to_owned),
        status,
        needle: needle.to_owned(),
    }
}

#[tokio::test]
async fn malformed_requests_are_refused_and_change_nothing() {
    let (server, client, before) = seeded().await;
    let raw = Raw::new(&server);
    let long_name = "n".repeat(MAX_NAME_BYTES + 1);
    // 127 two-byte characters: 254 bytes though only 127 characters.
    let long_wide_name = "ü".repeat(MAX_NAME_BYTES / 2 + 1);
    let long_color = "c".repeat(MAX_COLOR_BYTES + 1);
    let robot_json =
        |name: &str, color: &str| serde_json::to_string(&Robot::new(name, color)).unwrap();
    let json_error = "not a robot as JSON";
    let cases = vec![
        // POST bodies.
        case("POST", "/robots", None, 400, "EOF"),
        case("POST", "/robots", Some(""), 400, "EOF"),
        case("POST", "/robots", Some("{"), 400, json_error),
        case("POST", "/robots", Some("null"), 400, json_error),
        case("POST", "/robots", Some("[]"), 400, json_error),
        case("POST", "/robots", Some(r#""alpha""#), 400, json_error),
        case("POST", "/robots", Some(r#"{"name":1}"#), 400, json_error),
        case(
            "POST",
            "/robots",
            Some(r#"{"name":"x","color":false}"#),
            400,
            json_error,
        ),
        case(
            "POST",
            "/robots",
            Some(r#"{"name":"x"} trailing"#),
            400,
            "trailing",
        ),
        case(
            "POST",
            "/robots",
            Some(r#"{"name":"a","name":"b"}"#),
            400,
            "duplicate",
        ),
        case("POST", "/robots", Some("{}"), 400, "must not be empty"),
        case(
            "POST",
            "/robots",
            Some(r#"{"name":""}"#),
            400,
            "must not be empty",
        ),
        case(
            "POST",
            "/robots",
            Some(&robot_json(&long_name, "c")),
            400,
            "254 bytes",
        ),
        case(
            "POST",
            "/robots",
            Some(&robot_json(&long_wide_name, "c")),
            400,
            "254 bytes",
        ),
        case(
            "POST",
            "/robots",
            Some(&robot_json("new", &long_color)),
            400,
            "1025 bytes",
        ),
        case(
            "POST",
            "/robots",
            Some(&robot_json("alpha", "black")),
            400,
            messages::ALREADY_EXISTS,
        ),
        // PUT: the name, then the body, then existence and collisions.
        case(
            "PUT",
            "/robots",
            Some(&robot_json("alpha", "x")),
            400,
            messages::MISSING_NAME,
        ),
        case(
            "PUT",
            "/robots?name=",
            Some(&robot_json("alpha", "x")),
            400,
            messages::MISSING_NAME,
        ),
        case(
            "PUT",
            &format!("/robots?name={long_name}"),
            Some(&robot_json("alpha", "x")),
            400,
            "254 bytes",
        ),
        case(
            "PUT",
            "/robots?name=%FF",
            Some(&robot_json("alpha", "x")),
            400,
            "UTF-8",
        ),
        case("PUT", "/robots?name=alpha", Some("{"), 400, json_error),
        case(
            "PUT",
            "/robots?name=alpha",
            Some(r#"{"name":""}"#),
            400,
            "must not be empty",
        ),
        case(
            "PUT",
            "/robots?name=alpha",
            Some(&robot_json(&long_name, "c")),
            400,
            "254 bytes",
        ),
        case(
            "PUT",
            "/robots?name=alpha",
            Some(&robot_json("alpha", &long_color)),
            400,
            "1025 bytes",
        ),
        case(
            "PUT",
            "/robots?name=nobody",
            Some(&robot_json("nobody", "x")),
            404,
            messages::NOT_FOUND,
        ),
        // A rename onto another robot would lose it; the reference did.
        case(
            "PUT",
            "/robots?name=alpha",
            Some(&robot_json("beta", "x")),
            400,
            messages::ALREADY_EXISTS,
        ),
        // DELETE.
        case("DELETE", "/robots", None, 400, messages::MISSING_NAME),
        case("DELETE", "/robots?name=", None, 400, messages::MISSING_NAME),
        case(
            "DELETE",
            "/robots?name=nobody",
            None,
            404,
            messages::NOT_FOUND,
        ),
        case(
            "DELETE",
            &format!("/robots?name={long_name}"),
            None,
            400,
            "254 bytes",
        ),
        case("DELETE", "/robots?name=%C3", None, 400, "UTF-8"),
        // GET.
        case(
            "GET",
            &format!("/robots?name={long_name}"),
            None,
            400,
            "254 bytes",
        ),
        case("GET", "/robots?name=%FF%FE", None, 400, "UTF-8"),
        // The listing.
        case("GET", "/v1/robots?limit=0", None, 400, "limit"),
        case("GET", "/v1/robots?limit=10001", None, 400, "limit"),
        case("GET", "/v1/robots?limit=-1", None, 400, "limit"),
        case("GET", "/v1/robots?limit=ten", None, 400, "limit"),
        case("GET", "/v1/robots?limit=1.5", None, 400, "limit"),
        case("GET", "/v1/robots?after=%FF", None, 400, "UTF-8"),
        case(
            "POST",
            "/v1/robots",
            Some("{}"),
            405,
            messages::METHOD_NOT_ALLOWED,
        ),
        // Paths and methods.
        case("GET", "/robots/", None, 404, "Not found"),
        case("GET", "/robots/alpha", None, 404, "Not found"),
        case("DELETE", "/nothing", None, 404, "Not found"),
        case(
            "PATCH",
            "/robots?name=alpha",
            Some("{}"),
            405,
            messages::METHOD_NOT_ALLOWED,
        ),
        case("POST", "/healthz", None, 405, messages::METHOD_NOT_ALLOWED),
        case(
            "DELETE",
            "/metrics",
            None,
            405,
            messages::METHOD_NOT_ALLOWED,
        ),
    ];
    for case in cases {
        let answer = raw
            .call(case.method, &case.target, case.body.as_deref())
            .await;
        let what = format!("{} {} {:?}", case.method, case.target, case.body);
        assert_eq!(answer.status, case.status, "{what}: {answer:?}");
        let message = answer.error();
        assert!(
            message.contains(&case.needle),
            "{what}: {message:?} lacks {:?}",
            case.needle
        );
        assert_eq!(
            all_robots(&client).await,
            before,
            "{what} changed the robots"
        );
    }
}

#[tokio::test]
async fn bodies_up_to_64_kib_are_read_and_larger_are_413() {
    let (server, client, before) = seeded().await;
    let raw = Raw::new(&server);
    let padded = |name: &str, size: usize| {
        let json = format!(r#"{{"name":"{name}","color":"c"}}"#);
        format!("{json}{}", " ".repeat(size - json.len()))
    };
    let answer = raw
        .call("POST", "/robots", Some(&padded("big", MAX_BODY_BYTES + 1)))
        .await;
    assert_eq!(answer.status, 413);
    assert!(answer.error().contains("65536"), "{answer:?}");
    let answer = raw
        .call(
            "PUT",
            "/robots?name=alpha",
            Some(&padded("alpha", MAX_BODY_BYTES + 1)),
        )
        .await;
    assert_eq!(answer.status, 413);
    answer.error();
    assert_eq!(all_robots(&client).await, before);

    let answer = raw
        .call("POST", "/robots", Some(&padded("big", MAX_BODY_BYTES)))
        .await;
    assert_eq!(answer.status, 201, "a body of exactly the limit is fine");
}

/// A body that claims to be huge is refused before it is sent; one sent
/// in chunks without a length is measured as it comes.
#[tokio::test]
async fn oversized_bodies_are_refused_without_reading_them() {
    let (server, client, before) = seeded().await;
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .write_all(
            b"POST /robots HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10000000000\r\n\r\n",
        )
        .unwrap();
    let (status, body) = read_answer(&mut stream);
    assert_eq!(status, 413, "{body}");

    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .write_all(b"POST /robots HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = [b' '; 16 * 1024];
    for _ in 0..5 {
        write!(stream, "{:x}\r\n", chunk.len()).unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let (status, body) = read_answer(&mut stream);
    assert_eq!(status, 413, "{body}");
    assert_eq!(all_robots(&client).await, before);
}
