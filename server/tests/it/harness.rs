//! Two ways to run the server. Most tests run it in process
//! ([`TestServer`]: `robot_server::serve` on a `127.0.0.1:0` listener,
//! stopped through a shutdown channel); the tests of flags, environment
//! variables, exit codes and signals run the real binary ([`launch`]).
//! Either is reached over loopback HTTP, through robot-api's client or raw.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use robot_api::{AuthHeader, Robot, RobotClient};
use robot_server::{Auth, Config};
use rustix::process::{Pid, Signal, kill_process};

/// How long the server gets to start, answer or exit before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

const BINARY: &str = env!("CARGO_BIN_EXE_robot-server");

/// Something serving the API on a loopback address.
pub trait Serving {
    fn addr(&self) -> SocketAddr;

    fn base(&self) -> String {
        format!("http://{}", self.addr())
    }

    fn client(&self) -> RobotClient {
        RobotClient::new(robot_api::http_client(PATIENCE), &self.base(), None).expect("client")
    }

    fn client_with_token(&self, token: &str) -> RobotClient {
        let auth = AuthHeader::default();
        auth.set_bearer(token).expect("token");
        RobotClient::new(robot_api::http_client(PATIENCE), &self.base(), Some(auth))
            .expect("client")
    }
}

// ----------------------------------------------------------------------
// In process.

/// The configuration tests start from: in memory, no auth.
pub fn config() -> Config {
    Config::new(Auth::None)
}

/// An in-process server with [`config`].
pub fn start() -> TestServer {
    TestServer::start(config())
}

/// What the server logged, as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// `robot_server::serve` on its own runtime and thread, so that tests may
/// block (raw sockets, proptest) without stalling it. Stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: Receiver<Result<(), robot_server::Error>>,
    result: Option<Result<(), String>>,
    logs: Logs,
}

impl Serving for TestServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl TestServer {
    /// Serves `config` on a fresh `127.0.0.1:0` listener. The listener is
    /// bound before this returns: connections wait in its backlog until
    /// the server accepts them, so there is nothing to wait for.
    pub fn start(config: Config) -> TestServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        listener.set_nonblocking(true).expect("non-blocking");
        let logs = Logs::default();
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_writer(logs.clone())
                .with_ansi(false)
                .with_env_filter("info,robot_server=debug")
                .finish(),
        );
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let (stopped_tx, stopped) = mpsc::channel();
        std::thread::spawn(move || {
            let _logging = tracing::dispatcher::set_default(&dispatch);
            let on_start = dispatch.clone();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                // Every thread of the runtime (blocking ones included) logs
                // into this server's buffer.
                .on_thread_start(move || {
                    std::mem::forget(tracing::dispatcher::set_default(&on_start));
                })
                .build()
                .expect("a runtime for the server");
            let result = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                robot_server::serve(listener, config, async move {
                    let _ = shutdown_rx.await;
                })
                .await
            });
            runtime.shutdown_timeout(PATIENCE);
            let _ = stopped_tx.send(result);
        });
        TestServer {
            addr,
            shutdown: Some(shutdown),
            stopped,
            result: None,
            logs,
        }
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.0.lock().unwrap()).into_owned()
    }

    /// Completes the shutdown future, as SIGTERM does for the binary.
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Waits for `serve` to return, failing the test after `limit`.
    pub fn wait_stopped(&mut self, limit: Duration) -> Result<(), String> {
        if let Some(result) = &self.result {
            return result.clone();
        }
        let result = match self.stopped.recv_timeout(limit) {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(RecvTimeoutError::Timeout) => {
                panic!("the server still runs after {limit:?}:\n{}", self.logs())
            }
            Err(RecvTimeoutError::Disconnected) => panic!("the server's thread died"),
        };
        self.result = Some(result.clone());
        result
    }

    /// Shuts down and waits for the end.
    pub fn stop(mut self) -> Result<(), String> {
        self.begin_shutdown();
        self.wait_stopped(PATIENCE)
    }

    /// Waits until the server no longer accepts connections.
    pub fn wait_until_refusing(&self) {
        wait_for(PATIENCE, "the listener to close", || {
            TcpStream::connect(self.addr).is_err()
        });
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
        if self.result.is_none() {
            let _ = self.stopped.recv_timeout(PATIENCE);
        }
    }
}

