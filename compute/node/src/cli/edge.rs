//! Flags that say where the edge is and who this node is to it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use stagecast_compute::config;
use stagecast_compute::jobs::Publishing;
use stagecast_compute::publish::{EdgeClient, NodeIdentity, Outbox, PublishOver};
use stagecast_shared::token::{KeySet, SigningKey};

#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Base URL of the edge, e.g. http://127.0.0.1:8787 [default: none, nothing is published]
    #[arg(long, global = true, env = "STAGECAST_EDGE_URL")]
    pub edge: Option<String>,
    /// Tenant this node publishes for (the tokens' `iss`)
    #[arg(long, global = true, env = "STAGECAST_TENANT", default_value = "dev")]
    pub tenant: String,
    /// Key id (`kid`) of the signing key, as the edge's tenant configuration names it
    #[arg(long, global = true, env = "STAGECAST_KEY_ID", default_value = "dev")]
    pub key_id: String,
    /// HS256 secret shared with the edge (at least 32 bytes); `make demo` passes the dev secret
    #[arg(
        long,
        global = true,
        env = "STAGECAST_NODE_SECRET",
        hide_env_values = true,
        conflicts_with = "key_file"
    )]
    pub secret: Option<String>,
    /// Ed25519 private key (PKCS#8 PEM) for self-hosted nodes; the edge holds the public key
    #[arg(long, global = true, env = "STAGECAST_NODE_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// This node's name (the tokens' `sub`) [default: the host name]
    #[arg(long, global = true, env = "STAGECAST_NODE_ID")]
    pub node_id: Option<String>,
    /// How events reach the edge: `socket` (a WebSocket per analysis, whose messages bill a
    /// twentieth of a request; HTTP while it will not open) or `http` (a POST per batch)
    #[arg(
        long,
        global = true,
        env = "STAGECAST_PUBLISH_OVER",
        default_value = "socket"
    )]
    pub publish_over: PublishOver,
    /// Where the node keeps unsent events (the outbox) across restarts
    #[arg(long, global = true, env = "STAGECAST_NODE_STATE_DIR", default_value_os_t = config::cache_dir().join("node"))]
    pub state_dir: PathBuf,
}

impl EdgeArgs {
    pub fn identity(&self) -> anyhow::Result<NodeIdentity> {
        let key = match (&self.secret, &self.key_file) {
            (Some(secret), None) => SigningKey::hs256(&self.key_id, secret.as_bytes())?,
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading the key file {}", path.display()))?;
                SigningKey::ed25519_pem(&self.key_id, &pem)?
            }
            (None, None) => bail!(
                "no signing key: set --secret (STAGECAST_NODE_SECRET) or --key-file (STAGECAST_NODE_KEY_FILE)"
            ),
            (Some(_), Some(_)) => bail!("--secret and --key-file exclude each other"),
        };
        Ok(NodeIdentity {
            tenant: self.tenant.clone(),
            node_id: self.node_id.clone().unwrap_or_else(host_name),
            key,
        })
    }

    /// Keys that verify tokens signed with this node's HS256 secret.
    pub fn own_key_set(&self) -> anyhow::Result<KeySet> {
        let Some(secret) = &self.secret else {
            bail!("an Ed25519 node cannot verify tokens with its private key: pass --tenants")
        };
        Ok(KeySet::hs256(&self.tenant, &self.key_id, secret)?)
    }

    /// The edge and the outbox in front of it, when an edge is configured.
    pub fn publishing(&self) -> anyhow::Result<Option<Publishing>> {
        let Some(edge) = &self.edge else {
            return Ok(None);
        };
        let client = EdgeClient::new(edge, self.identity()?)?.with_publish_over(self.publish_over);
        let outbox = Outbox::new(self.state_dir.join("outbox"))?;
        Ok(Some(Publishing {
            edge: Arc::new(client),
            outbox,
        }))
    }

    pub fn edge_url(&self) -> anyhow::Result<&str> {
        self.edge
            .as_deref()
            .context("no edge: set --edge (STAGECAST_EDGE_URL)")
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned())
}
