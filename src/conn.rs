//! One client connection: its socket and the phase it is in, from reading the
//! HTTP request head, through WebSocket messages, to closing. Each method does
//! non-blocking I/O on this connection's own socket only and tells the server
//! what happened; WouldBlock is the normal end of every read and write.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Bytes, Message};

use crate::boundary::FrameBoundaries;
use crate::http::{self, HeadStatus, Request};
use crate::metrics::CloseReason;
use crate::rate::TokenBucket;

/// Bytes read from one connection before the others get their turn.
const READ_BYTES_PER_TURN: usize = 64 * 1024;
/// Size of the loop-wide read-ahead buffer: one system call per turn, mostly.
const READ_AHEAD_LEN: usize = 64 * 1024;

/// A frame or message larger than this leaves tungstenite's buffers that large; the
/// connection gets fresh small ones as soon as everything is written.
const BIG_MESSAGE: u64 = 4 * 1024;

/// Traffic past this (a frame in, or output between two flushes) grows tungstenite's
/// buffers beyond their fresh size; they are made fresh again once the client has been
/// quiet for a while (see [`Conn::request_shrink`]), which costs nothing while it is busy.
const GROWN: u32 = 512;

/// How long a closing connection may take to finish before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Where a connection is in its life.
pub enum Phase {
    /// Reading the HTTP request head; it must be complete by `deadline`.
    ReadingHead { buf: Vec<u8>, searched: usize, deadline: Instant },
    /// Writing an HTTP response; what comes next depends on `then`.
    WritingReply { out: Vec<u8>, written: usize, then: AfterReply },
    /// Speaking WebSocket.
    Open(Box<WebSocketContext>),
    /// We sent a close frame and are flushing it out.
    Closing { ws: Box<WebSocketContext>, deadline: Instant },
    /// Our side is shut; reading and dropping what the client still sends until it hangs up.
    Lingering { deadline: Instant },
}

/// What follows an HTTP response.
pub enum AfterReply {
    Close,
    /// Speak WebSocket; `leftover` holds bytes the client sent right behind the head.
    Upgrade {
        leftover: Vec<u8>,
    },
}

/// How reading the request head went.
pub enum HeadRead {
    /// Not complete yet; wait for more.
    Partial,
    Complete {
        request: Box<Request>,
        leftover: Vec<u8>,
    },
    Invalid(http::Status),
    /// The client hung up or the socket failed.
    Gone,
}

/// How reading WebSocket messages went.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// Everything available was read.
    Drained,
    /// The message budget ran out before the socket did: read again soon.
    MoreLeft,
    /// The client closed the connection (cleanly or not).
    Gone,
    /// The client broke the protocol: close with this code.
    Fail(CloseCode, &'static str),
}

/// How writing went.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteEnd {
    /// All queued bytes are out.
    Done,
    /// The socket is full; the rest goes out on the next WRITABLE event.
    Blocked,
    /// The connection is finished with (closed or failed): drop it.
    Gone,
}

/// Why a message could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The client does not read: its outbound buffer is full.
    Overflow,
    /// The connection is not open for messages (handshake, closing or failed).
    NotOpen,
}

pub struct Conn {
    pub socket: Socket,
    pub peer: SocketAddr,
    pub phase: Phase,
    /// When the client last sent anything.
    pub last_heard: Instant,
    /// A keep-alive ping went out since `last_heard`.
    pub pinged: bool,
    /// The client must answer a ping by then or be dropped (someone wants its address).
    pub probe_deadline: Option<Instant>,
    /// Paces the messages this client may send.
    pub rate: TokenBucket,
    /// Messages refused in a row for going over the rate.
    pub strikes: u32,
    /// Output is queued and the connection is on the server's flush list.
    pub flush_queued: bool,
    /// Closed and released; leaves the slab at the end of the round.
    pub finished: bool,
    /// Why the connection is closing, once it is.
    pub close_reason: CloseReason,
    /// tungstenite's last read ended for want of input, so it holds no whole frame.
    ws_wants_input: bool,
    /// A big message came in or went out since the WebSocket buffers were last fresh.
    big_buffers: bool,
    /// Traffic over [`GROWN`] came in or went out since the buffers were last fresh.
    grown_buffers: bool,
    /// The server asked for fresh buffers at the next flush that writes everything.
    shrink_requested: bool,
    /// Bytes of messages queued since the last flush that wrote everything.
    queued_since_flush: u32,
}

/// One loop-wide buffer that a connection's input is read into with one system call;
/// tungstenite then takes it in the small pieces its (small) read buffer holds.
pub struct ReadAhead {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl ReadAhead {
    pub fn new() -> Self {
        ReadAhead { buf: vec![0; READ_AHEAD_LEN].into_boxed_slice(), start: 0, end: 0 }
    }

