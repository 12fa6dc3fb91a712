//! The HTTP server loop, bounded so that slow or idle clients cannot take it
//! down: a cap on open connections in all and per client address
//! (connections over either are closed at once, before any read), a
//! deadline for a request's headers, and (in [`super::limits`]) for its body
//! and for the whole request. Each connection's requests carry the client
//! address as `ConnectInfo`, for the per-address limits.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::ConnectInfo, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use crate::{config::HttpLimits, pipeline::shutdown::Shutdown};

/// Open connections per client address.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

/// One open connection of a client; gives its slot back when dropped.
struct ClientSlot {
    table: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    fn take(table: &Arc<PerClient>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut map = table.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `stop` fires, then lets open requests
/// finish (at most `grace`).
pub async fn serve(
    app: Router,
    listener: tokio::net::TcpListener,
    limits: HttpLimits,
    mut stop: Shutdown,
    grace: Duration,
) -> std::io::Result<()> {
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let clients = Arc::new(PerClient::default());
    loop {
        let (stream, addr) = tokio::select! {
            _ = stop.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file handles and the like: back off briefly
                    // instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = total.clone().try_acquire_owned() else {
            tracing::debug!(client = %addr.ip(), "connection cap reached; closing");
            continue;
        };
        let Some(slot) = PerClient::take(&clients, addr.ip(), limits.max_connections_per_client)
        else {
            tracing::debug!(client = %addr.ip(), "per-client connection cap reached; closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let header_timeout = limits.header_timeout;
        let stop = stop.clone();
        tokio::spawn(async move {
            connection(stream, addr, app, header_timeout, stop).await;
            drop(slot);
            drop(permit);
        });
    }
    // Wait for open connections to finish (they shut down gracefully).
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(grace, total.acquire_many(all)).await;
    Ok(())
}

async fn connection(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    app: Router,
    header_timeout: Duration,
    mut stop: Shutdown,
) {
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(addr));
            let mut app = app.clone();
            async move {
                // A Router is always ready, so it may be called directly.
                tower_service::Service::call(&mut app, req).await
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, client = %addr.ip(), "connection ended with an error");
            }
        }
        _ = stop.wait() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
