//! Fuzzes request parsing end to end: sequences of arbitrary requests
//! (method, query bytes, headers, body) through the server's real router,
//! in process, against a fresh in-memory store.
//!
//! Invariants: no panic, no 5xx, every error is a JSON `{"error": ...}`,
//! every robot served back is within the limits, and a robot is only
//! served after a request that could have created it.

#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use robot_api::{ErrorBody, Robot, RobotList};
use tower::ServiceExt;

#[derive(Arbitrary, Debug)]
enum Verb {
    Get,
    Post,
    Put,
    Delete,
    Head,
    Patch,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Path {
    Robots,
    List,
    Healthz,
    Metrics,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct FuzzRequest {
    verb: Verb,
    path: Path,
    /// Raw bytes after `?`, percent-escapes and all.
    query: Option<Vec<u8>>,
    /// Claims a body length that may not match.
    content_length: Option<u64>,
    body: Vec<u8>,
}

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
});

fn build(request: &FuzzRequest) -> Option<Request<Body>> {
    let method = match &request.verb {
        Verb::Get => Method::GET,
        Verb::Post => Method::POST,
        Verb::Put => Method::PUT,
        Verb::Delete => Method::DELETE,
        Verb::Head => Method::HEAD,
        Verb::Patch => Method::PATCH,
        Verb::Other(name) => Method::from_bytes(name.as_bytes()).ok()?,
    };
    let mut uri = match &request.path {
        Path::Robots => "/robots".to_owned(),
        Path::List => "/v1/robots".to_owned(),
        Path::Healthz => "/healthz".to_owned(),
        Path::Metrics => "/metrics".to_owned(),
        Path::Other(path) => format!("/{path}"),
    };
    if let Some(query) = &request.query {
        uri.push('?');
        uri.push_str(std::str::from_utf8(query).ok()?);
    }
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(length) = request.content_length {
        builder = builder.header("content-length", length);
    }
    builder.body(Body::from(request.body.clone())).ok()
}

fuzz_target!(|requests: Vec<FuzzRequest>| {
    let app = robot_server::App::in_memory();
    let mut created_any = false;
    for request in requests.iter().take(16) {
        // Inputs the HTTP layer would refuse never reach the router.
        let Some(http_request) = build(request) else {
            continue;
        };
        let is_get_robot = matches!(request.verb, Verb::Get) && matches!(request.path, Path::Robots);
        let is_list = matches!(request.verb, Verb::Get) && matches!(request.path, Path::List);
        // By the method sent, not the variant: `Other("HEAD")` is a HEAD
        // too, and an answer to HEAD has no body to hold a JSON error.
        let is_head = http_request.method() == Method::HEAD;
        let router = robot_server::router(app.clone());
        let (status, body) = RUNTIME.block_on(async {
            let response = router.oneshot(http_request).await.expect("infallible");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("in-memory body")
                .to_bytes();
            (status, body)
        });
        assert!(!status.is_server_error(), "{request:?} -> {status}");
        if status.is_client_error() && !is_head {
            let error: ErrorBody = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{request:?} -> {status}, not a JSON error: {e}"));
            assert!(!error.error.is_empty());
        }
        if matches!(status, StatusCode::CREATED | StatusCode::OK)
            && matches!(request.verb, Verb::Post | Verb::Put)
        {
            created_any = true;
        }
        if is_get_robot && status == StatusCode::OK {
            assert!(created_any, "a robot appeared from nowhere: {request:?}");
            let robot: Robot = serde_json::from_slice(&body).expect("a robot");
            robot.validate().expect("a stored robot is within the limits");
        }
        if is_list && status == StatusCode::OK {
            let list: RobotList = serde_json::from_slice(&body).expect("a robot list");
            assert!(list.items.windows(2).all(|w| w[0].name < w[1].name));
            assert!(created_any || list.items.is_empty());
        }
    }
});
