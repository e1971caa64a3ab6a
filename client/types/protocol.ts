// Stagecast wire protocol v1. GENERATED from the Rust crate `stagecast-shared`:
// do not edit. Regenerate: STAGECAST_BLESS=1 cargo test -p stagecast-shared ts_export

/**
 * One event from a node: an `id` chosen by the node (unique within the analysis),
 * an optional `ts`, and the fields of its `type`.
 */
export type Event = { id: string, 
/**
 * The node's clock (ms since the Unix epoch). Informational only: the edge orders,
 * times and estimates with its own clock.
 */
ts?: number, } & ({ "type": "started", stages: Array<StageSpec>, total_frames?: number, model?: string, node?: string, } | { "type": "progress", stage: string, stage_progress: number, frames_done?: number, frames_total?: number, message?: string, } | { "type": "partial_result", regions: Array<Region>, scores?: Array<FrameScore>, } | { "type": "completed", result: AnalysisResult, } | { "type": "failed", error: ErrorInfo, } | { "type": "cancelled", reason?: string, } | { "type": "heartbeat", metrics?: Metrics, });

/**
 * The `type` of a node event and its fields.
 */
export type EventKind = { "type": "started", stages: Array<StageSpec>, total_frames?: number, model?: string, node?: string, } | { "type": "progress", stage: string, stage_progress: number, frames_done?: number, frames_total?: number, message?: string, } | { "type": "partial_result", regions: Array<Region>, scores?: Array<FrameScore>, } | { "type": "completed", result: AnalysisResult, } | { "type": "failed", error: ErrorInfo, } | { "type": "cancelled", reason?: string, } | { "type": "heartbeat", metrics?: Metrics, };

/**
 * A stage declared by `started`. Overall progress is the weight-averaged stage progress.
 */
export type StageSpec = { name: string, 
/**
 * Relative weight, finite and > 0.
 */
weight: number, };

/**
 * A box found in one frame.
 */
export type Region = { frame: number, x: number, y: number, w: number, h: number, 
/**
 * What `x, y, w, h` are measured in; absent means pixels.
 */
units?: Units, 
/**
 * Confidence in 0..=1.
 */
score: number, label?: string, 
/**
 * Landmarks inside the box as `[x, y]` pairs in the box's units (a face's eyes, nose
 * and mouth corners, in that order).
 */
points?: Array<[number, number]>, };

/**
 * One frame's score (0..=1), as the analysis' score is the best of them.
 */
export type FrameScore = { frame: number, score: number, };

/**
 * Units of a region's box.
 */
export type Units = "px" | "normalized";

/**
 * The outcome of a completed analysis.
 */
export type AnalysisResult = { 
/**
 * 0..=1.
 */
score: number, flagged: boolean, frames_processed: number, total_frames: number, 
/**
 * The final list of regions; it replaces what partial results reported.
 */
regions: Array<Region>, validation_required: boolean, summary?: string, 
/**
 * The analysed frames' size in pixels, so pixel regions can be drawn to scale
 * (an extension of v1).
 */
frame_width?: number, frame_height?: number, };

/**
 * Why an analysis failed.
 */
export type ErrorInfo = { code: string, message: string, 
/**
 * Whether running the analysis again may succeed.
 */
retryable: boolean, };

/**
 * Node health carried by heartbeats. Utilizations are fractions in 0..=1
 * (`cpu_util` of the whole machine, not per core).
 */
export type Metrics = { gpu_util?: number, gpu_mem_used_bytes?: number, gpu_mem_total_bytes?: number, cpu_util?: number, rss_bytes?: number, queue_depth?: number, };

/**
 * An event the edge appends itself.
 */
export type EdgeEvent = { 
/**
 * `edge:<seq>`: the `:` keeps it apart from node-chosen ids.
 */
id: string, } & ({ "type": "cancel_requested", by: string, } | { "type": "stalled", silent_ms: number, } | { "type": "queued", pool: PoolName, position?: number, max_attempts: number, } | { "type": "leased", node: NodeId, attempt: number, } | { "type": "requeued", attempt: number, reason: RequeueReason, node: NodeId, } | { "type": "failed", error: ErrorInfo, } | { "type": "cancelled", reason: string, } | { "type": "artifact", name: ArtifactName, content_type: string, bytes: number, 
/**
 * The frame it shows, for a key frame.
 */
frame?: number, 
/**
 * What it is: `key_frame` (of a partial result), `result`, or the node's own word.
 */
kind?: string, });

