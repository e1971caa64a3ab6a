//! Properties of the state machine over random histories: batches (valid, invalid,
//! out of order, with repeated ids), retries, cancels and stall checks, with a clock
//! that sometimes goes back.

mod common;

use std::collections::HashSet;

use common::*;
use proptest::prelude::*;
use stagecast_shared::event::Event;
use stagecast_shared::machine::ReplayError;
use stagecast_shared::{Analysis, Status, StoredEvent};

const STAGES: [&str; 3] = ["decode", "infer", "report"];

#[derive(Debug, Clone)]
enum Ev {
    Started(usize),
    /// Stage index (3 names a stage that was never declared) and a step in tenths from
    /// the stage's current progress (negative: backwards).
    Progress(usize, i8),
    Partial(usize),
    Heartbeat,
    Completed,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone)]
enum Op {
    Batch {
        events: Vec<(u8, Ev)>,
        dt: i64,
    },
    /// Resends up to this many already stored ids.
    Retry(usize),
    Cancel {
        dt: i64,
    },
    Stall {
        dt: i64,
        timeout: u64,
    },
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        1 => (1usize..=3).prop_map(Ev::Started),
        16 => (prop_oneof![12 => 0usize..3, 1 => Just(3)], prop_oneof![1 => -2i8..0, 12 => 0i8..=3])
            .prop_map(|(s, d)| Ev::Progress(s, d)),
        2 => (0usize..4).prop_map(Ev::Partial),
        3 => Just(Ev::Heartbeat),
        1 => Just(Ev::Completed),
        1 => Just(Ev::Failed),
        1 => Just(Ev::Cancelled),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop::collection::vec((0u8..200, ev()), 1..5), -50i64..5_000)
            .prop_map(|(events, dt)| Op::Batch { events, dt }),
        1 => (1usize..4).prop_map(Op::Retry),
        1 => (0i64..1_000).prop_map(|dt| Op::Cancel { dt }),
        2 => (0i64..120_000, 1u64..90_000).prop_map(|(dt, timeout)| Op::Stall { dt, timeout }),
    ]
}

/// A history that usually starts (an early `started` makes the rest interesting).
fn history() -> impl Strategy<Value = Vec<Op>> {
    prop_oneof![
        9 => started_history(),
        1 => prop::collection::vec(op(), 0..40),
    ]
}

/// A history that starts: its `started` is stored, so the log holds at least one node id.
fn started_history() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 0..40).prop_map(|mut ops| {
        ops.insert(
            0,
            Op::Batch {
                events: vec![(200, Ev::Started(3))],
                dt: 0,
            },
        );
        ops
    })
}

/// A history that starts and ends: a terminal event (an id no other event has) comes last.
fn ended_history() -> impl Strategy<Value = Vec<Op>> {
    let end = prop_oneof![Just(Ev::Completed), Just(Ev::Failed), Just(Ev::Cancelled)];
    (started_history(), end).prop_map(|(mut ops, end)| {
        ops.push(Op::Batch {
            events: vec![(201, end)],
            dt: 1,
        });
        ops
    })
}

/// Builds an event; `current` holds each stage's progress so far (updated by progress steps).
fn build(id: u8, ev: &Ev, current: &mut [f64; 4]) -> Event {
    let id = format!("e{id}");
    match ev {
        Ev::Started(n) => {
            let stages: Vec<(&str, f64)> = STAGES[..*n]
                .iter()
                .enumerate()
                .map(|(i, s)| (*s, (i + 1) as f64))
                .collect();
            started(&id, &stages)
        }
        Ev::Progress(s, step) => {
            let p = (current[*s] + f64::from(*step) / 10.0).clamp(0.0, 1.0);
            current[*s] = p;
            progress(&id, STAGES.get(*s).copied().unwrap_or("ghost"), p)
        }
        Ev::Partial(n) => partial(&id, *n),
        Ev::Heartbeat => heartbeat(&id),
        Ev::Completed => completed(&id, 1),
        Ev::Failed => failed(&id),
        Ev::Cancelled => cancelled(&id),
    }
}

fn stage_progress(a: &Analysis) -> [f64; 4] {
    let mut current = [0.0; 4];
    for (slot, stage) in current.iter_mut().zip(a.snapshot().stages) {
        *slot = stage.progress;
    }
    current
}

