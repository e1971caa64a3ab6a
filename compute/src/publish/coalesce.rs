//! Progress coalescing, sans-IO: the caller passes the clock in.
//!
//! A pipeline may report progress hundreds of times a second; watchers need at most
//! ten. Only `progress` events are ever held back, and a held one is replaced only by
//! a newer progress of the same stage: a stage change, a partial result and a terminal
//! event always go out, after whatever progress was held before them.

use stagecast_shared::event::EventKind;

/// At most one progress event per this many milliseconds (10 a second).
pub const PROGRESS_INTERVAL_MS: i64 = 100;

#[derive(Debug)]
pub struct Coalescer {
    interval_ms: i64,
    last_emit_ms: Option<i64>,
    held: Option<EventKind>,
    finished: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new(PROGRESS_INTERVAL_MS)
    }
}

impl Coalescer {
    pub fn new(interval_ms: i64) -> Self {
        Self {
            interval_ms,
            last_emit_ms: None,
            held: None,
            finished: false,
        }
    }

    /// Takes one event; returns those to send now, in order. Nothing is accepted after a
    /// terminal event.
    pub fn push(&mut self, kind: EventKind, now_ms: i64) -> Vec<EventKind> {
        if self.finished {
            return Vec::new();
        }
        let mut out = Vec::new();
        match kind {
            EventKind::Progress { .. } => {
                if let Some(held) = self.held.take() {
                    if same_stage(&held, &kind) {
                        // the newer value says everything the held one did
                    } else {
                        out.push(held);
                    }
                }
                let due = out.is_empty()
                    && self
                        .last_emit_ms
                        .is_none_or(|last| now_ms - last >= self.interval_ms);
                if due {
                    out.push(kind);
                } else {
                    self.held = Some(kind);
                }
            }
            kind => {
                self.finished = kind.is_terminal();
                out.extend(self.held.take());
                out.push(kind);
            }
        }
        if !out.is_empty() {
            self.last_emit_ms = Some(now_ms);
        }
        out
    }

    /// The held progress event once its interval has passed.
    pub fn poll(&mut self, now_ms: i64) -> Option<EventKind> {
        let deadline = self.deadline()?;
        if now_ms < deadline {
            return None;
        }
        self.last_emit_ms = Some(now_ms);
        self.held.take()
    }

    /// Everything held, at once (the input ended).
    pub fn flush(&mut self) -> Option<EventKind> {
        self.held.take()
    }

    /// When [`Coalescer::poll`] will release the held event.
    pub fn deadline(&self) -> Option<i64> {
        self.held.as_ref()?;
        Some(self.last_emit_ms.unwrap_or(i64::MIN) + self.interval_ms)
    }

    /// A terminal event went through.
    pub fn finished(&self) -> bool {
        self.finished
    }
}

fn same_stage(a: &EventKind, b: &EventKind) -> bool {
    matches!((a, b), (EventKind::Progress { stage: x, .. }, EventKind::Progress { stage: y, .. }) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(stage: &str, p: f64) -> EventKind {
        EventKind::Progress {
            stage: stage.into(),
            stage_progress: p,
            frames_done: None,
            frames_total: None,
            message: None,
        }
    }

    fn progress_of(kind: &EventKind) -> (String, f64) {
        match kind {
            EventKind::Progress {
                stage,
                stage_progress,
                ..
            } => (stage.clone(), *stage_progress),
            other => panic!("not progress: {other:?}"),
        }
    }

    #[test]
    fn first_progress_goes_out_and_a_burst_keeps_only_the_newest() {
        let mut c = Coalescer::default();
        assert_eq!(c.push(progress("infer", 0.1), 0).len(), 1);
        for i in 2..=9 {
            assert!(
                c.push(progress("infer", i as f64 / 10.0), 10 * i)
                    .is_empty()
            );
        }
        assert_eq!(c.deadline(), Some(100));
        assert!(c.poll(99).is_none());
        let out = c.poll(100).unwrap();
        assert_eq!(progress_of(&out), ("infer".into(), 0.9));
        assert!(c.poll(1000).is_none());
    }

    #[test]
    fn at_most_ten_progress_events_a_second() {
        let mut c = Coalescer::default();
        let mut sent = 0;
        for ms in 0..1000 {
            sent += c.push(progress("infer", ms as f64 / 1000.0), ms).len();
            sent += usize::from(c.poll(ms).is_some());
        }
        assert!(sent <= 10, "{sent} events in one second");
    }

    #[test]
    fn a_stage_change_never_loses_the_last_value_of_the_stage_before() {
        let mut c = Coalescer::default();
        c.push(progress("decode", 0.5), 0);
        assert!(c.push(progress("decode", 1.0), 10).is_empty());
        let out = c.push(progress("infer", 0.1), 20);
        assert_eq!(out.len(), 1);
        assert_eq!(progress_of(&out[0]), ("decode".into(), 1.0));
        // the new stage's value is held, not dropped
        assert_eq!(progress_of(&c.poll(120).unwrap()), ("infer".into(), 0.1));
    }

    #[test]
    fn partials_and_terminals_go_out_at_once_after_the_held_progress() {
        let mut c = Coalescer::default();
        c.push(progress("infer", 0.1), 0);
        c.push(progress("infer", 0.2), 1);
        let out = c.push(
            EventKind::PartialResult {
                regions: vec![],
                scores: None,
            },
            2,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(progress_of(&out[0]).1, 0.2);
        assert!(matches!(out[1], EventKind::PartialResult { .. }));

        c.push(progress("infer", 0.3), 3);
        let out = c.push(EventKind::Cancelled { reason: None }, 4);
        assert_eq!(out.len(), 2);
        assert!(c.finished());
        assert!(c.push(progress("infer", 0.4), 500).is_empty());
        assert!(
            c.push(EventKind::Heartbeat { metrics: None }, 501)
                .is_empty()
        );
    }

    #[test]
    fn flush_releases_what_is_held() {
        let mut c = Coalescer::default();
        c.push(progress("fetch", 0.1), 0);
        c.push(progress("fetch", 0.2), 1);
        assert_eq!(progress_of(&c.flush().unwrap()).1, 0.2);
        assert!(c.flush().is_none());
        assert_eq!(c.deadline(), None);
    }
}
