//! The pool object's SQLite storage: one row per analysis, one per node, and the
//! counters, each row the JSON of the state machine's own type.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use stagecast_shared::dispatch::Changes;
use stagecast_shared::dispatch::pool::{Entry, Meta, Node};
use worker::{Result, SqlStorage};

const META_KEY: &str = "pool";

pub struct PoolStore {
    sql: SqlStorage,
}

#[derive(Deserialize)]
struct Row {
    row: String,
}

/// What a stored pool is made of.
pub struct Rows {
    pub meta: Meta,
    pub entries: Vec<Entry>,
    pub nodes: Vec<Node>,
}

impl PoolStore {
    pub fn new(sql: SqlStorage) -> Self {
        Self { sql }
    }

    pub fn migrate(&self) -> Result<()> {
        for table in ["entries", "nodes", "meta"] {
            self.sql.exec(
                &format!(
                    "CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, row TEXT NOT NULL)"
                ),
                None,
            )?;
        }
        Ok(())
    }

    fn rows<T: DeserializeOwned>(&self, table: &str) -> Result<Vec<T>> {
        let rows: Vec<Row> = self
            .sql
            .exec(&format!("SELECT row FROM {table}"), None)?
            .to_array()?;
        rows.iter()
            .map(|r| Ok(serde_json::from_str(&r.row)?))
            .collect()
    }

    pub fn load(&self) -> Result<Rows> {
        let meta = self
            .rows::<Meta>("meta")?
            .into_iter()
            .next()
            .unwrap_or_default();
        Ok(Rows {
            meta,
            entries: self.rows("entries")?,
            nodes: self.rows("nodes")?,
        })
    }

    fn put(&self, table: &str, id: &str, row: Option<String>) -> Result<()> {
        match row {
            Some(row) => self.sql.exec(
                &format!("INSERT INTO {table} (id, row) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET row = excluded.row"),
                vec![id.into(), row.into()],
            )?,
            None => self
                .sql
                .exec(&format!("DELETE FROM {table} WHERE id = ?"), vec![id.into()])?,
        };
        Ok(())
    }

    /// Writes what changed. Nothing awaits in between, so it commits as one.
    pub fn write(&self, changes: &Changes) -> Result<()> {
        for (id, entry) in &changes.entries {
            let row = entry.as_ref().map(serde_json::to_string).transpose()?;
            self.put("entries", id.as_str(), row)?;
        }
        for (id, node) in &changes.nodes {
            let row = node.as_ref().map(serde_json::to_string).transpose()?;
            self.put("nodes", id.as_str(), row)?;
        }
        if let Some(meta) = &changes.meta {
            self.put("meta", META_KEY, Some(serde_json::to_string(meta)?))?;
        }
        Ok(())
    }
}
