//! Dispatch through the edge: submissions, a pool's queue and leases, the node's pool
//! socket and the pool views (`docs/protocol.md`, "Dispatch").
//!
//! [`pool::Pool`] is the sans-IO state machine of one pool; the edge's pool object stores
//! its rows and carries its effects. [`job`] parses submissions, [`wire`] holds the
//! messages.

pub mod job;
pub mod pool;
pub mod wire;

pub use job::{
    Job, JobOptions, Submission, Submit, SubmitError, SubmitRequest, SubmitResponse,
    parse_submit_body,
};
pub use pool::{Cancelled, Capacity, Changes, Effect, Pool, PoolConfig, SubmitRefused, Submitted};
pub use wire::{DispatchUpdate, NodeMessage, PoolMessage, RequeueReason, RevokeReason};