/**
 * The `type` of an edge event and its fields.
 */
export type EdgeEventKind = { "type": "cancel_requested", by: string, } | { "type": "stalled", silent_ms: number, } | { "type": "queued", pool: PoolName, position?: number, max_attempts: number, } | { "type": "leased", node: NodeId, attempt: number, } | { "type": "requeued", attempt: number, reason: RequeueReason, node: NodeId, } | { "type": "failed", error: ErrorInfo, } | { "type": "cancelled", reason: string, } | { "type": "artifact", name: ArtifactName, content_type: string, bytes: number, 
/**
 * The frame it shows, for a key frame.
 */
frame?: number, 
/**
 * What it is: `key_frame` (of a partial result), `result`, or the node's own word.
 */
kind?: string, };

/**
 * The `event` of a stored event: from the node or from the edge, told apart by `type`.
 */
export type StoredEventBody = Event | EdgeEvent;

/**
 * An event as stored and sent by the edge.
 */
export type StoredEvent = { 
/**
 * 1, 2, 3... per analysis, no gaps.
 */
seq: number, 
/**
 * The edge's clock when it stored the event (ms since the Unix epoch), never
 * earlier than the previous event's. The node's own clock stays in `event.ts`.
 */
ts: number, event: StoredEventBody, 
/**
 * Overall progress (0..=1) once this event applied.
 */
overall_progress: number, 
/**
 * Estimated time left (ms) from `ts`, while running and once there is a rate.
 */
eta_ms?: number, };

/**
 * `GET /v1/analyses/{id}/events?since=S&limit=L`: stored events with `seq > S`, and
 * the analysis' current `last_seq` (more may follow when it is larger than the last event's).
 */
export type EventsPage = { events: Array<StoredEvent>, last_seq: number, };

/**
 * Where an analysis stands.
 */
export type Status = "queued" | "pending" | "running" | "completed" | "failed" | "cancelled" | "stalled";

/**
 * One stage's progress.
 */
export type StageSnapshot = { name: string, weight: number, 
/**
 * 0..=1.
 */
progress: number, 
/**
 * When its first `progress` event arrived.
 */
started_ts?: number, 
/**
 * When its progress reached 1, or when the analysis completed.
 */
finished_ts?: number, };

/**
 * Everything a client needs to draw an analysis without its history.
 * Timestamps are the edge's clock (those of the stored events).
 */
export type Snapshot = { analysis_id: string, status: Status, 
/**
 * The stage named by the latest `progress` event.
 */
stage?: string, 
/**
 * 0..=1; never decreases.
 */
overall_progress: number, 
/**
 * Estimated time left (ms) as of `updated_ts`, while running.
 */
eta_ms?: number, started_ts?: number, 
/**
 * The `ts` of the latest stored event.
 */
updated_ts?: number, last_seq: number, cancel_requested: boolean, stages: Array<StageSnapshot>, result?: AnalysisResult, error?: ErrorInfo, 
/**
 * Regions reported so far: the sum over `partial_result` events, then the length of
 * the final `result.regions` once completed.
 */
regions_count: number, 
/**
 * The pool of a submitted analysis (absent for one published directly by a node).
 */
pool?: PoolName, 
/**
 * While queued: 1 = next. Exact for positions 1..=10.
 */
queue_position?: number, 
/**
 * The current attempt of a submitted analysis (0 before its first lease).
 */
attempt?: number, max_attempts?: number, 
/**
 * The node holding the current lease.
 */
node?: NodeId, };

/**
 * `POST /v1/analyses/{id}/events` body (parsed and checked by `parse_publish_body`).
 */
export type PublishRequest = { 
/**
 * The lease's attempt; required for a submitted analysis (fencing).
 */
attempt?: number | null, events: Array<Event>, };