/// Runs `serve` with `config`, expecting it to fail at once.
pub fn start_error(config: Config) -> robot_server::Error {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let served = tokio::time::timeout(
            PATIENCE,
            robot_server::serve(listener, config, std::future::pending()),
        )
        .await;
        match served {
            Ok(Err(e)) => e,
            Ok(Ok(())) => panic!("the server stopped without an error"),
            Err(_) => panic!("the server started, but was expected to fail"),
        }
    })
}

// ----------------------------------------------------------------------
// The binary.

/// A way to start the real `robot-server`.
pub struct Launch {
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    listen: bool,
    no_auth: bool,
}

/// The binary on `127.0.0.1:0` with `--no-auth` (say otherwise with
/// [`Launch::without_listen`] and [`Launch::without_no_auth`]).
pub fn launch() -> Launch {
    Launch {
        args: Vec::new(),
        // JSON unless a test says otherwise: the address is read from it.
        envs: vec![("ROBOT_SERVER_LOG_FORMAT".into(), "json".into())],
        listen: true,
        no_auth: true,
    }
}

impl Launch {
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Leaves the listen address to the flags and environment under test.
    pub fn without_listen(mut self) -> Self {
        self.listen = false;
        self
    }

    /// Leaves auth to the flags and environment under test.
    pub fn without_no_auth(mut self) -> Self {
        self.no_auth = false;
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(BINARY);
        if self.listen {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if self.no_auth {
            cmd.arg("--no-auth");
        }
        cmd.args(&self.args);
        // The developer's own settings must not leak into a test.
        for (key, _) in std::env::vars_os() {
            let text = key.to_string_lossy();
            if text.starts_with("ROBOT_SERVER_") || text == "PORT" {
                cmd.env_remove(&key);
            }
        }
        for (key, value) in &self.envs {
            cmd.env(key, value);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts the server and waits until it logs its address.
    pub fn start(self) -> Process {
        let mut child = self.command().spawn().expect("start robot-server");
        let pid = Pid::from_child(&child);
        let logs = Arc::new(Mutex::new(String::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let out_logs = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let address = listening_address(&line);
                {
                    let mut logs = out_logs.lock().unwrap();
                    logs.push_str(&line);
                    logs.push('\n');
                }
                // After the line is kept, so a test can read it at once.
                if let Some(address) = address {
                    let _ = address_tx.send(address);
                }
            }
        });
        let err_logs = Arc::clone(&logs);
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            err_logs.lock().unwrap().push_str(&text);
        });
        let (exit_tx, exit_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = exit_tx.send(child.wait().expect("wait for robot-server"));
        });
        let mut server = Process {
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            logs,
            exit: exit_rx,
            exited: None,
        };
        match address_rx.recv_timeout(PATIENCE) {
            Ok(address) => {
                // 0.0.0.0 means every interface; the tests use loopback.
                server.addr = SocketAddr::from(([127, 0, 0, 1], address.port()));
                server
            }
            Err(_) => {
                let status = server.exit.recv_timeout(Duration::from_secs(1)).ok();
                panic!(
                    "robot-server did not start (exit {status:?}); its output:\n{}",
                    server.logs()
                );
            }
        }
    }

    /// Runs the server expecting it to exit by itself (bad configuration).
    pub fn run_to_exit(self) -> Exited {
        let mut child = self.command().spawn().expect("start robot-server");
        let pid = Pid::from_child(&child);
        let (tx, rx) = mpsc::channel();
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let err_reader = std::thread::spawn(move || {
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err);
            err
        });
        std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            let err = err_reader.join().unwrap_or_default();
            let status = child.wait().expect("wait for robot-server");
            let _ = tx.send(Exited {
                code: status.code(),
                output: format!("{out}{err}"),
            });
        });
        match rx.recv_timeout(PATIENCE) {
            Ok(exited) => exited,
            Err(_) => {
                let _ = kill_process(pid, Signal::KILL);
                panic!("robot-server was expected to exit but kept running");
            }
        }
    }
}

