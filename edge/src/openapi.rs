//! The edge's OpenAPI 3.1 document, `docs/openapi/edge.json` (served at `/openapi.json`).
//! The Worker has no handler types to annotate, so each route of [`Route::parse`] is
//! described here from the contract (docs/protocol.md), with the wire types' schemas;
//! each operation's scope, token places and common refusals come from the route itself
//! (`auth::required_scope`, `Route::is_websocket`, `Route::takes_query_token`). The tests
//! fail when a route of `Route::parse` is not in the document, and when the committed
//! file is not what this module writes.

use std::collections::BTreeMap;

use stagecast_shared::api::{
    CancelResponse, ErrorBody, ErrorCode, PublishRequest, PublishResponse,
};
use stagecast_shared::dispatch::wire::{PoolAnalysis, PoolView};
use stagecast_shared::dispatch::{SubmitRequest, SubmitResponse};
use stagecast_shared::ids::{AnalysisId, PoolName};
use stagecast_shared::limits::{DEFAULT_EVENTS_PAGE, MAX_BODY_BYTES, MAX_EVENTS_PAGE};
use stagecast_shared::media::{
    ArtifactName, ArtifactReceipt, DEFAULT_MAX_UPLOAD_BYTES, MAX_ARTIFACT_BYTES, UploadReceipt,
};
use stagecast_shared::openapi::{self as doc, BEARER, TOKEN_ERRORS};
use stagecast_shared::snapshot::Snapshot;
use stagecast_shared::stored::EventsPage;
use stagecast_shared::token::Scope;
use stagecast_shared::ws::{SUBPROTOCOL, TOKEN_COOKIE, TOKEN_QUERY};
use utoipa::ToSchema;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::{RequestBody, RequestBodyBuilder};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, LicenseBuilder, OpenApi, OpenApiBuilder, Paths,
    Ref, RefOr, Required, ServerBuilder,
};

use crate::auth::required_scope;
use crate::config::{DEFAULT_PUBLISH_RATE, DEFAULT_SSE_MAX_MS};
use crate::route::Route;

/// The security schemes besides `bearer`: the query and cookie a token may also come in.
const QUERY_SCHEME: &str = "token_query";
const COOKIE_SCHEME: &str = "token_cookie";

/// One operation, as the contract describes it.
struct Op {
    method: &'static str,
    /// With `{id}`, `{pool}` and `{name}` for the path's segments.
    path: &'static str,
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
    description: String,
    params: Vec<Parameter>,
    body: Option<RequestBody>,
    answers: Vec<(u16, Response)>,
    /// The route's own refusals; those of the id, the pool and the token are added.
    errors: Vec<ErrorCode>,
}

/// The schemas the operations refer to, collected as they are used.
#[derive(Default)]
struct Schemas(BTreeMap<String, RefOr<Schema>>);

impl Schemas {
    /// A reference to `T`, whose schema (and those it refers to) join the components.
    fn of<T: ToSchema>(&mut self) -> Ref {
        let mut found = vec![(T::name().into_owned(), T::schema())];
        T::schemas(&mut found);
        self.0.extend(found);
        Ref::from_schema_name(T::name())
    }

    fn json<T: ToSchema>(&mut self, description: &str) -> Response {
        let content = ContentBuilder::new().schema(Some(self.of::<T>())).build();
        ResponseBuilder::new()
            .description(description)
            .content("application/json", content)
            .build()
    }

    fn body<T: ToSchema>(&mut self, description: &str) -> Option<RequestBody> {
        let content = ContentBuilder::new().schema(Some(self.of::<T>())).build();
        Some(
            RequestBodyBuilder::new()
                .description(Some(description))
                .required(Some(Required::True))
                .content("application/json", content)
                .build(),
        )
    }
}

fn integer(minimum: u64, maximum: Option<u64>, default: Option<u64>) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(minimum))
        .maximum(maximum)
        .default(default.map(Into::into))
        .build()
        .into()
}

fn string() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .build()
        .into()
}

fn param(at: ParameterIn, name: &str, schema: Schema, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(at)
        .schema(Some(schema))
        .description(Some(description))
        .build()
}

