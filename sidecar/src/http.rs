//! A minimal HTTP/1.1 server for GET /healthz and GET /metrics: two fixed routes do not need
//! an HTTP framework. Each connection gets one response and is closed.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::metrics::Metrics;

/// Status, content type and body for a request line.
pub fn respond(request_line: &str, metrics: &Metrics) -> (u16, &'static str, String) {
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return (405, "text/plain", "method not allowed\n".into());
    }
    match path {
        "/healthz" => {
            let (ok, body) = metrics.health();
            (if ok { 200 } else { 503 }, "application/json", body + "\n")
        }
        "/metrics" => (200, "text/plain; version=0.0.4", metrics.render()),
        _ => (
            404,
            "text/plain",
            "not found: try /healthz or /metrics\n".into(),
        ),
    }
}

async fn handle(mut stream: TcpStream, metrics: Arc<Metrics>) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // Read the request head (bounded in size and time; no request body is expected).
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let head = String::from_utf8_lossy(&buf);
    let line = head.lines().next().unwrap_or("");
    let (status, ctype, body) = respond(line, &metrics);
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let include_body = !line.starts_with("HEAD ");
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if include_body { body.as_str() } else { "" }
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving /healthz and /metrics");
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, metrics.clone()));
                }
                Err(e) => debug!(error = %e, "accept failed"),
            },
            _ = shutdown.changed() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = Metrics::default();
        assert_eq!(respond("GET /healthz HTTP/1.1", &m).0, 200);
        let (s, ct, body) = respond("GET /metrics HTTP/1.1", &m);
        assert_eq!((s, ct), (200, "text/plain; version=0.0.4"));
        assert!(body.contains("enkf_sidecar_runs_total"));
        assert_eq!(respond("GET /nope HTTP/1.1", &m).0, 404);
        assert_eq!(respond("POST /metrics HTTP/1.1", &m).0, 405);
        m.pass(Some("down".into()));
        assert_eq!(respond("GET /healthz?x=1 HTTP/1.1", &m).0, 503);
    }
}
