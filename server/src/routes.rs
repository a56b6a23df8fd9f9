//! The HTTP routes and their handlers.
//!
//! `/robots` dispatches on the method in one handler, as the reference
//! does, so that every method it does not serve (HEAD included) gets its
//! 405 and the checks run in the reference's order.

use std::borrow::Cow;
use std::str::Utf8Error;
use std::sync::OnceLock;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use percent_encoding::percent_decode_str;
use robot_api::Robot;
use robot_api::wire::{MAX_BODY_BYTES, MAX_LIST_BYTES, validate_name};
use serde::Serialize;

use crate::App;
use crate::error::ApiError;
use crate::store::{Change, StoreError};
use crate::{auth, metrics};

/// `GET /v1/robots` page size when no `limit` is given.
pub const DEFAULT_LIST_LIMIT: usize = 1000;
/// The largest `limit` accepted.
pub const MAX_LIST_LIMIT: usize = 10_000;

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const ROBOTS_METHODS: &str = "GET, POST, PUT, DELETE";

/// Every route of the server, with auth, timeout and metrics applied.
pub fn router(app: App) -> Router {
    let robots = Router::new()
        .route("/robots", any(robots))
        .route("/v1/robots", any(list_robots))
        .route_layer(from_fn_with_state(app.clone(), auth::require_token));
    Router::new()
        .merge(robots)
        .route("/healthz", any(healthz))
        .route("/readyz", any(readyz))
        .route("/metrics", any(metrics))
        .route("/openapi.json", any(openapi))
        .fallback(not_found)
        .layer(from_fn_with_state(app.clone(), timeout))
        .layer(from_fn_with_state(app.clone(), metrics::record))
        .with_state(app)
}

/// Answers 408 when a request (reading its body included) takes longer
/// than the configured timeout.
async fn timeout(State(app): State<App>, request: Request, next: Next) -> Response {
    let limit = app.inner.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request took longer than {}",
                humantime::format_duration(limit)
            ),
        )
        .into_response(),
    }
}

async fn robots(State(app): State<App>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let query = parts.uri.query();
    match parts.method {
        Method::GET => get_robot(&app, query),
        Method::POST => create_robot(&app, &parts.headers, body).await,
        Method::PUT => replace_robot(&app, query, &parts.headers, body).await,
        Method::DELETE => delete_robot(&app, query).await,
        _ => Err(ApiError::method_not_allowed(ROBOTS_METHODS)),
    }
}

/// `GET /robots?name=N`. No name looks up "" and finds nothing, as the
/// reference does.
fn get_robot(app: &App, query: Option<&str>) -> Result<Response, ApiError> {
    let name = query_param(query, "name")?.unwrap_or_default();
    if !name.is_empty() {
        check_name(&name)?;
    }
    match app.store().get(&name) {
        Some(robot) => Ok(json(StatusCode::OK, &robot)),
        None => Err(ApiError::not_found()),
    }
}

/// `POST /robots`: the body, then whether the name is taken.
async fn create_robot(app: &App, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let robot = parse_robot(&read_body(headers, body).await?)?;
    app.store().change(Change::Create(robot)).await?;
    Ok(StatusCode::CREATED.into_response())
}

/// `PUT /robots?name=N`: the name, the body, then existence.
async fn replace_robot(
    app: &App,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = required_name(query)?;
    let robot = parse_robot(&read_body(headers, body).await?)?;
    app.store().change(Change::Replace { name, robot }).await?;
    Ok(StatusCode::OK.into_response())
}

