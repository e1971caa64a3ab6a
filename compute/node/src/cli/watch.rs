//! `stagecast-node watch`: follows an analysis on the edge over its WebSocket, the way a
//! browser does: replay from the start, resume after the last seq on reconnect, close
//! codes obeyed.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use stagecast_shared::backoff::Backoff;
use stagecast_shared::close::CloseCode;
use stagecast_shared::event::EventKind;
use stagecast_shared::follow::{AfterClose, Arrival, Follower};
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::stored::{EdgeEventKind, StoredEventBody};
use stagecast_shared::token::Scope;
use stagecast_shared::ws::{ClientMessage, ServerMessage};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::edge::EdgeArgs;
use super::progress::{Bars, print_result};

/// No message (not even a pong) for this long: the connection is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
const PING_EVERY: Duration = Duration::from_secs(20);
/// Reconnect attempts back off with full jitter, 1 s doubling to 30 s.
const RECONNECT: Backoff = Backoff {
    base_ms: 1_000,
    cap_ms: 30_000,
};
/// Failed connection attempts in a row before giving up.
const MAX_ATTEMPTS: u32 = 12;
const MINTED_TTL_S: i64 = 3600;

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The analysis to follow
    pub analysis_id: String,
    /// Token to watch with [default: a viewer token signed with this node's key]
    #[arg(long, env = "STAGECAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print every server message as JSON on stdout instead of drawing bars
    #[arg(long)]
    pub json: bool,
}

enum Ended {
    Finished(ExitCode),
    /// The socket dropped (or missed events); reconnect after the last seq.
    Dropped,
    /// Reconnect with a fresh token.
    NeedsToken,
}

pub async fn run(edge: &EdgeArgs, args: WatchArgs) -> anyhow::Result<ExitCode> {
    let id = AnalysisId::parse(&args.analysis_id).context("analysis id")?;
    let mut url = reqwest::Url::parse(edge.edge_url()?).context("--edge")?;
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme)
        .map_err(|()| anyhow::anyhow!("--edge must be an http(s) URL"))?;
    let url = url.join(&format!("v1/analyses/{id}/ws"))?;
    let mint = || -> anyhow::Result<String> {
        Ok(edge.identity()?.token(
            &[Scope::Subscribe, Scope::Cancel],
            &[id.as_str()],
            stagecast_compute::clock::now_s(),
            MINTED_TTL_S,
        )?)
    };
    let mut token = match &args.token {
        Some(t) => t.clone(),
        None => mint()?,
    };

    let mut watch = Watch {
        follower: Follower::new(0),
        can_mint: args.token.is_none(),
        caught_up_to: 0,
        bars: (!args.json).then(Bars::new),
    };
    let mut failures = 0u32;
    loop {
        let since = watch.follower.since();
        let mut request = format!("{url}?since={since}").into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
        let ws = match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                failures += 1;
                if failures >= MAX_ATTEMPTS {
                    bail!("cannot reach the edge at {url}: {e}");
                }
                let wait = RECONNECT.delay_ms(failures, fastrand::f64());
                watch.note(&format!(
                    "cannot connect ({e}); retrying in {:.1}s",
                    wait as f64 / 1000.0
                ));
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
        };
        failures = 0;
        match watch.follow(ws, args.json).await? {
            Ended::Finished(code) => return Ok(code),
            Ended::Dropped => watch.note("connection lost; resuming"),
            Ended::NeedsToken => token = mint()?,
        }
    }
}

struct Watch {
    follower: Follower,
    /// Whether a fresh token can be minted here (no `--token` given).
    can_mint: bool,
    /// After a hello that could not replay everything, the bars show its snapshot:
    /// replayed events up to this seq are in it already.
    caught_up_to: u64,
    bars: Option<Bars>,
}

impl Watch {
    fn note(&self, line: &str) {
        match &self.bars {
            Some(bars) => bars.note(line),
            None => eprintln!("{line}"),
        }
    }

