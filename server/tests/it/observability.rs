//! Health, readiness, metrics, the OpenAPI document and the listing.

use robot_api::{Robot, RobotList};

use crate::harness::{Raw, Serving, all_robots, start};

#[tokio::test]
async fn health_and_readiness_answer_json() {
    let server = start();
    let raw = Raw::new(&server);
    let health = raw.get("/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body, r#"{"status":"ok"}"#);
    let ready = raw.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body, r#"{"status":"ready"}"#);
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_requests_by_route_method_and_status() {
    let server = start();
    let raw = Raw::new(&server);
    let client = server.client();
    client.create(&Robot::new("a", "c")).await.unwrap();
    client.create(&Robot::new("b", "c")).await.unwrap();
    client.get("a").await.unwrap();
    client.get("zzz").await.unwrap();
    client.get("zzz").await.unwrap();
    raw.get("/no/such/path?secret=x").await;
    let answer = raw.get("/metrics").await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = answer.body;
    let requests = |route: &str, method: &str, status: u16| {
        metric(
            &text,
            &format!(
                "robot_server_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(requests("/robots", "POST", 201), 2.0);
    assert_eq!(requests("/robots", "GET", 200), 1.0);
    assert_eq!(requests("/robots", "GET", 404), 2.0);
    // Unknown paths share one label, so clients cannot grow the series.
    assert_eq!(requests("other", "GET", 404), 1.0);
    assert!(!text.contains("no/such/path"));
    assert_eq!(metric(&text, "robot_server_robots_stored"), 2.0);
    assert_eq!(metric(&text, "robot_server_connections_max"), 1024.0);
    // This request's connection at least.
    assert!(metric(&text, "robot_server_connections_open") >= 1.0);
    assert_eq!(
        metric(
            &text,
            "robot_server_http_request_duration_seconds_count{route=\"/robots\",method=\"GET\"}"
        ),
        3.0
    );
    assert!(text.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint() {
    let server = start();
    let answer = Raw::new(&server).get("/openapi.json").await;
    assert_eq!(answer.status, 200);
    let doc: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method, statuses) in [
        ("/robots", "get", &["200", "400", "404", "408"][..]),
        ("/robots", "post", &["201", "400", "408", "413", "500"]),
        (
            "/robots",
            "put",
            &["200", "400", "404", "408", "413", "500"],
        ),
        ("/robots", "delete", &["200", "400", "404", "408", "500"]),
        ("/v1/robots", "get", &["200", "400", "408"]),
        ("/healthz", "get", &["200"]),
        ("/readyz", "get", &["200", "503"]),
        ("/metrics", "get", &["200"]),
        ("/openapi.json", "get", &["200"]),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        for status in statuses {
            assert!(responses[status].is_object(), "{method} {path} {status}");
        }
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn the_listing_pages_in_name_order() {
    let server = start();
    let client = server.client();
    let names = ["delta", "alpha", "charlie", "bravo", "echo"];
    for name in names {
        client.create(&Robot::new(name, "c")).await.unwrap();
    }
    let page = client.list(None, 2).await.unwrap();
    assert_eq!(
        page,
        RobotList {
            items: vec![Robot::new("alpha", "c"), Robot::new("bravo", "c")],
            next: Some("bravo".into()),
        }
    );
    let page = client.list(Some("bravo"), 2).await.unwrap();
    assert_eq!(page.next.as_deref(), Some("delta"));
    let page = client.list(Some("delta"), 2).await.unwrap();
    assert_eq!(page.items, vec![Robot::new("echo", "c")]);
    assert_eq!(page.next, None);
    let mut sorted = names.to_vec();
    sorted.sort();
    let listed: Vec<String> = all_robots(&client)
        .await
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(listed, sorted);

    // Defaults, on the wire: no `next` field on the last page.
    let answer = Raw::new(&server).get("/v1/robots").await;
    assert_eq!(answer.status, 200);
    let value: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(value["items"].as_array().unwrap().len(), 5);
    assert!(value.get("next").is_none());
}

#[tokio::test]
async fn the_listing_defaults_to_1000_a_page() {
    let server = start();
    let client = server.client();
    for i in 0..1001 {
        client
            .create(&Robot::new(format!("r{i:04}"), "c"))
            .await
            .unwrap();
    }
    let raw = Raw::new(&server);
    let page: RobotList = serde_json::from_str(&raw.get("/v1/robots").await.body).unwrap();
    assert_eq!(page.items.len(), 1000);
    assert_eq!(page.next.as_deref(), Some("r0999"));
    let page: RobotList =
        serde_json::from_str(&raw.get("/v1/robots?limit=10000").await.body).unwrap();
    assert_eq!(page.items.len(), 1001);
    assert_eq!(page.next, None);
}
