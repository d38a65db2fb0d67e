//! Client byte streams (frames of every kind, fragments, bad headers, garbage) arriving
//! in arbitrary pieces, read by two tungstenite contexts side by side: one kept for the
//! whole stream, the other replaced by a fresh one whenever the server would release its
//! buffers (`conn::may_renew`: tungstenite's last read wanted input, and `FrameBoundaries`
//! says the bytes handed to it end with a whole message).
//!
//! Checked: both read the same messages, write the same replies (pongs, close) and fail
//! at the same point with the same error; so a release never drops or splits anything.
//! `FrameBoundaries` itself never panics on any input.

#![no_main]

use std::io::{self, Read, Write};

use arbitrary::Arbitrary;
use diva_signal::boundary::FrameBoundaries;
use diva_signal::conn::{may_renew, websocket_config};
use libfuzzer_sys::fuzz_target;
use tungstenite::protocol::{Role, WebSocketContext};

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

/// The client's socket as one context sees it: the stream up to what has arrived, then
/// WouldBlock; what the context writes is collected.
struct Socket<'a> {
    stream: &'a [u8],
    read: usize,
    arrived: usize,
    written: Vec<u8>,
    handed: FrameBoundaries,
}

impl Read for Socket<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.stream.get(self.read..self.arrived).unwrap_or_default();
        if available.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = out.len().min(available.len());
        let given = available.get(..n).unwrap_or_default();
        out.get_mut(..n).unwrap_or_default().copy_from_slice(given);
        self.handed.feed(given);
        self.read += n;
        Ok(n)
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a context made of the stream so far.
#[derive(Debug, PartialEq)]
enum Event {
    Message(tungstenite::Message),
    Failed(String),
}

struct Reader<'a> {
    ws: WebSocketContext,
    socket: Socket<'a>,
    events: Vec<Event>,
    failed: bool,
    releases: usize,
}

impl<'a> Reader<'a> {
    fn new(stream: &'a [u8]) -> Self {
        Reader {
            ws: WebSocketContext::new(Role::Server, Some(config())),
            socket: Socket {
                stream,
                read: 0,
                arrived: 0,
                written: Vec::new(),
                handed: FrameBoundaries::default(),
            },
            events: Vec::new(),
            failed: false,
            releases: 0,
        }
    }

    /// Reads what has arrived, up to `budget` messages (a turn), flushes, and (if
    /// `release`) starts afresh when the server would.
    fn read_turn(&mut self, arrived: usize, budget: usize, release: bool) {
        self.socket.arrived = arrived;
        if self.failed {
            return;
        }
        let mut messages = 0;
        let wants_input = loop {
            if messages == budget {
                break false;
            }
            match self.ws.read(&mut self.socket) {
                Ok(message) => {
                    self.events.push(Event::Message(message));
                    messages += 1;
                }
                Err(tungstenite::Error::Io(err)) if err.kind() == io::ErrorKind::WouldBlock => break true,
                Err(err) => {
                    self.events.push(Event::Failed(err.to_string()));
                    self.failed = true;
                    break false;
                }
            }
        };
        if self.ws.flush(&mut self.socket).is_err() {
            return;
        }
        if release && may_renew(&self.ws, wants_input, &self.socket.handed) {
            self.ws = WebSocketContext::from_partially_read(Vec::new(), Role::Server, Some(config()));
            self.releases += 1;
        }
    }
}

fn config() -> tungstenite::protocol::WebSocketConfig {
    websocket_config(16 * 1024, 64 * 1024)
}

fuzz_target!(|input: Input| {
    let stream = stream_of(&input.pieces);
    let mut kept = Reader::new(&stream);
    let mut renewed = Reader::new(&stream);
    let mut arrived = 0;
    let budget = if input.budget == 0 { usize::MAX } else { usize::from(input.budget) };
    let mut sizes = input.arrivals.iter().map(|&size| usize::from(size).max(1)).cycle();
    // Turns go on after the whole stream has arrived, until a turn reads nothing new.
    loop {
        arrived = (arrived + sizes.next().unwrap_or(stream.len())).min(stream.len());
        let before = (kept.events.len(), kept.socket.read);
        kept.read_turn(arrived, budget, false);
        renewed.read_turn(arrived, budget, true);
        assert_eq!(kept.events, renewed.events, "after {arrived} bytes, {} releases", renewed.releases);
        assert_eq!(kept.socket.written, renewed.socket.written, "replies after {arrived} bytes");
        if arrived == stream.len() && before == (kept.events.len(), kept.socket.read) {
            break;
        }
    }
});
