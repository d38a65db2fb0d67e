//! One client connection: its socket and the phase it is in, from reading the
//! HTTP request head, through WebSocket messages, to closing and being finished with.
//! Each method does non-blocking I/O on this connection's own socket only and tells
//! the server what happened; WouldBlock is the normal end of every read and write.
//! The connection owns its whole lifecycle: the loop asks and tells it things through
//! methods, and passes the time in (nothing here reads the clock).

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Bytes, Message};

use crate::backlog::{self, Backlog, QueueLimits, Refusal};
use crate::boundary::FrameBoundaries;
use crate::http::{self, HeadStatus, Request};
use crate::metrics::CloseReason;
use crate::rate::{TokenBucket, Verdict};
use crate::stream::ByteStream;

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

/// The WebSocket buffer's hard limit, as a multiple of `--max-outbound`.
const OUTBOUND_HARD_FACTOR: usize = 4;

/// How long a closing connection may take to finish before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Where a connection is in its life.
enum Phase {
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
    /// Closed and released; it leaves the server's table at the end of the round.
    Finished,
}

/// Where a connection is in its life, as the loop sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the HTTP request head.
    ReadingHead,
    /// Writing an HTTP response.
    WritingReply,
    /// Speaking WebSocket.
    Open,
    /// Closing or lingering: input is read and dropped until the client hangs up.
    Closing,
    /// Finished with: nothing more happens to it.
    Finished,
}

/// What a message cost against the connection's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    Paid,
    /// Over the rate: this message is refused.
    Refused,
    /// Over the rate too many times in a row: the client floods.
    Flooding,
}

/// Bytes a connection moved since they were last taken for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteCounts {
    pub read: u64,
    pub written: u64,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Past every allowance: the client's outbound buffer is full even for the server's
    /// own messages.
    Overflow,
    /// A relayed message does not fit: the client's queue is full, or its sender already
    /// holds its share of it. The client is not at fault; the sender may try again later.
    Busy(Refusal),
    /// The connection is not open for messages (handshake, closing or failed).
    NotOpen,
}

/// One client connection over byte stream `S`.
pub struct Conn<S> {
    socket: Socket<S>,
    peer: SocketAddr,
    phase: Phase,
    /// When the client last sent anything.
    last_heard: Instant,
    /// A keep-alive ping went out since `last_heard`.
    pinged: bool,
    /// Whether someone asked for an address of this client and it must show it is alive.
    probe: Probe,
    /// Paces the messages this client may send.
    rate: TokenBucket,
    /// Messages refused in a row for going over the rate.
    strikes: u32,
    /// Output is queued and the connection is on the server's flush list.
    flush_queued: bool,
    /// The connection is on the server's read list: one turn per round at most.
    read_queued: bool,
    /// Why the connection is closing, once it is.
    close_reason: CloseReason,
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
    /// Output queued and not yet taken by the socket, and who queued it.
    backlog: Backlog,
    /// The last flush left output waiting for the socket.
    output_blocked: bool,
    /// While output waits: since when the socket has taken no bytes.
    stalled_since: Option<Instant>,
    /// The socket's byte count at the last sweep.
    written_at_sweep: u64,
}

/// How a client takes the output queued for it (see [`Conn::output_pace`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pace {
    /// How long output has waited with the socket taking no bytes (zero when none waits).
    pub stalled_for: Duration,
    /// How long the queue would take to drain at the pace of the last interval; `None`
    /// when nothing waits or nothing was taken.
    pub drain: Option<Duration>,
}

impl Pace {
    /// Waits, and would not drain within `limit` at its pace (or takes nothing at all).
    pub fn too_slow_for(&self, limit: Duration) -> bool {
        self.stalled_for > Duration::ZERO || self.drain.is_some_and(|drain| drain > limit)
    }
}

/// A liveness probe: someone asked for an address this client holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Idle,
    /// The ping is queued behind other output; the probe's time starts once the socket
    /// has taken bytes up to `ends_at`, so a client that reads slowly is not timed for
    /// the backlog others sent it.
    Queued {
        ends_at: u64,
    },
    /// The ping reached the socket: the client must answer by `deadline`.
    Sent {
        deadline: Instant,
    },
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
    /// A ping or pong from the client: no call, but it costs the loop as much as one.
    Control,
}

