//! What one analysis object instance bills on Cloudflare, counted as it goes: the requests
//! it answers, the WebSocket messages it receives, the SQLite rows it writes (as SQLite
//! counts them, indexes included) and the alarms it sets. In memory only: counting must
//! not itself write rows, so the figures cover this instance, since it was (re)built.

use std::cell::Cell;

#[derive(Debug, Default)]
pub struct Usage {
    requests: Cell<u64>,
    messages_in: Cell<u64>,
    rows_written: Cell<u64>,
    alarms_set: Cell<u64>,
}

impl Usage {
    pub fn request(&self) {
        self.requests.set(self.requests.get() + 1);
    }

    pub fn message_in(&self) {
        self.messages_in.set(self.messages_in.get() + 1);
    }

    pub fn rows_written(&self, rows: usize) {
        self.rows_written.set(self.rows_written.get() + rows as u64);
    }

    pub fn alarm_set(&self) {
        self.alarms_set.set(self.alarms_set.get() + 1);
    }

    /// One log line with the counts, for the analysis' end (`wrangler tail`, Workers Logs
    /// and the benchmarks read it).
    pub fn log(&self) {
        tracing::info!(
            requests = self.requests.get(),
            messages_in = self.messages_in.get(),
            rows_written = self.rows_written.get(),
            alarms_set = self.alarms_set.get(),
            "usage"
        );
    }
}
