//! diva-signal: a WebRTC signaling server compatible with the DIVA.EXCHANGE
//! signal server, on one thread and one mio poll loop.

pub mod config;
pub mod http;
pub mod ident;
pub mod protocol;
pub mod rooms;
