//! A TCP proxy that can be cut, put between a node and the edge to play a network partition.
//!
//! While the proxy is cut nothing crosses it, and nothing is refused either: connections that
//! were open stall, and new ones are accepted and left silent, as when packets are dropped on
//! the way. When it is restored those stalled connections are closed, and new ones
//! reach the edge again. The sender must notice the partition by its own timeouts.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A listening proxy forwarding to `upstream`; dropped, it stops accepting.
pub struct CutProxy {
    pub port: u16,
    up: Arc<watch::Sender<bool>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(watch::Sender::new(true));
        let state = up.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(forward(inbound, upstream, state.subscribe()));
            }
        });
        Ok(CutProxy { port, up, accept })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts the proxy: from now on nothing crosses it.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Restores the proxy: stalled connections close, new ones go through.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Relays `inbound` to `upstream` while the proxy is up. A cut parks the connection until
/// it is restored, then closes it: what was in flight is lost, as in a partition.
async fn forward(mut inbound: TcpStream, upstream: SocketAddr, mut up: watch::Receiver<bool>) {
    if !*up.borrow_and_update() {
        until(&mut up, true).await;
        return;
    }
    let relay = async {
        let mut outbound = TcpStream::connect(upstream).await?;
        copy_bidirectional(&mut inbound, &mut outbound).await
    };
    tokio::select! {
        _ = relay => {}
        () = until(&mut up, false) => until(&mut up, true).await,
    }
}

/// Waits until the proxy is `state` (up or cut).
async fn until(up: &mut watch::Receiver<bool>, state: bool) {
    // An error means the proxy is gone, and so is any reason to wait.
    let _ = up.wait_for(|now| *now == state).await;
}
