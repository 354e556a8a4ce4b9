//! The receiver's `--metrics-listen` endpoint: `GET /metrics` (Prometheus text format) and
//! `GET /health` (200 `ok` while streaming, 503 and the reason otherwise), served by hyper
//! (already built for the S3 client) on its own tasks.
//!
//! It never slows the replication loop: a request reads atomics and copies the shared
//! positions; one request per connection, headers within 5 s, a whole exchange within 10 s,
//! at most [`MAX_CONNECTIONS`] at once (more are closed at once). The same task keeps the
//! upload-lag clock ([`ReceiveMetrics::observe`]) fed from the positions channel.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::exit::{Failure, FailureKind};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::metrics::ReceiveMetrics;
use super::state::{Positions, StopReason};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// Binds `addr`; a failure is a configuration error (exit 7) naming the option.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Failure> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::msg(FailureKind::Config, format!("--metrics-listen {addr}: cannot listen: {e}")))?;
    let local = listener.local_addr().map_err(|e| Failure::msg(FailureKind::Config, e))?;
    tracing::info!(addr = %local, "serving /metrics and /health");
    eprintln!("wal-archiver receive: serving http://{local}/metrics and http://{local}/health");
    Ok(listener)
}

/// What a request reads.
#[derive(Debug, Clone)]
struct Sources {
    metrics: Arc<ReceiveMetrics>,
    positions: watch::Receiver<Positions>,
    stop: watch::Receiver<StopReason>,
}

/// The running endpoint; dropping it stops it (and its connections).
#[derive(Debug)]
pub struct MetricsServer {
    task: JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `listener` until the returned handle is dropped.
pub fn serve(
    listener: TcpListener,
    metrics: Arc<ReceiveMetrics>,
    positions: watch::Receiver<Positions>,
    stop: watch::Receiver<StopReason>,
) -> MetricsServer {
    let sources = Sources { metrics, positions, stop };
    MetricsServer { task: tokio::spawn(run(listener, sources)) }
}

async fn run(listener: TcpListener, sources: Sources) {
    let mut changes = sources.positions.clone();
    let mut positions_open = true;
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        tokio::select! {
            r = changes.changed(), if positions_open => match r {
                Ok(()) => sources.metrics.observe(*changes.borrow_and_update(), Instant::now()),
                Err(_) => positions_open = false,
            },
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if connections.len() < MAX_CONNECTIONS => {
                    let s = sources.clone();
                    connections.spawn(async move {
                        let conn = hyper::server::conn::http1::Builder::new()
                            .keep_alive(false)
                            .timer(TokioTimer::new())
                            .header_read_timeout(Duration::from_secs(5))
                            .serve_connection(
                                TokioIo::new(stream),
                                hyper::service::service_fn(move |req| {
                                    let s = s.clone();
                                    async move { Ok::<_, Infallible>(respond(&req, &s)) }
                                }),
                            );
                        let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
                    });
                }
                Ok(_) => tracing::warn!("metrics endpoint: too many connections, closing one"),
                Err(e) => {
                    // E.g. out of file descriptors: don't spin.
                    tracing::warn!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn respond(req: &Request<Incoming>, s: &Sources) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET and HEAD\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let p = *s.positions.borrow();
            text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", s.metrics.render(p, Instant::now()))
        }
        "/health" => match s.metrics.health(*s.stop.borrow()) {
            Ok(()) => text(StatusCode::OK, PLAIN, "ok\n".into()),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{reason}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, PLAIN, "not found: see /metrics and /health\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        // A reset after an error response is fine: what was read is the answer.
        let _ = c.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn serves_metrics_health_and_refuses_the_rest() {
        let metrics = Arc::new(ReceiveMetrics::default());
        let (ptx, prx) = watch::channel(Positions::default());
        let (stx, srx) = watch::channel(StopReason::Running);
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = serve(listener, metrics.clone(), prx, srx);

        let r = get(addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.ends_with("not streaming yet: connecting\n"), "{r}");
        metrics.streaming(1);
        let r = get(addr, "GET /health HTTP/1.0\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.ends_with("\r\n\r\nok\n"), "{r}");

        ptx.send_modify(|p| p.synced = common::lsn::Lsn(123_456));
        let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("content-type: text/plain; version=0.0.4"), "{r}");
        assert!(r.contains("\npitr_receive_flushed_lsn 123456\n"), "{r}");

        let r = get(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        let r = get(addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        // Garbage gets an error response or a closed connection, and the server goes on.
        let _ = get(addr, "\x00\x01 nonsense\r\n\r\n").await;
        stx.send_replace(StopReason::Signal);
        let r = get(addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503") && r.contains("stopping"), "{r}");
    }

    #[tokio::test]
    async fn an_address_in_use_is_a_configuration_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = bind(taken.local_addr().unwrap()).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Config);
        assert!(e.to_string().contains("--metrics-listen"), "{e}");
    }
}