/**
 * 200 answer to a publish.
 */
export type PublishResponse = { 
/**
 * Events newly stored.
 */
accepted: number, 
/**
 * Events dropped because their id was already stored or repeated in the batch.
 */
duplicates: number, last_seq: number, 
/**
 * Whether someone asked to cancel: the node should stop and send `cancelled`.
 */
cancel_requested: boolean, };

/**
 * 202 answer to `POST /v1/analyses/{id}/cancel`.
 */
export type CancelResponse = { cancel_requested: boolean, };

/**
 * Every error's code. Each one carries its HTTP status (`ErrorCode::status`); the
 * same codes appear in WebSocket `error` messages.
 */
export type ErrorCode = "invalid_analysis_id" | "invalid_json" | "invalid_event" | "invalid_request" | "invalid_message" | "missing_token" | "invalid_token" | "token_expired" | "insufficient_scope" | "analysis_not_granted" | "not_found" | "analysis_not_found" | "method_not_allowed" | "not_started" | "already_started" | "analysis_finished" | "progress_backwards" | "unknown_stage" | "analysis_exists" | "stale_attempt" | "invalid_pool_name" | "payload_too_large" | "invalid_media" | "length_required" | "already_submitted" | "input_missing" | "not_lease_holder" | "too_many_artifacts" | "artifact_exists" | "range_not_satisfiable" | "rate_limited" | "queue_full" | "internal" | "unavailable";

/**
 * `{"error": {"code": "...", "message": "..."}}`, the body of every error answer.
 */
export type ErrorBody = { error: ErrorDetail, };

/**
 * The inside of `ErrorBody`.
 */
export type ErrorDetail = { code: ErrorCode, 
/**
 * What a person can act on.
 */
message: string, 
/**
 * For 409 (and event-level 400s): the index of the offending event in the batch.
 */
index?: number, };

/**
 * Server -> client.
 */
export type ServerMessage = { "type": "hello", analysis_id: string, snapshot: Snapshot, 
/**
 * The edge's clock when it sent this.
 */
server_ts: number, 
/**
 * How often the client should ping.
 */
heartbeat_ms: number, 
/**
 * The client's `since`, or null when it sent none (no replay: the snapshot
 * stands for the past).
 */
resumed_from: number | null, 
/**
 * False when `since` was older than the retained history: the snapshot stands
 * in for what was dropped.
 */
recovered: boolean, } | { "type": "event" } & StoredEvent | { "type": "snapshot", snapshot: Snapshot, } | { "type": "pong" } | { "type": "error", code: ErrorCode, message: string, };

/**
 * Client -> server.
 */
export type ClientMessage = { "type": "ping" } | { "type": "cancel" } | { "type": "snapshot" };

/**
 * A checked analysis id: it names the analysis' Durable Object.
 */
export type AnalysisId = string;

/**
 * A checked pool name (`default` unless a submission names another): with the
 * verified tenant it names the pool's Durable Object.
 */
export type PoolName = string;

/**
 * A checked node id: the `sub` of a node's token.
 */
export type NodeId = string;

/**
 * The work itself, as the node gets it in a lease.
 */
export type Job = { 
/**
 * An http(s) URL, which the node treats as untrusted, or `upload`: the analysis'
 * uploaded input, fetched from the edge.
 */
input: string, 
/**
 * The model to run; a node's default when absent.
 */
model?: string, options: JobOptions, };

/**
 * Pipeline knobs a caller may set; the node's configuration fills the rest.
 */
export type JobOptions = { fps?: number, batch_size?: number, };

/**
 * `POST /v1/analyses` body, checked by [`parse_submit_body`].
 */
export type SubmitRequest = { 
/**
 * The edge picks one when absent.
 */
analysis_id?: string, 
/**
 * `default` when absent.
 */
pool?: string, 
/**
 * An http(s) URL, or `upload` once `PUT /v1/analyses/{id}/input` stored one.
 */
input: string, model?: string, options: JobOptions, 
/**
 * 0..=9, higher first.
 */
priority: number, 
/**
 * 1..=10: how many attempts may be lost to node loss before the analysis fails.
 */
max_attempts: number, };

