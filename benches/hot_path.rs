//! What relaying one `signal` costs in user space, in process: no sockets, no kernel, no
//! event loop. Beside `make bench`'s zero-work relay (the kernel's share) this shows how
//! much of the server's CPU per message the libraries of the hot path take.
//!
//! 1,000 connections in rooms of two; each has a batch of 16 masked client frames (a
//! `signal` with a 500-byte DATA to its room peer), as 16 messages in flight bring them.
//! Each connection is the server's own `Conn` over an in-memory stream, so the read and
//! write paths measured are the server's, not copies of them.
//! Stages, each measured on its own and including the ones before it:
//!   frames in    Conn::read_messages: the read-ahead, tungstenite in 256-byte steps, the inbox
//!   + parse      protocol::parse_call_text
//!   + room table Rooms::handle: the sender's ownership and the peer's address, the reply text
//!   + frames out Conn::send frames each reply into the peer's queue; one Conn::flush per batch
//!
//! `make bench-hot-path` (`cargo bench --bench hot_path`); `make bench` runs it too.
// A bench that fails panics: unwrap, expect and indexing are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use diva_signal::backlog::QueueLimits;
use diva_signal::conn::{AfterReply, Conn, Inbox, Incoming, ReadAhead, ReadEnd, WriteEnd, websocket_config};
use diva_signal::memory_stream::{MemoryStream, Pipe};
use diva_signal::protocol::{Call, parse_call_text};
use diva_signal::rate::TokenBucket;
use diva_signal::rooms::{Effect, RoomLimits, Rooms};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};

const CONNECTIONS: usize = 1000;
const IN_FLIGHT: usize = 16;
const PAYLOAD: usize = 500;
const MESSAGES: usize = 1_000_000;
const ROUNDS: usize = 5;
/// The server's read budget: messages per turn.
const READ_BUDGET: usize = 64;
const MAX_OUTBOUND: usize = 1024 * 1024;

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

/// A text frame as a client sends it: masked.
fn client_frame(text: &str) -> Vec<u8> {
    let mut frame = Frame::message(text.as_bytes().to_vec(), OpCode::Data(Data::Text), true);
    frame.header_mut().mask = Some([0x37, 0xfa, 0x21, 0x3d]);
    let mut out = Vec::new();
    frame.format(&mut out).expect("a Vec takes every byte");
    out
}

struct Setup {
    rooms: Rooms,
    /// Each connection's batch of frames.
    batches: Vec<Rc<[u8]>>,
    conns: Vec<Conn<MemoryStream>>,
    pipes: Vec<Pipe>,
    ws_config: WebSocketConfig,
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
            (0..IN_FLIGHT).flat_map(|_| client_frame(&text)).collect::<Vec<u8>>().into()
        })
        .collect();
    let ws_config = websocket_config(64 * 1024, MAX_OUTBOUND);
    let now = Instant::now();
    let peer = SocketAddr::from(([192, 0, 2, 1], 4711));
    let (conns, pipes) = (0..CONNECTIONS)
        .map(|_| {
            let (stream, pipe) = MemoryStream::new();
            pipe.discard_written();
            let mut conn = Conn::new(stream, peer, now, Duration::from_secs(10), TokenBucket::new(10, now));
            let upgrade = AfterReply::Upgrade { leftover: Vec::new() };
            let end =
                conn.reply(b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec(), upgrade, &ws_config, now);
            assert_eq!(end, WriteEnd::Done);
            (conn, pipe)
        })
        .unzip();
    Setup { rooms, batches, conns, pipes, ws_config }
}

/// Relays `messages` messages up to `stage`; returns nanoseconds per message.
#[inline(never)]
fn run(s: &mut Setup, stage: Stage, messages: usize) -> f64 {
    let mut effects: Vec<Effect> = Vec::with_capacity(IN_FLIGHT);
    let mut ahead = ReadAhead::new();
    let mut inbox = Inbox::default();
    let limits = QueueLimits::new(MAX_OUTBOUND as u64);
    let mut relayed = 0;
    let now = Instant::now();
    let start = Instant::now();
    while relayed < messages {
        for conn in 0..CONNECTIONS {
            s.pipes[conn].arrive(Rc::clone(&s.batches[conn]));
            s.conns[conn].on_readiness(false);
            let end = s.conns[conn].read_messages(READ_BUDGET, now, &mut ahead, &mut inbox);
            assert_eq!(end, ReadEnd::Drained);
            for index in 0..inbox.len() {
                let Some(Incoming::Text(text)) = inbox.get(index) else { panic!("unexpected message") };
                relayed += 1;
                if stage < Stage::Parse {
                    continue;
                }
                let call = parse_call_text(text).expect("a valid signal");
                if stage < Stage::RoomTable {
                    continue;
                }
                s.rooms.handle(conn, &call, &mut effects);
            }
            inbox.clear();
            let peer = conn ^ 1;
            for effect in effects.drain(..) {
                let Effect::Send { to, text, relayed_from, .. } = effect else { panic!("unexpected effect") };
                assert_eq!(to, peer, "{text}");
                if stage == Stage::FramesOut {
                    let relay = relayed_from.map(|sender| (sender, limits));
                    s.conns[peer].send(text, relay).expect("room in the queue");
                }
            }
            if stage == Stage::FramesOut {
                // Once per batch, as the server flushes once per wake-up.
                assert_eq!(s.conns[peer].flush(&s.ws_config, now), WriteEnd::Done);
            }
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
