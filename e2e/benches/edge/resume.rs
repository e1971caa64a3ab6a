//! Reconnect-and-resume correctness: subscribers that drop their socket (no close frame)
//! again and again while events flow, each time reconnecting with `since=<last seq>`, must
//! end with every event exactly once.

use stagecast_shared::follow::{Arrival, Follower};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use stagecast_e2e::Tokens;
use stagecast_e2e::client::Delivery;
use tokio_tungstenite::tungstenite::Message;

use crate::{Bench, CONNECT_TIMEOUT, Target};

/// Subscribers of the run, each dropping its socket `RESUME_DROPS` times.
pub const RESUME_SUBSCRIBERS: usize = 10;
pub const RESUME_DROPS: usize = 100;
/// A subscriber drops its socket after 1 to this many events on it...
const DROP_AFTER_EVENTS: u32 = 9;
/// ...or after this long without one.
const DROP_AFTER_SILENCE: Duration = Duration::from_millis(200);
/// The publisher sends one single-event batch every `PACE` until every subscriber is done
/// dropping, at most `MAX_EVENTS`, then the terminal event.
const PACE: Duration = Duration::from_millis(10);
const MAX_EVENTS: usize = 5000;
/// The whole run.
const LIMIT: Duration = Duration::from_secs(180);

pub struct Resume {
    /// Events published, the terminal one included.
    pub events: usize,
    pub drops: usize,
    /// Handshakes that failed and were retried.
    pub failed_connects: usize,
    pub lost: u64,
    pub repeated: u64,
    /// Subscribers whose sequence was not exactly the published one (order included).
    pub wrong: usize,
    pub elapsed: Duration,
}

/// What one subscriber received and how often it dropped.
struct Seen {
    events: Vec<(u64, String)>,
    drops: usize,
    failed_connects: usize,
}

pub async fn resume(bench: &Bench, target: &Target) -> anyhow::Result<Resume> {
    let id = "resume";
    bench.start_analysis(target, id).await?;
    let begun = Instant::now();
    let deadline = tokio::time::Instant::now() + LIMIT;
    let done_dropping = Arc::new(AtomicUsize::new(0));
    let subscribers: Vec<_> = (0..RESUME_SUBSCRIBERS)
        .map(|s| {
            let url = format!(
                "{}/v1/analyses/{id}/ws?token={}",
                target.ws,
                Tokens::viewer(id)
            );
            tokio::spawn(subscriber(url, s as u64, done_dropping.clone(), deadline))
        })
        .collect();

    // `start` is seq 1; every publish is retried until the relay stores it.
    let token = Tokens::node(id);
    let mut truth = vec![(1, "start".to_owned())];
    let mut ticker = tokio::time::interval(PACE);
    while done_dropping.load(Ordering::Relaxed) < RESUME_SUBSCRIBERS && truth.len() <= MAX_EVENTS {
        ticker.tick().await;
        let n = truth.len();
        let event = json!({"id": format!("r-{n}"), "type": "progress", "stage": "run",
            "stage_progress": n as f64 / (MAX_EVENTS + 1) as f64});
        publish_surely(bench, target, id, &token, event, deadline).await?;
        truth.push((n as u64 + 1, format!("r-{n}")));
    }
    let end = json!({"id": "end", "type": "completed", "result": {"score": 0.5,
        "flagged": false, "frames_processed": 1, "total_frames": 1, "regions": [],
        "validation_required": false}});
    publish_surely(bench, target, id, &token, end, deadline).await?;
    truth.push((truth.len() as u64 + 1, "end".to_owned()));

    let mut run = Resume {
        events: truth.len(),
        drops: 0,
        failed_connects: 0,
        lost: 0,
        repeated: 0,
        wrong: 0,
        elapsed: Duration::ZERO,
    };
    for subscriber in subscribers {
        let seen = subscriber.await?;
        let delivery = Delivery::check(&seen.events, &truth);
        run.lost += delivery.lost;
        run.repeated += delivery.repeated;
        run.wrong += usize::from(!delivery.exact);
        run.drops += seen.drops;
        run.failed_connects += seen.failed_connects;
    }
    run.elapsed = begun.elapsed();
    Ok(run)
}

