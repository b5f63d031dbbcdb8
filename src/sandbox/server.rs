//! The accept loop. Each connection is served by hyper's HTTP/1 server (keep-alive on) with a
//! kill switch in every request's extensions: a handler that triggers it makes the connection
//! task drop the socket at once, so the client sees the connection close with no response bytes.
//! That is how the "drop before store" and "store then drop" faults are produced.
//!
//! Imports nothing of the sandbox: it serves whatever router it is given.

use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long open connections may take to finish their current request after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Lets a handler close its own connection without answering.
#[derive(Clone)]
pub(crate) struct ConnectionKill(CancellationToken);

impl ConnectionKill {
    pub(crate) fn trigger(&self) {
        self.0.cancel();
    }
}

/// Accepts connections until `shutdown` fires, then lets every connection finish (gracefully,
/// within `SHUTDOWN_GRACE`) and fires `stopped`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    stopped: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, router.clone(), shutdown.clone()));
                }
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "sandbox accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    stopped.cancel();
}

async fn serve_connection(stream: TcpStream, router: Router, shutdown: CancellationToken) {
    // Small request/response pairs: waiting for Nagle would only add latency.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let kill = ConnectionKill(CancellationToken::new());
    let request_kill = kill.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(request_kill.clone());
        router.clone().oneshot(request)
    });
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        biased;
        () = kill.0.cancelled() => return,
        result = connection.as_mut() => {
            log_connection_end(result);
            return;
        }
        () = shutdown.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        biased;
        () = kill.0.cancelled() => {}
        result = connection.as_mut() => log_connection_end(result),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {}
    }
}

fn log_connection_end(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        // Clients hanging up mid-request are routine for a test server.
        tracing::debug!(%error, "sandbox connection ended with an error");
    }
}