    fn pending(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }
}

impl Default for ReadAhead {
    fn default() -> Self {
        ReadAhead::new()
    }
}

/// The messages one connection's turn has read, copied into one reused buffer.
#[derive(Default)]
pub struct Inbox {
    text: String,
    entries: Vec<InboxEntry>,
}

#[derive(Clone)]
enum InboxEntry {
    /// The text of a text frame, or of a binary frame that is UTF-8 (the same JSON).
    Text(std::ops::Range<usize>),
    /// A binary frame that is not UTF-8, so no JSON call.
    NotUtf8,
}

impl Inbox {
    fn push_text(&mut self, text: &str) {
        let start = self.text.len();
        self.text.push_str(text);
        self.entries.push(InboxEntry::Text(start..self.text.len()));
    }

    fn push_binary(&mut self, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.push_text(text),
            Err(_) => self.entries.push(InboxEntry::NotUtf8),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Message `index`: its text, or `None` for a binary frame that is not UTF-8.
    pub fn get(&self, index: usize) -> Option<Option<&str>> {
        match self.entries.get(index)? {
            InboxEntry::Text(range) => Some(self.text.get(range.clone())),
            InboxEntry::NotUtf8 => Some(None),
        }
    }

    /// Empties it, keeping the memory for the next turn.
    pub fn clear(&mut self) {
        self.text.clear();
        self.entries.clear();
    }
}

/// A connection's socket as tungstenite reads it during one turn: first what an earlier
/// turn left over, then the read-ahead buffer, refilled from the kernel when empty.
struct Reader<'a> {
    socket: &'a mut Socket,
    ahead: &'a mut ReadAhead,
}

impl Reader<'_> {
    /// Keeps what the read-ahead still holds with the connection, for its next turn,
    /// and empties the buffer for the next connection.
    fn stash_leftover(&mut self) {
        let rest = self.ahead.pending();
        if !rest.is_empty() {
            self.socket.stash.extend_from_slice(rest);
        }
        self.ahead.start = 0;
        self.ahead.end = 0;
    }
}

impl Read for Reader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.socket.stash.is_empty() {
            let n = out.len().min(self.socket.stash.len());
            out.get_mut(..n)
                .unwrap_or_default()
                .copy_from_slice(self.socket.stash.get(..n).unwrap_or_default());
            self.socket.stash.drain(..n);
            if self.socket.stash.is_empty() {
                // Rarely used: give the memory back.
                self.socket.stash = Vec::new();
            }
            self.socket.handed.feed(out.get(..n).unwrap_or_default());
            return Ok(n);
        }
        if self.ahead.pending().is_empty() {
            let n = self.socket.read(&mut self.ahead.buf)?;
            self.ahead.start = 0;
            self.ahead.end = n;
        }
        let pending = self.ahead.pending();
        let n = out.len().min(pending.len());
        out.get_mut(..n).unwrap_or_default().copy_from_slice(pending.get(..n).unwrap_or_default());
        self.ahead.start += n;
        self.socket.handed.feed(out.get(..n).unwrap_or_default());
        Ok(n)
    }
}

impl Write for Reader<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