/// `since` of the socket and the stream: absent is no replay.
fn since() -> Parameter {
    param(
        ParameterIn::Query,
        "since",
        integer(0, None, None),
        "Replay the retained events after this seq (`0`: the whole retained history). \
         Absent: no replay, the snapshot in the hello stands for the past.",
    )
}

fn limit() -> Parameter {
    param(
        ParameterIn::Query,
        "limit",
        integer(
            1,
            Some(MAX_EVENTS_PAGE as u64),
            Some(DEFAULT_EVENTS_PAGE as u64),
        ),
        "At most this many items.",
    )
}

/// A body of raw bytes in one of `media_types`.
fn bytes_body(media_types: &[&str], description: &str) -> Option<RequestBody> {
    let mut body = RequestBodyBuilder::new()
        .description(Some(description))
        .required(Some(Required::True));
    for media_type in media_types {
        body = body.content(*media_type, ContentBuilder::new().build());
    }
    Some(body.build())
}

fn bytes_answer(media_types: &[&str], description: &str) -> Response {
    let mut answer = ResponseBuilder::new().description(description);
    for media_type in media_types {
        answer = answer.content(*media_type, ContentBuilder::new().build());
    }
    answer.build()
}

fn text_answer(media_type: &str, description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            media_type,
            ContentBuilder::new().schema(Some(string())).build(),
        )
        .build()
}

const ARTIFACT_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/webp", "application/json"];

