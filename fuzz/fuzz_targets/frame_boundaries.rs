//! Client byte streams (frames of every kind, fragments, bad headers, garbage) arriving
//! in arbitrary pieces, read by two of the server's connections (`Conn` over an in-memory
//! stream, through its real read path: read-ahead, stash, turn budget) side by side: one
//! keeps its WebSocket buffers for the whole stream, the other is asked for fresh ones
//! after every turn and gets them whenever the server would release them (tungstenite's
//! last read wanted input, and `FrameBoundaries` says the bytes handed to it end with a
//! whole message).
//!
//! Checked: both read the same messages, write the same replies (pongs, close) and fail
//! at the same point in the same way; so a release never drops or splits anything.
//! `FrameBoundaries` itself never panics on any input.

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use diva_signal::conn::{AfterReply, Conn, Inbox, Incoming, ReadAhead, ReadEnd, WriteEnd, websocket_config};
use diva_signal::memory_stream::{MemoryStream, Pipe};
use diva_signal::rate::TokenBucket;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    pieces: Vec<Piece>,
    /// Sizes in which the stream arrives, cycled.
    arrivals: Vec<u8>,
    /// Messages read per turn at most, as the server's read budget (0: no limit).
    budget: u8,
}

#[derive(Arbitrary, Debug)]
enum Piece {
    Frame {
        fin: bool,
        /// Low 4 bits: the opcode (data, control, or reserved ones).
        opcode: u8,
        rsv: bool,
        masked: bool,
        /// Length written with more bytes than needed (RFC 6455 forbids it).
        long_length: bool,
        payload: Vec<u8>,
    },
    Garbage(Vec<u8>),
}

fn stream_of(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Frame { fin, opcode, rsv, masked, long_length, payload } => {
                out.push(u8::from(*fin) << 7 | u8::from(*rsv) << 6 | (opcode & 0x0f));
                let mask_bit = u8::from(*masked) << 7;
                let len = payload.len();
                if *long_length {
                    out.push(mask_bit | 127);
                    out.extend_from_slice(&(len as u64).to_be_bytes());
                } else if len < 126 {
                    out.push(mask_bit | len as u8);
                } else if len <= 0xffff {
                    out.push(mask_bit | 126);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                } else {
                    out.push(mask_bit | 127);
                    out.extend_from_slice(&(len as u64).to_be_bytes());
                }
                let key = [0x5a, 0x01, 0xc3, 0x7e];
                if *masked {
                    out.extend_from_slice(&key);
                    out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
                } else {
                    out.extend_from_slice(payload);
                }
            }
            Piece::Garbage(bytes) => out.extend_from_slice(bytes),
        }
    }
    out
}

/// What a connection made of the stream in one turn.
#[derive(Debug, PartialEq)]
enum Event {
    Text(String),
    NotUtf8,
    Control,
    End(ReadEnd),
}

/// The server's connection, its client's end, and what it made of the stream so far.
struct Reader {
    conn: Conn<MemoryStream>,
    pipe: Pipe,
    ahead: ReadAhead,
    inbox: Inbox,
    events: Vec<Event>,
    written: Vec<u8>,
    failed: bool,
    releases: usize,
}

impl Reader {
    fn new(now: Instant) -> Self {
        let (stream, pipe) = MemoryStream::new();
        let peer = SocketAddr::from(([192, 0, 2, 1], 4711));
        let mut conn = Conn::new(stream, peer, now, Duration::from_secs(10), TokenBucket::new(10, now));
        let upgrade = AfterReply::Upgrade { leftover: Vec::new() };
        let _ = conn.reply(b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec(), upgrade, &config(), now);
        let _ = pipe.take_written();
        Reader {
            conn,
            pipe,
            ahead: ReadAhead::new(),
            inbox: Inbox::default(),
            events: Vec::new(),
            written: Vec::new(),
            failed: false,
            releases: 0,
        }
    }

    /// `arrived` bytes come in (with a readiness event when there are any); one read turn
    /// of up to `budget` messages, as the server has it, then a flush and (if `release`)
    /// fresh buffers when the server would take them. True when the turn made anything of
    /// the stream.
    fn read_turn(&mut self, arrived: &[u8], budget: usize, release: bool, now: Instant) -> bool {
        if !arrived.is_empty() {
            self.pipe.arrive(arrived);
            self.conn.on_readiness(false);
        }
        if self.failed {
            return false;
        }
        let end = self.conn.read_messages(budget, now, &mut self.ahead, &mut self.inbox);
        let before = self.events.len();
        for index in 0..self.inbox.len() {
            self.events.push(match self.inbox.get(index) {
                Some(Incoming::Text(text)) => Event::Text(text.to_owned()),
                Some(Incoming::NotUtf8) => Event::NotUtf8,
                Some(Incoming::Control) | None => Event::Control,
            });
        }
        self.inbox.clear();
        if matches!(end, ReadEnd::Gone | ReadEnd::Fail(..)) {
            self.events.push(Event::End(end));
            self.failed = true;
        }
        let progress = self.events.len() > before || end == ReadEnd::MoreLeft;
        if self.conn.flush(&config(), now) == WriteEnd::Done && release {
            self.conn.request_fresh_buffers();
            if self.conn.release_buffers(&config()) {
                self.releases += 1;
            }
        }
        self.written.extend(self.pipe.take_written());
        progress
    }
}

fn config() -> tungstenite::protocol::WebSocketConfig {
    websocket_config(16 * 1024, 64 * 1024)
}

fuzz_target!(|input: Input| {
    let stream = stream_of(&input.pieces);
    let now = Instant::now();
    let mut kept = Reader::new(now);
    let mut renewed = Reader::new(now);
    let mut arrived = 0;
    let budget = if input.budget == 0 { usize::MAX } else { usize::from(input.budget) };
    let mut sizes = input.arrivals.iter().map(|&size| usize::from(size).max(1)).cycle();
    // Turns go on after the whole stream has arrived, until a turn makes nothing new of it.
    loop {
        let next = (arrived + sizes.next().unwrap_or(stream.len())).min(stream.len());
        let piece = stream.get(arrived..next).unwrap_or_default();
        arrived = next;
        let progress = kept.read_turn(piece, budget, false, now);
        renewed.read_turn(piece, budget, true, now);
        assert_eq!(kept.events, renewed.events, "after {arrived} bytes, {} releases", renewed.releases);
        assert_eq!(kept.written, renewed.written, "replies after {arrived} bytes");
        if arrived == stream.len() && !progress {
            break;
        }
    }
});
