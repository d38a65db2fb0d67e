//! A zero-work relay: the least any signaling server can do per message on this machine.
//!
//! It answers the WebSocket upgrade and the `join` of diva-load's diva protocol, pairs the
//! two members of each room, and from then on copies whatever bytes arrive from one member
//! to the other unchanged: no frame parsing, no JSON, no validation, no limits, one `recv`
//! and one `send` per message. The generator masks its frames with an all-zero key, so a
//! forwarded client frame is readable as is. Whatever CPU this relay spends per message is
//! the kernel's share (system calls, loopback TCP, wake-ups) that every server pays too.
//! It also answers `GET /health` (the bench script waits for it). Loopback only.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddrV4;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

const LISTENER: Token = Token(usize::MAX);
const READ_BUF: usize = 64 * 1024;
const MAX_HEAD: usize = 8 * 1024;

enum Stage {
    /// Reading the HTTP request head.
    Head,
    /// Upgraded; waiting for the `join` frame.
    Join,
    /// Joined: bytes go to `partner` once the room has two members.
    Relay,
}

struct Peer {
    stream: TcpStream,
    stage: Stage,
    /// Bytes read but not yet handled (head, join frame).
    inbuf: Vec<u8>,
    /// Bytes waiting for the socket to take them.
    out: Vec<u8>,
    partner: Option<usize>,
}

pub struct FloorRelay {
    poll: Poll,
    listener: TcpListener,
    peers: Vec<Option<Peer>>,
    /// Room name to the member waiting for its partner.
    waiting: HashMap<String, usize>,
    buf: Vec<u8>,
    spin: bool,
}