/// The address in the "listening" line, in JSON or text format.
fn listening_address(line: &str) -> Option<SocketAddr> {
    if let Ok(event) = serde_json::from_str::<serde_json::Value>(line) {
        if event["message"] != "listening" {
            return None;
        }
        return event["address"].as_str()?.parse().ok();
    }
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("address=")? + "address=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// How a server that was expected to fail ended.
#[derive(Debug)]
pub struct Exited {
    pub code: Option<i32>,
    /// Stdout then stderr.
    pub output: String,
}

/// A running `robot-server` process, killed when dropped.
pub struct Process {
    pid: Pid,
    pub addr: SocketAddr,
    logs: Arc<Mutex<String>>,
    exit: Receiver<ExitStatus>,
    exited: Option<ExitStatus>,
}

impl Serving for Process {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Process {
    /// Everything the server printed so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: Signal) {
        kill_process(self.pid, signal).expect("signal robot-server");
    }

    /// Waits for the process to exit, failing the test after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        match self.exit.recv_timeout(limit) {
            Ok(status) => {
                self.exited = Some(status);
                status
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "robot-server still running after {limit:?}:\n{}",
                    self.logs()
                )
            }
            Err(RecvTimeoutError::Disconnected) => panic!("lost robot-server's exit status"),
        }
    }

    /// SIGKILL: no chance to clean up, as in a crash or OOM kill.
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = kill_process(self.pid, Signal::KILL);
            self.wait_exit(PATIENCE);
        }
    }

    /// Waits until the server no longer accepts connections.
    pub fn wait_until_refusing(&self) {
        wait_for(PATIENCE, "the listener to close", || {
            TcpStream::connect(self.addr).is_err()
        });
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = kill_process(self.pid, Signal::KILL);
            let _ = self.exit.recv_timeout(PATIENCE);
        }
    }
}

// ----------------------------------------------------------------------
// Waiting, ports, and HTTP.

/// Polls `condition` until it holds, failing after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A free loopback port, for the tests of `PORT`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// An answer as it came over the wire.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The message of a JSON error body, failing the test if it is not one.
    pub fn error(&self) -> String {
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "error answer without JSON content type: {self:?}"
        );
        let body: robot_api::ErrorBody = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {self:?}"));
        body.error
    }

    pub fn robot(&self) -> Robot {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not a robot ({e}): {self:?}"))
    }
}

/// Plain HTTP calls, for exact wire checks.
#[derive(Clone)]
pub struct Raw {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl Raw {
    pub fn new(server: &impl Serving) -> Self {
        Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(PATIENCE)
                .build()
                .expect("reqwest client"),
            server: server.base(),
            token: None,
        }
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// `path_and_query` is sent as the URL parser leaves it; use
    /// [`raw_request`] for bytes the parser would change.
    pub async fn call(&self, method: &str, path_and_query: &str, body: Option<&str>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, format!("{}{path_and_query}", self.server));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body");
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path_and_query: &str) -> Answer {
        self.call("GET", path_and_query, None).await
    }
}

/// Sends `request` byte for byte on a new connection and reads the answer
/// until the server closes it (send `Connection: close`).
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(request).expect("write");
    read_answer(&mut stream)
}

/// `GET path` on a new connection, blocking: for conditions polled by
/// [`wait_for`]. `token` goes in `Authorization: Bearer`.
pub fn blocking_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    raw_request(addr, request.as_bytes())
}

/// Reads one HTTP/1.1 answer: its status and body (by Content-Length).
pub fn read_answer(stream: &mut TcpStream) -> (u16, String) {
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {status_line:?}"));
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("content-length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    (status, String::from_utf8(body).expect("UTF-8 body"))
}

/// Every robot, through the listing (several pages if need be).
pub async fn all_robots(client: &RobotClient) -> Vec<Robot> {
    let mut robots = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = client.list(after.as_deref(), 1000).await.expect("list");
        robots.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return robots,
        }
    }
}

/// The value of the series `series` (name and labels, as printed) in the
/// server's `/metrics`, 0 when absent.
pub fn metric(addr: SocketAddr, series: &str) -> f64 {
    let (status, text) = blocking_get(addr, "/metrics", None);
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}
