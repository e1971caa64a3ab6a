//! Bounds on everything a client controls. The edge runs in a small Wasm isolate and
//! keeps each analysis in one Durable Object, so every size is capped before it is stored.
//!
//! String lengths count Unicode scalar values (`char`s), not bytes; ids are ASCII so
//! both agree there.

/// Largest publish body accepted, in bytes (413 above it).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Events in one publish batch: at least one, at most this many.
pub const MAX_EVENTS_PER_BATCH: usize = 100;
/// Regions in one `partial_result` event or one `completed` result.
pub const MAX_REGIONS_PER_EVENT: usize = 1000;
/// Landmarks (`points`) of one region.
pub const MAX_POINTS_PER_REGION: usize = 16;
/// Frame scores in one `partial_result` event.
pub const MAX_SCORES_PER_EVENT: usize = 1000;
/// Stages declared by `started`: at least one, at most this many.
pub const MAX_STAGES: usize = 64;

/// Analysis ids and event ids: 1 to this many characters of `[A-Za-z0-9_-]`.
pub const MAX_ID_LEN: usize = 64;
/// Stage names, model and node names.
pub const MAX_NAME_LEN: usize = 128;
/// Region labels.
pub const MAX_LABEL_LEN: usize = 128;
/// Error codes sent by nodes (`failed.error.code`).
pub const MAX_CODE_LEN: usize = 64;
/// A submitted input URL.
pub const MAX_INPUT_URL_LEN: usize = 2048;
/// Human-readable messages: progress messages, error messages, cancel reasons.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// The `summary` of a completed result.
pub const MAX_SUMMARY_LEN: usize = 4096;

/// Largest stage weight; weights are relative, and a cap keeps their sum finite.
pub const MAX_STAGE_WEIGHT: f64 = 1e6;
/// Latest accepted event `ts` (ms): the end of year 9999, far beyond any real clock but
/// small enough that millisecond arithmetic cannot overflow.
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Largest WebSocket message a client may send (close 4009 above it).
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4 * 1024;
/// Client messages allowed per second on one socket (close 4008 above it).
pub const MAX_CLIENT_MESSAGES_PER_SECOND: u32 = 20;

/// Largest `limit` of `GET /v1/analyses/{id}/events`.
pub const MAX_EVENTS_PAGE: usize = 1000;
/// `limit` of `GET /v1/analyses/{id}/events` when the query leaves it out.
pub const DEFAULT_EVENTS_PAGE: usize = 100;

/// Largest frame side (`frame_width`, `frame_height`) a result may state, in pixels.
pub const MAX_FRAME_SIDE: u64 = 65_536;