/// A client socket that counts the bytes through it, for the metrics.
pub struct Socket {
    pub stream: TcpStream,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// The last read returned less than asked: the kernel had no more then, and new
    /// data brings a new readiness event. Reads report WouldBlock without a system call
    /// until the server clears this on the next event.
    pub drained: bool,
    /// Cleared once the peer has hung up: its end-of-file comes with no further event,
    /// so from then on only WouldBlock or end-of-file ends a read loop.
    pub trust_short_reads: bool,
    /// Bytes this connection may still read in its current turn. A turn can end
    /// inside a message (endless fragments, say), so bytes, not messages, bound it.
    turn_bytes_left: usize,
    /// Input read ahead in a turn that ended before tungstenite took it all.
    stash: Vec<u8>,
    /// The frames in what tungstenite was given so far.
    handed: FrameBoundaries,
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained || self.turn_bytes_left == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = self.stream.read(buf)?;
        self.drained = self.trust_short_reads && n < buf.len();
        self.turn_bytes_left = self.turn_bytes_left.saturating_sub(n);
        self.bytes_read += n as u64;
        Ok(n)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.bytes_written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Conn {
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        now: Instant,
        handshake_timeout: Duration,
        rate: TokenBucket,
    ) -> Self {
        Conn {
            socket: Socket {
                stream,
                bytes_read: 0,
                bytes_written: 0,
                drained: false,
                trust_short_reads: true,
                turn_bytes_left: READ_BYTES_PER_TURN,
                stash: Vec::new(),
                handed: FrameBoundaries::default(),
            },
            peer,
            phase: Phase::ReadingHead { buf: Vec::new(), searched: 0, deadline: now + handshake_timeout },
            last_heard: now,
            pinged: false,
            probe_deadline: None,
            rate,
            strikes: 0,
            flush_queued: false,
            finished: false,
            close_reason: CloseReason::Client,
            ws_wants_input: false,
            big_buffers: false,
            grown_buffers: false,
            shrink_requested: false,
            queued_since_flush: 0,
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    /// Reads what has arrived of the request head, at most [`http::MAX_HEAD_LEN`] bytes.
    pub fn read_head(&mut self) -> HeadRead {
        let Phase::ReadingHead { buf, searched, .. } = &mut self.phase else { return HeadRead::Gone };
        let mut chunk = [0u8; 2048];
        loop {
            let room = http::MAX_HEAD_LEN.saturating_sub(buf.len()).min(chunk.len());
            if room == 0 {
                break;
            }
            let Some(into) = chunk.get_mut(..room) else { break };
            match self.socket.read(into) {
                Ok(0) => return HeadRead::Gone,
                Ok(n) => buf.extend_from_slice(into.get(..n).unwrap_or_default()),
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return HeadRead::Gone,
            }
        }
        match http::parse_head(buf, searched) {
            HeadStatus::Partial => HeadRead::Partial,
            HeadStatus::Invalid(status) => HeadRead::Invalid(status),
            HeadStatus::Complete { request, len } => {
                let leftover = buf.get(len..).unwrap_or_default().to_vec();
                HeadRead::Complete { request, leftover }
            }
        }
    }

    /// Starts writing an HTTP response and writes what the socket takes now.
    pub fn reply(&mut self, out: Vec<u8>, then: AfterReply, ws_config: &WebSocketConfig) -> WriteEnd {
        self.phase = Phase::WritingReply { out, written: 0, then };
        self.write_reply(ws_config)
    }

    fn write_reply(&mut self, ws_config: &WebSocketConfig) -> WriteEnd {
        let Phase::WritingReply { out, written, .. } = &mut self.phase else { return WriteEnd::Gone };
        while let Some(rest) = out.get(*written..).filter(|rest| !rest.is_empty()) {
            match self.socket.write(rest) {
                Ok(0) => return WriteEnd::Gone,
                Ok(n) => *written += n,
                Err(err) if err.kind() == ErrorKind::WouldBlock => return WriteEnd::Blocked,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => return WriteEnd::Gone,
            }
        }
        let previous = std::mem::replace(&mut self.phase, Phase::Lingering { deadline: Instant::now() });
        match previous {
            Phase::WritingReply { then: AfterReply::Upgrade { leftover }, .. } => {
                self.socket.handed.feed(&leftover);
                let ws = WebSocketContext::from_partially_read(leftover, Role::Server, Some(*ws_config));
                self.phase = Phase::Open(Box::new(ws));
                WriteEnd::Done
            }
            _ => self.linger(),
        }
    }

    /// Reads up to `budget` messages into `inbox`. Pings are answered by tungstenite;
    /// pongs and other control frames only count as signs of life.
    pub fn read_messages(
        &mut self,
        budget: usize,
        now: Instant,
        ahead: &mut ReadAhead,
        inbox: &mut Inbox,
    ) -> ReadEnd {
        let Phase::Open(ws) = &mut self.phase else { return ReadEnd::Gone };
        self.socket.turn_bytes_left = READ_BYTES_PER_TURN;
        let mut reader = Reader { socket: &mut self.socket, ahead };
        let mut end = ReadEnd::MoreLeft;
        for _ in 0..budget {
            match ws.read(&mut reader) {
                Ok(message) => {
                    self.ws_wants_input = false;
                    self.last_heard = now;
                    self.pinged = false;
                    self.probe_deadline = None;
                    // Copied out and dropped at once: the message shares tungstenite's read
                    // buffer, which can then be reused in place instead of reallocated.
                    match &message {
                        Message::Text(text) => inbox.push_text(text.as_str()),
                        Message::Binary(bytes) => inbox.push_binary(bytes),
                        Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {}
                    }
                }
                Err(WsError::Io(err)) if err.kind() == ErrorKind::WouldBlock => {
                    self.ws_wants_input = true;
                    let out_of_turn = reader.socket.turn_bytes_left == 0;
                    end = if out_of_turn { ReadEnd::MoreLeft } else { ReadEnd::Drained };
                    break;
                }
                Err(WsError::Io(err)) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    end = read_failure(err, &reader.socket.handed);
                    break;
                }
            }
        }
        // What this turn fetched but tungstenite did not take yet stays with this connection.
        reader.stash_leftover();
        let largest = self.socket.handed.take_largest();
        self.big_buffers |= largest > BIG_MESSAGE;
        self.grown_buffers |= largest > u64::from(GROWN);
        end
    }

    /// Queues one text message. It goes out on the next [`Conn::flush`] (or sooner
    /// when much is queued).
    pub fn send(&mut self, text: String) -> Result<(), SendError> {
        let Phase::Open(ws) = &mut self.phase else { return Err(SendError::NotOpen) };
        self.big_buffers |= text.len() as u64 > BIG_MESSAGE;
        let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
        self.queued_since_flush = self.queued_since_flush.saturating_add(len);
        self.grown_buffers |= self.queued_since_flush > GROWN;
        match ws.write(&mut self.socket, Message::text(text)) {
            Ok(()) => Ok(()),
            // The frame is queued; the rest waits for WRITABLE.
            Err(WsError::Io(err)) if err.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(WsError::WriteBufferFull(_)) => Err(SendError::Overflow),
            Err(_) => Err(SendError::NotOpen),
        }
    }

    /// Queues a WebSocket ping (keep-alive or liveness probe).
    pub fn ping(&mut self) {
        if let Phase::Open(ws) = &mut self.phase {
            let _ = ws.write(&mut self.socket, Message::Ping(Bytes::new()));
        }
    }

    /// Writes out whatever is queued, as far as the socket takes it.
    pub fn flush(&mut self, ws_config: &WebSocketConfig) -> WriteEnd {
        match &mut self.phase {
            Phase::ReadingHead { .. } => WriteEnd::Done,
            Phase::WritingReply { .. } => self.write_reply(ws_config),
            Phase::Open(ws) => match ws.flush(&mut self.socket) {
                Ok(()) => {
                    self.queued_since_flush = 0;
                    WriteEnd::Done
                }
                Err(WsError::Io(err)) if err.kind() == ErrorKind::WouldBlock => WriteEnd::Blocked,
                Err(_) => WriteEnd::Gone,
            },
            Phase::Closing { ws, .. } => match ws.flush(&mut self.socket) {
                Err(WsError::Io(err)) if err.kind() == ErrorKind::WouldBlock => WriteEnd::Blocked,
                // Flushed (or the client already answered our close): shut our side.
                Ok(()) | Err(WsError::ConnectionClosed) => self.linger(),
                Err(_) => WriteEnd::Gone,
            },
            Phase::Lingering { .. } => WriteEnd::Done,
        }
    }

    /// True when traffic grew the WebSocket buffers beyond their fresh size.
    pub fn buffers_grown(&self) -> bool {
        self.grown_buffers || self.big_buffers
    }

    /// Asks for fresh buffers at the next flush that writes everything: the server does
    /// so for clients quiet for a while, so an SDP offer or a burst of candidates does not
    /// keep its buffers for as long as the connection lasts.
    pub fn request_shrink(&mut self) {
        self.shrink_requested = self.buffers_grown();
    }

    /// After a big message, or when asked to ([`Conn::request_shrink`]), swaps tungstenite's
    /// grown buffers for fresh small ones, once nothing is in them: call it right after a
    /// flush that wrote everything. tungstenite has no call to shrink them, and a client
    /// that sent or got one large message would otherwise hold that much memory for as long
    /// as it stays connected. True when it did.
    pub fn release_buffers(&mut self, ws_config: &WebSocketConfig) -> bool {
        // Called after every full flush: the common case (nothing to release) returns here.
        if !self.big_buffers && !self.shrink_requested {
            return false;
        }
        let Phase::Open(ws) = &mut self.phase else { return false };
        if !may_renew(ws, self.ws_wants_input, &self.socket.handed) {
            return false;
        }
        **ws = WebSocketContext::from_partially_read(Vec::new(), Role::Server, Some(*ws_config));
        self.big_buffers = false;
        self.grown_buffers = false;
        self.shrink_requested = false;
        true
    }

    /// Starts a clean WebSocket close with `code`; falls back to lingering when not open.
    pub fn close(&mut self, code: CloseCode, reason: &'static str, ws_config: &WebSocketConfig) -> WriteEnd {
        let previous = std::mem::replace(&mut self.phase, Phase::Lingering { deadline: Instant::now() });
        match previous {
            Phase::Open(mut ws) => {
                let frame = CloseFrame { code, reason: reason.into() };
                // close() queues the frame even when the socket would block.
                let _ = ws.close(&mut self.socket, Some(frame));
                self.phase = Phase::Closing { ws, deadline: Instant::now() + CLOSE_GRACE };
                self.flush(ws_config)
            }
            Phase::Closing { ws, deadline } => {
                self.phase = Phase::Closing { ws, deadline };
                WriteEnd::Blocked
            }
            _ => self.linger(),
        }
    }

    /// Shuts our sending side so the client sees the end, then waits for its hang-up.
    /// Dropping a socket with unread input would reset it and could lose what we sent.
    fn linger(&mut self) -> WriteEnd {
        if self.socket.stream.shutdown(Shutdown::Write).is_err() {
            return WriteEnd::Gone;
        }
        self.phase = Phase::Lingering { deadline: Instant::now() + CLOSE_GRACE };
        match self.discard_input() {
            ReadEnd::Gone | ReadEnd::Fail(..) => WriteEnd::Gone,
            ReadEnd::Drained | ReadEnd::MoreLeft => WriteEnd::Done,
        }
    }

    /// Reads and drops input while lingering or closing, one turn's worth at most;
    /// `Gone` once the client hung up. (The phase's deadline bounds the whole of it.)
    pub fn discard_input(&mut self) -> ReadEnd {
        let mut sink = [0u8; 4096];
        self.socket.turn_bytes_left = READ_BYTES_PER_TURN;
        loop {
            match self.socket.read(&mut sink) {
                Ok(0) => return ReadEnd::Gone,
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    return if self.socket.turn_bytes_left == 0 {
                        ReadEnd::MoreLeft
                    } else {
                        ReadEnd::Drained
                    };
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => return ReadEnd::Gone,
            }
        }
    }

    /// The time by which this connection must have moved on, if its phase has one.
    pub fn phase_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::ReadingHead { deadline, .. }
            | Phase::Closing { deadline, .. }
            | Phase::Lingering { deadline } => Some(*deadline),
            Phase::WritingReply { .. } | Phase::Open(_) => None,
        }
    }
}