impl FloorRelay {
    pub fn bind(addr: SocketAddrV4, spin: bool) -> io::Result<FloorRelay> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(addr.into())?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(FloorRelay {
            poll,
            listener,
            peers: Vec::new(),
            waiting: HashMap::new(),
            buf: vec![0; READ_BUF],
            spin,
        })
    }

    /// Serves until the process is killed (the bench script sends SIGTERM).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let timeout = if self.spin { Some(std::time::Duration::ZERO) } else { None };
        loop {
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all()?,
                    Token(i) => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.on_readable(i);
                        }
                        if ev.is_writable() {
                            self.flush(i);
                        }
                    }
                }
            }
        }
    }

    fn accept_all(&mut self) -> io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nodelay(true)?;
                    let i = self.peers.len();
                    self.poll.registry().register(
                        &mut stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    self.peers.push(Some(Peer {
                        stream,
                        stage: Stage::Head,
                        inbuf: Vec::new(),
                        out: Vec::new(),
                        partner: None,
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors and the like: the bench reports the failed connects.
                Err(_) => return Ok(()),
            }
        }
    }

    fn on_readable(&mut self, i: usize) {
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(peer) = self.peers.get_mut(i).and_then(Option::as_mut) {
            match peer.stream.read(&mut buf) {
                Ok(0) => {
                    self.close(i);
                    break;
                }
                Ok(n) => {
                    self.on_bytes(i, &buf[..n]);
                    // A short read emptied the socket; edge-triggered epoll reports more.
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(i);
                    break;
                }
            }
        }
        self.buf = buf;
    }

    fn on_bytes(&mut self, i: usize, bytes: &[u8]) {
        let Some(peer) = self.peers.get_mut(i).and_then(Option::as_mut) else { return };
        if let Stage::Relay = peer.stage {
            if let Some(p) = peer.partner {
                self.send(p, bytes);
            }
            return;
        }
        peer.inbuf.extend_from_slice(bytes);
        if let Stage::Head = peer.stage {
            let Some(end) = peer.inbuf.windows(4).position(|w| w == b"\r\n\r\n") else {
                if peer.inbuf.len() > MAX_HEAD {
                    self.close(i);
                }
                return;
            };
            let head = String::from_utf8_lossy(&peer.inbuf[..end]).into_owned();
            peer.inbuf.drain(..end + 4);
            let key = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim().eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim().to_owned())
            });
            let Some(key) = key else {
                let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
                self.send(i, ok);
                return self.close(i);
            };
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let reply = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            peer.stage = Stage::Join;
            self.send(i, reply.as_bytes());
        }
        self.try_join(i);
    }

    /// Handles a complete `["join", IDENT, ROOM]` frame, if one has arrived.
    fn try_join(&mut self, i: usize) {
        let Some(peer) = self.peers.get_mut(i).and_then(Option::as_mut) else { return };
        let Some((used, payload)) = client_frame(&peer.inbuf) else { return };
        let rest = peer.inbuf.split_off(used);
        peer.inbuf = Vec::new();
        let call: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
        let (Some("join"), Some(ident), Some(room)) = (
            call.get(0).and_then(Value::as_str),
            call.get(1).and_then(Value::as_str),
            call.get(2).and_then(Value::as_str),
        ) else {
            return self.close(i);
        };
        peer.stage = Stage::Relay;
        let reply = serde_json::json!(["join", format!("{room}:{ident}"), room, ident]).to_string();
        let mut frame = Vec::new();
        Frame::message(reply, OpCode::Data(Data::Text), true)
            .format(&mut frame)
            .expect("a Vec takes any frame");
        self.send(i, &frame);
        match self.waiting.remove(room) {
            Some(first) if self.peers.get(first).is_some_and(Option::is_some) => {
                if let Some(Some(a)) = self.peers.get_mut(first) {
                    a.partner = Some(i);
                }
                if let Some(Some(b)) = self.peers.get_mut(i) {
                    b.partner = Some(first);
                }
            }
            _ => {
                self.waiting.insert(room.to_owned(), i);
            }
        }
        if !rest.is_empty() {
            self.on_bytes(i, &rest);
        }
    }

    /// Writes `bytes` to peer `i` now, or queues what the socket does not take.
    fn send(&mut self, i: usize, bytes: &[u8]) {
        let Some(peer) = self.peers.get_mut(i).and_then(Option::as_mut) else { return };
        if !peer.out.is_empty() {
            peer.out.extend_from_slice(bytes);
            return;
        }
        let mut pos = 0;
        while pos < bytes.len() {
            match peer.stream.write(&bytes[pos..]) {
                Ok(0) => break,
                Ok(n) => pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(i),
            }
        }
        peer.out.extend_from_slice(&bytes[pos..]);
    }

    fn flush(&mut self, i: usize) {
        let Some(peer) = self.peers.get_mut(i).and_then(Option::as_mut) else { return };
        let mut pos = 0;
        while pos < peer.out.len() {
            match peer.stream.write(&peer.out[pos..]) {
                Ok(0) => break,
                Ok(n) => pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(i),
            }
        }
        peer.out.drain(..pos);
    }

    /// Closes `i` and its partner, so that the generator sees the pair end together.
    fn close(&mut self, i: usize) {
        let Some(mut peer) = self.peers.get_mut(i).and_then(Option::take) else { return };
        let _ = self.poll.registry().deregister(&mut peer.stream);
        self.waiting.retain(|_, &mut w| w != i);
        if let Some(p) = peer.partner {
            self.close(p);
        }
    }
}

/// The first whole client frame in `buf`: bytes used and the unmasked payload.
fn client_frame(buf: &[u8]) -> Option<(usize, Vec<u8>)> {
    let mut cursor = io::Cursor::new(buf);
    let (header, len) = FrameHeader::parse(&mut cursor).ok()??;
    let at = usize::try_from(cursor.position()).ok()?;
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    let mask = header.mask.unwrap_or([0; 4]);
    let payload = buf.get(at..end)?;
    Some((end, payload.iter().enumerate().map(|(k, b)| b ^ mask[k % 4]).collect()))
}
