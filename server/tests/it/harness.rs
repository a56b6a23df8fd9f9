//! Runs the real `robot-server` binary on an ephemeral loopback port and
//! talks to it over HTTP, both through robot-api's client and raw.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use robot_api::{AuthHeader, Robot, RobotClient};
use rustix::process::{Pid, Signal, kill_process};

/// How long the server gets to start, answer or exit before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

const BINARY: &str = env!("CARGO_BIN_EXE_robot-server");

/// A way to start the server.
pub struct Launch {
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    listen: bool,
}

pub fn launch() -> Launch {
    Launch {
        args: Vec::new(),
        // JSON unless a test says otherwise: the address is read from it.
        envs: vec![("ROBOT_SERVER_LOG_FORMAT".into(), "json".into())],
        listen: true,
    }
}

/// A server started with no extra flags.
pub fn start() -> Server {
    launch().start()
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

    fn command(&self) -> Command {
        let mut cmd = Command::new(BINARY);
        if self.listen {
            cmd.args(["--listen", "127.0.0.1:0"]);
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
    pub fn start(self) -> Server {
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
        let mut server = Server {
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

/// A running server, killed when dropped.
pub struct Server {
    pid: Pid,
    pub addr: SocketAddr,
    logs: Arc<Mutex<String>>,
    exit: Receiver<ExitStatus>,
    exited: Option<ExitStatus>,
}

impl Server {
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> RobotClient {
        RobotClient::new(robot_api::http_client(PATIENCE), &self.base(), None).expect("client")
    }

    pub fn client_with_token(&self, token: &str) -> RobotClient {
        let auth = AuthHeader::default();
        auth.set_bearer(token).expect("token");
        RobotClient::new(robot_api::http_client(PATIENCE), &self.base(), Some(auth))
            .expect("client")
    }

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

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = kill_process(self.pid, Signal::KILL);
            let _ = self.exit.recv_timeout(PATIENCE);
        }
    }
}

/// Polls `condition` until it holds, failing after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
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
pub struct Raw {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl Raw {
    pub fn new(server: &Server) -> Self {
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

/// A free loopback port, for the tests of `PORT`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
