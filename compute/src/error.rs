//! Everything that can stop an analysis, with the contract's `{code, message, retryable}`.

use stagecast_shared::event::ErrorInfo;
use stagecast_shared::limits::MAX_MESSAGE_LEN;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local path that is not a file (a URL's 404 is `InputUnavailable`).
    #[error("input not found: {0}")]
    InputNotFound(String),
    #[error("unsupported input: {0}")]
    UnsupportedInput(String),
    /// The node's input policy does not let it read or connect to this input.
    #[error("input forbidden: {0}")]
    InputForbidden(String),
    /// The download failed: the network, the server's answer (a 404 too), the time cap.
    #[error("the input could not be fetched: {message}")]
    InputUnavailable { message: String, retryable: bool },
    #[error("input too large: {0}")]
    InputTooLarge(String),
    #[error("the input could not be decoded: {0}")]
    DecodeFailed(String),
    #[error("ffmpeg could not be run: {0}")]
    DecoderUnavailable(String),
    #[error("unknown model {name:?}; known: {known}")]
    UnknownModel { name: String, known: String },
    #[error("model {model} could not be loaded: {message}")]
    ModelLoadFailed { model: String, message: String },
    #[error("ONNX Runtime could not be started: {0}")]
    RuntimeUnavailable(String),
    #[error("inference failed: {0}")]
    InferenceFailed(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The snake_case code of the contract's `failed` event.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InputNotFound(_) => "input_not_found",
            Self::UnsupportedInput(_) => "unsupported_input",
            Self::InputForbidden(_) => "input_forbidden",
            Self::InputUnavailable { .. } => "input_unavailable",
            Self::InputTooLarge(_) => "input_too_large",
            Self::DecodeFailed(_) => "decode_failed",
            Self::DecoderUnavailable(_) => "decoder_unavailable",
            Self::UnknownModel { .. } => "unknown_model",
            Self::ModelLoadFailed { .. } => "model_load_failed",
            Self::RuntimeUnavailable(_) => "runtime_unavailable",
            Self::InferenceFailed(_) => "inference_failed",
            Self::Internal(_) => "internal",
        }
    }

    /// Whether running the same analysis again (here or on another node) may succeed.
    /// Bad inputs and bad configuration fail the same way every time.
    pub fn retryable(&self) -> bool {
        match self {
            Self::InputUnavailable { retryable, .. } => *retryable,
            // another node may have ffmpeg or a GPU that works
            Self::DecoderUnavailable(_) | Self::InferenceFailed(_) | Self::Internal(_) => true,
            Self::InputNotFound(_)
            | Self::UnsupportedInput(_)
            | Self::InputForbidden(_)
            | Self::InputTooLarge(_)
            | Self::DecodeFailed(_)
            | Self::UnknownModel { .. }
            | Self::ModelLoadFailed { .. }
            | Self::RuntimeUnavailable(_) => false,
        }
    }

    /// The `error` of a `failed` event, its message cut to the contract's bound.
    pub fn to_info(&self) -> ErrorInfo {
        let mut message = self.to_string();
        if message.chars().count() > MAX_MESSAGE_LEN {
            message = message.chars().take(MAX_MESSAGE_LEN - 1).collect();
            message.push('…');
        }
        ErrorInfo {
            code: self.code().to_owned(),
            message,
            retryable: self.retryable(),
        }
    }
}

/// A blocking task that panicked or was aborted.
impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Internal(format!("worker task failed: {e}"))
    }
}
