//! A write deadline for a connection: a client that does not read its
//! answer (a full TCP window) would otherwise hold the connection, its
//! slot and its buffers for ever, and hold up a graceful shutdown.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `inner`, whose writes fail with `TimedOut` once one has waited `limit`
/// without any progress; any progress starts the wait over.
pub struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Set while a write waits.
    waiting: Option<Pin<Box<Sleep>>>,
    timeouts: Counter,
}

impl<S> WriteDeadline<S> {
    /// `timeouts` counts the connections cut off.
    pub fn new(inner: S, limit: Duration, timeouts: Counter) -> Self {
        Self {
            inner,
            limit,
            waiting: None,
            timeouts,
        }
    }

    /// Passes on what the inner write said, unless it has been waiting
    /// for longer than the limit.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.waiting = None;
            return polled;
        }
        let limit = self.limit;
        let waiting = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match waiting.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.waiting = None;
                self.timeouts.inc();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the client read nothing of the answer for {}",
                        humantime::format_duration(limit)
                    ),
                )))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.check(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer that reads nothing: writes stall once the pipe is full,
    /// then fail after the limit; one that reads keeps them going.
    #[tokio::test]
    async fn a_write_without_progress_fails_after_the_limit() {
        let (near, mut far) = tokio::io::duplex(1024);
        let timeouts = Counter::default();
        let mut conn = WriteDeadline::new(near, Duration::from_millis(100), timeouts.clone());
        let started = tokio::time::Instant::now();
        let err = conn.write_all(&[0u8; 64 * 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(timeouts.get(), 1);

        // A slow reader that keeps reading is not cut off, however long
        // the whole write takes.
        let (near, far2) = tokio::io::duplex(1024);
        drop(far);
        far = far2;
        let mut conn = WriteDeadline::new(near, Duration::from_millis(100), timeouts.clone());
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 512];
            let mut total = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match far.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        conn.write_all(&[0u8; 8 * 1024]).await.unwrap();
        drop(conn);
        assert_eq!(reader.await.unwrap(), 8 * 1024);
        assert_eq!(timeouts.get(), 1);
    }
}