/// `DELETE /robots?name=N`: the name, then existence.
async fn delete_robot(app: &App, query: Option<&str>) -> Result<Response, ApiError> {
    let name = required_name(query)?;
    app.store().change(Change::Delete(name)).await?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /v1/robots?limit=N&after=NAME`.
async fn list_robots(State(app): State<App>, method: Method, request: Request) -> Response {
    if method != Method::GET {
        return ApiError::method_not_allowed("GET").into_response();
    }
    let query = request.uri().query();
    let limit = match query_param(query, "limit") {
        Ok(None) => DEFAULT_LIST_LIMIT,
        Ok(Some(text)) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
            _ => {
                return ApiError::bad_request(format!(
                    "limit must be a whole number from 1 to {MAX_LIST_LIMIT}"
                ))
                .into_response();
            }
        },
        Err(e) => return e.into_response(),
    };
    let after = match query_param(query, "after") {
        Ok(after) => after,
        Err(e) => return e.into_response(),
    };
    // A page stops short of `limit` rather than grow past 1 MiB: the
    // client follows `next`.
    let page = app.store().list(after.as_deref(), limit, MAX_LIST_BYTES);
    json(StatusCode::OK, &page)
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

async fn healthz(method: Method) -> Response {
    if method != Method::GET {
        return ApiError::method_not_allowed("GET").into_response();
    }
    json(StatusCode::OK, &Status { status: "ok" })
}

async fn readyz(State(app): State<App>, method: Method) -> Response {
    if method != Method::GET {
        return ApiError::method_not_allowed("GET").into_response();
    }
    if app.is_draining() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    json(StatusCode::OK, &Status { status: "ready" })
}

async fn metrics(State(app): State<App>, method: Method) -> Response {
    if method != Method::GET {
        return ApiError::method_not_allowed("GET").into_response();
    }
    match app.metrics().encode(app.store().len()) {
        Ok(text) => (
            [(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS))],
            text,
        )
            .into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        )
        .into_response(),
    }
}

async fn openapi(State(app): State<App>, method: Method) -> Response {
    if method != Method::GET {
        return ApiError::method_not_allowed("GET").into_response();
    }
    // Built on first use, not at start: start-up time matters more.
    static DOCUMENTS: [OnceLock<Bytes>; 2] = [OnceLock::new(), OnceLock::new()];
    let auth = app.inner.auth_token.is_some();
    let document = DOCUMENTS[usize::from(auth)].get_or_init(|| {
        Bytes::from(serde_json::to_vec(&crate::openapi::document_json(auth)).unwrap_or_default())
    });
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        document.clone(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not found")
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the answer",
        )
        .into_response(),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::AlreadyExists => ApiError::already_exists(),
            StoreError::Persist { .. } => {
                tracing::error!(error = %e, "a change was refused: the state file cannot be written");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the change could not be saved; nothing was changed",
                )
            }
        }
    }
}

/// The name for PUT and DELETE: absent or empty is the reference's
/// "Missing name parameter".
fn required_name(query: Option<&str>) -> Result<String, ApiError> {
    match query_param(query, "name")? {
        Some(name) if !name.is_empty() => {
            check_name(&name)?;
            Ok(name)
        }
        _ => Err(ApiError::missing_name()),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The first value of `key` in a query string, decoded as Go's
/// `url.Query().Get` and HTML forms do: `+` is a space, then
/// percent-escapes. A value that is not UTF-8 once decoded is refused
/// rather than mangled, since names must round-trip exactly.
pub(crate) fn query_param(query: Option<&str>, key: &str) -> Result<Option<String>, ApiError> {
    let Some(query) = query else {
        return Ok(None);
    };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != key && form_decode(k).ok().as_deref() != Some(key) {
            continue;
        }
        return form_decode(v).map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "the {key} parameter is not UTF-8 once percent-decoded"
            ))
        });
    }
    Ok(None)
}

fn form_decode(text: &str) -> Result<String, Utf8Error> {
    let text: Cow<'_, str> = if text.contains('+') {
        Cow::Owned(text.replace('+', " "))
    } else {
        Cow::Borrowed(text)
    };
    Ok(percent_decode_str(&text).decode_utf8()?.into_owned())
}

/// Past the body limit, up to this much more is read and dropped before
/// answering 413: a client still sending would otherwise see the
/// connection reset instead of the answer. Larger bodies are cut off.
const DRAIN_BYTES: usize = 1024 * 1024;

/// The whole body, or 413 past the limit.
async fn read_body(headers: &HeaderMap, mut body: Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES + DRAIN_BYTES) {
        return Err(too_large());
    }
    let mut kept: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total = total.saturating_add(data.len());
        if total <= MAX_BODY_BYTES {
            kept.push(data);
        } else if total > MAX_BODY_BYTES + DRAIN_BYTES {
            break;
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(match kept.len() {
        0 => Bytes::new(),
        1 => kept.swap_remove(0),
        _ => Bytes::from(kept.concat()),
    })
}

/// A robot from a request body, within the limits.
pub(crate) fn parse_robot(body: &[u8]) -> Result<Robot, ApiError> {
    let not_a_robot = |reason: &dyn std::fmt::Display| {
        ApiError::bad_request(format!("the body is not a robot as JSON: {reason}"))
    };
    // serde's derive also reads a struct from an array (`["n", "c"]`);
    // the reference (Go) refuses that, and so do we.
    if body.trim_ascii_start().starts_with(b"[") {
        return Err(not_a_robot(&"expected an object, found an array"));
    }
    let robot: Robot = serde_json::from_slice(body).map_err(|e| not_a_robot(&e))?;
    robot
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(robot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(query: &str) -> Result<Option<String>, ApiError> {
        query_param(Some(query), "name")
    }

    #[test]
    fn query_decoding_follows_forms() {
        assert_eq!(name("name=a").unwrap().as_deref(), Some("a"));
        // The reference client's `?&name=` form.
        assert_eq!(name("&name=a").unwrap().as_deref(), Some("a"));
        assert_eq!(name("name=a+b").unwrap().as_deref(), Some("a b"));
        assert_eq!(name("name=a%2Bb").unwrap().as_deref(), Some("a+b"));
        assert_eq!(name("name=a%26b%20c").unwrap().as_deref(), Some("a&b c"));
        assert_eq!(name("name=100%25").unwrap().as_deref(), Some("100%"));
        assert_eq!(name("name=%C3%BCmlaut").unwrap().as_deref(), Some("ümlaut"));
        assert_eq!(name("name=x%231").unwrap().as_deref(), Some("x#1"));
        // A bare % is kept: the reference client sends `100%` unescaped.
        assert_eq!(name("name=100%").unwrap().as_deref(), Some("100%"));
        assert_eq!(name("name=1&name=2").unwrap().as_deref(), Some("1"));
        assert_eq!(name("na%6De=k").unwrap().as_deref(), Some("k"));
        assert_eq!(name("name").unwrap().as_deref(), Some(""));
        assert_eq!(name("names=a").unwrap(), None);
        assert_eq!(name("").unwrap(), None);
        assert_eq!(query_param(None, "name").unwrap(), None);
        let err = name("name=%FF").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("UTF-8"), "{}", err.message);
    }

    #[test]
    fn robots_are_validated() {
        assert_eq!(
            parse_robot(br#"{"name":"a","color":"b","x":1}"#).unwrap(),
            Robot::new("a", "b")
        );
        for (body, needle) in [
            (&b""[..], "EOF"),
            (b"{", "EOF"),
            (b"null", "invalid type"),
            (br#" ["a","b"]"#, "found an array"),
            (br#"{"name":1}"#, "invalid type"),
            (br#"{"color":"x"}"#, "empty"),
            (br#"{"name":"a"} x"#, "trailing"),
            (b"\xff", "expected value"),
        ] {
            let err = parse_robot(body).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert!(err.message.contains(needle), "{body:?}: {}", err.message);
        }
    }
}