/**
 * 202 (queued now) or 200 (the same submission again) answer to `POST /v1/analyses`.
 */
export type SubmitResponse = { analysis_id: AnalysisId, pool: PoolName, status: Status, 
/**
 * While queued: 1 = next.
 */
queue_position?: number, };

/**
 * Why a leased analysis went back to the queue.
 */
export type RequeueReason = "node_lost" | "released" | "lease_expired";

/**
 * `GET /v1/pools/{pool}`.
 */
export type PoolView = { pool: PoolName, queued: number, leased: number, 
/**
 * How long the oldest queued analysis has waited.
 */
oldest_queued_ms?: number, nodes: Array<NodeView>, 
/**
 * Models that queued analyses ask for and no connected node serves.
 */
models_without_nodes: Array<string>, };

/**
 * One node in a pool view.
 */
export type NodeView = { node_id: NodeId, connected: boolean, connected_ts: number, last_heartbeat_ts: number, slots: number, running: Array<AnalysisId>, models: Array<string>, labels: { [key in string]: string }, metrics?: Metrics, };

/**
 * One analysis in `GET /v1/pools/{pool}/analyses`.
 */
export type PoolAnalysis = { analysis_id: AnalysisId, 
/**
 * `queued`, `pending` (leased, not started yet as the pool sees it), or how it ended.
 */
status: Status, attempt: number, priority: number, node?: NodeId, submitted_ts: number, finished_ts?: number, };

/**
 * The live pool view (`GET /v1/pools/{pool}/ws`): a `pool` snapshot first, then these.
 */
export type PoolEvent = { "type": "pool", view: PoolView, server_ts: number, } | { "type": "node_joined", node: NodeView, } | { "type": "node_left", node_id: NodeId, } | { "type": "node_metrics", node: NodeView, } | { "type": "queue_changed", queued: number, leased: number, } | { "type": "leased", analysis_id: AnalysisId, node: NodeId, attempt: number, } | { "type": "finished", analysis_id: AnalysisId, status: Status, };

/**
 * An artifact's name: an id, a dot and one of the known extensions, which fixes its
 * content type.
 */
export type ArtifactName = string;

/**
 * 201 answer to `PUT /v1/analyses/{id}/input`.
 */
export type UploadReceipt = { bytes: number, sha256: string, content_type: string, };

/**
 * 201 (stored) or 200 (the same bytes again) answer to `PUT .../artifacts/{name}`.
 */
export type ArtifactReceipt = { name: ArtifactName, bytes: number, sha256: string, content_type: string, };

/** WebSocket close codes used by the edge. */
export type CloseCode = 4001 | 4003 | 4400 | 4008 | 4009 | 4010 | 4409 | 1012 | 1013 | 1000;

/** What a client should do after a close. */
export type Reconnect = "never" | "with_new_token" | "with_backoff" | "without_resending" | "with_new_token_since_last_seq" | "since_last_seq";

/** Reason text and reconnect advice for each close code. */
export const CLOSE_CODES: Record<CloseCode, { reason: string, reconnect: Reconnect }> = {
  4001: { reason: "missing or invalid token", reconnect: "with_new_token" },
  4003: { reason: "token not allowed here", reconnect: "never" },
  4400: { reason: "malformed request", reconnect: "never" },
  4008: { reason: "too many messages", reconnect: "with_backoff" },
  4009: { reason: "message too big", reconnect: "without_resending" },
  4010: { reason: "token expired", reconnect: "with_new_token_since_last_seq" },
  4409: { reason: "replaced by a newer connection of this node", reconnect: "never" },
  1012: { reason: "edge restarting", reconnect: "since_last_seq" },
  1013: { reason: "too many subscribers: try again later", reconnect: "with_backoff" },
  1000: { reason: "closed", reconnect: "never" },
};

/** The WebSocket subprotocol; send it with `bearer.<token>` to authenticate. */
export const SUBPROTOCOL = "stagecast.v1";

/** Largest client message in bytes (close 4009 above it). */
export const MAX_CLIENT_MESSAGE_BYTES = 4096;
