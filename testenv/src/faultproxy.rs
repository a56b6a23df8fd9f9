//! A loopback TCP proxy that injects faults on command, for fault tests.
//!
//! Put a [`FaultProxy`] between a client and a real server (the robot
//! server, the kube-apiserver) and point the client at
//! [`addr`](FaultProxy::addr). It forwards bytes untouched (TLS passes
//! through) until told otherwise with [`set`](FaultProxy::set):
//!
//! - [`Fault::Pass`] means: forward.
//! - [`Fault::Delay`] means: hold each chunk of the server's answers this long
//!   (a slow server, or a slow network).
//! - [`Fault::Blackhole`] means: forward nothing either way, and hold new
//!   connections without answering, as a network partition does; what is
//!   held flows once the fault is lifted, as TCP retransmission would.
//! - [`Fault::Refuse`] means: close every new connection at once, with a reset.
//! - [`Fault::Answer`] means: answer every HTTP request itself with a canned
//!   response (a 500, garbage JSON, a redirect, a Kubernetes `Status`),
//!   closing the connection after it; with [`FaultProxy::start_tls`] it
//!   does so behind TLS with the real server's own certificate, so a
//!   client that checks the server's identity still talks to it. These
//!   answers are a hand-written fake, used only where the real server
//!   cannot be made to fail that way.
//!
//! [`cut`](FaultProxy::cut) closes every open connection now (a watch cut
//! by a load balancer). [`strand`](FaultProxy::strand) black-holes every
//! open connection for good while new ones pass: half-open connections, as
//! a NAT gateway leaves them when it forgets them without a reset. Changing to `Refuse` or `Answer` cuts too, so that
//! no kept-alive connection slips past the new fault.
//!
//! The proxy runs on its own thread and runtime, so a test blocking its own
//! runtime does not stall it; it stops when dropped.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::Error;

/// Largest request head (request line and headers) an [`Fault::Answer`]
/// reads before giving up on the request.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long a held connection gets to reach the upstream server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the proxy does to traffic; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Delay(Duration),
    Blackhole,
    Refuse,
    Answer(Answer),
}

/// A canned HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// `status` with `body` as `content_type`.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// `status` with a JSON (or supposedly JSON) body.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::new(status, "application/json", body)
    }

    /// `status` (a 3xx) to `location`.
    pub fn redirect(status: u16, location: &str) -> Self {
        let mut answer = Self::new(status, "text/plain", format!("see {location}\n"));
        answer.headers.push(("Location".into(), location.into()));
        answer
    }

    /// A Kubernetes API error as the kube-apiserver writes it: a `Status`
    /// object with `reason` (e.g. `InternalError`, `ServiceUnavailable`,
    /// `TooManyRequests`) and `code`.
    pub fn kubernetes_status(code: u16, reason: &str, message: &str) -> Self {
        let status = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": {},
            "code": code,
        });
        let mut answer = Self::json(code, status.to_string());
        answer
            .headers
            .push(("Cache-Control".into(), "no-cache, private".into()));
        if code == 429 || code == 503 {
            answer.headers.push(("Retry-After".into(), "1".into()));
        }
        answer
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Counters and the current fault, shared with the proxy's tasks.
struct Shared {
    fault: watch::Sender<Fault>,
    /// Bumped by every cut; open connections close when it changes.
    cuts: watch::Sender<u64>,
    /// Bumped by every strand; open connections stop forwarding for good.
    strands: watch::Sender<u64>,
    accepted: AtomicU64,
    answered: AtomicU64,
    open: AtomicUsize,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// A running proxy; stops (closing every connection) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .field("fault", &self.fault())
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Self, Error> {
        Self::spawn(Some(upstream), None)
    }

    /// A proxy with no server behind it: only answers what [`Fault::Answer`]
    /// says (starts in that mode with a 404). Counts what reaches it, e.g.
    /// to prove that nothing did.
    pub fn answering(answer: Answer) -> Result<Self, Error> {
        let proxy = Self::spawn(None, None)?;
        proxy.set(Fault::Answer(answer));
        Ok(proxy)
    }

    /// As [`start`](Self::start), and [`Fault::Answer`] answers behind TLS
    /// with this certificate chain and key (PEM files): those of the real
    /// server, so clients that verify it accept the answers.
    pub fn start_tls(upstream: SocketAddr, cert_pem: &Path, key_pem: &Path) -> Result<Self, Error> {
        let pki = |what: &str, e: &dyn fmt::Display| Error::Pki(format!("fault proxy {what}: {e}"));
        let certs = CertificateDer::pem_file_iter(cert_pem)
            .map_err(|e| pki("certificate", &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pki("certificate", &e))?;
        let key = PrivateKeyDer::from_pem_file(key_pem).map_err(|e| pki("key", &e))?;
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| pki("TLS configuration", &e))?;
        Self::spawn(Some(upstream), Some(Arc::new(config)))
    }

