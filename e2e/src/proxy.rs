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

/// A TCP proxy that cuts one answer midway: on the first connection that asks for a path
/// holding `marker`, the answer is closed after `after` bytes, as a dropped link would.
/// Everything else is relayed as it is. It also keeps the `Range` headers clients sent, so
/// a test can tell a resumed fetch from a restarted one.
pub struct TruncateOnce {
    pub port: u16,
    state: Arc<Truncation>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Truncation {
    marker: String,
    /// Connections that asked for `marker` and may be cut.
    armed: std::sync::Mutex<std::collections::HashSet<u64>>,
    cut: std::sync::atomic::AtomicBool,
    ranges: std::sync::Mutex<Vec<String>>,
}

impl TruncateOnce {
    pub async fn start(
        upstream: SocketAddr,
        marker: &str,
        after: u64,
    ) -> std::io::Result<TruncateOnce> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Truncation {
            marker: marker.to_owned(),
            ..Truncation::default()
        });
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            let mut connection = 0;
            while let Ok((inbound, _)) = listener.accept().await {
                connection += 1;
                tokio::spawn(truncate(
                    inbound,
                    upstream,
                    connection,
                    after,
                    shared.clone(),
                ));
            }
        });
        Ok(TruncateOnce {
            port,
            state,
            accept,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether the one cut happened.
    pub fn cut_done(&self) -> bool {
        self.state.cut.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The `Range` headers clients sent, as written.
    pub fn ranges(&self) -> Vec<String> {
        self.state.ranges.lock().expect("ranges lock").clone()
    }
}

impl Drop for TruncateOnce {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn truncate(
    inbound: TcpStream,
    upstream: SocketAddr,
    connection: u64,
    after: u64,
    state: Arc<Truncation>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut up_read, mut up_write) = outbound.into_split();
    let requests = {
        let state = state.clone();
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = client_read.read(&mut buf).await {
                if n == 0 || up_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                for line in text.lines() {
                    if line.starts_with("range:") {
                        state
                            .ranges
                            .lock()
                            .expect("ranges lock")
                            .push(line.trim().to_owned());
                    }
                    if line.starts_with("get ") && line.contains(&state.marker) {
                        state.armed.lock().expect("armed lock").insert(connection);
                    }
                }
            }
        }
    };
    let answers = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        while let Ok(n) = up_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let armed = state
                .armed
                .lock()
                .expect("armed lock")
                .contains(&connection);
            if !armed {
                if client_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                continue;
            }
            let first_over = sent + n as u64 > after
                && state
                    .cut
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
            if first_over {
                let keep = after.saturating_sub(sent) as usize;
                let _ = client_write.write_all(&buf[..keep]).await;
                return;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            sent += n as u64;
        }
    };
    // the first side to finish ends the connection (both halves drop)
    tokio::select! {
        () = requests => {}
        () = answers => {}
    }
}