/// Every route of the edge.
fn operations(s: &mut Schemas) -> Vec<Op> {
    use ErrorCode::*;
    let artifact_query = |name: &str, schema: Schema, description: &str| {
        param(ParameterIn::Query, name, schema, description)
    };
    vec![
        Op {
            method: "GET",
            path: "/healthz",
            id: "health",
            tag: "meta",
            summary: "Liveness",
            description: "Answers `ok` while the Worker runs.".into(),
            params: vec![],
            body: None,
            answers: vec![(200, text_answer("text/plain", "The text `ok`."))],
            errors: vec![],
        },
        Op {
            method: "GET",
            path: "/openapi.json",
            id: "openapiDocument",
            tag: "meta",
            summary: "This document",
            description: "The edge's OpenAPI document (`docs/openapi/edge.json`).".into(),
            params: vec![],
            body: None,
            answers: vec![(
                200,
                ResponseBuilder::new()
                    .description("The OpenAPI 3.1 document.")
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                            .build(),
                    )
                    .build(),
            )],
            errors: vec![],
        },
        Op {
            method: "POST",
            path: "/v1/analyses",
            id: "submitAnalysis",
            tag: "dispatch",
            summary: "Submit an analysis to a pool",
            description: format!(
                "Queues the analysis in its pool for a node to lease (docs/protocol.md §14). \
                 Idempotent on the id: the same submission again answers 200 with its current \
                 status. The body is at most {MAX_BODY_BYTES} bytes; unknown fields are refused. \
                 An id the edge picks needs a token granting `[\"*\"]`."
            ),
            params: vec![],
            body: s.body::<SubmitRequest>("The submission."),
            answers: vec![
                (202, s.json::<SubmitResponse>("Queued now.")),
                (
                    200,
                    s.json::<SubmitResponse>("The same submission again: its current status."),
                ),
            ],
            errors: vec![
                InvalidJson,
                InvalidRequest,
                InvalidAnalysisId,
                InvalidPoolName,
                AnalysisNotGranted,
                AnalysisExists,
                InputMissing,
                PayloadTooLarge,
                QueueFull,
            ],
        },
        Op {
            method: "GET",
            path: "/v1/analyses/{id}",
            id: "getSnapshot",
            tag: "analyses",
            summary: "The analysis' snapshot",
            description: "Everything a client needs to draw the analysis without its history \
                          (docs/protocol.md §6). An analysis nobody published to reads as \
                          `pending` with `last_seq` 0."
                .into(),
            params: vec![],
            body: None,
            answers: vec![(200, s.json::<Snapshot>("The snapshot."))],
            errors: vec![],
        },
        Op {
            method: "GET",
            path: "/v1/analyses/{id}/events",
            id: "listEvents",
            tag: "analyses",
            summary: "A page of stored events",
            description: "The retained stored events with `seq > since`, in seq order, and the \
                          analysis' `last_seq`: when it is larger than the last event's seq, \
                          ask again from there (docs/protocol.md §4)."
                .into(),
            params: vec![
                param(
                    ParameterIn::Query,
                    "since",
                    integer(0, None, Some(0)),
                    "Events after this seq.",
                ),
                limit(),
            ],
            body: None,
            answers: vec![(200, s.json::<EventsPage>("The page."))],
            errors: vec![InvalidRequest],
        },
        Op {
            method: "POST",
            path: "/v1/analyses/{id}/events",
            id: "publishEvents",
            tag: "analyses",
            summary: "Publish a batch of events (nodes)",
            description: format!(
                "1 to 100 events, at most {MAX_BODY_BYTES} bytes, stored atomically: all or \
                 none (docs/protocol.md §4, §5). `attempt` is required for a submitted analysis \
                 and must be its current lease's (fencing, §14). Duplicates (by event id) are \
                 dropped and counted, so a retried batch is safe. Each analysis takes \
                 `STAGECAST_PUBLISH_RATE` batches a second (default {DEFAULT_PUBLISH_RATE}), \
                 with bursts of twice that."
            ),
            params: vec![],
            body: s.body::<PublishRequest>("The batch."),
            answers: vec![(200, s.json::<PublishResponse>("The batch was stored."))],
            errors: vec![
                InvalidJson,
                InvalidEvent,
                StaleAttempt,
                NotStarted,
                AlreadyStarted,
                AnalysisFinished,
                ProgressBackwards,
                UnknownStage,
                PayloadTooLarge,
                RateLimited,
            ],
        },
        Op {
            method: "POST",
            path: "/v1/analyses/{id}/cancel",
            id: "cancelAnalysis",
            tag: "analyses",
            summary: "Ask to cancel",
            description: "The first accepted cancel stores the edge event `cancel_requested`; \
                          later ones answer 202 and store nothing. A queued analysis leaves its \
                          queue; a leased one's node is told at once (docs/protocol.md §4, §14)."
                .into(),
            params: vec![],
            body: None,
            answers: vec![(202, s.json::<CancelResponse>("The cancel was recorded."))],
            errors: vec![AnalysisFinished],
        },
        Op {
            method: "GET",
            path: "/v1/analyses/{id}/ws",
            id: "subscribe",
            tag: "analyses",
            summary: "Follow the analysis live (WebSocket)",
            description: "A `hello` with the snapshot first, then the replayed and the live \
                          stored events, in seq order, with no gaps and no repeats; client \
                          messages `ping`, `cancel` (scope `cancel`) and `snapshot`. The \
                          messages are in docs/protocol.md §7."
                .into(),
            params: vec![since()],
            body: None,
            answers: vec![],
            errors: vec![],
        },
        Op {
            method: "GET",
            path: "/v1/analyses/{id}/publish",
            id: "publishSocket",
            tag: "analyses",
            summary: "Publish events over a socket (WebSocket)",
            description: "The node's alternative to `POST .../events`: each `publish` message \
                          carries a request number and a publish body, checked and stored as \
                          the POST's is, and is answered by `published` or `refused` with the \
                          same request number. A message bills a twentieth of a request. The \
                          messages are in docs/protocol.md §4."
                .into(),
            params: vec![],
            body: None,
            answers: vec![],
            errors: vec![],
        },
        Op {
            method: "GET",
            path: "/v1/analyses/{id}/stream",
            id: "streamEvents",
            tag: "analyses",
            summary: "Follow the analysis live (Server-Sent Events)",
            description: format!(
                "The WebSocket's fallback for clients that cannot open one (an `EventSource`). \
                 First `event: hello`, whose `data:` is the socket's hello message (JSON, \
                 docs/protocol.md §7); then `event: event` with `id: <seq>` and `data:` the \
                 socket's event message; `: ping` comments as heartbeat. The stream ends after \
                 at most `STAGECAST_SSE_MAX_MS` (default {DEFAULT_SSE_MAX_MS} ms) or at the \
                 token's expiry, with a `retry:` hint; the `EventSource` then reconnects with \
                 `Last-Event-ID` and misses nothing. An analysis with as many subscribers as it \
                 takes answers 503 with `Retry-After`."
            ),
            params: vec![
                since(),
                param(
                    ParameterIn::Header,
                    "Last-Event-ID",
                    integer(0, None, None),
                    "The seq of the last event received, as an `EventSource` sends it when it \
                     reconnects; wins over `since`.",
                ),
            ],
            body: None,
            answers: vec![(
                200,
                text_answer(
                    "text/event-stream",
                    "The stream: `hello`, then `event` frames and `: ping` comments.",
                ),
            )],
            errors: vec![InvalidRequest, Unavailable],
        },
        Op {
            method: "PUT",
            path: "/v1/analyses/{id}/input",
            id: "uploadInput",
            tag: "media",
            summary: "Upload the analysis' input",
            description: format!(
                "The file is the body, streamed into storage, before the analysis is \
                 submitted (a second upload replaces the first). `Content-Length` is required, \
                 at most `STAGECAST_MAX_UPLOAD_BYTES` (default {DEFAULT_MAX_UPLOAD_BYTES}). Then \
                 submit with `\"input\": \"upload\"` (docs/protocol.md §15)."
            ),
            params: vec![],
            body: bytes_body(&["video/*", "image/*"], "The input file."),
            answers: vec![(201, s.json::<UploadReceipt>("Stored."))],
            errors: vec![
                InvalidMedia,
                InvalidRequest,
                AlreadySubmitted,
                LengthRequired,
                PayloadTooLarge,
                Unavailable,
            ],
        },
        Op {
            method: "GET",
            path: "/v1/analyses/{id}/input",
            id: "fetchInput",
            tag: "media",
            summary: "Fetch the uploaded input (the leased node)",
            description: "Only for the node holding the analysis' current lease (the token's \
                          `sub`). The bytes with `ETag: \"<sha256>\"` and `Accept-Ranges: bytes`; \
                          a `Range` is answered 206, so a cut fetch resumes (docs/protocol.md \
                          §15)."
                .into(),
            params: vec![
                param(
                    ParameterIn::Header,
                    "Range",
                    string(),
                    "`bytes=N-`, `bytes=N-M` or `bytes=-N`; several ranges are answered with \
                     the first.",
                ),
                param(
                    ParameterIn::Header,
                    "If-Range",
                    string(),
                    "The ETag the earlier part came with: another one answers 200 with the \
                     whole file.",
                ),
            ],
            body: None,
            answers: vec![
                (
                    200,
                    bytes_answer(&["video/*", "image/*"], "The whole input."),
                ),
                (
                    206,
                    bytes_answer(
                        &["video/*", "image/*"],
                        "The part of the input the range asks for, with `Content-Range`.",
                    ),
                ),
            ],
            errors: vec![NotLeaseHolder, NotFound, RangeNotSatisfiable],
        },
        Op {
            method: "PUT",
            path: "/v1/analyses/{id}/artifacts/{name}",
            id: "putArtifact",
            tag: "media",
            summary: "Store an artifact (the leased node)",
            description: format!(
                "A picture or a JSON file of the run, written once: the same bytes again \
                 answer 200, other bytes 409. `Content-Type` is the name's extension's; \
                 `Content-Length` is required, at most {MAX_ARTIFACT_BYTES} bytes. The edge \
                 appends the stored event `artifact` (docs/protocol.md §15)."
            ),
            params: vec![
                artifact_query(
                    "attempt",
                    integer(0, Some(u64::from(u32::MAX)), None),
                    "The lease's attempt; required for a submitted analysis, as on publishes.",
                ),
                artifact_query("frame", integer(0, None, None), "The frame it shows."),
                artifact_query(
                    "kind",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[A-Za-z0-9_-]{1,64}$"))
                        .build()
                        .into(),
                    "What it is: `key_frame`, `result`, or the node's own word (an id, \
                     docs/protocol.md §2).",
                ),
            ],
            body: bytes_body(&ARTIFACT_TYPES, "The artifact."),
            answers: vec![
                (201, s.json::<ArtifactReceipt>("Stored.")),
                (
                    200,
                    s.json::<ArtifactReceipt>("The same bytes were stored already."),
                ),
            ],
            errors: vec![
                InvalidMedia,
                InvalidRequest,
                StaleAttempt,
                TooManyArtifacts,
                AnalysisFinished,
                ArtifactExists,
                LengthRequired,
                PayloadTooLarge,
            ],
        },
        Op {
            method: "GET",
            path: "/v1/analyses/{id}/artifacts/{name}",
            id: "getArtifact",
            tag: "media",
            summary: "Read an artifact",
            description: "The bytes as stored, with `ETag`, `Cache-Control: private, \
                          max-age=86400` (names are written once) and `X-Content-Type-Options: \
                          nosniff`; the token may be `?token=`, so an `<img>` can load it \
                          (docs/protocol.md §15)."
                .into(),
            params: vec![param(
                ParameterIn::Header,
                "If-None-Match",
                string(),
                "The ETag the client holds: 304 when it is current.",
            )],
            body: None,
            answers: vec![
                (200, bytes_answer(&ARTIFACT_TYPES, "The artifact.")),
                (
                    304,
                    ResponseBuilder::new()
                        .description("Not modified: the client's copy is current.")
                        .build(),
                ),
            ],
            errors: vec![InvalidMedia, NotFound],
        },
        Op {
            method: "GET",
            path: "/v1/pools/{pool}",
            id: "getPool",
            tag: "dispatch",
            summary: "The pool's view",
            description: "Its queue, leases and connected nodes (docs/protocol.md §14).".into(),
            params: vec![],
            body: None,
            answers: vec![(200, s.json::<PoolView>("The pool view."))],
            errors: vec![],
        },
        Op {
            method: "GET",
            path: "/v1/pools/{pool}/analyses",
            id: "listPoolAnalyses",
            tag: "dispatch",
            summary: "The pool's analyses",
            description: "Queued ones in queue order, the others newest first; the pool keeps \
                          the latest 200 finished (docs/protocol.md §14)."
                .into(),
            params: vec![
                param(
                    ParameterIn::Query,
                    "state",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["queued", "leased", "finished"]))
                        .default(Some("queued".into()))
                        .build()
                        .into(),
                    "Which analyses.",
                ),
                limit(),
            ],
            body: None,
            answers: vec![(200, pool_analyses(s))],
            errors: vec![InvalidRequest],
        },
        Op {
            method: "GET",
            path: "/v1/pools/{pool}/connect",
            id: "connectNode",
            tag: "dispatch",
            summary: "A node's pool socket (WebSocket)",
            description: "A node takes leases and heartbeats here; the token's `sub` is the node \
                          id. The messages (`ready`, `heartbeat`, `accept`, `release`; `welcome`, \
                          `lease`, `cancel`, `revoked`) are in docs/protocol.md §14."
                .into(),
            params: vec![],
            body: None,
            answers: vec![],
            errors: vec![],
        },
        Op {
            method: "GET",
            path: "/v1/pools/{pool}/ws",
            id: "watchPool",
            tag: "dispatch",
            summary: "The live pool view (WebSocket)",
            description: "A `pool` message with the view first, then `node_joined`, \
                          `node_left`, `node_metrics`, `queue_changed`, `leased` and `finished` \
                          (docs/protocol.md §14)."
                .into(),
            params: vec![],
            body: None,
            answers: vec![],
            errors: vec![],
        },
    ]
}

