//! The object's SQLite storage: the event log (one row per commit: its events' ids, kept
//! for dedupe, and frames ready to send, cleared by the history limit), a checkpoint of the
//! state machine that the log's newer events bring up to date, and the artifacts' records.
//!
//! Every row a write touches is billed, indexes included, so a commit writes one log row
//! (its key is the rowid) and the checkpoint only every [`CHECKPOINT_EVERY`] events.

use std::collections::HashSet;
use std::rc::Rc;

use serde::Deserialize;
use stagecast_shared::Analysis;
use stagecast_shared::media::{ArtifactName, ArtifactRecord};
use stagecast_shared::stored::StoredEvent;
use stagecast_shared::ws::ServerMessage;
use worker::{Result, SqlStorage, SqlStorageValue};

use crate::usage::Usage;

const STATE_KEY: &str = "analysis";
/// The verified tenant the object belongs to, for its log lines where no request names it.
const TENANT_KEY: &str = "tenant";
/// The most events a wake replays on top of the checkpoint.
pub const CHECKPOINT_EVERY: u64 = 128;
/// Joins a commit's ids and its frames in one column: ids are `[A-Za-z0-9_-]` and JSON
/// text escapes every newline, so neither holds one.
const SEP: char = '\n';

pub struct Store {
    sql: SqlStorage,
    /// Where the rows each write touched are counted.
    usage: Rc<Usage>,
}

/// A stored event's frame (its socket message, JSON) and its seq.
pub struct Frame {
    pub seq: u64,
    pub text: String,
}

/// The state machine as storage holds it, and the seq its checkpoint was saved at.
pub struct Restored {
    pub analysis: Analysis,
    pub checkpoint_seq: u64,
}

#[derive(Deserialize)]
struct RecordRow {
    record: String,
}

#[derive(Deserialize)]
struct ValueRow {
    value: String,
}

#[derive(Deserialize)]
struct IdsRow {
    ids: String,
}

#[derive(Deserialize)]
struct FramesRow {
    last: i64,
    frames: String,
}

#[derive(Deserialize)]
struct NameRow {
    name: String,
}

fn seq_value(seq: u64) -> Result<SqlStorageValue> {
    SqlStorageValue::try_from_i64(
        i64::try_from(seq).map_err(|e| worker::Error::RustError(e.to_string()))?,
    )
}

fn event_of(frame: &Frame) -> Result<StoredEvent> {
    match serde_json::from_str(&frame.text)? {
        ServerMessage::Event(stored) => Ok(stored),
        other => Err(worker::Error::RustError(format!(
            "not an event frame: {other:?}"
        ))),
    }
}

impl Store {
    pub fn new(sql: SqlStorage, usage: Rc<Usage>) -> Self {
        Self { sql, usage }
    }

    /// Runs a statement that writes, counting the rows it wrote.
    fn write(&self, query: &str, params: Vec<SqlStorageValue>) -> Result<()> {
        let cursor = self.sql.exec(query, params)?;
        self.usage.rows_written(cursor.rows_written());
        Ok(())
    }

