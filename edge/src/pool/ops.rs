//! What the pool object does for each operation, for its alarm and for each node message.

use stagecast_shared::close::CloseCode;
use stagecast_shared::dispatch::pool::Capacity;
use stagecast_shared::dispatch::wire::PoolEvent;
use stagecast_shared::dispatch::{NodeMessage, PoolMessage};
use stagecast_shared::ids::NodeId;
use worker::{Response, Result, WebSocket, WebSocketPair};

use super::PoolObject;
use crate::clock::now_ms;
use crate::forward::{PoolForwarded, PoolOp, SubmitReply};
use crate::node_socket::{NODE_TAG, NodeSocket, Refusal, ViewerSocket, WATCH_TAG};
use crate::respond::{close, error_response, json_response, websocket_response};

impl PoolObject {
    pub(super) async fn handle(&self, fwd: PoolForwarded) -> Result<Response> {
        if let Err(body) = self.limits() {
            return error_response(&body);
        }
        let now = now_ms();
        match fwd.op {
            PoolOp::Submit {
                analysis_id,
                submission,
            } => {
                let reply: SubmitReply = self
                    .run(|pool, effects| pool.submit(analysis_id, submission, now, effects))
                    .await?;
                json_response(&reply, 200)
            }
            PoolOp::Finished {
                analysis_id,
                attempt,
                status,
            } => {
                let held = self
                    .run(|pool, effects| pool.finished(&analysis_id, attempt, status, now, effects))
                    .await?;
                json_response(&held, 200)
            }
            PoolOp::Cancel { analysis_id } => {
                let outcome = self
                    .run(|pool, effects| pool.cancel(&analysis_id, now, effects))
                    .await?;
                json_response(&outcome, 200)
            }
            PoolOp::View => json_response(&self.run(|pool, _| pool.view(now)).await?, 200),
            PoolOp::Analyses { filter, limit } => json_response(
                &self.run(|pool, _| pool.analyses(filter, limit)).await?,
                200,
            ),
            PoolOp::Connect {
                node_id,
                expires_at_ms,
                select_subprotocol,
            } => {
                self.node_joins(node_id, expires_at_ms, select_subprotocol)
                    .await
            }
            PoolOp::Watch {
                expires_at_ms,
                select_subprotocol,
            } => self.viewer_joins(expires_at_ms, select_subprotocol).await,
        }
    }

    /// A node's socket: `welcome` first; an older socket of the same node closes with 4409.
    async fn node_joins(
        &self,
        node_id: NodeId,
        expires_at_ms: i64,
        select_subprotocol: bool,
    ) -> Result<Response> {
        let pair = WebSocketPair::new()?;
        self.state
            .accept_websocket_with_tags(&pair.server, &[NODE_TAG]);
        let now = now_ms();
        let id = node_id.clone();
        let (conn, config, pool_name) = self
            .run(|pool, effects| {
                let (conn, _) = pool.connect(id, now, effects);
                (conn, *pool.config(), pool.name().clone())
            })
            .await?;
        for ws in self.state.get_websockets_with_tag(NODE_TAG) {
            let older = ws
                .deserialize_attachment::<NodeSocket>()
                .ok()
                .flatten()
                .is_some_and(|info| info.node_id == node_id && info.conn != conn);
            if older {
                close(&ws, CloseCode::Replaced, "");
            }
        }
        pair.server
            .serialize_attachment(NodeSocket::new(node_id.clone(), conn, expires_at_ms))?;
        tracing::info!(node = %node_id, conn, "node connected");
        let welcome = PoolMessage::Welcome {
            pool: pool_name,
            node_id,
            lease_ms: config.lease_ms,
            heartbeat_ms: config.heartbeat_ms,
        };
        pair.server
            .send_with_str(serde_json::to_string(&welcome)?)?;
        websocket_response(pair.client, select_subprotocol)
    }

    /// The live view: a `pool` snapshot first, then every change.
    async fn viewer_joins(&self, expires_at_ms: i64, select_subprotocol: bool) -> Result<Response> {
        let pair = WebSocketPair::new()?;
        self.state
            .accept_websocket_with_tags(&pair.server, &[WATCH_TAG]);
        pair.server
            .serialize_attachment(ViewerSocket { expires_at_ms })?;
        let now = now_ms();
        let view = self.run(|pool, _| pool.view(now)).await?;
        let first = PoolEvent::Pool {
            view,
            server_ts: now,
        };
        pair.server.send_with_str(serde_json::to_string(&first)?)?;
        websocket_response(pair.client, select_subprotocol)
    }

    pub(super) async fn on_node_message(
        &self,
        ws: &WebSocket,
        mut info: NodeSocket,
        text: &str,
    ) -> Result<()> {
        let now = now_ms();
        let message = match info.on_message(text, now) {
            Ok(message) => message,
            Err(Refusal::Close(code)) => {
                tracing::info!(code = code.code(), "node socket closed");
                close(ws, code, "");
                return Ok(());
            }
            Err(Refusal::Reply(reply)) => {
                return ws.send_with_str(serde_json::to_string(&*reply)?);
            }
        };
        ws.serialize_attachment(&info)?;
        let (node, conn) = (info.node_id, info.conn);
        self.run(|pool, effects| match message {
            NodeMessage::Ready {
                slots,
                models,
                labels,
            } => {
                let capacity = Capacity {
                    slots,
                    models,
                    labels,
                };
                pool.ready(&node, conn, capacity, now, effects);
            }
            NodeMessage::Heartbeat { metrics, running } => {
                pool.heartbeat(&node, conn, &running, metrics, now, effects)
            }
            NodeMessage::Accept { lease_id } => pool.accept(&node, conn, &lease_id, now, effects),
            NodeMessage::Release { lease_id, reason } => {
                tracing::info!(%lease_id, reason = reason.as_deref().unwrap_or(""), "lease released");
                pool.release(&node, conn, &lease_id, now, effects);
            }
        })
        .await
    }

    /// A node socket closed or failed: its node lost it now.
    pub(super) async fn on_socket_gone(&self, ws: &WebSocket) -> Result<()> {
        let Ok(Some(info)) = ws.deserialize_attachment::<NodeSocket>() else {
            return Ok(());
        };
        tracing::info!(node = %info.node_id, conn = info.conn, "node disconnected");
        let now = now_ms();
        self.run(|pool, effects| pool.disconnect(&info.node_id, info.conn, now, effects))
            .await
    }

    /// Leases past their deadline end; updates that wait are sent again; sockets whose token
    /// expired close with 4010 (a node mints a new token and comes back).
    pub(super) async fn on_alarm(&self) -> Result<Response> {
        if self.limits().is_err() {
            return Response::ok("misconfigured");
        }
        let now = now_ms();
        for (ws, expires_at_ms) in self.socket_expiries() {
            if expires_at_ms <= now {
                close(&ws, CloseCode::TokenExpired, "");
            }
        }
        let ((), effects) = self.commit(|pool, effects| pool.tick(now, effects))?;
        self.carry(effects, true).await?;
        Response::ok("ok")
    }
}