fn pool_analyses(s: &mut Schemas) -> Response {
    let list = ArrayBuilder::new().items(s.of::<PoolAnalysis>()).build();
    ResponseBuilder::new()
        .description("The analyses.")
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(list)).build(),
        )
        .build()
}

/// Where the edge looks for a route's token, in its order (docs/protocol.md §3).
fn token_places(route: &Route) -> (&'static [&'static str], String) {
    if route.is_websocket() {
        let places = format!(
            "`?{TOKEN_QUERY}=`, `Authorization: Bearer`, the cookie `{TOKEN_COOKIE}` or the \
             subprotocol `bearer.<token>` offered next to `{SUBPROTOCOL}` (what browsers use), \
             the first found winning"
        );
        (&[QUERY_SCHEME, BEARER, COOKIE_SCHEME], places)
    } else if route.takes_query_token() {
        let places = format!("`Authorization: Bearer` or `?{TOKEN_QUERY}=`");
        (&[BEARER, QUERY_SCHEME], places)
    } else {
        (&[BEARER], "`Authorization: Bearer`".into())
    }
}

/// The scopes any one of which lets a token use the route; none: no token.
fn scopes(route: &Route) -> Vec<Scope> {
    match route {
        // the node's fetch (the object checks the lease) or a publisher's with the grant
        Route::Input(_) => vec![Scope::Node, Scope::Publish],
        route => required_scope(route).into_iter().collect(),
    }
}

