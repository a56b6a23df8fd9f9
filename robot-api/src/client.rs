//! A typed client for the robot server, safe where the reference client is
//! not: names are percent-encoded, redirects are refused, a 404 on delete
//! means done, and an answer it cannot read is an error, never "not found".

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, LOCATION};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use crate::wire::{ErrorBody, InvalidRobot, Robot, RobotList, messages};

/// The reference server gives each request 10 s; a client should not wait longer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers larger than this are not read: a robot is far smaller, and
/// the server keeps a page of the listing within it.
const MAX_RESPONSE_BYTES: usize = crate::wire::MAX_LIST_BYTES;

/// Error messages quote at most this many bytes of anything a server
/// sent (a body, an error message, a header), marked as cut: a server's
/// answer is not ours to fill logs and conditions with.
pub const MAX_QUOTED_BYTES: usize = 512;

/// Everything that can go wrong talking to a robot server. Messages name
/// the operation and endpoint, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid robot server endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error(transparent)]
    InvalidRobot(#[from] InvalidRobot),
    #[error("cannot {op} robot: {}", describe_transport(.source))]
    Transport {
        op: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot {op} robot: the server redirected to {location:?}; redirects are not followed")]
    Redirected { op: &'static str, location: String },
    #[error("cannot {op} robot: no credentials for the robot server: {source}")]
    Authorization {
        op: &'static str,
        #[source]
        source: AuthorizationError,
    },
    #[error("cannot {op} robot: the server refused our credentials ({status})")]
    Unauthorized { op: &'static str, status: u16 },
    #[error("cannot {op} robot: robot not found")]
    NotFound { op: &'static str },
    #[error("cannot create robot: robot already exists")]
    AlreadyExists,
    #[error("cannot {op} robot: server answered {status}: {message}")]
    Status {
        op: &'static str,
        status: u16,
        message: String,
    },
    #[error("cannot {op} robot: the server's answer is not a robot: {reason}")]
    Decode { op: &'static str, reason: String },
}

impl Error {
    /// True when retrying later may succeed (network, timeouts, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Status { status, .. } => *status >= 500 || *status == 429,
            Error::Authorization { source, .. } => source.transient,
            _ => false,
        }
    }
}

fn describe_transport(e: &reqwest::Error) -> String {
    // reqwest's Display stops at the outermost layer ("error sending
    // request"); the cause (refused, timed out, DNS) is what users need.
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The `Authorization` header value shared by every client of one process;
/// refreshed in place when a token rotates. Never printed.
#[derive(Clone, Default)]
pub struct AuthHeader(Arc<RwLock<Option<HeaderValue>>>);

/// A token that cannot go into an HTTP header (control characters).
#[derive(Debug, thiserror::Error)]
#[error("the robot server token holds characters not allowed in an HTTP header")]
pub struct InvalidToken;

impl AuthHeader {
    /// Sends `Authorization: Bearer <token>` from now on.
    pub fn set_bearer(&self, token: &str) -> Result<(), InvalidToken> {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| InvalidToken)?;
        value.set_sensitive(true);
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(value);
        Ok(())
    }

    /// Sends no `Authorization` header from now on.
    pub fn clear(&self) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn current(&self) -> Option<HeaderValue> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl fmt::Debug for AuthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.current().is_some();
        f.debug_struct("AuthHeader")
            .field("set", &set)
            .finish_non_exhaustive()
    }
}

/// Why an [`Authorizer`] has no credentials to give. Never holds a token.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AuthorizationError {
    pub message: String,
    /// Whether asking again later may succeed (a metadata server that
    /// did not answer, rather than one that said no).
    pub transient: bool,
}

pub type AuthorizationFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<HeaderValue>, AuthorizationError>> + Send + 'a>>;

/// Credentials chosen per robot server, for schemes where the credential
/// depends on the server (a Google ID token's audience is the server's
/// URL). Set with [`RobotClient::with_authorizer`]; it replaces the
/// client's [`AuthHeader`].
pub trait Authorizer: Send + Sync + fmt::Debug {
    /// The `Authorization` value for the server whose origin
    /// (`scheme://host[:port]`, no path) is `audience`; `None` sends none.
    fn authorization<'a>(&'a self, audience: &'a str) -> AuthorizationFuture<'a>;

    /// The server at `audience` answered 401 or 403 to what
    /// [`authorization`](Self::authorization) gave: do not reuse it.
    fn refused(&self, _audience: &str) {}
}

/// An HTTP client configured as robot clients need it: bounded time, no
/// redirects, no proxy from the environment. Share one per process.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        // reqwest follows HTTP_PROXY, HTTPS_PROXY and ALL_PROXY unless told
        // not to: a robot server is on a private network, and a proxy
        // would see every robot and the bearer token.
        .no_proxy()
        .user_agent(concat!("robot-api/", env!("CARGO_PKG_VERSION")))
        .build()
        // Building fails only when the TLS backend cannot initialise, which
        // no input can cause; fall back to reqwest's defaults rather than panic.
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// A client for one robot server endpoint.
#[derive(Clone, Debug)]
pub struct RobotClient {
    http: reqwest::Client,
    robots: Url,
    list: Url,
    auth: Option<AuthHeader>,
    authorizer: Option<Arc<dyn Authorizer>>,
    /// `scheme://host[:port]` of the endpoint: what an authorizer is asked for.
    audience: String,
}

impl RobotClient {
    /// A client for the server at `endpoint` (`http://host:port`, with an
    /// optional path prefix), as a ProviderConfig's `spec.endpoint` gives it.
    pub fn new(
        http: reqwest::Client,
        endpoint: &str,
        auth: Option<AuthHeader>,
    ) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidEndpoint {
            endpoint: redact(endpoint),
            reason: reason.to_owned(),
        };
        let base = Url::parse(endpoint.trim()).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid(&format!(
                "scheme {:?} is not supported; use http or https",
                base.scheme()
            )));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("it has no host"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid(
                "credentials in the URL are not supported; use a token source",
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("it must not have a query or fragment"));
        }
        Ok(Self {
            http,
            robots: join(&base, &["robots"]),
            list: join(&base, &["v1", "robots"]),
            auth,
            authorizer: None,
            audience: base.origin().ascii_serialization(),
        })
    }

    /// Asks `authorizer` for each request's `Authorization` header instead
    /// of using the [`AuthHeader`] given to [`new`](Self::new).
    pub fn with_authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// The endpoint's origin, `scheme://host[:port]`: the audience of
    /// per-server credentials.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The robot named `name`, or `None` when the server says it has no
    /// such robot (404 `Robot not found`).
    pub async fn get(&self, name: &str) -> Result<Option<Robot>, Error> {
        const OP: &str = "get";
        let resp = self.send(OP, Method::GET, Some(name), None).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => robot_not_found(OP, resp).await.map(|()| None),
            s if s.is_success() => Ok(Some(decode(OP, resp).await?)),
            _ => Err(failure(OP, resp).await),
        }
    }

    /// Creates `robot`; [`Error::AlreadyExists`] when the name is taken.
    pub async fn create(&self, robot: &Robot) -> Result<(), Error> {
        const OP: &str = "create";
        robot.validate()?;
        let resp = self.send(OP, Method::POST, None, Some(robot)).await?;
        if resp.status().is_success() {
            return Ok(());
        }
        match failure(OP, resp).await {
            Error::Status {
                status: 400 | 409,
                message,
                ..
            } if message == messages::ALREADY_EXISTS => Err(Error::AlreadyExists),
            e => Err(e),
        }
    }

    /// Replaces the robot named `name` with `robot`; [`Error::NotFound`]
    /// when there is none.
    pub async fn update(&self, name: &str, robot: &Robot) -> Result<(), Error> {
        const OP: &str = "update";
        robot.validate()?;
        let resp = self.send(OP, Method::PUT, Some(name), Some(robot)).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => {
                robot_not_found(OP, resp).await?;
                Err(Error::NotFound { op: OP })
            }
            s if s.is_success() => Ok(()),
            _ => Err(failure(OP, resp).await),
        }
    }

    /// Deletes the robot named `name`. Idempotent: `Ok(false)` when the
    /// server says it was already gone (404 `Robot not found`).
    pub async fn delete(&self, name: &str) -> Result<bool, Error> {
        const OP: &str = "delete";
        let resp = self.send(OP, Method::DELETE, Some(name), None).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => robot_not_found(OP, resp).await.map(|()| false),
            s if s.is_success() => Ok(true),
            _ => Err(failure(OP, resp).await),
        }
    }

    /// One page of the listing, names after `after`, at most `limit`.
    pub async fn list(&self, after: Option<&str>, limit: usize) -> Result<RobotList, Error> {
        const OP: &str = "list";
        let mut url = self.list.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("limit", &limit.to_string());
            if let Some(after) = after {
                q.append_pair("after", after);
            }
        }
        let resp = self.request(OP, Method::GET, url, None).await?;
        if !resp.status().is_success() {
            return Err(failure(OP, resp).await);
        }
        decode(OP, resp).await
    }

    async fn send(
        &self,
        op: &'static str,
        method: Method,
        name: Option<&str>,
        body: Option<&Robot>,
    ) -> Result<Response, Error> {
        let mut url = self.robots.clone();
        if let Some(name) = name {
            crate::wire::validate_name(name)?;
            url.query_pairs_mut().append_pair("name", name);
        }
        self.request(op, method, url, body).await
    }

    async fn request(
        &self,
        op: &'static str,
        method: Method,
        url: Url,
        body: Option<&Robot>,
    ) -> Result<Response, Error> {
        let mut req = self
            .http
            .request(method, url)
            .header(ACCEPT, "application/json");
        if let Some(authorizer) = &self.authorizer {
            match authorizer.authorization(&self.audience).await {
                Ok(Some(value)) => req = req.header(AUTHORIZATION, value),
                Ok(None) => {}
                Err(source) => return Err(Error::Authorization { op, source }),
            }
        } else if let Some(value) = self.auth.as_ref().and_then(AuthHeader::current) {
            req = req.header(AUTHORIZATION, value);
        }
        if let Some(robot) = body {
            req = req.json(robot);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| Error::Transport { op, source })?;
        let status = resp.status();
        if status.is_redirection() {
            let location = cut(resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""));
            return Err(Error::Redirected { op, location });
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            if let Some(authorizer) = &self.authorizer {
                authorizer.refused(&self.audience);
            }
            return Err(Error::Unauthorized {
                op,
                status: status.as_u16(),
            });
        }
        Ok(resp)
    }
}

