//! The HTTP side of `--metrics-listen`: hyper's HTTP/1 server on a thread
//! of its own (`tcptop-metrics`) with its own single-threaded runtime.
//!
//! * The listener is bound at start-up (before the data source opens and
//!   privileges are dropped: a port below 1024 works when tcptop starts as
//!   root); the thread starts after the drop, with the reduced credentials.
//! * `GET` or `HEAD /metrics` (any query string) answers the latest
//!   snapshot's values; any other path is 404, another method 405.
//! * The thread runs at a lower priority (nice +10) than the collecting
//!   one: a storm of scrapes slows the scrapes, not the snapshots.
//! * What a client can hold: at most [`MAX_CONNECTIONS`] connections at
//!   once (more wait in the listen backlog), [`HEADER_TIMEOUT`] to send a
//!   request's headers (at most [`MAX_REQUEST`] bytes of them), and
//!   [`KEEP_ALIVE`] of keep-alive, after which the connection is closed
//!   once its response is out, or [`GRACE`] later regardless (a client
//!   that stopped reading). The collecting loop shares nothing with these
//!   but an `Arc` it swaps: no client can delay a snapshot.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use super::{Shared, negotiate};

pub const MAX_CONNECTIONS: usize = 128;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const KEEP_ALIVE: Duration = Duration::from_secs(60);
pub const GRACE: Duration = Duration::from_secs(15);
/// hyper's read buffer, which bounds a request's headers (its minimum is 8 KiB).
pub const MAX_REQUEST: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen for metrics on {addr}: {source}{hint}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("cannot start the metrics server: {0}")]
    Start(std::io::Error),
}

/// Binds `addr` (before privileges are dropped).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| {
        let hint = match source.kind() {
            std::io::ErrorKind::PermissionDenied => {
                " (ports below 1024 need root or CAP_NET_BIND_SERVICE: choose another port)"
            }
            std::io::ErrorKind::AddrInUse => {
                " (another program listens there: choose another port)"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                " (no interface of this machine has that address)"
            }
            _ => "",
        };
        ServerError::Bind { addr, source, hint }
    })?;
    listener.set_nonblocking(true).map_err(ServerError::Start)?;
    Ok(listener)
}

/// Serves `shared` on `listener` from a new thread, until the process
/// exits.
pub fn spawn(listener: std::net::TcpListener, shared: Arc<Shared>) -> Result<(), ServerError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(ServerError::Start)?;
    let listener = {
        let _in_runtime = rt.enter();
        tokio::net::TcpListener::from_std(listener).map_err(ServerError::Start)?
    };
    std::thread::Builder::new()
        .name("tcptop-metrics".into())
        .spawn(move || {
            crate::platform::lower_thread_priority(NICE);
            rt.block_on(serve(listener, shared))
        })
        .map_err(ServerError::Start)?;
    Ok(())
}

/// Niceness of the server thread: under a storm of scrapes the CPU goes to
/// the collecting thread first.
pub const NICE: i32 = 10;

async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors or memory, an aborted connection: wait a
            // little instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            connection(stream, shared).await;
            drop(slot);
        });
    }
}

async fn connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let service = service_fn(move |req: Request<Incoming>| {
        let res = respond(&shared, &req);
        async move { Ok::<_, Infallible>(res) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = tokio::time::sleep(KEEP_ALIVE) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, conn).await;
        }
    }
}

/// The answer to one request.
pub fn respond<B>(shared: &Shared, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: tcptop serves /metrics only\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: GET /metrics\n",
        );
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    let accept = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let format = negotiate((!accept.is_empty()).then_some(accept.as_str()));
    let mut res = Response::new(Full::new(shared.body(format)));
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    res
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
