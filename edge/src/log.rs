//! `tracing` for the Worker: one JSON line per event on the console (wrangler tail and the
//! dashboard show it), with the request span's tenant and analysis id on every line.

use std::io::{self, Write};
use std::sync::Once;

use tracing_subscriber::fmt::MakeWriter;

struct Console;

struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        worker::console_log!("{}", text.trim_end());
    }
}

impl<'a> MakeWriter<'a> for Console {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line(Vec::new())
    }
}

/// Installs the subscriber once per isolate.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            // SystemTime panics on wasm32; the platform stamps every console line anyway.
            .without_time()
            .with_writer(Console)
            .with_max_level(tracing::Level::INFO)
            .init();
    });
}