    fn spawn(
        upstream: Option<SocketAddr>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Self, Error> {
        crate::install_crypto_provider();
        let listener = std::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
            .map_err(|e| Error::io("fault proxy: binding a loopback port", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("fault proxy: listener", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("fault proxy: listener address", e))?;
        let shared = Arc::new(Shared {
            fault: watch::channel(Fault::Pass).0,
            cuts: watch::channel(0).0,
            strands: watch::channel(0).0,
            accepted: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            tls,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .map_err(|e| Error::io("fault proxy: runtime", e))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let accept_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("fault proxy: cannot listen: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept_loop(listener, upstream, accept_shared) => {}
                    }
                });
                // Dropping the runtime here drops every connection task.
            })
            .map_err(|e| Error::io("fault proxy: thread", e))?;
        Ok(Self {
            addr,
            upstream,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://<addr>`.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn fault(&self) -> Fault {
        self.shared.fault.borrow().clone()
    }

    /// Applies `fault` from now on. Switching to `Refuse` or `Answer` cuts
    /// the open connections too.
    pub fn set(&self, fault: Fault) {
        let cut = matches!(fault, Fault::Refuse | Fault::Answer(_));
        self.shared.fault.send_replace(fault);
        if cut {
            self.cut();
        }
    }

    /// Closes every open connection, both ends.
    pub fn cut(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Stops forwarding on every open connection, for good, without closing
    /// it; connections made afterwards pass as the current fault says.
    pub fn strand(&self) {
        self.shared.strands.send_modify(|n| *n += 1);
    }

    /// Connections accepted since the start.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Requests answered by [`Fault::Answer`] since the start.
    pub fn answered(&self) -> u64 {
        self.shared.answered.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: Option<SocketAddr>, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors and the like: try again shortly.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.open.fetch_add(1, Ordering::Relaxed);
            let mut cuts = shared.cuts.subscribe();
            cuts.mark_unchanged();
            tokio::select! {
                _ = cuts.changed() => {}
                _ = connection(client, upstream, &shared) => {}
            }
            shared.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// One client connection, from accept to close.
async fn connection(client: TcpStream, upstream: Option<SocketAddr>, shared: &Arc<Shared>) {
    let mut fault = shared.fault.subscribe();
    // A partition: the connection waits, unanswered, for the fault to lift.
    let current = match fault
        .wait_for(|f| *f != Fault::Blackhole)
        .await
        .map(|f| f.clone())
    {
        Ok(f) => f,
        Err(_) => return,
    };
    match current {
        Fault::Refuse => {
            // A reset rather than an orderly close: what a dead port does.
            reset(&client);
        }
        Fault::Answer(_) => {
            let Ok(std) = client.into_std() else { return };
            let shared = shared.clone();
            let _ = tokio::task::spawn_blocking(move || answer_all(std, &shared)).await;
        }
        Fault::Pass | Fault::Delay(_) | Fault::Blackhole => {
            let Some(upstream) = upstream else { return };
            let server =
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)).await {
                    Ok(Ok(s)) => s,
                    // The server is down: so is the connection, as it would be.
                    _ => {
                        reset(&client);
                        return;
                    }
                };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let strand = || {
                let mut r = shared.strands.subscribe();
                r.mark_unchanged();
                r
            };
            let requests = pump(
                client_read,
                server_write,
                shared.fault.subscribe(),
                strand(),
                false,
            );
            let answers = pump(
                server_read,
                client_write,
                shared.fault.subscribe(),
                strand(),
                true,
            );
            tokio::join!(requests, answers);
        }
    }
}

/// Makes closing `stream` send a reset (RST) instead of a FIN.
// Deprecated because a positive linger blocks the dropping thread; a zero
// linger does not block: the socket is discarded at once.
#[allow(deprecated)]
fn reset(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

/// Copies one direction until end of stream, applying the fault to each
/// chunk; `answers` marks the server-to-client direction, which delays.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
    strand: watch::Receiver<u64>,
    answers: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if strand.has_changed().unwrap_or(true) {
            // Stranded: hold both ends open and forward nothing, until cut.
            std::future::pending::<()>().await;
        }
        let current = match fault
            .wait_for(|f| *f != Fault::Blackhole)
            .await
            .map(|f| f.clone())
        {
            Ok(f) => f,
            Err(_) => return,
        };
        if let (Fault::Delay(d), true) = (current, answers) {
            tokio::time::sleep(d).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    // The end of the stream is a packet too: a partition holds it back.
    if fault.wait_for(|f| *f != Fault::Blackhole).await.is_ok() {
        let _ = to.shutdown().await;
    }
}

/// Answers every request on the connection with the current canned answer
/// (behind TLS when configured); blocking, on its own thread.
fn answer_all(stream: std::net::TcpStream, shared: &Shared) {
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    match &shared.tls {
        None => {
            let _ = answer_one(stream, shared);
        }
        Some(config) => {
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(conn, stream);
            if answer_one(&mut tls, shared).is_ok() {
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        }
    }
}

/// Reads one request (head and `Content-Length` body) and writes the
/// answer; the answer says `Connection: close`, so one per connection.
fn answer_one<S: Read + Write>(stream: S, shared: &Shared) -> io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut head = 0usize;
    let mut content_length = 0u64;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head += n;
        if head > MAX_HEAD_BYTES {
            return Err(io::Error::other("request head too large"));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    io::copy(&mut (&mut reader).take(content_length), &mut io::sink())?;
    let answer = match &*shared.fault.borrow() {
        Fault::Answer(a) => a.clone(),
        // The fault changed meanwhile: the connection is being cut anyway.
        _ => return Ok(()),
    };
    shared.answered.fetch_add(1, Ordering::Relaxed);
    let stream = reader.get_mut();
    stream.write_all(&answer.to_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream as StdStream;

    /// An echo server on loopback: writes back what it reads.
    fn echo_server() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn roundtrip(stream: &mut StdStream, text: &[u8]) -> io::Result<Vec<u8>> {
        stream.write_all(text)?;
        let mut got = vec![0u8; text.len()];
        stream.read_exact(&mut got)?;
        Ok(got)
    }

    fn connect(proxy: &FaultProxy) -> StdStream {
        let s = StdStream::connect(proxy.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    }

    #[test]
    fn passes_delays_holds_and_cuts() {
        let proxy = FaultProxy::start(echo_server()).expect("proxy");
        let mut a = connect(&proxy);
        assert_eq!(roundtrip(&mut a, b"hello").expect("pass"), b"hello");

        proxy.set(Fault::Delay(Duration::from_millis(300)));
        let started = std::time::Instant::now();
        assert_eq!(roundtrip(&mut a, b"slow").expect("delay"), b"slow");
        assert!(started.elapsed() >= Duration::from_millis(300));

        // A partition holds data until it heals, then delivers it.
        proxy.set(Fault::Blackhole);
        a.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        a.write_all(b"held").expect("write");
        let mut buf = [0u8; 4];
        let err = a.read_exact(&mut buf).expect_err("nothing arrives");
        assert!(matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        proxy.set(Fault::Pass);
        a.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        a.read_exact(&mut buf).expect("delivered after healing");
        assert_eq!(&buf, b"held");

        // A cut closes the connection; a new one works.
        proxy.cut();
        let mut rest = Vec::new();
        assert_eq!(a.read_to_end(&mut rest).expect("closed"), 0);
        let mut b = connect(&proxy);
        assert_eq!(roundtrip(&mut b, b"again").expect("new"), b"again");
        assert_eq!(proxy.connections(), 2);
    }

    #[test]
    fn stranded_connections_stay_open_and_silent_while_new_ones_pass() {
        let proxy = FaultProxy::start(echo_server()).expect("proxy");
        let mut a = connect(&proxy);
        assert_eq!(roundtrip(&mut a, b"hello").expect("pass"), b"hello");
        proxy.strand();
        a.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        a.write_all(b"lost")
            .expect("write: the connection looks open");
        let mut buf = [0u8; 4];
        let err = a.read_exact(&mut buf).expect_err("nothing arrives");
        assert!(matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        let mut b = connect(&proxy);
        assert_eq!(roundtrip(&mut b, b"new").expect("new"), b"new");
        assert_eq!(proxy.open_connections(), 2, "the stranded one is held");
    }

    #[test]
    fn refuses_and_answers_http() {
        let proxy = FaultProxy::start(echo_server()).expect("proxy");
        proxy.set(Fault::Refuse);
        let mut a = connect(&proxy);
        let mut buf = [0u8; 1];
        let refused = a.write_all(b"x").and_then(|()| a.read(&mut buf));
        assert!(matches!(refused, Ok(0) | Err(_)), "{refused:?}");

        proxy.set(Fault::Answer(Answer::json(500, "{oops")));
        let mut b = connect(&proxy);
        b.write_all(b"POST /robots HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
            .expect("request");
        let mut answer = String::new();
        b.read_to_string(&mut answer).expect("answer");
        assert!(answer.starts_with("HTTP/1.1 500 "), "{answer}");
        assert!(answer.ends_with("\r\n\r\n{oops"), "{answer}");
        assert_eq!(proxy.answered(), 1);
    }

    #[test]
    fn kubernetes_status_is_the_apiserver_wire_format() {
        let answer = Answer::kubernetes_status(503, "ServiceUnavailable", "try later");
        let status: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["code"], 503);
        assert_eq!(status["reason"], "ServiceUnavailable");
        assert!(answer.headers.iter().any(|(n, _)| n == "Retry-After"));
    }
}
