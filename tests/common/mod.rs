//! Test harness: a real server on a loopback port, real WebSocket and TCP clients.
//!
//! Each test binary compiles this module on its own and uses only part of it. They declare
//! it as `pub mod common;`: what is public from a binary's root counts as used, so a helper
//! that one binary does not call raises no `dead_code` warning there, and no allowance
//! is needed. Everything a test needs is re-exported here.
//!
//! A helper that fails panics, and so fails its test: unwrap, expect and indexing are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod client;
mod cluster;
mod coturn;
mod process;
mod raw;
mod redis;
mod server;
mod sockets;

use std::io::{ErrorKind, Read};
use std::time::Duration;

use serde_json::Value;

pub use client::{Client, Reader, ws_handshake};
pub use cluster::{
    CLUSTER_PATIENCE, Cluster, NODE_TIMEOUT_SECS, Node, Paused, closed_within, drain, expect_set, leftovers,
    recv_soon, recv_within, tls_flags, wait_for_redis,
};
pub use coturn::Coturn;
pub use process::{SERVER_BIN, Spawned, server_command, spawn_server};
pub use raw::{
    BINARY, CLOSE, CONTINUE, Frame, FrameHeader, MASK, OpCode, PING, PONG, RawClient, TEXT, client_frame,
    fragment, frame, header, header_bytes, text_frame,
};
pub use redis::{RedisServer, RedisTls, TlsOptions};
pub use server::TestServer;
pub use sockets::{connect_from, connect_small_rcvbuf, raise_fd_limit, set_fd_limit_in_child};

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does not happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// The `error` reply's code, or panics if `reply` is not an error.
pub fn error_code(reply: &Value) -> &str {
    assert_eq!(reply[0], "error", "expected an error reply, got {reply}");
    reply[2].as_str().expect("error code")
}

/// `stream.read(buf)`, read again when interrupted (EINTR).
pub fn read_retrying(stream: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A blocking read with a timeout ended without data: the timeout passed, or the read was
/// interrupted (a stop and continue of the test process makes such reads fail with EINTR).
fn is_timeout_or_interrupted(err: &std::io::Error) -> bool {
    matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted)
}