/// Maps a tungstenite read error to what the server does about it.
fn read_failure(err: WsError, handed: &FrameBoundaries) -> ReadEnd {
    match err {
        // tungstenite takes a 64-bit length with its top bit set for a size over the limit;
        // RFC 6455 (section 5.2) wants that bit clear, so the frame breaks the protocol.
        WsError::Capacity(_) if handed.saw_invalid_length() => {
            ReadEnd::Fail(CloseCode::Protocol, "frame length has its most significant bit set")
        }
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            ReadEnd::Fail(CloseCode::Size, "message too large")
        }
        WsError::Capacity(_) => ReadEnd::Fail(CloseCode::Size, "too large"),
        WsError::Utf8(_) => ReadEnd::Fail(CloseCode::Invalid, "text frame is not valid UTF-8"),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => ReadEnd::Gone,
        WsError::Protocol(_) => ReadEnd::Fail(CloseCode::Protocol, "protocol error"),
        _ => ReadEnd::Gone,
    }
}

/// True when a fresh context may take `ws`'s place after a flush that wrote everything:
/// its last read ended for want of input (`wants_input`), so no whole frame waits in it,
/// and the bytes it was given (`handed`) end with a complete message, so it holds no part
/// of a frame or of a fragmented message either; and it is not closing.
pub fn may_renew(ws: &WebSocketContext, wants_input: bool, handed: &FrameBoundaries) -> bool {
    wants_input && handed.at_message_boundary() && ws.can_write()
}

/// The tungstenite settings for client connections: small buffers, bounded sizes.
pub fn websocket_config(max_message_size: usize, max_outbound: usize) -> WebSocketConfig {
    let write_batch = 16 * 1024;
    WebSocketConfig::default()
        // Every idle connection holds this much, and tungstenite zeroes this much of it
        // before each read: 256 bytes keeps both small (1,024 cost ~770 bytes more per
        // idle connection and ~10 % more CPU per 500-byte message at one in flight).
        // Larger messages grow the buffer to their size; it is read in 256-byte steps
        // from the loop's read-ahead, so no extra system calls.
        .read_buffer_size(256)
        // Small writes collect here and go out together when the server flushes.
        .write_buffer_size(write_batch)
        .max_write_buffer_size(max_outbound.max(write_batch + 1))
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// True for errors after which retrying accept() later can succeed.
pub fn is_resource_exhaustion(err: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM: out of descriptors or memory for now.
    matches!(err.raw_os_error(), Some(23 | 24 | 105 | 12))
}
