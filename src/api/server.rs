//! The HTTP server's connection handling: a cap on open connections, a
//! deadline for a request's headers (slowloris, idle sockets), panics in a
//! handler turned into a 500 for that request, and a graceful stop that
//! lets running answers finish.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse, Response};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{ApiError, AppState, router};

/// Serves the API on `listener` until `shutdown` resolves, then waits for
/// the connections still answering (follows and tails end on the daemon's
/// shutdown signal).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(state.clone()), state, shutdown).await
}

/// [`serve`] for any router over `state`'s limits and metrics.
async fn serve_router(
    listener: TcpListener,
    app: Router,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.config.clone();
    let metrics = state.metrics.clone();
    let app = with_panic_guard(app, state);
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS) as u32;
    let slots = Arc::new(Semaphore::new(max as usize));
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let tls = match &limits.tls {
        Some(files) => Some(
            super::tls::acceptor(files)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        ),
        None => None,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Wait for a free slot before accepting: past the cap, new clients
        // wait in the kernel's backlog instead of being turned away, and a
        // slot frees within the header deadline of an idle connection.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or a connection reset before accept:
                    // the listener itself is fine; back off a little.
                    tracing::warn!(%error, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, metrics, stop, tls) = (app.clone(), metrics.clone(), stop.clone(), tls.clone());
        let header_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            metrics.connection_opened();
            match tls {
                None => connection(stream, app, header_timeout, stop).await,
                Some(acceptor) => {
                    // The handshake gets the same deadline as the headers.
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => connection(stream, app, header_timeout, stop).await,
                        Ok(Err(error)) => tracing::debug!(%error, "A TLS handshake failed."),
                        Err(_) => tracing::debug!("A TLS handshake timed out."),
                    }
                }
            }
            metrics.connection_closed();
            drop(slot);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    // Every connection holds a slot: all slots back means all are closed.
    let _ = slots.acquire_many(max).await;
    Ok(())
}

/// Turns a panic in a handler into a 500 for that request alone: logged,
/// counted in `/metrics`, and the daemon goes on.
/// Serves one connection (plain or TLS) until it ends, or gracefully
/// once the server stops.
async fn connection<S>(
    stream: S,
    app: Router,
    header_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = async { drop(stop.wait_for(|s| *s).await) } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

fn with_panic_guard(app: Router, state: AppState) -> Router {
    app.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        move |panic: Box<dyn std::any::Any + Send>| -> Response {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            state.metrics.handler_panicked();
            tracing::error!(panic = %what, "A request handler panicked; the request was answered 500. This is a bug: please report it.");
            ApiError {
                status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                message: "internal error while answering this request; it was logged".into(),
            }
            .into_response()
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_database::{Config, Database};

    /// A handler that panics answers 500; the server, and the next
    /// request, carry on; the panic is counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_handler_is_a_500_for_that_request_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path(), Config::default()).unwrap().0);
        let state = AppState::new(db);
        let app = Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    if std::hint::black_box(true) {
                        panic!("a bug");
                    }
                    "never"
                }),
            )
            .route("/fine", axum::routing::get(|| async { "fine" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = state.shutdown.clone();
        let server = tokio::spawn(serve_router(listener, app, state.clone(), async move {
            shutdown.wait().await
        }));
        let client = reqwest::Client::new();
        for _ in 0..3 {
            let boom = client.get(format!("{base}/boom")).send().await.unwrap();
            assert_eq!(boom.status().as_u16(), 500);
            let fine = client.get(format!("{base}/fine")).send().await.unwrap();
            assert_eq!(fine.text().await.unwrap(), "fine");
        }
        let metrics = state.metrics.encode();
        assert!(
            metrics.contains("monitoring_rs_http_handler_panics_total 3"),
            "{metrics}"
        );
        state.shutdown.trigger();
        server.await.unwrap().unwrap();
    }
}
