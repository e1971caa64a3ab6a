//! Joining a pool at the edge (`docs/protocol.md`, 14): one outbound WebSocket to
//! `{edge}/v1/pools/{pool}/connect`, so a node behind NAT can take work. Over it the node
//! declares its capacity (`ready`), heartbeats what it runs, accepts leases and runs them
//! through [`Jobs`] under their attempt, obeys `cancel` and `revoked`, and gives its leases
//! back when it drains.
//!
//! - [`leases`]: what the node holds and runs, and what each message asks of it; sans IO.
//! - `socket`: the URL, the handshake, and what each close code means.
//! - `link`: the loop that owns the socket, reconnecting with backoff (full jitter).
//! - `drain`: shutdown: `ready {slots: 0}`, time to finish, the rest released.

mod drain;
pub mod leases;
mod link;
mod socket;

use std::sync::Arc;
use std::time::Duration;

use stagecast_shared::ids::PoolName;
use stagecast_shared::token::MintError;
use tokio_util::sync::CancellationToken;

use crate::jobs::Jobs;
use crate::publish::EdgeClient;

/// How the node takes part in its pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub pool: PoolName,
    /// `ready.slots`: leases the node runs at once (at most 256, the contract's bound).
    pub slots: u32,
    /// How long running leases may take to finish once the node drains.
    pub drain_timeout: Duration,
}

/// Why the pool link ended before a drain finished it.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// 4409: don't fight over the node id; the newer process holds its leases.
    #[error(
        "another process joined pool {pool} as node {node_id} (close 4409); this one stops joining"
    )]
    Replaced { pool: PoolName, node_id: String },
    /// 4001 twice, 4003, 4400, or another 4xx at the handshake.
    #[error("the edge refuses node {node_id} in pool {pool}: {reason}")]
    Refused {
        pool: PoolName,
        node_id: String,
        reason: String,
    },
    #[error("cannot sign the pool token: {0}")]
    Token(#[from] MintError),
}

/// A node's membership of one pool.
pub struct PoolLink {
    config: PoolConfig,
    jobs: Arc<Jobs>,
    edge: Arc<EdgeClient>,
}

impl PoolLink {
    /// Joins `config.pool` at `edge`, as the node `edge` signs for, running leases on `jobs`.
    pub fn new(config: PoolConfig, jobs: Arc<Jobs>, edge: Arc<EdgeClient>) -> Self {
        Self { config, jobs, edge }
    }

    /// Keeps the link up until `shutdown` fires and the drain is over (`Ok`), or the
    /// edge refuses this node for good. Either way no leased run is left running.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), PoolError> {
        link::Link::new(self.config, self.jobs, self.edge)
            .run(shutdown)
            .await
    }
}