/// The endpoint as it may be shown: without user info, query or fragment,
/// which may hold credentials.
fn redact(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    match Url::parse(endpoint) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => {
            let tail = endpoint.rsplit('@').next().unwrap_or_default();
            tail.chars().take(100).collect()
        }
    }
}

/// `base` with `segments` appended to its path, keeping any prefix.
fn join(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

async fn read_limited(op: &'static str, mut resp: Response) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|source| Error::Transport { op, source })?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(Error::Decode {
                op,
                reason: format!("answer is larger than {MAX_RESPONSE_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn decode<T: serde::de::DeserializeOwned>(
    op: &'static str,
    resp: Response,
) -> Result<T, Error> {
    let body = read_limited(op, resp).await?;
    // serde quotes what it found (a long string, say): cut it too.
    serde_json::from_slice(&body).map_err(|e| Error::Decode {
        op,
        reason: cut(&e.to_string()),
    })
}

/// Checks that a 404 is the robot API saying "no such robot" (`Robot not
/// found`, as our JSON error or the reference's plain text). Any other 404
/// (a wrong path prefix, another service on the port, a proxy's error page)
/// says nothing about the robot: reading it as "gone" would let a delete
/// finish while the robot lives on, so it is an error.
async fn robot_not_found(op: &'static str, resp: Response) -> Result<(), Error> {
    match failure(op, resp).await {
        Error::Status { message, .. } if message.trim() == messages::NOT_FOUND => Ok(()),
        other => Err(other),
    }
}

/// Turns a non-success answer into an error carrying the server's message,
/// from our JSON error body or the reference server's plain text.
async fn failure(op: &'static str, resp: Response) -> Error {
    let status = resp.status().as_u16();
    let message = match read_limited(op, resp).await {
        Ok(body) => match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => cut(&e.error),
            Err(_) => quote(&body),
        },
        Err(e) => e.to_string(),
    };
    Error::Status {
        op,
        status,
        message,
    }
}

/// A body as text for an error message, trimmed and [cut](cut).
fn quote(body: &[u8]) -> String {
    cut(String::from_utf8_lossy(body).trim())
}

/// `text` whole when it is at most [`MAX_QUOTED_BYTES`], else its first
/// bytes up to a character boundary and a note that it was cut.
pub(crate) fn cut(text: &str) -> String {
    if text.len() <= MAX_QUOTED_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_QUOTED_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... (cut: {} bytes in all)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn client(endpoint: &str) -> Result<RobotClient, Error> {
        RobotClient::new(reqwest::Client::new(), endpoint, None)
    }

    #[test]
    fn endpoint_paths_are_appended_not_replaced() {
        let c = client("http://h:9090/prefix/").unwrap();
        assert_eq!(c.robots.as_str(), "http://h:9090/prefix/robots");
        assert_eq!(c.list.as_str(), "http://h:9090/prefix/v1/robots");
        let c = client("http://h:9090").unwrap();
        assert_eq!(c.robots.as_str(), "http://h:9090/robots");
    }

    #[test]
    fn bad_endpoints_are_refused_with_a_reason() {
        for (endpoint, needle) in [
            ("not a url", "relative URL"),
            ("ftp://h/", "scheme \"ftp\""),
            ("unix:/var/run/x", "scheme \"unix\""),
            ("http://user:pw@h/", "credentials"),
            ("http://h/?x=1", "query"),
            ("nonsense user:pw@h", "relative URL"),
        ] {
            let err = client(endpoint).unwrap_err().to_string();
            assert!(err.contains(needle), "{endpoint}: {err}");
            assert!(!err.contains("pw"), "{err}");
        }
    }

    #[test]
    fn auth_header_is_never_printed() {
        let auth = AuthHeader::default();
        auth.set_bearer("s3cr3t-token").unwrap();
        let c = RobotClient::new(reqwest::Client::new(), "http://h", Some(auth.clone())).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(!format!("{auth:?}").contains("s3cr3t"));
        assert!(auth.set_bearer("bad\ntoken").is_err());
    }

    #[test]
    fn long_answers_are_quoted_briefly() {
        // Two bytes a character: the cut falls on a character boundary.
        let q = quote("é".repeat(500).as_bytes());
        assert!(q.starts_with(&"é".repeat(MAX_QUOTED_BYTES / 2)), "{q}");
        assert!(q.ends_with("... (cut: 1000 bytes in all)"), "{q}");
        let q = cut(&format!("x{}", "é".repeat(500)));
        assert!(q.starts_with(&format!("x{}...", "é".repeat(255))), "{q}");
        assert_eq!(cut("short"), "short");
        assert_eq!(
            cut(&"a".repeat(MAX_QUOTED_BYTES)),
            "a".repeat(MAX_QUOTED_BYTES)
        );
    }

    /// Every error that quotes the server's answer quotes at most
    /// [`MAX_QUOTED_BYTES`] of it, marked as cut.
    #[tokio::test]
    async fn errors_quote_at_most_512_bytes_of_an_answer() {
        async fn answer(status: &'static str, headers: String, body: String) -> RobotClient {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).await.unwrap();
                    assert!(n > 0, "connection closed mid-request");
                    head.extend_from_slice(&buf[..n]);
                }
                let reply = format!(
                    "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(reply.as_bytes()).await.unwrap();
            });
            // Ours: it does not follow the redirect.
            let http = http_client(Duration::from_secs(5));
            RobotClient::new(http, &format!("http://127.0.0.1:{port}"), None).unwrap()
        }
        let long = "L".repeat(100_000);
        let json_error = serde_json::to_string(&ErrorBody {
            error: long.clone(),
        })
        .unwrap();
        let cases = [
            answer("500 Internal Server Error", String::new(), json_error).await,
            answer("503 Service Unavailable", String::new(), long.clone()).await,
            answer("404 Not Found", String::new(), long.clone()).await,
            // Not a robot: serde quotes the string it found.
            answer("200 OK", String::new(), format!("\"{long}\"")).await,
            answer(
                "302 Found",
                format!("location: http://elsewhere/{}\r\n", "L".repeat(5000)),
                String::new(),
            )
            .await,
        ];
        for c in cases {
            let err = c.get("r").await.unwrap_err();
            let text = err.to_string();
            assert!(
                text.len() < MAX_QUOTED_BYTES + 200,
                "{} bytes: {text:.600}",
                text.len()
            );
            assert!(text.contains("(cut: "), "{text:.600}");
            assert!(text.contains(&"L".repeat(400)), "{text:.600}");
            if let Error::Status { message, .. } = &err {
                assert!(message.len() < MAX_QUOTED_BYTES + 50, "{message:.600}");
            }
        }
    }

    /// Where the child of [`proxy_variables_are_ignored`] finds the server.
    const PROXY_CHILD_SERVER: &str = "ROBOT_API_TEST_PROXY_CHILD_SERVER";

    /// Answers each connection's first request with `reply`, counting them.
    fn answer_all(listener: std::net::TcpListener, reply: &'static str) -> Arc<AtomicUsize> {
        use std::io::{Read, Write};
        let count = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&count);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                counted.fetch_add(1, Ordering::SeqCst);
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        count
    }

    /// HTTP_PROXY and friends are not followed: the request goes straight
    /// to the server even with every proxy variable pointing elsewhere.
    /// The variables are set for a child process (this test binary running
    /// [`proxy_child`]), since setting them here would race other threads.
    #[test]
    fn proxy_variables_are_ignored() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server_addr = server.local_addr().unwrap();
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
        let served = answer_all(
            server,
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 27\r\nconnection: close\r\n\r\n{\"error\":\"Robot not found\"}",
        );
        let proxied = answer_all(
            proxy,
            "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args(["--exact", "client::tests::proxy_child", "--ignored"])
            .args(["--nocapture", "--test-threads=1"])
            .env(PROXY_CHILD_SERVER, server_addr.to_string())
            .env_remove("NO_PROXY")
            .env_remove("no_proxy");
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            child.env(var, &proxy_url);
        }
        let output = child.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        assert!(
            stdout.contains("1 passed"),
            "the child ran no test: {stdout}"
        );
        assert_eq!(
            proxied.load(Ordering::SeqCst),
            0,
            "a request went to the proxy"
        );
        assert_eq!(served.load(Ordering::SeqCst), 1);
    }

    /// The child half of [`proxy_variables_are_ignored`]; does nothing
    /// when run on its own.
    #[test]
    #[ignore = "run by proxy_variables_are_ignored, with proxy variables set"]
    fn proxy_child() {
        let Ok(server) = std::env::var(PROXY_CHILD_SERVER) else {
            return;
        };
        let c = RobotClient::new(
            http_client(Duration::from_secs(5)),
            &format!("http://{server}"),
            None,
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(runtime.block_on(c.get("r")).unwrap(), None);
    }

    /// An authorizer that hands out a fixed header and records what it was
    /// asked and told.
    #[derive(Debug, Default)]
    struct Recording {
        asked: std::sync::Mutex<Vec<String>>,
        refused: std::sync::Mutex<Vec<String>>,
        fail: bool,
    }

    impl Authorizer for Recording {
        fn authorization<'a>(&'a self, audience: &'a str) -> AuthorizationFuture<'a> {
            Box::pin(async move {
                self.asked.lock().unwrap().push(audience.to_owned());
                if self.fail {
                    return Err(AuthorizationError {
                        message: "the metadata server did not answer".into(),
                        transient: true,
                    });
                }
                let mut v = HeaderValue::from_static("Bearer id-token-s3cr3t");
                v.set_sensitive(true);
                Ok(Some(v))
            })
        }
        fn refused(&self, audience: &str) {
            self.refused.lock().unwrap().push(audience.to_owned());
        }
    }

    /// Answers one HTTP request with `status` and returns the request head.
    async fn answer_once(
        listener: tokio::net::TcpListener,
        status: &'static str,
    ) -> tokio::task::JoinHandle<String> {
        answer_once_with(listener, status, "").await
    }

    /// As [`answer_once`], with `body` (plain text).
    async fn answer_once_with(
        listener: tokio::net::TcpListener,
        status: &'static str,
        body: &'static str,
    ) -> tokio::task::JoinHandle<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed mid-request");
                head.extend_from_slice(&buf[..n]);
            }
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&head).into_owned()
        })
    }

    #[tokio::test]
    async fn an_authorizer_is_asked_per_server_and_told_of_refusals() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let request = answer_once(listener, "401 Unauthorized").await;
        let authorizer = Arc::new(Recording::default());
        let c = client(&format!("http://127.0.0.1:{port}/prefix/"))
            .unwrap()
            .with_authorizer(authorizer.clone());
        assert_eq!(c.audience(), format!("http://127.0.0.1:{port}"));
        let err = c.get("r1").await.unwrap_err();
        assert!(
            matches!(err, Error::Unauthorized { status: 401, .. }),
            "{err}"
        );
        let head = request.await.unwrap().to_ascii_lowercase();
        assert!(
            head.contains("authorization: bearer id-token-s3cr3t"),
            "{head}"
        );
        let audience = format!("http://127.0.0.1:{port}");
        assert_eq!(*authorizer.asked.lock().unwrap(), [audience.as_str()]);
        assert_eq!(*authorizer.refused.lock().unwrap(), [audience]);
        assert!(!format!("{c:?} {err:?}").contains("s3cr3t"));
    }

    #[tokio::test]
    async fn an_authorizer_that_cannot_answer_fails_the_request_before_sending() {
        let authorizer = Arc::new(Recording {
            fail: true,
            ..Recording::default()
        });
        // Nothing listens on port 9: the request must not be attempted.
        let c = client("http://127.0.0.1:9")
            .unwrap()
            .with_authorizer(authorizer);
        let err = c.get("r1").await.unwrap_err();
        assert!(matches!(err, Error::Authorization { .. }), "{err}");
        assert!(err.is_transient());
        assert_eq!(
            err.to_string(),
            "cannot get robot: no credentials for the robot server: the metadata server did not answer"
        );
    }

    #[tokio::test]
    async fn only_the_robot_apis_404_means_no_such_robot() {
        async fn answer(status: &'static str, body: &'static str) -> RobotClient {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            drop(answer_once_with(listener, status, body).await);
            client(&format!("http://127.0.0.1:{port}")).unwrap()
        }
        // Ours (JSON) and the reference's (plain text, with Go's newline).
        for body in [r#"{"error":"Robot not found"}"#, "Robot not found\n"] {
            assert_eq!(
                answer("404 Not Found", body).await.get("r").await.unwrap(),
                None
            );
            assert!(
                !answer("404 Not Found", body)
                    .await
                    .delete("r")
                    .await
                    .unwrap()
            );
            let err = answer("404 Not Found", body)
                .await
                .update("r", &Robot::new("r", "c"))
                .await
                .unwrap_err();
            assert!(matches!(err, Error::NotFound { .. }), "{err}");
        }
        // Anything else answering 404 says nothing about the robot.
        for body in [
            r#"{"error":"Not found"}"#,
            "404 page not found\n",
            "<html><h1>404 Not Found</h1></html>",
            "",
        ] {
            let err = answer("404 Not Found", body)
                .await
                .get("r")
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::Status { status: 404, .. }),
                "{body:?}: {err}"
            );
            let err = answer("404 Not Found", body)
                .await
                .delete("r")
                .await
                .unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("cannot delete robot: server answered 404"),
                "{err}"
            );
            let err = answer("404 Not Found", body)
                .await
                .update("r", &Robot::new("r", "c"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::Status { status: 404, .. }),
                "{body:?}: {err}"
            );
        }
    }
}
