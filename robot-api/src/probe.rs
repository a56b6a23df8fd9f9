//! A health probe the binaries run against themselves.
//!
//! ECS runs container health checks as a command inside the container, and
//! the images have no shell or curl (distroless): so each binary can probe
//! its own `/healthz` (`robot-server healthcheck`,
//! `robot-controller healthcheck`). Plain HTTP/1.0 over loopback, std only.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Asks `GET /healthz` of the server listening on `listen` (an unspecified
/// address such as `0.0.0.0` is probed on loopback). `Ok` on a 200.
pub fn healthz(listen: SocketAddr, timeout: Duration) -> Result<(), String> {
    let addr = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, listen.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, listen.port()))
        }
        _ => listen,
    };
    let fail = |e: std::io::Error| format!("GET http://{addr}/healthz: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
    // One buffer, one write: `write!` on the stream would send the request
    // in pieces, and a server that answers after the first piece and closes
    // resets the connection over the rest, losing its answer.
    let request = format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(fail)?;
    // The status line is all we need; stop reading once it is in.
    let mut head = Vec::new();
    let mut chunk = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if head.is_empty() => return Err(fail(e)),
            Err(_) => break,
        }
    }
    let status_line = String::from_utf8_lossy(&head);
    let status = crate::client::cut(status_line.split_whitespace().nth(1).unwrap_or("no answer"));
    if status == "200" {
        Ok(())
    } else {
        Err(format!("GET http://{addr}/healthz: {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(answer: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // Read the whole head before answering, as a real server does:
            // closing with unread bytes would reset the connection.
            let mut head = Vec::new();
            let mut buf = [0u8; 512];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(answer.as_bytes());
        });
        addr
    }

    #[test]
    fn a_200_is_healthy_anything_else_is_not() {
        let ok = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
        assert_eq!(healthz(ok, Duration::from_secs(2)), Ok(()));
        let sick = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let err = healthz(sick, Duration::from_secs(2)).unwrap_err();
        assert!(err.ends_with(": 503"), "{err}");
    }

    #[test]
    fn a_long_status_is_quoted_cut() {
        let odd = serve_once(Box::leak(
            format!("HTTP/1.1 {}\r\n\r\n", "9".repeat(3000)).into_boxed_str(),
        ));
        let err = healthz(odd, Duration::from_secs(2)).unwrap_err();
        assert!(err.len() < 700, "{} bytes: {err:.700}", err.len());
        assert!(err.ends_with("(cut: 3000 bytes in all)"), "{err:.700}");
    }

    #[test]
    fn nothing_listening_is_an_error_and_wildcards_mean_loopback() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = healthz(
            SocketAddr::from(([0, 0, 0, 0], port)),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            err.starts_with(&format!("GET http://127.0.0.1:{port}/healthz: ")),
            "{err}"
        );
    }
}
