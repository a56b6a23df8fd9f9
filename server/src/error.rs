//! Error answers: a status and a JSON body `{"error": "..."}`.

use axum::response::{IntoResponse, Response};
use http::header::{ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use robot_api::wire::{ErrorBody, messages};

/// A request that could not be served, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// `Allow` for 405, `WWW-Authenticate` for 401.
    header: Option<(http::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            header: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, messages::NOT_FOUND)
    }

    pub fn already_exists() -> Self {
        // The reference answers 400, not 409; clients match on this.
        Self::bad_request(messages::ALREADY_EXISTS)
    }

    pub fn missing_name() -> Self {
        Self::bad_request(messages::MISSING_NAME)
    }

    /// 405, naming the methods the path does serve.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            header: Some((ALLOW, HeaderValue::from_static(allow))),
            ..Self::new(StatusCode::METHOD_NOT_ALLOWED, messages::METHOD_NOT_ALLOWED)
        }
    }

    pub fn unauthorized() -> Self {
        Self {
            header: Some((
                WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="robot-server""#),
            )),
            ..Self::new(StatusCode::UNAUTHORIZED, "Missing or invalid bearer token")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: self.message,
        })
        // Serialising a struct of one string cannot fail.
        .unwrap_or_default();
        let mut response = (
            self.status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response();
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
