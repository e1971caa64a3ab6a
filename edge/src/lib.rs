//! Stagecast edge: a Cloudflare Worker that authenticates nodes and browsers and routes each
//! analysis to its own Durable Object and each (tenant, pool) to its dispatcher object. Pure request logic lives in plain modules so it is
//! tested natively; the workers-rs shell is compiled for wasm32 only.

pub mod auth;
pub mod config;
pub mod credentials;
pub mod deadline;
pub mod digest;
pub mod forward;
pub mod node_socket;
pub mod pages;
pub mod query;
pub mod rate;
pub mod route;
pub mod socket;
pub mod sse;

// written by its own test: utoipa is a dev-dependency, out of the Worker's wasm
#[cfg(test)]
mod openapi;

#[cfg(target_arch = "wasm32")]
mod call;
#[cfg(target_arch = "wasm32")]
mod clock;
#[cfg(target_arch = "wasm32")]
mod entry;
#[cfg(target_arch = "wasm32")]
mod log;
#[cfg(target_arch = "wasm32")]
mod media;
#[cfg(target_arch = "wasm32")]
mod object;
#[cfg(target_arch = "wasm32")]
mod pool;
#[cfg(target_arch = "wasm32")]
mod respond;
#[cfg(target_arch = "wasm32")]
mod store;
#[cfg(target_arch = "wasm32")]
mod usage;