    async fn follow(
        &mut self,
        mut ws: tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        json: bool,
    ) -> anyhow::Result<Ended> {
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            let message = tokio::select! {
                m = tokio::time::timeout(SILENCE_LIMIT, ws.next()) => m,
                _ = ping.tick() => {
                    let ping = serde_json::to_string(&ClientMessage::Ping)?;
                    let _ = ws.send(Message::Text(ping.into())).await;
                    continue;
                }
            };
            let message = match message {
                Err(_) | Ok(None) | Ok(Some(Err(_))) => return Ok(Ended::Dropped),
                Ok(Some(Ok(m))) => m,
            };
            match message {
                Message::Text(text) => {
                    let parsed: ServerMessage = serde_json::from_str(&text)
                        .with_context(|| format!("unexpected message from the edge: {text}"))?;
                    match self.follower.on_message(&parsed) {
                        Some(Arrival::Repeat) => continue,
                        Some(Arrival::Gap) => return Ok(Ended::Dropped),
                        Some(Arrival::New) | None => {}
                    }
                    if json {
                        println!("{text}");
                    }
                    if let Some(code) = self.handle(parsed) {
                        return Ok(Ended::Finished(code));
                    }
                }
                Message::Close(frame) => {
                    let code = frame.as_ref().map(|f| u16::from(f.code));
                    let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    return match self.follower.on_close(code, self.can_mint) {
                        AfterClose::Reconnect => Ok(Ended::Dropped),
                        AfterClose::ReconnectWithNewToken => Ok(Ended::NeedsToken),
                        AfterClose::Stop if code == Some(CloseCode::TokenExpired.code()) => {
                            bail!("the token expired; pass a fresh --token")
                        }
                        AfterClose::Stop => bail!(
                            "the edge closed the socket: {} {reason}",
                            code.map_or("(no code)".to_owned(), |c| c.to_string())
                        ),
                    };
                }
                _ => {}
            }
        }
    }

    /// The exit code once the analysis ended.
    fn handle(&mut self, message: ServerMessage) -> Option<ExitCode> {
        match message {
            ServerMessage::Hello {
                snapshot,
                recovered,
                ..
            } => {
                if !recovered {
                    self.note("older events are no longer kept; showing where the analysis stands");
                    if let Some(bars) = &mut self.bars {
                        bars.catch_up(&snapshot);
                    }
                    self.caught_up_to = snapshot.last_seq;
                }
                if snapshot.last_seq == 0 {
                    self.note(&format!(
                        "{}: waiting for a node to start it",
                        snapshot.analysis_id
                    ));
                }
                None
            }
            ServerMessage::Event(stored) => match stored.event {
                StoredEventBody::Node(event)
                    if stored.seq > self.caught_up_to || event.kind.is_terminal() =>
                {
                    self.show(&event.kind)
                }
                StoredEventBody::Node(_) => None,
                StoredEventBody::Edge(edge) => {
                    let note = match edge.kind {
                        // The edge ended it: shown like the node's own end.
                        EdgeEventKind::Failed { error } => {
                            return self.show(&EventKind::Failed { error });
                        }
                        EdgeEventKind::Cancelled { reason } => {
                            let reason = Some(reason);
                            return self.show(&EventKind::Cancelled { reason });
                        }
                        EdgeEventKind::CancelRequested { by } => {
                            format!("cancel requested by {by}")
                        }
                        EdgeEventKind::Stalled { silent_ms } => {
                            format!("stalled: nothing from the node for {} s", silent_ms / 1000)
                        }
                        EdgeEventKind::Queued { pool, position, .. } => match position {
                            Some(p) => format!("queued in pool {pool} at position {p}"),
                            None => format!("queued in pool {pool}"),
                        },
                        EdgeEventKind::Artifact { name, bytes, .. } => {
                            format!("artifact {name} ({bytes} bytes)")
                        }
                        EdgeEventKind::Leased { node, attempt } => {
                            format!("leased to node {node} (attempt {attempt})")
                        }
                        EdgeEventKind::Requeued {
                            attempt,
                            reason,
                            node,
                        } => format!(
                            "attempt {attempt} on node {node} ended ({}): back in the queue",
                            reason.as_str()
                        ),
                    };
                    self.note(&note);
                    None
                }
            },
            ServerMessage::Error { code, message } => {
                self.note(&format!("the edge refused a message: {code:?}: {message}"));
                None
            }
            ServerMessage::Snapshot { .. } | ServerMessage::Pong => None,
        }
    }

    fn show(&mut self, kind: &EventKind) -> Option<ExitCode> {
        if let Some(bars) = &mut self.bars {
            bars.show(kind);
        }
        let json = self.bars.is_none();
        match kind {
            EventKind::Completed { result } => {
                if !json {
                    print_result("result", result);
                }
                Some(ExitCode::SUCCESS)
            }
            EventKind::Failed { error } => {
                eprintln!("failed ({}): {}", error.code, error.message);
                Some(ExitCode::FAILURE)
            }
            EventKind::Cancelled { .. } => {
                eprintln!("cancelled");
                Some(ExitCode::from(130))
            }
            _ => None,
        }
    }
}
