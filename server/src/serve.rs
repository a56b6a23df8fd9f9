//! The listener: at most `max_connections` HTTP/1.1 connections at once
//! (more wait in the listen backlog, as mini-redis does it), a header read
//! timeout, a write deadline (a client that reads nothing of its answer
//! for the request timeout is cut off), and a graceful shutdown that
//! finishes in-flight requests.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::deadline::WriteDeadline;
use crate::{App, Auth, Config, Error, auth, routes};

/// A background task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Cloud Run gives a container 10 s after SIGTERM; leave a margin to exit.
const DRAIN_LIMIT: Duration = Duration::from_secs(9);

/// Serves `config` on `listener` until `shutdown` completes, then stops
/// accepting, finishes the requests in flight (for at most 9 s) and
/// returns. Fails at once when the configuration cannot work (a corrupt
/// state file, say).
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let app = App::new(&config)?;
    if config.max_connections == 0 {
        return Err(Error::ZeroMaxConnections);
    }
    let address = listener.local_addr().map_err(Error::Listener)?;
    tracing::info!(
        %address,
        state_file = config.state_file.as_ref().map(|p| p.display().to_string()),
        auth = match &config.auth {
            Auth::None => "none",
            Auth::Token(_) => "token",
            Auth::TokenFile(_) => "token file",
        },
        robots = app.store().len(),
        "listening"
    );

    // Stopped when serving ends, however it ends.
    let _watch = match &config.auth {
        Auth::TokenFile(path) => Some(AbortOnDrop(tokio::spawn(auth::watch_file(
            app.clone(),
            path.clone(),
            config.token_poll_interval,
        )))),
        Auth::None | Auth::Token(_) => None,
    };

    let router = routes::router(app.clone());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.request_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    // A connection holds a slot until it closes (an idle keep-alive one
    // for at most the request timeout: the header read timeout covers the
    // wait for the next request). With none free, nothing is accepted: new
    // connections wait in the kernel's listen backlog.
    let max = config.max_connections.min(Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    app.metrics().set_max_connections(max);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // Never closed.
            },
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead
                    // of spinning, and keep serving the open connections.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are small: send them at once rather than wait for more.
        let _ = stream.set_nodelay(true);
        let stream = WriteDeadline::new(
            stream,
            config.request_timeout,
            app.metrics().write_timeouts.clone(),
        );
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let connection = graceful.watch(connection);
        let open = app.metrics().connection_opened();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop((slot, open));
        });
    }

    drop(listener);
    app.set_draining();
    tracing::info!(
        connections = graceful.count(),
        "shutting down: no new connections; finishing requests in flight"
    );
    match tokio::time::timeout(DRAIN_LIMIT, graceful.shutdown()).await {
        Ok(()) => tracing::info!("shut down"),
        Err(_) => tracing::warn!(
            limit_s = DRAIN_LIMIT.as_secs(),
            "shut down with requests still in flight after the drain limit"
        ),
    }
    Ok(())
}