    pub fn migrate(&self) -> Result<()> {
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS log (last INTEGER PRIMARY KEY, ids TEXT NOT NULL, frames TEXT)",
            None,
        )?;
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            None,
        )?;
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS media (name TEXT PRIMARY KEY, record TEXT NOT NULL) WITHOUT ROWID",
            None,
        )?;
        // The first layout: a row per event (and an index on its id) and artifacts in a
        // rowid table with its own index. Moved once; its saved state is a checkpoint.
        let legacy: Vec<NameRow> = self
            .sql
            .exec(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('events', 'artifacts')",
                None,
            )?
            .to_array()?;
        for table in legacy {
            let moved = match table.name.as_str() {
                "events" => {
                    "INSERT OR IGNORE INTO log (last, ids, frames) SELECT seq, event_id, frame FROM events"
                }
                _ => {
                    "INSERT OR IGNORE INTO media (name, record) SELECT name, record FROM artifacts"
                }
            };
            self.sql.exec(moved, None)?;
            self.sql.exec(&format!("DROP TABLE {}", table.name), None)?;
        }
        Ok(())
    }

    /// The checkpoint brought up to date with the events logged after it.
    pub fn load_analysis(&self) -> Result<Option<Restored>> {
        let Some(value) = self.meta(STATE_KEY)? else {
            return Ok(None);
        };
        let checkpoint: Analysis = serde_json::from_str(&value)?;
        let checkpoint_seq = checkpoint.last_seq();
        let newer = self
            .frames(checkpoint_seq, None)?
            .iter()
            .map(event_of)
            .collect::<Result<Vec<_>>>()?;
        let analysis = checkpoint
            .resume(&newer)
            .map_err(|e| worker::Error::RustError(format!("stored log does not resume: {e}")))?;
        Ok(Some(Restored {
            analysis,
            checkpoint_seq,
        }))
    }

    pub fn save_checkpoint(&self, analysis: &Analysis) -> Result<()> {
        self.put_meta(STATE_KEY, &serde_json::to_string(analysis)?)
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        let rows: Vec<ValueRow> = self
            .sql
            .exec("SELECT value FROM meta WHERE key = ?", vec![key.into()])?
            .to_array()?;
        Ok(rows.into_iter().next().map(|row| row.value))
    }

    fn put_meta(&self, key: &str, value: &str) -> Result<()> {
        self.write(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            vec![key.into(), value.into()],
        )
    }

    pub fn load_tenant(&self) -> Result<Option<String>> {
        self.meta(TENANT_KEY)
    }

    /// Stores the tenant once: it never changes, so a stored one is left as it is.
    pub fn save_tenant(&self, tenant: &str) -> Result<()> {
        self.write(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
            vec![TENANT_KEY.into(), tenant.into()],
        )
    }

    /// The id of every event stored, trimmed ones too: what a publish dedupes against.
    pub fn event_ids(&self) -> Result<HashSet<String>> {
        let rows: Vec<IdsRow> = self.sql.exec("SELECT ids FROM log", None)?.to_array()?;
        Ok(rows
            .iter()
            .flat_map(|row| row.ids.split(SEP).map(str::to_owned))
            .collect())
    }

    /// Logs one commit's events, with their frames, in one row.
    pub fn append(&self, stored: &[StoredEvent], frames: &[String]) -> Result<()> {
        let Some(last) = stored.last() else {
            return Ok(());
        };
        let ids: Vec<&str> = stored.iter().map(|e| e.event.id()).collect();
        self.write(
            "INSERT INTO log (last, ids, frames) VALUES (?, ?, ?)",
            vec![
                seq_value(last.seq)?,
                ids.join(&SEP.to_string()).into(),
                frames.join(&SEP.to_string()).into(),
            ],
        )
    }

    /// Clears the frames of the commits that end at or before `through`; their ids stay.
    pub fn trim_history(&self, through: u64) -> Result<()> {
        if through > 0 {
            self.write(
                "UPDATE log SET frames = NULL WHERE last <= ? AND frames IS NOT NULL",
                vec![seq_value(through)?],
            )?;
        }
        Ok(())
    }

    /// The stored frames after `after`, in order, from at most `max_rows` commits.
    fn frames(&self, after: u64, max_rows: Option<usize>) -> Result<Vec<Frame>> {
        let rows: Vec<FramesRow> = self
            .sql
            .exec(
                "SELECT last, frames FROM log WHERE last > ? AND frames IS NOT NULL ORDER BY last LIMIT ?",
                vec![
                    seq_value(after)?,
                    SqlStorageValue::Integer(max_rows.map_or(-1, |l| l as i64)),
                ],
            )?
            .to_array()?;
        let mut out = Vec::new();
        for row in rows {
            let texts: Vec<&str> = row.frames.split(SEP).collect();
            let first = row.last as u64 + 1 - texts.len() as u64;
            out.extend(
                (first..)
                    .zip(texts)
                    .filter(|(seq, _)| *seq > after)
                    .map(|(seq, text)| Frame {
                        seq,
                        text: text.to_owned(),
                    }),
            );
        }
        Ok(out)
    }

    /// The frames to replay after `since` of the newest `retained` events, and whether that
    /// covers everything after it (false when older events were trimmed, or `since` is
    /// ahead of the log).
    pub fn frames_after(
        &self,
        since: u64,
        last_seq: u64,
        retained: u64,
    ) -> Result<(Vec<Frame>, bool)> {
        if since >= last_seq {
            return Ok((Vec::new(), since == last_seq));
        }
        let frames = self.frames(since.max(last_seq.saturating_sub(retained)), None)?;
        let recovered = frames.first().is_some_and(|f| f.seq == since + 1);
        Ok((frames, recovered))
    }

    /// A page of at most `limit` stored events after `since`, of the newest `retained`.
    pub fn events_after(
        &self,
        since: u64,
        limit: usize,
        last_seq: u64,
        retained: u64,
    ) -> Result<Vec<StoredEvent>> {
        // each row holds at least one event, so `limit` rows hold enough
        self.frames(since.max(last_seq.saturating_sub(retained)), Some(limit))?
            .iter()
            .take(limit)
            .map(event_of)
            .collect()
    }

    /// The artifact stored under `name`, if any.
    pub fn artifact(&self, name: &ArtifactName) -> Result<Option<ArtifactRecord>> {
        let rows: Vec<RecordRow> = self
            .sql
            .exec(
                "SELECT record FROM media WHERE name = ?",
                vec![name.as_str().into()],
            )?
            .to_array()?;
        rows.first()
            .map(|row| serde_json::from_str(&row.record).map_err(worker::Error::from))
            .transpose()
    }

    pub fn insert_artifact(&self, artifact: &ArtifactRecord) -> Result<()> {
        self.write(
            "INSERT INTO media (name, record) VALUES (?, ?)",
            vec![
                artifact.name.as_str().into(),
                serde_json::to_string(artifact)?.into(),
            ],
        )
    }

    /// Deletes everything: the retention period is over.
    pub fn wipe(&self) -> Result<()> {
        for table in ["log", "meta", "media"] {
            self.write(&format!("DELETE FROM {table}"), Vec::new())?;
        }
        Ok(())
    }
}
