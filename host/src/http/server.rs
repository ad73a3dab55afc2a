//! The hyper server: one task per connection (`http1::Builder::serve_connection`), admitted
//! by `conns` (a cap in all, a cap per client address, idle connections reaped near the
//! limit), and a graceful shutdown that lets in-flight requests finish. The service itself is
//! [`App`], which knows nothing of sockets.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::app::App;
use super::conns::{ConnectionLimits, Conns};

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish (up to `grace`), and returns. Connections are admitted by `Conns`: a
/// client over its share, or a server full of busy connections, gets its connection closed at
/// once rather than left waiting in the backlog.
pub async fn serve(
    listener: TcpListener,
    app: App,
    limits: ConnectionLimits,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let conns = Conns::new(limits);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let admitted = match conns.admit(peer.ip()) {
            Ok(a) => a,
            // Closed at once: the client learns now, instead of waiting in a backlog.
            Err(_refused) => continue,
        };
        let local = stream
            .local_addr()
            .unwrap_or_else(|_| listener.local_addr().expect("bound"));
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let admitted = Arc::new(admitted);
        let on_conn = admitted.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            let busy = on_conn.request();
            async move {
                let resp = app.serve_from(req, Some(local)).await;
                drop(busy);
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let mut closing = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    // Reaped while idle, or the server is shutting down: finish what is being
                    // served, then close.
                    _ = admitted.conn().close_requested(), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
            drop(admitted);
        });
    }
    drop(listener);
    conns.close_all();
    if !conns.drained(grace).await {
        tracing::warn!("some connections were still busy after the grace period");
    }
}
