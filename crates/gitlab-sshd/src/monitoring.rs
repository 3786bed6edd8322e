//! The monitoring HTTP server on `web_listen` (docs/gitlab-sshd.md, "Probes and metrics"):
//! readiness (`readiness_probe`, 200 when accepting SSH connections, else 503, empty body),
//! liveness (`liveness_probe`, always 200) and `/metrics` (Prometheus text format).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::METRICS;
use crate::server::{READY, Shared};

fn answer(shared: &Shared, path: &str) -> Response<Full<Bytes>> {
    let sshd = &shared.config.sshd;
    let (status, body, text) = if path == sshd.readiness_probe {
        let ok = shared.status.load(Ordering::SeqCst) == READY;
        let s = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (s, String::new(), false)
    } else if path == sshd.liveness_probe {
        (StatusCode::OK, String::new(), false)
    } else if path == "/metrics" {
        (
            StatusCode::OK,
            METRICS.render(
                gitlab_shell::startup::VERSION,
                gitlab_shell::startup::BUILD_TIME,
            ),
            true,
        )
    } else {
        (StatusCode::NOT_FOUND, "404 page not found\n".into(), false)
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if text {
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
    }
    r
}

/// Serves monitoring requests on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "monitoring: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = answer(&shared, req.uri().path());
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
