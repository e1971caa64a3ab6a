//! The browser client follows an analysis by the same rules as `stagecast_shared::follow`:
//! this test runs scripted hellos, events and closes through the real `Follower` and keeps
//! what it decided in client/test/fixtures/follower-cases.json, which
//! client/test/follower.test.mjs replays against `AnalysisClient`. It fails when the file
//! is out of date; regenerate with
//! `STAGECAST_BLESS=1 cargo test -p stagecast-shared --test follower_fixture`.
mod common;

use serde_json::{Value, json};
use stagecast_shared::follow::{AfterClose, Arrival, Follower};

enum Input {
    Hello {
        last_seq: u64,
        resumed_from: Option<u64>,
        recovered: bool,
    },
    Event(u64),
    Close(u16),
}

/// One scripted connection history; `refresh`: whether the follower can get a new token.
fn case(name: &str, start_since: Option<u64>, refresh: bool, inputs: Vec<Input>) -> Value {
    let mut follower = Follower::new(start_since.unwrap_or(0));
    let steps: Vec<Value> = inputs
        .into_iter()
        .map(|input| match input {
            Input::Hello {
                last_seq,
                resumed_from,
                recovered,
            } => {
                follower.on_hello(last_seq, resumed_from, recovered);
                json!({"hello": {"last_seq": last_seq, "resumed_from": resumed_from, "recovered": recovered}, "since": follower.since()})
            }
            Input::Event(seq) => {
                let arrival = match follower.on_event(seq) {
                    Arrival::New => "new",
                    Arrival::Repeat => "repeat",
                    Arrival::Gap => "gap",
                };
                json!({"event": seq, "arrival": arrival, "since": follower.since()})
            }
            Input::Close(code) => {
                let after = match follower.on_close(Some(code), refresh) {
                    AfterClose::Reconnect => "reconnect",
                    AfterClose::ReconnectWithNewToken => "reconnect_with_new_token",
                    AfterClose::Stop => "stop",
                };
                json!({"close": code, "after": after, "since": follower.since()})
            }
        })
        .collect();
    json!({"name": name, "start_since": start_since, "refresh_token": refresh, "steps": steps})
}

fn hello(last_seq: u64, resumed_from: Option<u64>, recovered: bool) -> Input {
    Input::Hello {
        last_seq,
        resumed_from,
        recovered,
    }
}

fn cases() -> Value {
    use Input::{Close, Event};
    let mut all = vec![
        case(
            "repeats are dropped and a gap resumes from the last seq",
            Some(0),
            false,
            vec![
                hello(0, Some(0), true),
                Event(1),
                Event(2),
                Event(2),
                Event(4),
            ],
        ),
        case(
            "after a hello that could not replay everything, the first event may skip",
            Some(0),
            false,
            vec![hello(900, Some(0), false), Event(801), Event(803)],
        ),
        case(
            "a hello without replay stands for the past",
            None,
            false,
            vec![hello(7, None, true), Event(7), Event(8)],
        ),
        case(
            "a history that started over is followed from its start",
            Some(40),
            false,
            vec![hello(2, Some(40), false), Event(3)],
        ),
        case(
            "4001 twice with a token function: one fresh token, then stop",
            Some(0),
            true,
            vec![hello(0, Some(0), true), Close(4001), Close(4001)],
        ),
        case(
            "a hello between two 4001s allows another fresh token",
            Some(0),
            true,
            vec![Close(4001), hello(0, Some(0), true), Close(4001)],
        ),
    ];
    for refresh in [false, true] {
        for code in [
            1000, 1005, 1006, 1012, 1013, 4001, 4003, 4008, 4009, 4010, 4400, 4409,
        ] {
            all.push(case(
                &format!("close {code} with refresh={refresh}"),
                Some(0),
                refresh,
                vec![hello(3, Some(0), true), Event(1), Close(code)],
            ));
        }
    }
    json!({"cases": all})
}

#[test]
fn follower_cases_fixture_is_current() {
    common::check_client_fixture("follower-cases.json", &cases(), "follower_fixture");
}