async fn publish_surely(
    bench: &Bench,
    target: &Target,
    id: &str,
    token: &str,
    event: Value,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    loop {
        match bench
            .publish(target, id, token, std::slice::from_ref(&event))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Replays from the start, then drops and resumes `RESUME_DROPS` times, then reads until
/// the terminal event (`end`) or `deadline`.
async fn subscriber(
    url: String,
    seed: u64,
    done_dropping: Arc<AtomicUsize>,
    deadline: tokio::time::Instant,
) -> Seen {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen = Seen {
        events: Vec::new(),
        drops: 0,
        failed_connects: 0,
    };
    // Where to resume and which frames are new: the shared follower every client uses.
    let mut follower = Follower::new(0);
    while tokio::time::Instant::now() < deadline {
        let dropping = seen.drops < RESUME_DROPS;
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async(format!("{url}&since={}", follower.since())),
        )
        .await;
        let Ok(Ok((mut ws, _))) = connected else {
            seen.failed_connects += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let budget = rng.u32(1..=DROP_AFTER_EVENTS);
        let mut on_this_socket = 0;
        loop {
            let wait = if dropping {
                DROP_AFTER_SILENCE
            } else {
                deadline - tokio::time::Instant::now()
            };
            let Ok(next) = tokio::time::timeout(wait, ws.next()).await else {
                break; // silent for too long: drop it
            };
            let Some(Ok(Message::Text(text))) = next else {
                if matches!(next, Some(Ok(_))) {
                    continue;
                }
                break; // the relay closed it: resume like after a drop
            };
            // Read as plain JSON, not as `ServerMessage`: the peers send only the part of
            // a v1 event frame that every relay has (`type`, `seq`, `event.id`).
            let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if frame["type"] != "event" {
                continue;
            }
            let (Some(seq), Some(event)) = (frame["seq"].as_u64(), frame["event"]["id"].as_str())
            else {
                continue;
            };
            // every frame is kept as it came: the check counts repeats
            seen.events.push((seq, event.to_owned()));
            if follower.on_event(seq) == Arrival::Gap {
                break; // events are missing: resume after the last one held
            }
            if event == "end" {
                return seen;
            }
            on_this_socket += 1;
            if dropping && on_this_socket >= budget {
                break;
            }
        }
        // Dropped without a close frame, as a phone losing its network would.
        drop(ws);
        if dropping {
            seen.drops += 1;
            if seen.drops == RESUME_DROPS {
                done_dropping.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    seen
}

pub fn print_resume(rows: &[(&str, &anyhow::Result<Resume>)]) {
    println!();
    println!("## Reconnect and resume");
    println!();
    println!(
        "One analysis; {RESUME_SUBSCRIBERS} subscribers replay from the start (`since=0`), then each drops its socket (no close frame) {RESUME_DROPS} times, after 1 to {DROP_AFTER_EVENTS} events on a socket or {} ms without one, reconnecting at once with `since=<last seq it holds>`. A publisher sends a single-event batch every {} ms until every subscriber has dropped {RESUME_DROPS} times, then a terminal event; each subscriber must end with exactly the published sequence. Lost: published events a subscriber never got; repeated: frames of an event it already had.",
        DROP_AFTER_SILENCE.as_millis(),
        PACE.as_millis()
    );
    println!();
    println!(
        "| system | events published | forced drops | failed handshakes | events lost | events repeated | subscribers not exactly the sequence | run (s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, row) in rows {
        match row {
            Ok(r) => println!(
                "| {name} | {} | {} | {} | {} | {} | {} | {:.1} |",
                r.events,
                r.drops,
                r.failed_connects,
                r.lost,
                r.repeated,
                r.wrong,
                r.elapsed.as_secs_f64()
            ),
            Err(e) => println!(
                "| {name} | failed: {} | | | | | | |",
                format!("{e:#}").replace('|', "/")
            ),
        }
    }
}