/// The route's path and its path parameters, for a sample request.
fn path_params(path: &str, s: &mut Schemas) -> (String, Vec<Parameter>) {
    let mut sample = path.to_owned();
    let mut params = Vec::new();
    for (name, value, schema, description) in [
        (
            "id",
            "a1",
            s.of::<AnalysisId>(),
            "The analysis id (docs/protocol.md §2).",
        ),
        (
            "pool",
            "gpu",
            s.of::<PoolName>(),
            "The pool name (docs/protocol.md §14).",
        ),
        (
            "name",
            "k.jpg",
            s.of::<ArtifactName>(),
            "The artifact name: an id, a dot and `jpg`, `jpeg`, `png`, `webp` or `json`.",
        ),
    ] {
        let segment = format!("{{{name}}}");
        if sample.contains(&segment) {
            sample = sample.replace(&segment, value);
            params.push(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(schema))
                    .description(Some(description))
                    .build(),
            );
        }
    }
    (sample, params)
}

fn websocket_params() -> Vec<Parameter> {
    let upgrade = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["websocket"]))
        .build();
    vec![
        ParameterBuilder::new()
            .name("Upgrade")
            .parameter_in(ParameterIn::Header)
            .required(Required::True)
            .schema(Some(upgrade))
            .description(Some("The WebSocket handshake (RFC 6455)."))
            .build(),
        param(
            ParameterIn::Header,
            "Sec-WebSocket-Protocol",
            string(),
            &format!(
                "`{SUBPROTOCOL}`, and `bearer.<token>` to carry the token; offered \
                 `{SUBPROTOCOL}` is selected in the answer, also on a refusal."
            ),
        ),
    ]
}