/// One message of a connection's turn, as the server handles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A text frame, or a binary frame holding UTF-8 text.
    Text(&'a str),
    /// A binary frame that is not UTF-8.
    NotUtf8,
    /// A ping or pong frame (tungstenite has already answered a ping).
    Control,
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

    /// Message `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<Incoming<'_>> {
        match self.entries.get(index)? {
            InboxEntry::Text(range) => self.text.get(range.clone()).map(Incoming::Text),
            InboxEntry::NotUtf8 => Some(Incoming::NotUtf8),
            InboxEntry::Control => Some(Incoming::Control),
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
struct Reader<'a, S> {
    socket: &'a mut Socket<S>,
    ahead: &'a mut ReadAhead,
}

impl<S: ByteStream> Reader<'_, S> {
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

impl<S: ByteStream> Read for Reader<'_, S> {
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

impl<S: ByteStream> Write for Reader<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

/// A client socket that counts the bytes through it, for the metrics.
struct Socket<S> {
    stream: S,
    bytes_read: u64,
    bytes_written: u64,
    /// The last read returned less than asked: the kernel had no more then, and new
    /// data brings a new readiness event. Reads report WouldBlock without a system call
    /// until the next event clears this ([`Conn::on_readiness`]).
    drained: bool,
    /// Cleared once the peer has hung up: its end-of-file comes with no further event,
    /// so from then on only WouldBlock or end-of-file ends a read loop.
    trust_short_reads: bool,
    /// Bytes this connection may still read in its current turn. A turn can end
    /// inside a message (endless fragments, say), so bytes, not messages, bound it.
    turn_bytes_left: usize,
    /// Input read ahead in a turn that ended before tungstenite took it all.
    stash: Vec<u8>,
    /// The frames in what tungstenite was given so far.
    handed: FrameBoundaries,
}

impl<S: ByteStream> Read for Socket<S> {
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

impl<S: ByteStream> Write for Socket<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.bytes_written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl<S: ByteStream> Conn<S> {
    pub fn new(
        stream: S,
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
            probe: Probe::Idle,
            rate,
            strikes: 0,
            flush_queued: false,
            read_queued: false,
            close_reason: CloseReason::Client,
            ws_wants_input: false,
            big_buffers: false,
            grown_buffers: false,
            shrink_requested: false,
            queued_since_flush: 0,
            backlog: Backlog::default(),
            output_blocked: false,
            stalled_since: None,
            written_at_sweep: 0,
        }
    }

    /// Watches the stream for readiness under `token`.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.socket.stream, token, Interest::READABLE | Interest::WRITABLE)
    }

    /// Stops watching the stream.
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        registry.deregister(&mut self.socket.stream)
    }

    /// The stream under the connection.
    pub fn stream(&self) -> &S {
        &self.socket.stream
    }

    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.socket.stream
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn stage(&self) -> Stage {
        match self.phase {
            Phase::ReadingHead { .. } => Stage::ReadingHead,
            Phase::WritingReply { .. } => Stage::WritingReply,
            Phase::Open(_) => Stage::Open,
            Phase::Closing { .. } | Phase::Lingering { .. } => Stage::Closing,
            Phase::Finished => Stage::Finished,
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished)
    }

    /// Why the connection is closing, once it is.
    pub fn close_reason(&self) -> CloseReason {
        self.close_reason
    }

    /// How long the client has sent nothing.
    pub fn quiet_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_heard)
    }

    /// A readiness event came: reads may find input again. `hung_up` when the event says
    /// the peer hung up or the socket failed, after which no event announces more.
    pub fn on_readiness(&mut self, hung_up: bool) {
        self.socket.drained = false;
        if hung_up {
            self.socket.trust_short_reads = false;
        }
    }

    /// Puts the connection on the loop's read list unless it is on it: true when it was not.
    pub fn enlist_for_read(&mut self) -> bool {
        !std::mem::replace(&mut self.read_queued, true)
    }

    /// Its read turn is starting: it leaves the read list.
    pub fn delist_for_read(&mut self) {
        self.read_queued = false;
    }

    /// Puts the connection on the loop's flush list unless it is on it: true when it was not.
    pub fn enlist_for_flush(&mut self) -> bool {
        !std::mem::replace(&mut self.flush_queued, true)
    }

    /// Its flush is starting: it leaves the flush list.
    pub fn delist_for_flush(&mut self) {
        self.flush_queued = false;
    }

    /// Pays for one message from the client's rate (`per_sec`, `burst`); more than
    /// `max_strikes` refusals in a row make it a flood.
    pub fn charge_message(&mut self, per_sec: u32, burst: u32, max_strikes: u32, now: Instant) -> Charge {
        if self.rate.take(per_sec, burst, now) == Verdict::Allowed {
            self.strikes = 0;
            return Charge::Paid;
        }
        self.strikes = self.strikes.saturating_add(1);
        if self.strikes > max_strikes { Charge::Flooding } else { Charge::Refused }
    }

    /// Bytes read and written since they were last taken by [`Conn::finish`].
    pub fn byte_counts(&self) -> ByteCounts {
        ByteCounts { read: self.socket.bytes_read, written: self.socket.bytes_written }
    }

    /// Finishes with the connection: it does nothing more, and forgets its queued output
    /// (whose memory goes with it). The bytes it moved, for the metrics; `None` when it was
    /// finished already.
    pub fn finish(&mut self) -> Option<ByteCounts> {
        if self.is_finished() {
            return None;
        }
        self.phase = Phase::Finished;
        self.backlog = Backlog::default();
        self.output_blocked = false;
        let counts = self.byte_counts();
        self.socket.bytes_read = 0;
        self.socket.bytes_written = 0;
        Some(counts)
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
    /// A response after which the connection closes finishes it as [`CloseReason::HttpDone`].
    pub fn reply(
        &mut self,
        out: Vec<u8>,
        then: AfterReply,
        ws_config: &WebSocketConfig,
        now: Instant,
    ) -> WriteEnd {
        if matches!(then, AfterReply::Close) {
            self.close_reason = CloseReason::HttpDone;
        }
        self.phase = Phase::WritingReply { out, written: 0, then };
        self.write_reply(ws_config, now)
    }

    fn write_reply(&mut self, ws_config: &WebSocketConfig, now: Instant) -> WriteEnd {
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
        // All taken; a TLS stream may hold some of it still, which must go out before
        // our side shuts.
        match self.socket.flush() {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::WouldBlock => return WriteEnd::Blocked,
            Err(_) => return WriteEnd::Gone,
        }
        let previous = std::mem::replace(&mut self.phase, Phase::Lingering { deadline: now });
        match previous {
            Phase::WritingReply { then: AfterReply::Upgrade { leftover }, .. } => {
                self.socket.handed.feed(&leftover);
                let ws = WebSocketContext::from_partially_read(leftover, Role::Server, Some(*ws_config));
                self.phase = Phase::Open(Box::new(ws));
                self.backlog = Backlog::starting_at(self.socket.bytes_written);
                WriteEnd::Done
            }
            _ => self.linger(now),
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
                    self.probe = Probe::Idle;
                    // Copied out and dropped at once: the message shares tungstenite's read
                    // buffer, which can then be reused in place instead of reallocated.
                    match &message {
                        Message::Text(text) => inbox.push_text(text.as_str()),
                        Message::Binary(bytes) => inbox.push_binary(bytes),
                        Message::Ping(_) | Message::Pong(_) => inbox.entries.push(InboxEntry::Control),
                        Message::Close(_) | Message::Frame(_) => {}
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
    /// when much is queued). A message relayed from another client (`relayed`: its
    /// sender and the limits) is queued only while it fits; the server's own messages
    /// always are, up to the hard limit of the WebSocket buffer.
    pub fn send(&mut self, text: String, relayed: Option<(usize, QueueLimits)>) -> Result<(), SendError> {
        let Phase::Open(ws) = &mut self.phase else { return Err(SendError::NotOpen) };
        let wire_len = backlog::frame_len(text.len());
        if let Some((sender, limits)) = relayed {
            self.backlog.admits(sender, wire_len, limits).map_err(SendError::Busy)?;
        }
        self.big_buffers |= text.len() as u64 > BIG_MESSAGE;
        let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
        self.queued_since_flush = self.queued_since_flush.saturating_add(len);
        self.grown_buffers |= self.queued_since_flush > GROWN;
        match ws.write(&mut self.socket, Message::text(text)) {
            // Queued (and perhaps partly written already); the rest waits for WRITABLE.
            Ok(()) => {}
            Err(WsError::Io(err)) if err.kind() == ErrorKind::WouldBlock => {}
            Err(WsError::WriteBufferFull(_)) => return Err(SendError::Overflow),
            Err(_) => return Err(SendError::NotOpen),
        }
        match relayed {
            Some((sender, _)) => self.backlog.queued_relay(sender, wire_len),
            None => {
                self.backlog.queued(wire_len);
            }
        }
        Ok(())
    }

    /// True when the client has been quiet for `interval` and no keep-alive ping went out
    /// since it was last heard.
    pub fn wants_keep_alive(&self, interval: Duration, now: Instant) -> bool {
        self.is_open() && !self.pinged && self.quiet_for(now) >= interval
    }

    /// Queues a keep-alive ping: true when it did.
    pub fn keep_alive(&mut self) -> bool {
        if self.ping().is_none() {
            return false;
        }
        self.pinged = true;
        true
    }

    /// Queues a WebSocket ping (keep-alive or liveness probe); the position just past it.
    fn ping(&mut self) -> Option<u64> {
        let Phase::Open(ws) = &mut self.phase else { return None };
        match ws.write(&mut self.socket, Message::Ping(Bytes::new())) {
            Ok(()) => {}
            Err(WsError::Io(err)) if err.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return None,
        }
        Some(self.backlog.queued(backlog::frame_len(0)))
    }

    /// Starts a liveness probe unless one is under way: true when it did.
    pub fn start_probe(&mut self) -> bool {
        if self.probe != Probe::Idle {
            return false;
        }
        match self.ping() {
            Some(ends_at) => {
                self.probe = Probe::Queued { ends_at };
                true
            }
            None => false,
        }
    }

    /// Starts the probe's clock once its ping has reached the socket.
    pub fn time_probe(&mut self, now: Instant, timeout: Duration) {
        if let Probe::Queued { ends_at } = self.probe
            && (self.socket.bytes_written >= ends_at || !self.output_blocked)
        {
            self.probe = Probe::Sent { deadline: now + timeout };
        }
    }

    /// True when a probe's ping reached the client and went unanswered past its deadline.
    pub fn probe_expired(&self, now: Instant) -> bool {
        matches!(self.probe, Probe::Sent { deadline } if now >= deadline)
    }

    /// Bytes queued for the client that its socket has not taken yet.
    pub fn pending_output(&self) -> u64 {
        if self.is_open() { self.backlog.pending() } else { 0 }
    }

    /// Gives back what the output bookkeeping keeps between rounds, if nothing is queued:
    /// the sweep does so about once a second (one allocation a second for a busy client,
    /// none held by an idle one).
    pub fn release_idle_bookkeeping(&mut self) {
        self.backlog.release();
    }

    /// How output has been going since the last sweep, which is what notices progress;
    /// `since_last_sweep` is how long ago that was.
    pub fn output_pace(&mut self, now: Instant, since_last_sweep: Duration) -> Pace {
        let written = self.socket.bytes_written;
        let taken = written.saturating_sub(self.written_at_sweep);
        self.written_at_sweep = written;
        if !self.output_blocked || !self.is_open() {
            self.stalled_since = None;
            return Pace::default();
        }
        let stalled_for = match self.stalled_since {
            Some(since) if taken == 0 => now.saturating_duration_since(since),
            Some(_) | None => {
                self.stalled_since = Some(now);
                Duration::ZERO
            }
        };
        // At the pace of the last interval, how long the queue would take to drain.
        let pending = u128::from(self.backlog.pending());
        let drain = (taken > 0).then(|| {
            let micros = pending * since_last_sweep.as_micros() / u128::from(taken);
            Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
        });
        Pace { stalled_for, drain }
    }

    /// Writes out whatever is queued, as far as the socket takes it.
    pub fn flush(&mut self, ws_config: &WebSocketConfig, now: Instant) -> WriteEnd {
        match &mut self.phase {
            // Nothing of ours yet; a TLS stream may still owe handshake messages.
            Phase::ReadingHead { .. } => match self.socket.flush() {
                Ok(()) => WriteEnd::Done,
                Err(err) if err.kind() == ErrorKind::WouldBlock => WriteEnd::Blocked,
                Err(_) => WriteEnd::Gone,
            },
            Phase::WritingReply { .. } => self.write_reply(ws_config, now),
            Phase::Open(ws) => match ws.flush(&mut self.socket) {
                Ok(()) => {
                    self.queued_since_flush = 0;
                    self.output_blocked = false;
                    self.backlog.all_written(self.socket.bytes_written);
                    WriteEnd::Done
                }
                Err(WsError::Io(err)) if err.kind() == ErrorKind::WouldBlock => {
                    self.output_blocked = true;
                    self.backlog.written_up_to(self.socket.bytes_written);
                    WriteEnd::Blocked
                }
                Err(_) => WriteEnd::Gone,
            },
            Phase::Closing { ws, .. } => match ws.flush(&mut self.socket) {
                Err(WsError::Io(err)) if err.kind() == ErrorKind::WouldBlock => WriteEnd::Blocked,
                // Flushed (or the client already answered our close): shut our side.
                Ok(()) | Err(WsError::ConnectionClosed) => self.linger(now),
                Err(_) => WriteEnd::Gone,
            },
            Phase::Lingering { .. } | Phase::Finished => WriteEnd::Done,
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

    /// Asks for fresh buffers at the next flush that writes everything, grown or not: for
    /// tests and fuzzing, which try a release at every point where one may happen.
    pub fn request_fresh_buffers(&mut self) {
        self.shrink_requested = true;
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

    /// Starts a clean WebSocket close with `code` and `why`, for `reason`; falls back to
    /// lingering when not open.
    pub fn close(
        &mut self,
        code: CloseCode,
        why: &'static str,
        reason: CloseReason,
        ws_config: &WebSocketConfig,
        now: Instant,
    ) -> WriteEnd {
        if matches!(self.phase, Phase::Finished) {
            return WriteEnd::Gone;
        }
        self.close_reason = reason;
        let previous = std::mem::replace(&mut self.phase, Phase::Lingering { deadline: now });
        match previous {
            Phase::Open(mut ws) => {
                let frame = CloseFrame { code, reason: why.into() };
                // A pong tungstenite still owes goes into the buffer now: close() would
                // queue it behind the close frame, and nothing may follow that.
                let _ = ws.flush(&mut self.socket);
                // close() queues the frame even when the socket would block.
                let _ = ws.close(&mut self.socket, Some(frame));
                self.phase = Phase::Closing { ws, deadline: now + CLOSE_GRACE };
                self.flush(ws_config, now)
            }
            Phase::Closing { ws, deadline } => {
                self.phase = Phase::Closing { ws, deadline };
                WriteEnd::Blocked
            }
            _ => self.linger(now),
        }
    }

    /// Shuts our sending side so the client sees the end, then waits for its hang-up.
    /// Dropping a socket with unread input would reset it and could lose what we sent.
    fn linger(&mut self, now: Instant) -> WriteEnd {
        if self.socket.stream.shutdown_write().is_err() {
            return WriteEnd::Gone;
        }
        self.phase = Phase::Lingering { deadline: now + CLOSE_GRACE };
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

    /// Why the connection must go, when its phase has a deadline and `now` is past it:
    /// a handshake that took too long, or a close that did.
    pub fn deadline_passed(&self, now: Instant) -> Option<CloseReason> {
        let deadline = self.phase_deadline()?;
        if now < deadline {
            return None;
        }
        Some(match self.phase {
            Phase::ReadingHead { .. } => CloseReason::HandshakeTimeout,
            _ => self.close_reason,
        })
    }

    /// The time by which this connection must have moved on, if its phase has one.
    fn phase_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::ReadingHead { deadline, .. }
            | Phase::Closing { deadline, .. }
            | Phase::Lingering { deadline } => Some(*deadline),
            Phase::WritingReply { .. } | Phase::Open(_) | Phase::Finished => None,
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
fn may_renew(ws: &WebSocketContext, wants_input: bool, handed: &FrameBoundaries) -> bool {
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
        // Relayed signals stop at max_outbound (they are refused, see Backlog); the
        // server's own replies and notices keep the room state right and may go past it,
        // to this hard limit, past which the client is dropped as not reading.
        .max_write_buffer_size(max_outbound.saturating_mul(OUTBOUND_HARD_FACTOR).max(write_batch + 1))
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_stream::{MemoryStream, Pipe};
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};

    const HEAD: &[u8] = b"GET /room HTTP/1.1\r\nHost: example.org\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";
    const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

    fn config() -> WebSocketConfig {
        websocket_config(64 * 1024, 64 * 1024)
    }

    fn connection(now: Instant) -> (Conn<MemoryStream>, Pipe) {
        let (stream, pipe) = MemoryStream::new();
        let peer = SocketAddr::from(([192, 0, 2, 1], 4711));
        (Conn::new(stream, peer, now, HANDSHAKE_TIMEOUT, TokenBucket::new(10, now)), pipe)
    }

    /// A text frame as a client sends it: masked.
    fn client_frame(text: &str) -> Vec<u8> {
        let mut frame = Frame::message(text.as_bytes().to_vec(), OpCode::Data(Data::Text), true);
        frame.header_mut().mask = Some([0x37, 0xfa, 0x21, 0x3d]);
        let mut out = Vec::new();
        frame.format(&mut out).expect("a Vec takes every byte");
        out
    }

    fn read_head_complete(conn: &mut Conn<MemoryStream>) -> (Box<Request>, Vec<u8>) {
        match conn.read_head() {
            HeadRead::Complete { request, leftover } => (request, leftover),
            HeadRead::Partial => panic!("head incomplete"),
            HeadRead::Invalid(status) => panic!("head invalid: {}", status.code()),
            HeadRead::Gone => panic!("connection gone"),
        }
    }

    /// A connection that has read the head and answered it with a 101: open.
    fn open_connection(now: Instant) -> (Conn<MemoryStream>, Pipe) {
        let (mut conn, pipe) = connection(now);
        pipe.arrive(HEAD);
        let (_, leftover) = read_head_complete(&mut conn);
        let end = conn.reply(SWITCHING.to_vec(), AfterReply::Upgrade { leftover }, &config(), now);
        assert_eq!(end, WriteEnd::Done);
        assert_eq!(conn.stage(), Stage::Open);
        assert_eq!(pipe.take_written(), SWITCHING);
        (conn, pipe)
    }

    fn texts(inbox: &Inbox) -> Vec<String> {
        (0..inbox.len())
            .filter_map(|index| match inbox.get(index) {
                Some(Incoming::Text(text)) => Some(text.to_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_head_split_at_every_byte_is_read_whole() {
        let now = Instant::now();
        for split in 1..HEAD.len() {
            let (mut conn, pipe) = connection(now);
            pipe.arrive(HEAD.get(..split).unwrap_or_default());
            assert!(matches!(conn.read_head(), HeadRead::Partial), "split at {split}");
            let mut rest = HEAD.get(split..).unwrap_or_default().to_vec();
            rest.push(0x81);
            pipe.arrive(rest);
            conn.on_readiness(false);
            let (request, leftover) = read_head_complete(&mut conn);
            assert_eq!(request.path(), "/room", "split at {split}");
            assert!(request.wants_websocket());
            assert_eq!(leftover, [0x81], "split at {split}");
        }
    }

    #[test]
    fn reads_retry_after_eintr_and_wait_after_would_block() {
        let now = Instant::now();
        let (mut conn, pipe) = connection(now);
        pipe.would_block();
        pipe.interrupt();
        pipe.arrive(HEAD);
        assert!(matches!(conn.read_head(), HeadRead::Partial));
        conn.on_readiness(false);
        let (request, leftover) = read_head_complete(&mut conn);
        assert_eq!(request.path(), "/room");
        assert!(leftover.is_empty());
    }

    #[test]
    fn a_short_read_means_drained_until_the_next_event_unless_the_peer_hung_up() {
        let now = Instant::now();
        let half = HEAD.get(..20).unwrap_or_default();
        // Short read: no further read until an event, so the hang-up behind it waits.
        let (mut conn, pipe) = connection(now);
        pipe.arrive(half);
        pipe.hang_up();
        assert!(matches!(conn.read_head(), HeadRead::Partial));
        conn.on_readiness(false);
        assert!(matches!(conn.read_head(), HeadRead::Gone));
        // Once an event said the peer hung up, reads go on to its end of stream at once.
        let (mut conn, pipe) = connection(now);
        pipe.arrive(half);
        pipe.hang_up();
        conn.on_readiness(true);
        assert!(matches!(conn.read_head(), HeadRead::Gone));
    }

    #[test]
    fn a_head_must_be_complete_by_its_deadline() {
        let now = Instant::now();
        let (conn, _pipe) = connection(now);
        assert_eq!(conn.deadline_passed(now), None);
        assert_eq!(conn.deadline_passed(now + HANDSHAKE_TIMEOUT), Some(CloseReason::HandshakeTimeout));
    }

    #[test]
    fn a_reply_the_socket_cannot_take_at_once_goes_out_when_writable() {
        let now = Instant::now();
        let (mut conn, pipe) = connection(now);
        pipe.arrive(HEAD);
        let (_, leftover) = read_head_complete(&mut conn);
        pipe.set_write_room(Some(10));
        let end = conn.reply(SWITCHING.to_vec(), AfterReply::Upgrade { leftover }, &config(), now);
        assert_eq!(end, WriteEnd::Blocked);
        assert_eq!(conn.stage(), Stage::WritingReply);
        pipe.set_write_room(None);
        assert_eq!(conn.flush(&config(), now), WriteEnd::Done);
        assert_eq!(conn.stage(), Stage::Open);
        assert_eq!(pipe.take_written(), SWITCHING);
    }

    #[test]
    fn a_reply_that_closes_shuts_our_side_and_lingers() {
        let now = Instant::now();
        let (mut conn, pipe) = connection(now);
        pipe.arrive(b"GET / HTTP/1.1\r\n\r\n".as_slice());
        read_head_complete(&mut conn);
        let body = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        assert_eq!(conn.reply(body.clone(), AfterReply::Close, &config(), now), WriteEnd::Done);
        assert_eq!(pipe.take_written(), body);
        assert!(pipe.write_shut());
        assert_eq!(conn.stage(), Stage::Closing);
        assert_eq!(conn.deadline_passed(now + CLOSE_GRACE), Some(CloseReason::HttpDone));
        pipe.arrive(b"late".as_slice());
        pipe.hang_up();
        conn.on_readiness(true);
        assert_eq!(conn.discard_input(), ReadEnd::Gone);
    }

    #[test]
    fn frames_behind_the_head_and_split_at_every_byte_are_read_whole() {
        let now = Instant::now();
        let (mut conn, pipe) = connection(now);
        let first = client_frame("behind the head");
        let mut head_and_more = HEAD.to_vec();
        head_and_more.extend_from_slice(first.get(..3).unwrap_or_default());
        pipe.arrive(head_and_more);
        let (_, leftover) = read_head_complete(&mut conn);
        assert_eq!(
            conn.reply(SWITCHING.to_vec(), AfterReply::Upgrade { leftover }, &config(), now),
            WriteEnd::Done
        );
        let mut rest = first.get(3..).unwrap_or_default().to_vec();
        rest.extend(client_frame("one byte at a time"));
        let mut ahead = ReadAhead::new();
        let mut inbox = Inbox::default();
        for byte in rest {
            pipe.arrive(vec![byte]);
            conn.on_readiness(false);
            assert_eq!(conn.read_messages(64, now, &mut ahead, &mut inbox), ReadEnd::Drained);
        }
        assert_eq!(texts(&inbox), ["behind the head", "one byte at a time"]);
    }

    #[test]
    fn a_turn_ends_at_its_budget_and_the_rest_waits_for_the_next() {
        let now = Instant::now();
        let (mut conn, pipe) = open_connection(now);
        // Longer than tungstenite's 256-byte reads, so the read-ahead still holds some.
        let [first, second, third] = ["1", "2", "3"].map(|digit| digit.repeat(300));
        let mut batch = client_frame(&first);
        batch.extend(client_frame(&second));
        batch.extend(client_frame(&third));
        pipe.arrive(batch);
        conn.on_readiness(false);
        let mut ahead = ReadAhead::new();
        let mut inbox = Inbox::default();
        assert_eq!(conn.read_messages(1, now, &mut ahead, &mut inbox), ReadEnd::MoreLeft);
        assert_eq!(texts(&inbox), [first]);
        assert_eq!(pipe.unread(), 0, "read ahead in one call");
        // What the turn read ahead stays with the connection, not in the shared buffer.
        assert!(ahead.pending().is_empty());
        inbox.clear();
        assert_eq!(conn.read_messages(1, now, &mut ahead, &mut inbox), ReadEnd::MoreLeft);
        assert_eq!(conn.read_messages(64, now, &mut ahead, &mut inbox), ReadEnd::Drained);
        assert_eq!(texts(&inbox), [second, third]);
    }

    #[test]
    fn eintr_while_reading_messages_is_retried() {
        let now = Instant::now();
        let (mut conn, pipe) = open_connection(now);
        pipe.interrupt();
        pipe.arrive(client_frame("after a signal"));
        conn.on_readiness(false);
        let mut inbox = Inbox::default();
        assert_eq!(conn.read_messages(64, now, &mut ReadAhead::new(), &mut inbox), ReadEnd::Drained);
        assert_eq!(texts(&inbox), ["after a signal"]);
    }

    #[test]
    fn a_close_sends_the_frame_shuts_our_side_and_lingers_until_the_hang_up() {
        let now = Instant::now();
        let (mut conn, pipe) = open_connection(now);
        let end = conn.close(CloseCode::Away, "bye", CloseReason::Idle, &config(), now);
        assert_eq!(end, WriteEnd::Done);
        // 0x88: a final close frame; then its length, 1001 and the reason, unmasked.
        assert_eq!(pipe.take_written(), [0x88, 5, 0x03, 0xe9, b'b', b'y', b'e']);
        assert!(pipe.write_shut());
        assert_eq!(conn.stage(), Stage::Closing);
        assert_eq!(conn.pending_output(), 0);
        assert_eq!(conn.deadline_passed(now + CLOSE_GRACE - Duration::from_millis(1)), None);
        assert_eq!(conn.deadline_passed(now + CLOSE_GRACE), Some(CloseReason::Idle));
        assert_eq!(conn.send("too late".into(), None), Err(SendError::NotOpen));
        pipe.arrive([0x88, 0x80, 0, 0, 0, 0].as_slice());
        conn.on_readiness(false);
        assert_eq!(conn.discard_input(), ReadEnd::Drained);
        pipe.hang_up();
        conn.on_readiness(true);
        assert_eq!(conn.discard_input(), ReadEnd::Gone);
    }

    #[test]
    fn a_close_the_socket_cannot_take_waits_and_then_lingers() {
        let now = Instant::now();
        let (mut conn, pipe) = open_connection(now);
        pipe.set_write_room(Some(0));
        assert_eq!(
            conn.close(CloseCode::Normal, "", CloseReason::Shutdown, &config(), now),
            WriteEnd::Blocked
        );
        assert!(!pipe.write_shut());
        // A second close while closing changes nothing.
        assert_eq!(conn.close(CloseCode::Away, "", CloseReason::Idle, &config(), now), WriteEnd::Blocked);
        pipe.set_write_room(None);
        assert_eq!(conn.flush(&config(), now), WriteEnd::Done);
        assert_eq!(pipe.take_written(), [0x88, 2, 0x03, 0xe8]);
        assert!(pipe.write_shut());
    }

    #[test]
    fn output_queues_until_flushed_and_counts_until_finished() {
        let now = Instant::now();
        let (mut conn, pipe) = open_connection(now);
        assert_eq!(conn.send("hello".into(), None), Ok(()));
        assert!(conn.pending_output() > 0);
        assert_eq!(conn.flush(&config(), now), WriteEnd::Done);
        assert_eq!(conn.pending_output(), 0);
        assert_eq!(pipe.take_written(), [0x81, 5, b'h', b'e', b'l', b'l', b'o']);
        pipe.set_write_room(Some(0));
        assert_eq!(conn.send("queued".into(), None), Ok(()));
        assert_eq!(conn.flush(&config(), now), WriteEnd::Blocked);
        let queued = conn.pending_output();
        assert!(queued > 0);
        let counts = conn.finish().expect("finishes once");
        assert_eq!(counts.read, HEAD.len() as u64);
        assert_eq!(counts.written, (SWITCHING.len() + 7) as u64);
        assert_eq!(conn.stage(), Stage::Finished);
        assert_eq!(conn.pending_output(), 0, "forgotten when finished");
        assert_eq!(conn.finish(), None);
        assert_eq!(conn.close(CloseCode::Away, "", CloseReason::Idle, &config(), now), WriteEnd::Gone);
        assert_eq!(conn.flush(&config(), now), WriteEnd::Done);
        assert_eq!(conn.deadline_passed(now + Duration::from_secs(3600)), None);
    }

    #[test]
    fn keep_alive_pings_a_quiet_client_once_until_it_is_heard() {
        let now = Instant::now();
        let interval = Duration::from_secs(30);
        let (mut conn, pipe) = open_connection(now);
        assert!(!conn.wants_keep_alive(interval, now));
        let later = now + interval;
        assert!(conn.wants_keep_alive(interval, later));
        assert!(conn.keep_alive());
        assert!(!conn.wants_keep_alive(interval, later));
        assert_eq!(conn.flush(&config(), later), WriteEnd::Done);
        assert_eq!(pipe.take_written(), [0x89, 0]);
        pipe.arrive(client_frame("here"));
        conn.on_readiness(false);
        let mut inbox = Inbox::default();
        assert_eq!(conn.read_messages(64, later, &mut ReadAhead::new(), &mut inbox), ReadEnd::Drained);
        assert_eq!(conn.quiet_for(later), Duration::ZERO);
        assert!(conn.wants_keep_alive(interval, later + interval));
    }

    #[test]
    fn a_probe_is_timed_from_when_its_ping_reaches_the_socket() {
        let now = Instant::now();
        let timeout = Duration::from_secs(5);
        let (mut conn, pipe) = open_connection(now);
        pipe.set_write_room(Some(0));
        assert_eq!(conn.send("x".repeat(1000), None), Ok(()));
        assert!(conn.start_probe());
        assert!(!conn.start_probe(), "one probe at a time");
        assert_eq!(conn.flush(&config(), now), WriteEnd::Blocked);
        conn.time_probe(now, timeout);
        assert!(!conn.probe_expired(now + timeout * 10), "the ping still waits behind the backlog");
        // The socket takes part of the backlog: the ping is not out yet.
        pipe.set_write_room(Some(500));
        let later = now + Duration::from_secs(60);
        assert_eq!(conn.flush(&config(), later), WriteEnd::Blocked);
        conn.time_probe(later, timeout);
        assert!(!conn.probe_expired(later + timeout));
        pipe.set_write_room(None);
        assert_eq!(conn.flush(&config(), later), WriteEnd::Done);
        conn.time_probe(later, timeout);
        assert!(!conn.probe_expired(later + timeout - Duration::from_millis(1)));
        assert!(conn.probe_expired(later + timeout));
        // Any message from the client answers it.
        pipe.arrive(client_frame("alive"));
        conn.on_readiness(false);
        let mut inbox = Inbox::default();
        assert_eq!(conn.read_messages(64, later, &mut ReadAhead::new(), &mut inbox), ReadEnd::Drained);
        assert!(!conn.probe_expired(later + timeout));
    }

    #[test]
    fn output_the_socket_does_not_take_is_seen_stalling() {
        let now = Instant::now();
        let sweep = Duration::from_secs(1);
        let (mut conn, pipe) = open_connection(now);
        assert_eq!(conn.output_pace(now, sweep), Pace::default());
        pipe.set_write_room(Some(100));
        assert_eq!(conn.send("x".repeat(1000), None), Ok(()));
        assert_eq!(conn.flush(&config(), now), WriteEnd::Blocked);
        // It took 100 bytes in the last interval: about 9 intervals to drain the rest.
        let pace = conn.output_pace(now, sweep);
        assert_eq!(pace.stalled_for, Duration::ZERO);
        assert!(pace.drain.is_some_and(|drain| drain > 8 * sweep && drain < 10 * sweep), "{pace:?}");
        // Nothing taken since: stalled since the sweep that last saw progress.
        let pace = conn.output_pace(now + sweep, sweep);
        assert_eq!((pace.stalled_for, pace.drain), (sweep, None));
        let pace = conn.output_pace(now + 3 * sweep, sweep);
        assert_eq!(pace.stalled_for, 3 * sweep);
        assert!(pace.too_slow_for(Duration::from_secs(15)));
    }

    #[test]
    fn messages_over_the_rate_are_refused_and_a_flood_is_told_apart() {
        let now = Instant::now();
        let (mut conn, _pipe) = connection(now);
        let charges: Vec<_> = (0..13).map(|_| conn.charge_message(1, 10, 2, now)).collect();
        assert!(charges.iter().take(10).all(|&charge| charge == Charge::Paid));
        assert_eq!(charges.get(10..), Some([Charge::Refused, Charge::Refused, Charge::Flooding].as_slice()));
        // A paid message clears the strikes.
        assert_eq!(conn.charge_message(1, 10, 2, now + Duration::from_secs(1)), Charge::Paid);
        assert_eq!(conn.charge_message(1, 10, 2, now + Duration::from_secs(1)), Charge::Refused);
    }

    #[test]
    fn a_client_is_too_slow_when_it_takes_nothing_or_would_not_drain_in_time() {
        let limit = Duration::from_secs(15);
        assert!(!Pace::default().too_slow_for(limit));
        let keeping_up = Pace { stalled_for: Duration::ZERO, drain: Some(Duration::from_secs(7)) };
        assert!(!keeping_up.too_slow_for(limit));
        let trickling = Pace { stalled_for: Duration::ZERO, drain: Some(Duration::from_secs(3600)) };
        assert!(trickling.too_slow_for(limit));
        let stalled = Pace { stalled_for: Duration::from_secs(1), drain: None };
        assert!(stalled.too_slow_for(limit));
    }
}
