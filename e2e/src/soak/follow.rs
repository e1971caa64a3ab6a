//! The subscribers of a soak run: each analysis followed from the start by many of them,
//! like the browser client follows one, through forced drops and whatever the faults do.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;
use serde_json::json;
use stagecast_shared::backoff::Backoff;
use stagecast_shared::follow::{AfterClose, Arrival, Follower};
use stagecast_shared::ws::ServerMessage;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::Plan;
use crate::Node;
use crate::client::{Tokens, Ws, is_terminal, seq_and_id};

/// One WebSocket handshake and its hello.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Silence after which a subscriber takes its socket for dead.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Reconnects back off with full jitter, 100 ms doubling to 2 s.
const RECONNECT: Backoff = Backoff {
    base_ms: 100,
    cap_ms: 2_000,
};

/// What one subscriber saw of its analysis.
#[derive(Debug, Default)]
pub(super) struct Followed {
    /// `(seq, event id)` in arrival order, repeats and gaps included.
    pub events: Vec<(u64, String)>,
    pub connections: u64,
    pub forced_drops: u64,
    /// A hello with `recovered: false`, a refusal, or no end by the deadline.
    pub problem: Option<String>,
}

/// One analysis and its subscribers, as they ended.
pub(super) struct Run {
    pub id: String,
    pub started: Instant,
    pub ended: Instant,
    pub followers: Vec<Followed>,
}

/// Submits analysis `id` to the node with `plan.subscribers` following it from the start,
/// and waits until every subscriber saw its end (or `deadline`).
pub(super) async fn one_analysis(
    node: &Node,
    plan: &Plan,
    ws_base: &str,
    video: &str,
    id: String,
    seed: u64,
    deadline: Instant,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut followers = JoinSet::new();
    for s in 0..plan.subscribers {
        followers.spawn(follow(
            format!("{ws_base}/v1/analyses/{id}/ws"),
            Tokens::viewer(&id),
            plan.drop_mean,
            seed.wrapping_mul(1_000_003).wrapping_add(s as u64),
            deadline,
        ));
    }
    let (status, body) = node
        .submit(&json!({"input": video, "analysis_id": id, "fps": plan.fps, "batch_size": 2}))
        .await;
    if status != 202 {
        bail!("the node refused {id}: {status} {body}");
    }
    let followers = followers.join_all().await;
    Ok(Run {
        id,
        started,
        ended: Instant::now(),
        followers,
    })
}

/// How a connection of a subscriber ended.
enum End {
    /// The analysis's terminal event arrived.
    Terminal,
    /// This subscriber dropped it on purpose.
    Dropped,
    /// The edge closed it or went away: reconnect.
    Lost,
    /// The edge refused for good (the follower stops) or broke the contract.
    Refused(String),
}

/// Follows one analysis like the browser client does: replays from the start, resumes with
/// `since=<last seq>` after every drop, backs off with full jitter, and drops its own socket
/// (without a close frame) at random, `drop_mean` apart on average.
async fn follow(
    url: String,
    token: String,
    drop_mean: Duration,
    seed: u64,
    deadline: Instant,
) -> Followed {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen = Followed::default();
    // `stagecast_shared::follow` decides where to resume and what a close means; every
    // frame is still recorded as it came, so the check counts repeats the edge sent.
    let mut follower = Follower::new(0);
    let mut failures = 0u32;
    loop {
        if Instant::now() >= deadline {
            seen.problem = Some(format!(
                "no terminal event by the deadline (last seq {})",
                follower.since()
            ));
            return seen;
        }
        let drop_at = Instant::now() + drop_mean.mul_f64(-(1.0 - rng.f64()).ln());
        let end = match connect(&url, &token, follower.since()).await {
            Ok(ws) => {
                seen.connections += 1;
                failures = 0;
                session(ws, &mut follower, &mut seen, drop_at.min(deadline)).await
            }
            Err(_) => End::Lost,
        };
        match end {
            End::Terminal => return seen,
            End::Refused(why) => {
                seen.problem = Some(why);
                return seen;
            }
            End::Dropped => seen.forced_drops += 1,
            End::Lost => {
                failures += 1;
                let wait = RECONNECT.delay_ms(failures, rng.f64());
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
    }
}

async fn connect(url: &str, token: &str, since: u64) -> anyhow::Result<Ws> {
    let mut request = format!("{url}?since={since}").into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("stagecast.v1, bearer.{token}"))?,
    );
    let (ws, _) =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await??;
    Ok(ws)
}

/// Reads one connection: its hello, then events, each recorded in `seen`.
async fn session(
    mut ws: Ws,
    follower: &mut Follower,
    seen: &mut Followed,
    drop_at: Instant,
) -> End {
    let mut hello = false;
    loop {
        let next = tokio::time::timeout_at(
            drop_at.into(),
            tokio::time::timeout(SILENCE_TIMEOUT, ws.next()),
        )
        .await;
        let message = match next {
            // Dropped without a close frame, as a phone losing its network would.
            Err(_) => return End::Dropped,
            Ok(Err(_) | Ok(None | Some(Err(_)))) => return End::Lost,
            Ok(Ok(Some(Ok(message)))) => message,
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                let code = frame.as_ref().map(|f| u16::from(f.code));
                return match follower.on_close(code, false) {
                    AfterClose::Stop => End::Refused(format!("closed with {frame:?}")),
                    AfterClose::Reconnect | AfterClose::ReconnectWithNewToken => End::Lost,
                };
            }
            _ => continue,
        };
        let Ok(frame) = serde_json::from_str::<ServerMessage>(&text) else {
            return End::Refused(format!("a frame that is not a server message: {text}"));
        };
        match frame {
            ServerMessage::Hello { recovered, .. } => {
                hello = true;
                if !recovered {
                    let since = follower.since();
                    return End::Refused(format!("resumed from {since} without recovery: {text}"));
                }
                follower.on_message(&frame);
            }
            ServerMessage::Event(event) if hello => {
                seen.events.push(seq_and_id(&event));
                if follower.on_event(event.seq) == Arrival::Gap {
                    let since = follower.since();
                    return End::Refused(format!("event {} after {since}: a gap", event.seq));
                }
                if is_terminal(&event) {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    return End::Terminal;
                }
            }
            ServerMessage::Event(_) => {
                return End::Refused(format!("an event before the hello: {text}"));
            }
            _ => {}
        }
    }
}
