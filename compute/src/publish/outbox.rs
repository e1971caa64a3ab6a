//! The durable outbox: every event is on disk before it is published, so neither an edge
//! outage nor a node restart loses one.
//!
//! One analysis is two files: `<id>.jsonl`, every event in order (append-only, synced
//! before publishing), and `<id>.acked`, how many of them the edge has confirmed
//! (replaced atomically). Once the terminal event is confirmed both go.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use stagecast_shared::event::Event;
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::limits::{MAX_BODY_BYTES, MAX_EVENTS_PER_BATCH};

/// Room left in a publish body for `{"events":[...]}` and commas.
const BODY_BUDGET: usize = MAX_BODY_BYTES - 1024;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("outbox {path}: line {line} is not an event: {source}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The folder holding every analysis' outbox.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, OutboxError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Self { dir })
    }

    /// Analyses with an outbox on disk: unsent events, or a run that never ended.
    pub fn analyses(&self) -> Result<Vec<AnalysisId>, OutboxError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = entry.map_err(io(&self.dir))?.path();
            if path.extension().is_some_and(|e| e == "jsonl")
                && let Some(id) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| AnalysisId::parse(s).ok())
            {
                ids.push(id);
            }
        }
        ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(ids)
    }

    /// Whether `analysis` has an outbox here.
    pub fn contains(&self, analysis: &AnalysisId) -> bool {
        self.log_path(analysis).exists()
    }

    /// Opens (or creates) the queue of `analysis`, with whatever an earlier run left.
    pub fn open(&self, analysis: &AnalysisId) -> Result<Queue, OutboxError> {
        Queue::open(
            self.log_path(analysis),
            self.dir.join(format!("{analysis}.acked")),
        )
    }

    fn log_path(&self, analysis: &AnalysisId) -> PathBuf {
        self.dir.join(format!("{analysis}.jsonl"))
    }
}

/// One analysis' events not yet confirmed by the edge.
#[derive(Debug)]
pub struct Queue {
    log_path: PathBuf,
    acked_path: PathBuf,
    log: File,
    /// Serialized events, oldest first.
    pending: VecDeque<String>,
    acked: u64,
    unsynced: bool,
    ended: bool,
}

