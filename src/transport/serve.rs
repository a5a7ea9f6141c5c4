//! [`serve`]: the accept loop of botpipe's HTTP listeners, in place of `axum::serve`, which has
//! no read timeouts and no connection bound (a handful of slowloris clients could hold a
//! listener's resources for as long as they liked).
//!
//! Per listener ([`ListenerLimits`]):
//! - at most `max_connections` connections are served at once; the loop stops accepting at the
//!   bound, so further clients wait in the kernel's accept queue until one closes;
//! - a connection must finish its TLS handshake, and each request its headers, within
//!   `header_timeout` (hyper's header read timeout, which also runs while a kept-alive
//!   connection idles between requests), or it is closed;
//! - a request body must arrive whole within `body_timeout` of its headers, or reading it fails
//!   (the handler answers with an error) and the connection is closed.
//!
//! HTTP/1.1 only, with or without TLS. Shutdown: when the token is cancelled the loop stops
//! accepting, every connection finishes the request in flight and closes, and [`serve`]
//! returns once all have.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::ListenerLimits;

/// Pause after an accept error that is not about one connection (e.g. out of file
/// descriptors), so the loop does not spin while the cause lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(250);

/// Serves `router` on `listener` until `shutdown` is cancelled, with TLS when `tls` is given.
///
/// # Errors
/// None today: per-connection failures are logged at debug and end only that connection; the
/// `Result` keeps the signature of the `axum::serve` it replaces.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tls = tls.map(TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        // Losing branch: a permit not yet granted is simply not taken.
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                // Never closed; stop serving rather than spin if it were.
                Err(_) => break,
            },
        };
        // Losing branch: no connection is accepted, the permit is dropped.
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "Accepting a connection failed; pausing briefly.");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        // Latency over throughput for small JSON answers; a failure only costs latency.
        let _nodelay = tcp.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(TokioIo::new(tcp), router, limits, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await
                    {
                        Ok(Ok(stream)) => {
                            serve_connection(TokioIo::new(stream), router, limits, shutdown)
                                .await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed.");
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake not finished within the header timeout; closing.");
                        }
                    }
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors of one connection (it was reset before it was accepted), not of the listener.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

async fn serve_connection<I>(
    io: I,
    router: Router,
    limits: ListenerLimits,
    shutdown: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let body_timeout = limits.body_timeout;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let req = req.map(|body| Body::new(DeadlineBody::new(body, body_timeout)));
        router.clone().oneshot(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    // Losing branch on shutdown: the connection is told to finish its request and close, and
    // is then awaited to the end.
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "HTTP connection ended with an error.");
    }
}

/// A request body read past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?} (body_timeout)")]
pub struct BodyTimeout(pub Duration);

pin_project! {
    /// A request body that fails once `timeout` has passed since the headers were read, however
    /// the data trickles in.
    struct DeadlineBody {
        #[pin]
        inner: Incoming,
        #[pin]
        deadline: tokio::time::Sleep,
        timeout: Duration,
    }
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: tokio::time::sleep(timeout),
            timeout,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        match this.deadline.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(*this.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
