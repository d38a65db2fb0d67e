//! What relaying one `signal` costs in user space, in process: no sockets, no kernel, no
//! event loop. Beside `make bench`'s zero-work relay (the kernel's share) this shows how
//! much of the server's CPU per message the libraries of the hot path take.
//!
//! 1,000 connections in rooms of two; each has a batch of 16 masked client frames (a
//! `signal` with a 500-byte DATA to its room peer), as 16 messages in flight bring them.
//! Stages, each measured on its own and including the ones before it:
//!   frames in    tungstenite reads the frames (in 256-byte steps, as the server has it)
//!   + parse      protocol::parse_call_text
//!   + room table Rooms::handle: the sender's ownership and the peer's address, the reply text
//!   + frames out tungstenite frames each reply into the peer's buffer; one flush per batch
//!
//! `make bench-hot-path` (`cargo bench --bench hot_path`); `make bench` runs it too.
// A bench that fails panics: unwrap, expect and indexing are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{self, Read, Write};
use std::time::Instant;

use diva_signal::conn::websocket_config;
use diva_signal::protocol::{Call, parse_call_text};
use diva_signal::rooms::{Effect, RoomLimits, Rooms};
use tungstenite::protocol::{Role, WebSocketContext};
use tungstenite::{Error as WsError, Message};

const CONNECTIONS: usize = 1000;
const IN_FLIGHT: usize = 16;
const PAYLOAD: usize = 500;
const MESSAGES: usize = 1_000_000;
const ROUNDS: usize = 5;

#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Stage {
    FramesIn,
    Parse,
    RoomTable,
    FramesOut,
}

const STAGES: [(Stage, &str); 4] = [
    (Stage::FramesIn, "frames in"),
    (Stage::Parse, "+ parse"),
    (Stage::RoomTable, "+ room table"),
    (Stage::FramesOut, "+ frames out"),
];

/// One connection's bytes: what the client sent, read in order; what the server writes
/// goes to a sink that is emptied after every flush.
struct Wire<'a> {
    input: &'a [u8],
    sink: Vec<u8>,
}

impl Read for Wire<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = out.len().min(self.input.len());
        let (now, later) = self.input.split_at(n);
        out[..n].copy_from_slice(now);
        self.input = later;
        Ok(n)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.sink.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A text frame as a client sends it: masked.
fn client_frame(text: &str) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let len = text.len();
    let mut frame = vec![0x81];
    match len {
        0..=125 => frame.push(0x80 | len as u8),
        126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(text.bytes().zip(key.iter().cycle()).map(|(byte, k)| byte ^ k));
    frame
}

struct Setup {
    rooms: Rooms,
    /// Each connection's batch of frames.
    batches: Vec<Vec<u8>>,
    contexts: Vec<WebSocketContext>,
}

fn setup(ident_len: usize) -> Setup {
    let mut rooms = Rooms::new(RoomLimits::default());
    let mut effects = Vec::new();
    let ident = |conn: usize| format!("c{conn:0>width$}", width = ident_len.saturating_sub(1));
    for conn in 0..CONNECTIONS {
        let call = Call::Join { ident: ident(conn).into(), room: format!("r{}", conn / 2).into() };
        rooms.handle(conn, &call, &mut effects);
    }
    let data = format!("\"{}\"", "x".repeat(PAYLOAD - 2));
    let batches = (0..CONNECTIONS)
        .map(|conn| {
            let peer = conn ^ 1;
            let text = format!(
                r#"["signal","r{}:{}","r{}:{}",{data}]"#,
                conn / 2,
                ident(conn),
                peer / 2,
                ident(peer)
            );
            (0..IN_FLIGHT).flat_map(|_| client_frame(&text)).collect()
        })
        .collect();
    let config = websocket_config(64 * 1024, 1024 * 1024);
    let contexts = (0..CONNECTIONS)
        .map(|_| WebSocketContext::from_partially_read(Vec::new(), Role::Server, Some(config)))
        .collect();
    Setup { rooms, batches, contexts }
}

/// Relays `messages` messages up to `stage`; returns nanoseconds per message.
#[inline(never)]
fn run(s: &mut Setup, stage: Stage, messages: usize) -> f64 {
    let mut effects: Vec<Effect> = Vec::with_capacity(IN_FLIGHT);
    let mut sink = Vec::with_capacity(64 * 1024);
    let mut relayed = 0;
    let start = Instant::now();
    while relayed < messages {
        for conn in 0..CONNECTIONS {
            let mut wire = Wire { input: &s.batches[conn], sink: std::mem::take(&mut sink) };
            loop {
                match s.contexts[conn].read(&mut wire) {
                    Ok(Message::Text(text)) => {
                        relayed += 1;
                        if stage < Stage::Parse {
                            continue;
                        }
                        let call = parse_call_text(text.as_str()).expect("a valid signal");
                        if stage < Stage::RoomTable {
                            continue;
                        }
                        s.rooms.handle(conn, &call, &mut effects);
                    }
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(WsError::Io(err)) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) => panic!("{err}"),
                }
            }
            sink = wire.sink;
            let peer = conn ^ 1;
            let mut out = Wire { input: &[], sink: std::mem::take(&mut sink) };
            for effect in effects.drain(..) {
                let Effect::Send { to, text, .. } = effect else { panic!("unexpected effect") };
                assert_eq!(to, peer, "{text}");
                if stage == Stage::FramesOut {
                    s.contexts[peer].write(&mut out, Message::text(text)).expect("room in the buffer");
                }
            }
            if stage == Stage::FramesOut {
                // Once per batch, as the server flushes once per wake-up.
                s.contexts[peer].flush(&mut out).expect("a sink takes everything");
            }
            sink = out.sink;
            sink.clear();
        }
    }
    start.elapsed().as_nanos() as f64 / relayed as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // `cargo bench --bench hot_path -- N`: N messages per run instead of a million.
    // HOT_PATH_STAGE=1..4 runs that stage alone and HOT_PATH_IDENT=LEN one ident length:
    // for a short run under `valgrind --tool=callgrind --toggle-collect=hot_path::run`,
    // whose instruction counts, unlike times on a VM, do not drift.
    let messages = std::env::args().filter_map(|arg| arg.parse().ok()).next().unwrap_or(MESSAGES);
    let env = |name: &str| std::env::var(name).ok().and_then(|value| value.parse::<usize>().ok());
    let stages: Vec<_> = match env("HOT_PATH_STAGE") {
        Some(n) => STAGES.iter().skip(n.saturating_sub(1)).take(1).collect(),
        None => STAGES.iter().collect(),
    };
    let ident_lens = env("HOT_PATH_IDENT").map_or(vec![4, 56], |len| vec![len]);
    println!(
        "hot path in process, ns per relayed message ({CONNECTIONS} connections, {IN_FLIGHT} \
         messages per batch, {PAYLOAD}-byte DATA; median of {ROUNDS} runs of {messages} messages)"
    );
    for ident_len in ident_lens {
        let mut s = setup(ident_len);
        let address_len = format!("r{}:", CONNECTIONS / 2).len() + ident_len;
        let mut line = format!("  addresses of {address_len} characters:");
        for &&(stage, name) in &stages {
            let ns = median((0..ROUNDS).map(|_| run(&mut s, stage, messages)).collect());
            line.push_str(&format!("  {name} {ns:.0}"));
        }
        println!("{line}");
    }
}
