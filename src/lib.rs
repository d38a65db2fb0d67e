//! diva-signal: a WebRTC signaling server compatible with the DIVA.EXCHANGE
//! signal server, on one thread and one mio poll loop.
//!
//! `protocol` and `rooms` are pure (messages in, messages out); `http` and
//! `routes` decide what a request is answered (pure too); `conn` speaks to one
//! client over any `stream::ByteStream`; `server` runs the loop over them;
//! `config` reads flags and environment.

pub mod admission;
pub mod backlog;
pub mod boundary;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod fast_path;
pub mod healthcheck;
pub mod http;
pub mod ident;
pub mod json_text;
pub mod listen;
pub mod logging;
pub mod memory_stream;
pub mod metrics;
pub mod protocol;
pub mod rate;
pub mod redis;
pub mod resp;
pub mod rooms;
pub mod routes;
pub mod server;
pub mod stream;
#[cfg(feature = "tls")]
pub mod tls;
pub mod turn;

pub use config::{Command, Config};
pub use metrics::Stats;
pub use server::{ReloadHandle, Server, ShutdownHandle};
