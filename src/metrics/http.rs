//! The metrics endpoint: a minimal HTTP/1.x server answering `GET /metrics`.
//!
//! Only what Prometheus needs: one request per connection, the request head read with a
//! size limit ([`MAX_HEAD`]) and a time limit ([`HEAD_TIMEOUT`]), the body of the
//! answer closed by the connection. Anything else gets a short error answer:
//! `404` for another path, `405` for another method, `400` for what is not HTTP, `431`
//! for a head over the limit.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::metrics;

/// Largest request head read.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics` (or `HEAD`).
    Metrics {
        /// `HEAD`: headers only.
        head_only: bool,
    },
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    BadMethod,
    /// Not an HTTP request line: 400.
    Malformed,
}

/// Reads the request line of a request head (bytes up to the first CRLF or LF).
///
/// ```
/// use splitmx::metrics::http::{parse_request_line, Request};
/// assert_eq!(parse_request_line(b"GET /metrics HTTP/1.1"), Request::Metrics { head_only: false });
/// assert_eq!(parse_request_line(b"GET /metrics?x=1 HTTP/1.0"), Request::Metrics { head_only: false });
/// assert_eq!(parse_request_line(b"GET / HTTP/1.1"), Request::NotFound);
/// assert_eq!(parse_request_line(b"POST /metrics HTTP/1.1"), Request::BadMethod);
/// assert_eq!(parse_request_line(b"\x16\x03\x01"), Request::Malformed);
/// ```
pub fn parse_request_line(line: &[u8]) -> Request {
    let Ok(line) = std::str::from_utf8(line) else {
        return Request::Malformed;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Malformed;
    };
    if !version.starts_with("HTTP/1.")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Request::Malformed;
    }
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => Request::Metrics {
            head_only: method == "HEAD",
        },
        ("GET" | "HEAD", _) => Request::NotFound,
        _ => Request::BadMethod,
    }
}

/// Bind the endpoint; an error names the address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("metrics endpoint {addr}: {e}")))
}

/// Serve scrapes until the task is dropped.
pub async fn serve(listener: TcpListener) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = std::sync::Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            if let Err(e) = answer(stream).await {
                tracing::debug!(client = %peer, error = %e, "metrics: request failed");
            }
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Err(e),
        Err(_) => return respond(&mut stream, "408 Request Timeout", "timed out\n", false).await,
    };
    let request = match head {
        Head::Complete(line) => parse_request_line(&line),
        Head::TooLarge => {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "too large\n",
                false,
            )
            .await;
        }
        Head::Closed => return Ok(()),
    };
    match request {
        Request::Metrics { head_only } => {
            let body = tokio::task::spawn_blocking(|| metrics().encode())
                .await
                .unwrap_or_default();
            let header = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(header.as_bytes()).await?;
            if !head_only {
                stream.write_all(body.as_bytes()).await?;
            }
            stream.shutdown().await
        }
        Request::NotFound => respond(&mut stream, "404 Not Found", "try /metrics\n", false).await,
        Request::BadMethod => {
            respond(&mut stream, "405 Method Not Allowed", "GET only\n", true).await
        }
        Request::Malformed => respond(&mut stream, "400 Bad Request", "not HTTP\n", false).await,
    }
}

enum Head {
    /// The request line (the rest of the head was read and ignored).
    Complete(Vec<u8>),
    TooLarge,
    Closed,
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n").or_else(|| find(&buf, b"\n\n")) {
            let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(end);
            buf.truncate(line_end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() > MAX_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    body: &str,
    allow: bool,
) -> std::io::Result<()> {
    let allow = if allow { "Allow: GET, HEAD\r\n" } else { "" };
    let text = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n{allow}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes()).await?;
    stream.shutdown().await
}