fn method(name: &str) -> HttpMethod {
    match name {
        "GET" => HttpMethod::Get,
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        other => unreachable!("the edge has no {other} route"),
    }
}

/// One operation of the document, with what its route says of itself.
fn operation(op: Op, s: &mut Schemas) -> utoipa::openapi::path::Operation {
    let (sample, mut params) = path_params(op.path, s);
    let route = Route::parse(op.method, &sample)
        .unwrap_or_else(|e| panic!("{} {} is documented but {e}", op.method, op.path));
    let scopes = scopes(&route);
    let (places, where_) = token_places(&route);
    let auth = if scopes.is_empty() {
        "No token.".to_owned()
    } else {
        let names: Vec<String> = scopes.iter().map(|s| format!("`{}`", s.as_str())).collect();
        format!(
            "Scope {} (docs/protocol.md §3); the token in {where_}.",
            names.join(" or ")
        )
    };
    let mut answers = op.answers;
    let errors = if route.is_websocket() {
        assert!(
            op.errors.is_empty(),
            "{}: a socket refuses with closes",
            op.path
        );
        params.extend(websocket_params());
        answers.push((
            101,
            ResponseBuilder::new()
                .description(
                    "Switching Protocols: the socket is open. A refused socket (bad id or \
                     query, token, scope, limits) is accepted and closed at once with a close \
                     code (docs/protocol.md §8), because browsers cannot read the status of a \
                     failed handshake.",
                )
                .build(),
        ));
        // the plain request is the one refusal that is not a close
        vec![ErrorCode::InvalidRequest]
    } else {
        let mut errors = op.errors;
        if !scopes.is_empty() {
            errors.extend(TOKEN_ERRORS);
            errors.push(ErrorCode::Internal);
        }
        if route.analysis_id().is_some() {
            errors.extend([ErrorCode::InvalidAnalysisId, ErrorCode::AnalysisNotGranted]);
        }
        if route.pool().is_some() {
            errors.push(ErrorCode::InvalidPoolName);
        }
        errors
    };
    params.extend(op.params);
    let mut responses: BTreeMap<String, Response> = answers
        .into_iter()
        .map(|(status, answer)| (status.to_string(), answer))
        .collect();
    if !errors.is_empty() {
        s.of::<ErrorBody>();
        let mut refusals = doc::error_responses(&errors);
        if route.is_websocket()
            && let Some(plain) = refusals.get_mut("400")
        {
            plain.description = "A plain HTTP request, without `Upgrade: websocket`: \
                                 `invalid_request`."
                .into();
        }
        responses.extend(refusals);
    }
    let security = places.iter().flat_map(|scheme| {
        scopes
            .iter()
            .map(|scope| SecurityRequirement::new(*scheme, [scope.as_str()]))
    });
    let mut operation = OperationBuilder::new()
        .operation_id(Some(op.id))
        .tag(op.tag)
        .summary(Some(op.summary))
        .description(Some(format!("{}\n\n{auth}", op.description)))
        .parameters((!params.is_empty()).then_some(params))
        .request_body(op.body)
        .securities(Some(security.collect::<Vec<_>>()));
    for (status, response) in responses {
        operation = operation.response(status, response);
    }
    operation.build()
}

