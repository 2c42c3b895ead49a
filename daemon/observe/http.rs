//! The metrics HTTP server (tiny_http, one thread): `GET /` (the read-only
//! status page, HTML, see [`super::page`]), `GET /metrics` (Prometheus
//! text 0.0.4), `GET /healthz` (200 `ok` while the process lives), `GET
//! /readyz` (200 `ready`, or 503 with one line per missing condition); 404 for
//! any other path, 405 for a method other than GET or HEAD. Stopped and joined
//! when the [`HttpServer`] is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use tiny_http::{Header, Request, Response, Server};

use super::{ObserveError, Observer};

const TEXT_METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const TEXT_HTML: &str = "text/html; charset=utf-8";

/// The running metrics server; dropping it stops it.
pub struct HttpServer {
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl HttpServer {
    /// The address it listens on (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("metrics server thread panicked");
        }
    }
}

/// Starts the metrics server on `listen` (a thread named `edgeseg-http`).
pub fn serve_http(listen: SocketAddr, obs: Observer) -> Result<HttpServer, ObserveError> {
    let server = Server::http(listen).map_err(|e| ObserveError::HttpBind { addr: listen, reason: e.to_string() })?;
    let addr = server.server_addr().to_ip().unwrap_or(listen);
    let server = Arc::new(server);
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let server = Arc::clone(&server);
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("edgeseg-http".to_string())
            .spawn(move || serve(&server, &stop, &obs))
            .map_err(|source| ObserveError::Thread { what: "metrics server", source })?
    };
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    Ok(HttpServer { server, stop, thread: Some(thread), addr })
}

fn serve(server: &Server, stop: &AtomicBool, obs: &Observer) {
    loop {
        match server.recv() {
            Ok(rq) => handle(rq, obs),
            Err(e) => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                tracing::warn!(error = %e, "metrics server accept failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn text(status: u16, content_type: &str, body: String) -> Response<std::io::Cursor<Vec<u8>>> {
    let mut r = Response::from_string(body).with_status_code(status);
    if let Some(h) = header("Content-Type", content_type) {
        r.add_header(h);
    }
    r
}

/// The response to one request: status, content type, body.
pub fn respond(method: &str, url: &str, obs: &Observer) -> (u16, &'static str, String) {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let known = matches!(path, "/" | "/metrics" | "/healthz" | "/readyz");
    if !known {
        return (404, TEXT_PLAIN, "not found: try /, /metrics, /healthz or /readyz\n".to_string());
    }
    if method != "GET" && method != "HEAD" {
        return (405, TEXT_PLAIN, "method not allowed: GET only\n".to_string());
    }
    match path {
        "/" => (200, TEXT_HTML, obs.render_page()),
        "/metrics" => (200, TEXT_METRICS, obs.render()),
        "/healthz" => (200, TEXT_PLAIN, "ok\n".to_string()),
        _ => {
            let (ready, state) = obs.readiness();
            let missing = ready.missing(state);
            if missing.is_empty() {
                (200, TEXT_PLAIN, "ready\n".to_string())
            } else {
                let mut body = String::from("not ready:\n");
                for m in missing {
                    body.push_str(m);
                    body.push('\n');
                }
                (503, TEXT_PLAIN, body)
            }
        }
    }
}

fn handle(rq: Request, obs: &Observer) {
    let (status, ctype, body) = respond(rq.method().as_str(), rq.url(), obs);
    let mut resp = text(status, ctype, body);
    if ctype == TEXT_HTML {
        // The page loads nothing and runs nothing: say so to the browser.
        for (name, value) in [
            (
                "Content-Security-Policy",
                "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
            ),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Cache-Control", "no-store"),
        ] {
            if let Some(h) = header(name, value) {
                resp.add_header(h);
            }
        }
    }
    if status == 405
        && let Some(h) = header("Allow", "GET, HEAD")
    {
        resp.add_header(h);
    }
    // tiny_http leaves the body out of a HEAD response itself.
    if let Err(e) = rq.respond(resp) {
        tracing::debug!(error = %e, "metrics response not sent: {e}");
    }
}
