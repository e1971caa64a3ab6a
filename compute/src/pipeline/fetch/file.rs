//! The temporary file a fetch writes as the bytes arrive: within the node's cap, hashed,
//! with progress. Dropped before [`Download::finish`], it deletes what it had written.

use sha2::{Digest, Sha256};
use tempfile::TempPath;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::super::report::{Reporter, megabytes};
use super::super::update::Stage;
use super::DOWNLOAD_PREFIX;
use crate::error::Error;

pub(super) struct Download {
    /// The input's name in messages (its URL).
    label: String,
    max: u64,
    file: tokio::fs::File,
    path: TempPath,
    written: u64,
    /// What the server said the whole input is.
    total: Option<u64>,
    reported_percent: u64,
    hasher: Sha256,
}

impl Download {
    /// An empty file named for whoever clears what a killed node left in the temporary
    /// folder; more than `max` bytes fail with `input_too_large`.
    pub(super) fn create(label: String, max: u64) -> Result<Self, Error> {
        let (file, path) = tempfile::Builder::new()
            .prefix(DOWNLOAD_PREFIX)
            .tempfile()
            .map_err(|e| local(&label, e))?
            .into_parts();
        Ok(Self {
            label,
            max,
            file: tokio::fs::File::from_std(file),
            path,
            written: 0,
            total: None,
            reported_percent: 0,
            hasher: Sha256::new(),
        })
    }

    pub(super) fn written(&self) -> u64 {
        self.written
    }

    pub(super) fn total(&self) -> Option<u64> {
        self.total
    }

    /// The size of the whole input, as the server says it; over the cap is refused.
    pub(super) fn expect(&mut self, total: Option<u64>) -> Result<(), Error> {
        if let Some(total) = total.filter(|&t| t > self.max) {
            return Err(self.too_large(format!("{total} bytes")));
        }
        self.total = total;
        Ok(())
    }

    pub(super) async fn write(&mut self, chunk: &[u8], report: &mut Reporter) -> Result<(), Error> {
        self.written += chunk.len() as u64;
        if self.written > self.max {
            return Err(self.too_large(format!("more than {} bytes", self.max)));
        }
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| local(&self.label, e))?;
        self.hasher.update(chunk);
        // one update per percent at most
        let percent = self.total.map_or(0, |t| self.written * 100 / t.max(1));
        if percent > self.reported_percent {
            self.reported_percent = percent;
            report.bytes(self.written, self.total);
        }
        Ok(())
    }

    /// Starts again from the first byte (the server sent the whole input again).
    pub(super) async fn restart(&mut self) -> Result<(), Error> {
        let label = &self.label;
        self.file.set_len(0).await.map_err(|e| local(label, e))?;
        self.file
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| local(label, e))?;
        self.written = 0;
        self.hasher = Sha256::new();
        Ok(())
    }

    /// The file, all written, and the hex SHA-256 of its bytes.
    pub(super) async fn finish(
        mut self,
        report: &mut Reporter,
    ) -> Result<(TempPath, String), Error> {
        self.file.flush().await.map_err(|e| local(&self.label, e))?;
        let message = format!("downloaded {} MB", megabytes(self.written));
        report.finish(Stage::Fetch, None, Some(message));
        Ok((
            self.path,
            base16ct::lower::encode_string(&self.hasher.finalize()),
        ))
    }

    fn too_large(&self, size: String) -> Error {
        Error::InputTooLarge(format!(
            "{}: {size}, over this node's cap of {} bytes",
            self.label, self.max
        ))
    }
}

fn local(label: &str, e: std::io::Error) -> Error {
    Error::Internal(format!("temporary file for {label}: {e}"))
}