/// Plays a history like the edge would, checking step invariants; returns the final
/// state and the stored log.
fn play(ops: &[Op]) -> Result<(Analysis, Vec<StoredEvent>), TestCaseError> {
    let mut a = analysis();
    let mut log: Vec<StoredEvent> = Vec::new();
    let mut known: Vec<String> = Vec::new();
    let mut now = 1_000_000i64;
    let mut last_overall = 0.0;

    for op in ops {
        let before = a.clone();
        let mut stored = Vec::new();
        match op {
            Op::Batch { events, dt } => {
                now += dt;
                let mut current = stage_progress(&a);
                let batch: Vec<Event> = events
                    .iter()
                    .map(|(id, e)| build(*id, e, &mut current))
                    .collect();
                let known_set: HashSet<&str> = known.iter().map(String::as_str).collect();
                match a.apply_batch(batch, now, |id| known_set.contains(id)) {
                    Ok(out) => {
                        if before.status().is_terminal() {
                            prop_assert!(out.stored.is_empty(), "accepted after terminal");
                        }
                        prop_assert_eq!(out.last_seq, a.last_seq());
                        prop_assert_eq!(out.stored.len() + out.duplicates as usize, events.len());
                        stored = out.stored;
                    }
                    Err(_) => prop_assert_eq!(&a, &before, "a refused batch changed the state"),
                }
            }
            Op::Retry(n) => {
                let retry: Vec<Event> = known
                    .iter()
                    .rev()
                    .take(*n)
                    .map(|id| heartbeat(id))
                    .collect();
                let count = retry.len();
                let known_set: HashSet<&str> = known.iter().map(String::as_str).collect();
                let out = a
                    .apply_batch(retry, now, |id| known_set.contains(id))
                    .unwrap();
                prop_assert_eq!(out.duplicates as usize, count);
                prop_assert!(out.stored.is_empty());
                prop_assert_eq!(&a, &before, "a duplicate changed the state");
            }
            Op::Cancel { dt } => {
                now += dt;
                stored.extend(a.request_cancel("user", now));
            }
            Op::Stall { dt, timeout } => {
                now += dt;
                stored.extend(a.check_stall(now, *timeout));
            }
        }
        if before.status().is_terminal() {
            prop_assert!(stored.is_empty(), "something stored after terminal");
            prop_assert_eq!(&a, &before);
        }
        for s in &stored {
            prop_assert_eq!(s.seq, log.len() as u64 + 1, "seq gap or repeat");
            if let Some(prev) = log.last() {
                prop_assert!(s.ts >= prev.ts, "stored ts went back");
                prop_assert!(s.overall_progress >= prev.overall_progress);
            }
            if let stagecast_shared::stored::StoredEventBody::Node(e) = &s.event {
                known.push(e.id.clone());
            }
            log.push(s.clone());
        }
        let overall = a.snapshot().overall_progress;
        prop_assert!(
            (0.0..=1.0).contains(&overall),
            "overall {} out of range",
            overall
        );
        prop_assert!(
            overall >= last_overall,
            "overall went from {} to {}",
            last_overall,
            overall
        );
        if a.status() == Status::Completed {
            prop_assert_eq!(overall, 1.0);
        }
        last_overall = overall;
    }
    Ok((a, log))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn step_invariants_hold(ops in history()) {
        play(&ops)?;
    }

    #[test]
    fn seqs_strictly_increase_without_gaps(ops in history()) {
        let (a, log) = play(&ops)?;
        let seqs: Vec<u64> = log.iter().map(|s| s.seq).collect();
        let expected: Vec<u64> = (1..=log.len() as u64).collect();
        prop_assert_eq!(seqs, expected);
        prop_assert_eq!(a.last_seq(), log.len() as u64);
    }

    #[test]
    fn replay_rebuilds_an_identical_snapshot(ops in history()) {
        let (a, log) = play(&ops)?;
        let replayed = Analysis::replay(a.analysis_id().clone(), &log).unwrap();
        prop_assert_eq!(replayed.snapshot(), a.snapshot());
        prop_assert_eq!(&replayed, &a);
        // Through JSON too, as the edge stores it.
        let json = serde_json::to_string(&log).unwrap();
        let from_json: Vec<StoredEvent> = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(Analysis::replay(a.analysis_id().clone(), from_json).unwrap(), a);
    }

    #[test]
    fn resume_from_any_checkpoint_equals_the_live_analysis(ops in history(), split in any::<prop::sample::Index>()) {
        let (a, log) = play(&ops)?;
        let at = split.index(log.len() + 1);
        let checkpoint = Analysis::replay(a.analysis_id().clone(), &log[..at]).unwrap();
        // Saved as the edge saves it.
        let saved: Analysis = serde_json::from_str(&serde_json::to_string(&checkpoint).unwrap()).unwrap();
        prop_assert_eq!(saved.resume(&log[at..]).unwrap(), a);
    }

    #[test]
    fn resume_refuses_a_gap(ops in started_history(), skip in any::<prop::sample::Index>()) {
        let (a, log) = play(&ops)?;
        prop_assume!(log.len() >= 2);
        let at = skip.index(log.len() - 1);
        let checkpoint = Analysis::replay(a.analysis_id().clone(), &log[..at]).unwrap();
        let resumed = checkpoint.resume(&log[at + 1..]);
        let due = (at + 1) as u64;
        prop_assert_eq!(resumed, Err(ReplayError::Gap { expected: due, found: due + 1 }));
    }

    #[test]
    fn nothing_is_accepted_after_terminal(ops in ended_history(), extra in prop::collection::vec((0u8..255, ev()), 1..5)) {
        let (mut a, _) = play(&ops)?;
        prop_assert!(a.status().is_terminal(), "the generator ends every history");
        let before = a.clone();
        let mut current = stage_progress(&a);
        let fresh: Vec<Event> = extra.iter().map(|(id, e)| build(*id, e, &mut current)).map(|mut e| { e.id = format!("new{}", e.id); e }).collect();
        prop_assert!(a.apply_batch(fresh, i64::MAX / 2, |_| false).is_err());
        prop_assert!(a.request_cancel("u", i64::MAX / 2).is_none());
        prop_assert!(a.check_stall(i64::MAX / 2, 0).is_none());
        prop_assert_eq!(a, before);
    }

    #[test]
    fn a_duplicate_id_never_changes_state(ops in started_history(), pick in any::<prop::sample::Index>(), ev in ev()) {
        let (mut a, log) = play(&ops)?;
        let ids: Vec<String> = log.iter().filter_map(|s| match &s.event {
            stagecast_shared::stored::StoredEventBody::Node(e) => Some(e.id.clone()),
            _ => None,
        }).collect();
        prop_assert!(!ids.is_empty(), "the generator's started is stored");
        let id = &ids[pick.index(ids.len())];
        let mut dup = build(0, &ev, &mut [0.0; 4]);
        dup.id = id.clone();
        let before = a.clone();
        let out = a.apply_batch(vec![dup], 9_000_000_000, |k| ids.iter().any(|i| i == k)).unwrap();
        prop_assert_eq!(out.duplicates, 1);
        prop_assert_eq!(a, before);
    }
}
