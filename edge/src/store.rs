//! The object's SQLite storage: the event log (frames ready to send, ids kept for dedupe
//! after their frame is trimmed), the state machine in one row, and the artifacts' records.

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

pub struct Store {
    sql: SqlStorage,
    /// Where the rows each write touched are counted.
    usage: Rc<Usage>,
}

/// A stored event's frame (its socket message, JSON) and its seq.
#[derive(Deserialize)]
pub struct Frame {
    pub seq: u64,
    #[serde(rename = "frame")]
    pub text: String,
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
struct IdRow {
    event_id: String,
}

#[derive(Deserialize)]
struct SeqRow {
    seq: Option<i64>,
}

fn seq_value(seq: u64) -> Result<SqlStorageValue> {
    SqlStorageValue::try_from_i64(
        i64::try_from(seq).map_err(|e| worker::Error::RustError(e.to_string()))?,
    )
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
            "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, frame TEXT)",
            None,
        )?;
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            None,
        )?;
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS artifacts (name TEXT PRIMARY KEY, record TEXT NOT NULL)",
            None,
        )?;
        Ok(())
    }

    pub fn load_analysis(&self) -> Result<Option<Analysis>> {
        self.meta(STATE_KEY)?
            .map(|value| Ok(serde_json::from_str(&value)?))
            .transpose()
    }

    pub fn save_analysis(&self, analysis: &Analysis) -> Result<()> {
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

    pub fn save_tenant(&self, tenant: &str) -> Result<()> {
        self.put_meta(TENANT_KEY, tenant)
    }

    /// Which of `ids` are stored already: one query for a whole batch.
    pub fn known_ids(&self, ids: &[&str]) -> Result<HashSet<String>> {
        // One JSON array parameter, whatever the batch size (bound parameters are capped).
        let rows: Vec<IdRow> = self
            .sql
            .exec(
                "SELECT event_id FROM events WHERE event_id IN (SELECT value FROM json_each(?))",
                vec![serde_json::to_string(ids)?.into()],
            )?
            .to_array()?;
        Ok(rows.into_iter().map(|row| row.event_id).collect())
    }

    pub fn insert_event(&self, event: &StoredEvent, frame: &str) -> Result<()> {
        self.write(
            "INSERT INTO events (seq, event_id, frame) VALUES (?, ?, ?)",
            vec![seq_value(event.seq)?, event.event.id().into(), frame.into()],
        )
    }

    /// Drops the frames of all but the newest `limit` events; their ids stay for dedupe.
    pub fn trim_history(&self, last_seq: u64, limit: u64) -> Result<()> {
        if last_seq > limit {
            self.write(
                "UPDATE events SET frame = NULL WHERE seq <= ? AND frame IS NOT NULL",
                vec![seq_value(last_seq - limit)?],
            )?;
        }
        Ok(())
    }

    fn first_retained(&self) -> Result<Option<u64>> {
        let rows: Vec<SeqRow> = self
            .sql
            .exec(
                "SELECT MIN(seq) AS seq FROM events WHERE frame IS NOT NULL",
                None,
            )?
            .to_array()?;
        Ok(rows.first().and_then(|r| r.seq).map(|s| s as u64))
    }

    fn frames(&self, since: u64, limit: Option<usize>) -> Result<Vec<Frame>> {
        let limit = limit.map_or(-1, |l| l as i64);
        self.sql
            .exec(
                "SELECT seq, frame FROM events WHERE seq > ? AND frame IS NOT NULL ORDER BY seq LIMIT ?",
                vec![seq_value(since)?, SqlStorageValue::Integer(limit)],
            )?
            .to_array()
    }

    /// The frames to replay after `since`, and whether that covers everything after it
    /// (false when older events were trimmed, or `since` is ahead of the log).
    pub fn frames_after(&self, since: u64, last_seq: u64) -> Result<(Vec<Frame>, bool)> {
        if since >= last_seq {
            return Ok((Vec::new(), since == last_seq));
        }
        let recovered = self
            .first_retained()?
            .is_some_and(|first| first <= since + 1);
        Ok((self.frames(since, None)?, recovered))
    }

    /// A page of stored events after `since`.
    pub fn events_after(&self, since: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        self.frames(since, Some(limit))?
            .iter()
            .map(|frame| match serde_json::from_str(&frame.text)? {
                ServerMessage::Event(stored) => Ok(stored),
                other => Err(worker::Error::RustError(format!(
                    "not an event frame: {other:?}"
                ))),
            })
            .collect()
    }

    /// The artifact stored under `name`, if any.
    pub fn artifact(&self, name: &ArtifactName) -> Result<Option<ArtifactRecord>> {
        let rows: Vec<RecordRow> = self
            .sql
            .exec(
                "SELECT record FROM artifacts WHERE name = ?",
                vec![name.as_str().into()],
            )?
            .to_array()?;
        rows.first()
            .map(|row| serde_json::from_str(&row.record).map_err(worker::Error::from))
            .transpose()
    }

    pub fn insert_artifact(&self, artifact: &ArtifactRecord) -> Result<()> {
        self.write(
            "INSERT INTO artifacts (name, record) VALUES (?, ?)",
            vec![
                artifact.name.as_str().into(),
                serde_json::to_string(artifact)?.into(),
            ],
        )
    }

    /// Deletes everything: the retention period is over.
    pub fn wipe(&self) -> Result<()> {
        for table in ["events", "meta", "artifacts"] {
            self.write(&format!("DELETE FROM {table}"), Vec::new())?;
        }
        Ok(())
    }
}
