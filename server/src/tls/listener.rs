//! Serving the router over TLS: each connection's handshake runs on a task of its own (a slow
//! client holds up nobody else), then HTTP/1.1 or HTTP/2 (ALPN) is served on it with the
//! connection's [`ClientTls`] in every request's extensions, as axum's `ConnectInfo`.
//!
//! HTTP/1.1 header names go out in Title-Case, and `WWW-Authenticate` as RFC 9110 spells it:
//! HTTP says names are case-insensitive, but deployed EST clients (Cisco's libest among them)
//! compare `Content-Type` and `WWW-Authenticate` byte for byte.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// A client that has not finished its handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may finish their requests after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// What the TLS layer knows of a connection's client: its certificate chain (leaf first) when
/// it sent one that verified, possibly expired (see [`super::verifier`]).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub chain: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// Serves `router` on `tcp` through `acceptor` until `shutdown` turns true, then lets open
/// connections finish (at most [`DRAIN_TIMEOUT`]).
pub async fn serve(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().title_case_headers(true);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "TLS listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = async { shutdown.wait_for(|stop| *stop).await.map(|_| ()) } => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let info = ClientTls {
                chain: tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .filter(|c| !c.is_empty())
                    .map(|c| Arc::new(c.iter().map(|d| d.clone().into_owned()).collect())),
            };
            let service = router.map_request(move |mut req: axum::extract::Request| {
                req.extensions_mut().insert(ConnectInfo(info.clone()));
                req
            });
            let service = TowerToHyperService::new(service.map_request(
                |req: hyper::Request<hyper::body::Incoming>| req.map(axum::body::Body::new),
            ));
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(HeaderSpelling(tls)), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "TLS connection ended with an error");
            }
        });
    }
    drop(tcp);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("TLS connections still open after the drain timeout");
    }
}

/// hyper's Title-Case writes `Www-Authenticate`; this writes `WWW-Authenticate` instead (the
/// same length, so byte counts are unchanged). Vectored writes are declined so that every
/// header block passes through [`AsyncWrite::poll_write`].
struct HeaderSpelling<T>(T);

const TITLE_CASED: &[u8] = b"\r\nWww-Authenticate:";
const SPELLED: &[u8] = b"\r\nWWW-Authenticate:";

impl<T: AsyncRead + Unpin> AsyncRead for HeaderSpelling<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeaderSpelling<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !buf.windows(TITLE_CASED.len()).any(|w| w == TITLE_CASED) {
            return Pin::new(&mut self.0).poll_write(cx, buf);
        }
        let mut fixed = buf.to_vec();
        let mut i = 0;
        while i + TITLE_CASED.len() <= fixed.len() {
            if &fixed[i..i + TITLE_CASED.len()] == TITLE_CASED {
                fixed[i..i + SPELLED.len()].copy_from_slice(SPELLED);
                i += SPELLED.len();
            } else {
                i += 1;
            }
        }
        Pin::new(&mut self.0).poll_write(cx, &fixed)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}