impl Queue {
    fn open(log_path: PathBuf, acked_path: PathBuf) -> Result<Self, OutboxError> {
        let acked: u64 = match fs::read_to_string(&acked_path) {
            Ok(s) => s.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(&acked_path)(e)),
        };
        let (mut pending, mut ended) = (VecDeque::new(), false);
        let mut valid_len = 0u64;
        if log_path.exists() {
            let file = File::open(&log_path).map_err(io(&log_path))?;
            for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
                let line = line.map_err(io(&log_path))?;
                let text = String::from_utf8_lossy(&line).into_owned();
                let event: Event = match serde_json::from_str(&text) {
                    Ok(event) => event,
                    // a crash mid-append leaves a torn last line: it was never published
                    Err(_) if is_torn_tail(&log_path, valid_len, line.len()) => break,
                    Err(source) => {
                        return Err(OutboxError::Corrupt {
                            path: log_path,
                            line: n + 1,
                            source,
                        });
                    }
                };
                valid_len += line.len() as u64 + 1;
                ended |= event.kind.is_terminal();
                if n as u64 >= acked {
                    pending.push_back(text);
                }
            }
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        log.set_len(valid_len).map_err(io(&log_path))?;
        metrics::gauge!("stagecast_outbox_events").increment(pending.len() as f64);
        Ok(Self {
            log_path,
            acked_path,
            log,
            pending,
            acked,
            unsynced: false,
            ended,
        })
    }

    /// Appends `event` (on disk at the next [`Queue::sync`]).
    pub fn push(&mut self, event: &Event) -> Result<(), OutboxError> {
        let line = serde_json::to_string(event).expect("events serialize");
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.log.write_all(&bytes).map_err(io(&self.log_path))?;
        self.ended |= event.kind.is_terminal();
        self.pending.push_back(line);
        self.unsynced = true;
        metrics::gauge!("stagecast_outbox_events").increment(1.0);
        Ok(())
    }

    /// Makes every pushed event durable: call before publishing them.
    pub fn sync(&mut self) -> Result<(), OutboxError> {
        if self.unsynced {
            self.log.sync_data().map_err(io(&self.log_path))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// The body of the next publish, at most `max_events` events and within the
    /// contract's size bound, and how many events it holds. `attempt` is the lease's, for
    /// a run the pool leased (fencing).
    pub fn next_body(&self, max_events: usize, attempt: Option<u32>) -> Option<(String, usize)> {
        let mut body = match attempt {
            Some(attempt) => format!("{{\"attempt\":{attempt},\"events\":["),
            None => String::from("{\"events\":["),
        };
        let mut count = 0;
        for line in self
            .pending
            .iter()
            .take(max_events.min(MAX_EVENTS_PER_BATCH))
        {
            if count > 0 && body.len() + line.len() + 2 > BODY_BUDGET {
                break;
            }
            if count > 0 {
                body.push(',');
            }
            body.push_str(line);
            count += 1;
        }
        body.push_str("]}");
        (count > 0).then_some((body, count))
    }

    /// The edge has the first `n` pending events (stored or refused for good). Once the
    /// terminal event is confirmed the outbox is removed.
    pub fn ack(&mut self, n: usize) -> Result<(), OutboxError> {
        let n = n.min(self.pending.len());
        self.pending.drain(..n);
        self.acked += n as u64;
        metrics::gauge!("stagecast_outbox_events").decrement(n as f64);
        if self.ended && self.pending.is_empty() {
            return self.remove_files();
        }
        // Replaced atomically but not synced: a cursor lost in a crash only resends events
        // the edge then drops as duplicates, and a sync per publish costs the node dearly.
        let tmp = self.acked_path.with_extension("acked.tmp");
        fs::write(&tmp, self.acked.to_string()).map_err(io(&tmp))?;
        fs::rename(&tmp, &self.acked_path).map_err(io(&self.acked_path))
    }

    /// Forgets every pending event and removes the outbox: they will never be sent
    /// (their attempt is stale). Returns how many there were.
    pub fn discard(&mut self) -> Result<usize, OutboxError> {
        let dropped = self.pending.len();
        self.pending.clear();
        metrics::gauge!("stagecast_outbox_events").decrement(dropped as f64);
        self.remove_files()?;
        Ok(dropped)
    }

    fn remove_files(&self) -> Result<(), OutboxError> {
        for path in [&self.log_path, &self.acked_path] {
            match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(path)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// A terminal event is in the log.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        metrics::gauge!("stagecast_outbox_events").decrement(self.pending.len() as f64);
    }
}

/// Whether the unparsable line at `offset` is the file's last, unterminated one.
fn is_torn_tail(path: &Path, offset: u64, len: usize) -> bool {
    fs::metadata(path).is_ok_and(|m| m.len() == offset + len as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagecast_shared::event::EventKind;

    fn event(id: &str, kind: EventKind) -> Event {
        Event {
            id: id.into(),
            ts: Some(1),
            kind,
        }
    }

    fn heartbeat(id: &str) -> Event {
        event(id, EventKind::Heartbeat { metrics: None })
    }

    fn id(s: &str) -> AnalysisId {
        AnalysisId::parse(s).unwrap()
    }

    #[test]
    fn unacked_events_survive_a_reopen_and_acked_ones_do_not_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path()).unwrap();
        let mut q = outbox.open(&id("a1")).unwrap();
        for i in 0..5 {
            q.push(&heartbeat(&format!("e{i}"))).unwrap();
        }
        q.sync().unwrap();
        q.ack(2).unwrap();
        drop(q);
        let q = outbox.open(&id("a1")).unwrap();
        assert_eq!(q.len(), 3);
        let (body, n) = q.next_body(100, None).unwrap();
        assert_eq!(n, 3);
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        let ids: Vec<_> = parsed["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["e2", "e3", "e4"]);
        assert_eq!(outbox.analyses().unwrap(), vec![id("a1")]);
    }

    #[test]
    fn a_leased_run_carries_its_attempt_and_a_stale_one_is_discarded_whole() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path()).unwrap();
        let mut q = outbox.open(&id("a7")).unwrap();
        q.push(&heartbeat("e0")).unwrap();
        q.push(&heartbeat("e1")).unwrap();
        q.sync().unwrap();
        let (body, _) = q.next_body(100, Some(3)).unwrap();
        let parsed: stagecast_shared::api::PublishRequest = serde_json::from_str(&body).unwrap();
        assert_eq!((parsed.attempt, parsed.events.len()), (Some(3), 2));
        assert_eq!(q.discard().unwrap(), 2);
        assert!(q.is_empty() && q.next_body(100, Some(3)).is_none());
        assert!(!outbox.contains(&id("a7")));
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_the_log_stays_appendable() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path()).unwrap();
        let mut q = outbox.open(&id("a2")).unwrap();
        q.push(&heartbeat("e0")).unwrap();
        q.sync().unwrap();
        drop(q);
        let log = dir.path().join("a2.jsonl");
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"{\"id\":\"e1\",\"ty").unwrap();
        drop(f);
        let mut q = outbox.open(&id("a2")).unwrap();
        assert_eq!(q.len(), 1);
        q.push(&heartbeat("e2")).unwrap();
        q.sync().unwrap();
        drop(q);
        assert_eq!(outbox.open(&id("a2")).unwrap().len(), 2);
    }

    #[test]
    fn a_corrupt_line_in_the_middle_is_an_error_not_a_silent_loss() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("a3.jsonl"),
            "garbage\n{\"id\":\"e\",\"type\":\"heartbeat\"}\n",
        )
        .unwrap();
        let err = Outbox::new(dir.path())
            .unwrap()
            .open(&id("a3"))
            .unwrap_err();
        assert!(matches!(err, OutboxError::Corrupt { line: 1, .. }), "{err}");
    }

    #[test]
    fn the_outbox_goes_once_the_terminal_event_is_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path()).unwrap();
        let mut q = outbox.open(&id("a4")).unwrap();
        q.push(&event(
            "s",
            EventKind::Started {
                stages: vec![],
                total_frames: None,
                model: None,
                node: None,
            },
        ))
        .unwrap();
        q.push(&event("c", EventKind::Cancelled { reason: None }))
            .unwrap();
        assert!(q.ended());
        q.sync().unwrap();
        q.ack(2).unwrap();
        assert!(!outbox.contains(&id("a4")));
        assert!(outbox.analyses().unwrap().is_empty());
    }

    #[test]
    fn bodies_respect_the_batch_and_size_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path()).unwrap();
        let mut q = outbox.open(&id("a5")).unwrap();
        for i in 0..150 {
            q.push(&heartbeat(&format!("e{i}"))).unwrap();
        }
        assert_eq!(q.next_body(1000, None).unwrap().1, MAX_EVENTS_PER_BATCH);
        assert_eq!(q.next_body(7, None).unwrap().1, 7);
        let big = "x".repeat(100_000);
        let mut q = outbox.open(&id("a6")).unwrap();
        for i in 0..4 {
            q.push(&event(
                &format!("b{i}"),
                EventKind::Cancelled {
                    reason: Some(big.clone()),
                },
            ))
            .unwrap();
        }
        let (body, n) = q.next_body(100, Some(u32::MAX)).unwrap();
        assert_eq!(n, 2);
        assert!(body.len() <= MAX_BODY_BYTES);
    }
}
