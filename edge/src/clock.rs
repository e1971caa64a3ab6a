//! The edge's one clock: the Workers runtime's `Date.now()` (`SystemTime` panics on
//! wasm32). The pure modules are handed its readings.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    worker::Date::now().as_millis() as i64
}
