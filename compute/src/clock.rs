//! The node's one wall clock. Event `ts`, token times and the tracker's view read it;
//! the sans-IO parts (shared's state machines, the coalescer) are handed its readings.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Seconds since the Unix epoch (JWT times).
pub fn now_s() -> i64 {
    now_ms() / 1000
}
