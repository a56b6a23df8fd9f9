//! Loopback fakes, hand-written where no emulator exists: a Secret Manager that answers a chosen payload and CRC, the metadata server of ID tokens.

use super::*;

/// What a loopback fake saw: one entry per request.
#[derive(Clone, Debug, Default)]
pub(crate) struct Seen(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

impl Seen {
    pub(crate) fn record(&self, entry: BTreeMap<String, String>) {
        self.0.lock().unwrap().push(entry);
    }
    pub(crate) fn all(&self) -> Vec<BTreeMap<String, String>> {
        self.0.lock().unwrap().clone()
    }
}

/// A FAKE Secret Manager that answers only `GET /v1/{name}:access`, in the
/// documented shape (`payload.data` base64, `payload.dataCrc32c` an int64
/// as a decimal string), with the checksum it is told to send.
pub(crate) async fn fake_secret_manager(
    payload: &str,
    crc32c: u32,
) -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::Path as UrlPath;
    use axum::http::StatusCode;
    let data = b64(payload.as_bytes());
    let app = axum::Router::new().route(
        "/v1/{*name}",
        axum::routing::get(move |UrlPath(name): UrlPath<String>| {
            let data = data.clone();
            async move {
                let Some(name) = name.strip_suffix(":access") else {
                    return (StatusCode::NOT_FOUND, axum::Json(json!({})));
                };
                (
                    StatusCode::OK,
                    axum::Json(json!({
                        "name": name,
                        "payload": { "data": data, "dataCrc32c": crc32c.to_string() },
                    })),
                )
            }
        }),
    );
    serve(app).await
}

/// A FAKE metadata server: the identity endpoint only, as documented —
/// `GET /computeMetadata/v1/instance/service-accounts/default/identity
/// ?audience=…&format=…` with `Metadata-Flavor: Google`, answered with the
/// token as plain text; without the header, 403.
pub(crate) async fn fake_metadata_server(
    jwt: String,
    seen: Seen,
) -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::Query;
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/computeMetadata/v1/instance/service-accounts/default/identity",
        axum::routing::get(
            move |headers: HeaderMap, Query(query): Query<BTreeMap<String, String>>| {
                let (jwt, seen) = (jwt.clone(), seen.clone());
                async move {
                    let flavor = headers
                        .get("metadata-flavor")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let mut entry = query.clone();
                    entry.insert("Metadata-Flavor".into(), flavor.clone());
                    seen.record(entry);
                    if flavor != "Google" {
                        return (
                            StatusCode::FORBIDDEN,
                            [("content-type", "text/plain")],
                            "Missing required header \"Metadata-Flavor\": \"Google\"\n".to_owned(),
                        );
                    }
                    (StatusCode::OK, [("content-type", "text/plain")], jwt)
                }
            },
        ),
    );
    serve(app).await
}

pub(crate) async fn serve(app: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// A JWT shaped like Google's ID tokens (unsigned: nothing here checks
/// the signature; Cloud Run's IAM would).
pub(crate) fn google_id_token(audience: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let enc = |v: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
    };
    format!(
        "{}.{}.{}",
        enc(json!({ "alg": "RS256", "kid": "fake-key", "typ": "JWT" })),
        enc(json!({
            "aud": audience,
            "azp": "robot-controller@p1.iam.gserviceaccount.com",
            "email": "robot-controller@p1.iam.gserviceaccount.com",
            "email_verified": true,
            "exp": now + 3600,
            "iat": now,
            "iss": "https://accounts.google.com",
            "sub": "1234567890",
        })),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"fake-signature"),
    )
}
