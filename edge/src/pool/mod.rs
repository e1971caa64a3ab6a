//! The Durable Object of one pool (tenant, pool name): the shared queue and lease machine
//! ([`stagecast_shared::dispatch::Pool`]) over SQLite storage ([`store`]), with node and
//! live-view sockets on the hibernation API ([`crate::node_socket`]). This file is the
//! runtime's entry points; [`state`] keeps the machine in step with storage and carries
//! its effects, [`ops`] answers each operation.

mod ops;
mod state;
mod store;

use std::cell::{Cell, RefCell};

use stagecast_shared::api::{ErrorBody, ErrorCode};
use stagecast_shared::dispatch::Pool;
use stagecast_shared::ws::{ClientMessage, ServerMessage};
use tracing::Instrument;
use worker::{
    DurableObject, Env, Request, Response, Result, State, WebSocket, WebSocketIncomingMessage,
    durable_object,
};

use crate::forward::{OP_HEADER, PoolForwarded};
use crate::node_socket::NodeSocket;
use crate::respond::{error_response, message_text};
use store::PoolStore;

#[durable_object]
pub struct PoolObject {
    state: State,
    env: Env,
    /// The state machine, loaded from storage on first use after (re)construction.
    pool: RefCell<Option<Pool>>,
    /// When the one alarm is set for (ms), as this object last set or read it.
    alarm_at: Cell<Option<i64>>,
}

impl DurableObject for PoolObject {
    fn new(state: State, env: Env) -> Self {
        crate::log::init();
        if let Err(e) = PoolStore::new(state.storage().sql()).migrate() {
            let name = state.id().name().unwrap_or_default();
            tracing::error!(pool = name, error = %e, "schema migration failed");
        }
        // Live viewers' pings are answered by the runtime without waking the object.
        let ping = serde_json::to_string(&ClientMessage::Ping).unwrap_or_default();
        let pong = serde_json::to_string(&ServerMessage::Pong).unwrap_or_default();
        if let Ok(pair) = worker::worker_sys::WebSocketRequestResponsePair::new(&ping, &pong) {
            state.set_websocket_auto_response(&pair);
        }
        Self {
            state,
            env,
            pool: RefCell::new(None),
            alarm_at: Cell::new(None),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let Some(header) = req.headers().get(OP_HEADER)? else {
            return error_response(&ErrorBody::new(ErrorCode::NotFound, "not an edge request"));
        };
        let fwd: PoolForwarded = serde_json::from_str(&header)?;
        let span = tracing::info_span!("pool", tenant = %fwd.tenant, pool = %fwd.pool);
        self.handle(fwd).instrument(span).await
    }

    async fn alarm(&self) -> Result<Response> {
        // The alarm that fired is spent.
        self.alarm_at.set(None);
        let span = tracing::info_span!("pool_alarm", pool = %self.object_name());
        self.on_alarm().instrument(span).await
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let Ok(Some(info)) = ws.deserialize_attachment::<NodeSocket>() else {
            // A live-view socket: it only listens.
            return Ok(());
        };
        let span = tracing::info_span!("node", pool = %self.object_name(), node = %info.node_id);
        let text = message_text(message);
        self.on_node_message(&ws, info, &text)
            .instrument(span)
            .await
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        self.on_socket_gone(&ws).await
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> Result<()> {
        tracing::info!(pool = %self.object_name(), error = %error, "socket error");
        self.on_socket_gone(&ws).await
    }
}
