//! Generates `client/types/protocol.ts` from the Rust types and fails when the committed
//! file differs. Regenerate with `STAGECAST_BLESS=1 cargo test -p stagecast-shared ts_export`.

use std::path::PathBuf;

use ts_rs::{Config, TS};

use crate::api::*;
use crate::close::{CloseCode, Reconnect};
use crate::dispatch::job::*;
use crate::dispatch::wire::*;
use crate::event::*;
use crate::ids::*;
use crate::media::{ArtifactName, ArtifactReceipt, UploadReceipt};
use crate::snapshot::*;
use crate::stored::*;
use crate::ws::*;

fn decl<T: TS>(cfg: &Config, out: &mut String) {
    if let Some(docs) = T::docs() {
        out.push_str(&docs);
    }
    out.push_str("export ");
    out.push_str(&T::decl(cfg));
    out.push_str("\n\n");
}

fn reconnect_name(r: Reconnect) -> &'static str {
    match r {
        Reconnect::WithNewToken => "with_new_token",
        Reconnect::Never => "never",
        Reconnect::WithBackoff => "with_backoff",
        Reconnect::WithoutResending => "without_resending",
        Reconnect::WithNewTokenSinceLastSeq => "with_new_token_since_last_seq",
        Reconnect::SinceLastSeq => "since_last_seq",
    }
}

fn generate() -> String {
    // Every integer on the wire (ms timestamps, seqs, counts) fits in 2^53.
    let cfg = Config::new().with_large_int("number");
    let mut out = String::from(
        "// Stagecast wire protocol v1. GENERATED from the Rust crate `stagecast-shared`:\n\
         // do not edit. Regenerate: STAGECAST_BLESS=1 cargo test -p stagecast-shared ts_export\n\n",
    );
    decl::<Event>(&cfg, &mut out);
    decl::<EventKind>(&cfg, &mut out);
    decl::<StageSpec>(&cfg, &mut out);
    decl::<Region>(&cfg, &mut out);
    decl::<FrameScore>(&cfg, &mut out);
    decl::<Units>(&cfg, &mut out);
    decl::<AnalysisResult>(&cfg, &mut out);
    decl::<ErrorInfo>(&cfg, &mut out);
    decl::<Metrics>(&cfg, &mut out);
    decl::<EdgeEvent>(&cfg, &mut out);
    decl::<EdgeEventKind>(&cfg, &mut out);
    decl::<StoredEventBody>(&cfg, &mut out);
    decl::<StoredEvent>(&cfg, &mut out);
    decl::<EventsPage>(&cfg, &mut out);
    decl::<Status>(&cfg, &mut out);
    decl::<StageSnapshot>(&cfg, &mut out);
    decl::<Snapshot>(&cfg, &mut out);
    decl::<PublishRequest>(&cfg, &mut out);
    decl::<PublishResponse>(&cfg, &mut out);
    decl::<CancelResponse>(&cfg, &mut out);
    decl::<ErrorCode>(&cfg, &mut out);
    decl::<ErrorBody>(&cfg, &mut out);
    decl::<ErrorDetail>(&cfg, &mut out);
    decl::<ServerMessage>(&cfg, &mut out);
    decl::<ClientMessage>(&cfg, &mut out);
    decl::<AnalysisId>(&cfg, &mut out);
    decl::<PoolName>(&cfg, &mut out);
    decl::<NodeId>(&cfg, &mut out);
    decl::<Job>(&cfg, &mut out);
    decl::<JobOptions>(&cfg, &mut out);
    decl::<SubmitRequest>(&cfg, &mut out);
    decl::<SubmitResponse>(&cfg, &mut out);
    decl::<RequeueReason>(&cfg, &mut out);
    decl::<PoolView>(&cfg, &mut out);
    decl::<NodeView>(&cfg, &mut out);
    decl::<PoolAnalysis>(&cfg, &mut out);
    decl::<PoolEvent>(&cfg, &mut out);
    decl::<ArtifactName>(&cfg, &mut out);
    decl::<UploadReceipt>(&cfg, &mut out);
    decl::<ArtifactReceipt>(&cfg, &mut out);

    // Close codes are not JSON, so ts-rs has nothing to derive: write them from the table.
    let codes: Vec<String> = CloseCode::ALL
        .iter()
        .map(|c| c.code().to_string())
        .collect();
    out.push_str(&format!(
        "/** WebSocket close codes used by the edge. */\nexport type CloseCode = {};\n\n",
        codes.join(" | ")
    ));
    out.push_str(
        "/** What a client should do after a close. */\nexport type Reconnect = \
         \"never\" | \"with_new_token\" | \"with_backoff\" | \"without_resending\" | \
         \"with_new_token_since_last_seq\" | \"since_last_seq\";\n\n",
    );
    out.push_str(
        "/** Reason text and reconnect advice for each close code. */\n\
         export const CLOSE_CODES: Record<CloseCode, { reason: string, reconnect: Reconnect }> = {\n",
    );
    for code in CloseCode::ALL {
        out.push_str(&format!(
            "  {}: {{ reason: \"{}\", reconnect: \"{}\" }},\n",
            code.code(),
            code.reason(),
            reconnect_name(code.reconnect())
        ));
    }
    out.push_str("};\n\n");
    out.push_str(&format!(
        "/** The WebSocket subprotocol; send it with `{}<token>` to authenticate. */\n\
         export const SUBPROTOCOL = \"{}\";\n\n",
        BEARER_SUBPROTOCOL_PREFIX, SUBPROTOCOL
    ));
    out.push_str(&format!(
        "/** Largest client message in bytes (close 4009 above it). */\n\
         export const MAX_CLIENT_MESSAGE_BYTES = {};\n",
        crate::limits::MAX_CLIENT_MESSAGE_BYTES
    ));
    out
}

#[test]
fn ts_export() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../client/types/protocol.ts");
    let generated = generate();
    if std::env::var_os("STAGECAST_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date with the Rust types.\n\
         Regenerate it with: STAGECAST_BLESS=1 cargo test -p stagecast-shared ts_export",
        path.display()
    );
}