/// The edge's OpenAPI document.
fn document() -> OpenApi {
    let mut schemas = Schemas::default();
    let mut paths = Paths::new();
    for op in operations(&mut schemas) {
        let (path, method) = (op.path, method(op.method));
        paths.add_path_operation(path, vec![method], operation(op, &mut schemas));
    }
    let key = |name: &str, description: &str| {
        SecurityScheme::ApiKey(match name {
            TOKEN_COOKIE => ApiKey::Cookie(ApiKeyValue::with_description(name, description)),
            _ => ApiKey::Query(ApiKeyValue::with_description(name, description)),
        })
    };
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas.0)
        .security_scheme(
            BEARER,
            doc::bearer_scheme(
                "A JWT of the tenant (docs/protocol.md §3): `iss` the tenant, `aud` \
                 `stagecast`, `scope` space-separated words, `analyses` the ids it grants.",
            ),
        )
        .security_scheme(
            QUERY_SCHEME,
            key(
                TOKEN_QUERY,
                "The token as a query parameter, where a route takes it.",
            ),
        )
        .security_scheme(
            COOKIE_SCHEME,
            key(TOKEN_COOKIE, "The token as a cookie, on WebSockets."),
        )
        .build();
    let tag = |name: &str, description: &str| {
        TagBuilder::new()
            .name(name)
            .description(Some(description))
            .build()
    };
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Stagecast edge")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The HTTP routes of the Stagecast edge, wire protocol v1: the contract is \
                     docs/protocol.md, and this document is generated from its Rust types \
                     (edge/src/openapi.rs). Every error answers with `ErrorBody`; an unknown \
                     path is 404 `not_found` and a known path with another method 405 \
                     `method_not_allowed`; `HEAD` is accepted where `GET` is.",
                ))
                .license(Some(
                    LicenseBuilder::new()
                        .name("Apache-2.0")
                        .identifier(Some("Apache-2.0"))
                        .build(),
                ))
                .build(),
        )
        .servers(Some([ServerBuilder::new()
            .url("http://127.0.0.1:8787")
            .description(Some("The local edge of `make edge-dev`."))
            .build()]))
        .paths(paths)
        .components(Some(components))
        .tags(Some([
            tag(
                "analyses",
                "One analysis: its snapshot, events and live views.",
            ),
            tag("dispatch", "Pools: submissions, nodes and their leases."),
            tag("media", "Uploaded inputs and the artifacts of a run."),
            tag("meta", "The Worker itself."),
        ]))
        .build()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    #[test]
    fn the_committed_document_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/edge.json");
        let json = doc::committed_json(&document()).expect("the document serializes");
        if let Err(e) = doc::check_committed(&path, &json, "cargo test -p stagecast-edge openapi") {
            panic!("{e}");
        }
    }

    /// The (method, path) of every arm of `Route::parse`'s match, read from its source
    /// (`["v1", "analyses", id, "events"] if method == "POST" => (.., "POST")`), a bound
    /// segment written `{id}`: a new arm needs its operation above. The pages after the
    /// arms are HTML, not API, and are not in the document.
    fn routes_parse_accepts() -> BTreeSet<(String, String)> {
        let source = include_str!("route.rs");
        let (_, arms) = source
            .split_once("match segments.as_slice() {")
            .expect("Route::parse matches the segments");
        let (arms, _) = arms
            .split_once("_ => match pages::find(path)")
            .expect("Route::parse ends with the pages");
        let mut texts: Vec<String> = Vec::new();
        for line in arms.lines() {
            if line.trim_start().starts_with('[') {
                texts.push(String::new());
            }
            if let Some(text) = texts.last_mut() {
                text.push_str(line);
            }
        }
        texts
            .iter()
            .map(|arm| {
                let (pattern, rest) = arm
                    .trim_start()
                    .strip_prefix('[')
                    .and_then(|a| a.split_once(']'))
                    .unwrap_or_else(|| panic!("not an arm: {arm}"));
                let segments: Vec<String> = pattern
                    .split(',')
                    .map(str::trim)
                    .map(
                        |seg| match seg.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                            Some(literal) => literal.to_owned(),
                            None => format!("{{{seg}}}"),
                        },
                    )
                    .collect();
                // the arm ends with `(Route::..., "METHOD")`
                let method = rest.rsplit('"').nth(1).expect("the arm names its method");
                (method.to_owned(), format!("/{}", segments.join("/")))
            })
            .collect()
    }

    #[test]
    fn the_document_describes_every_route_parse_accepts() {
        let document = serde_json::to_value(document()).unwrap();
        let documented: BTreeSet<(String, String)> = document["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.to_uppercase(), path.clone()))
            })
            .collect();
        let accepted = routes_parse_accepts();
        let mut s = Schemas::default();
        for (method, path) in &accepted {
            let (sample, _) = path_params(path, &mut s);
            assert!(
                Route::parse(method, &sample).is_ok(),
                "{method} {path} misread"
            );
        }
        assert_eq!(
            documented, accepted,
            "the document's operations differ from Route::parse's routes: describe each \
             route in edge/src/openapi.rs"
        );
    }

    #[test]
    fn operations_carry_their_routes_scope_and_refusals() {
        let document = serde_json::to_value(document()).unwrap();
        let get = |path: &str, method: &str| document["paths"][path][method].clone();
        let stream = get("/v1/analyses/{id}/stream", "get");
        assert_eq!(
            stream["security"],
            serde_json::json!([{"bearer": ["subscribe"]}, {"token_query": ["subscribe"]}])
        );
        let statuses: Vec<&String> = stream["responses"].as_object().unwrap().keys().collect();
        assert_eq!(statuses, ["200", "400", "401", "403", "500", "503"]);
        let ws = get("/v1/analyses/{id}/ws", "get");
        let statuses: Vec<&String> = ws["responses"].as_object().unwrap().keys().collect();
        assert_eq!(statuses, ["101", "400"]);
        assert_eq!(get("/healthz", "get")["security"], serde_json::json!([]));
        let input = get("/v1/analyses/{id}/input", "get");
        assert_eq!(
            input["security"],
            serde_json::json!([{"bearer": ["node"]}, {"bearer": ["publish"]}])
        );
    }
}
