//! The load engine: one thread, one mio poll loop, every connection non-blocking.
//!
//! WebSocket framing is done here for speed: client frames carry the mask bit with an
//! all-zero masking key (valid per RFC 6455, and masking becomes a no-op), so a relay
//! message is a prebuilt frame per connection in which only the send timestamp and the
//! sequence number are patched before it is copied to the socket. Nothing is allocated per
//! message. Frame headers are written by tungstenite's `FrameHeader`; the server's frames are
//! read by hand (see `parse`). The handshake uses tungstenite's key helpers.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use crate::hist::Hist;
use crate::sys::{self, ProcStats, Timer, mono_ns};
use crate::tls::Stream;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proto {
    Diva,
    Matchbox,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Relay,
    Idle,
}

#[derive(Clone, Debug)]
pub struct Cfg {
    pub mode: Mode,
    pub protocol: Proto,
    pub target: SocketAddrV4,
    pub connections: usize,
    pub room_size: usize,
    pub inflight: u32,
    /// Open loop: total messages per second; 0 means closed loop.
    pub rate: u64,
    pub payload: usize,
    pub warmup_ns: u64,
    pub duration_ns: u64,
    /// Relay: after the window, this long with no new messages before the server's memory
    /// is read once more (what it keeps once traffic stops).
    pub settle_ns: u64,
    pub hold_ns: u64,
    pub join_timeout_ns: u64,
    pub concurrency: usize,
    pub source_addrs: u8,
    pub server_ident: bool,
    /// The server's processes (several: the cluster's nodes and Redis), figures added up.
    pub server_pids: Vec<u32>,
    /// Cluster: the second member of each pair of room members (odd places in a room)
    /// connects here; a room is ready once its members have their `stun` pairs.
    pub target2: Option<SocketAddrV4>,
    /// Cluster: the Redis to read `INFO commandstats` and `INFO cpu` from.
    pub redis: Option<SocketAddrV4>,
    /// Never sleep in the poll (relay phase): no wake-up latency on the generator's side.
    pub spin: bool,
    /// Speak wss:// (`--tls on`).
    pub tls: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Connecting,
    Handshaking,
    Joining,
    Joined,
    Closed,
}

// Digits patched into each relay message: `"@<ts:20>.<seq:12>.<sender:8>.xxxx…"`.
const TS_DIGITS: usize = 20;
const SEQ_DIGITS: usize = 12;
const SRC_DIGITS: usize = 8;
const STAMP_LEN: usize = 1 + TS_DIGITS + 1 + SEQ_DIGITS + 1 + SRC_DIGITS + 1;

struct Conn {
    stream: Option<Stream>,
    state: State,
    room: u32,
    /// Bytes received but not yet a whole frame.
    rbuf: Vec<u8>,
    /// A fragmented message being assembled (rare: servers here do not fragment).
    frag: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// Prebuilt relay frame toward `peer`, with offsets of the digits to patch.
    frame: Vec<u8>,
    ts_off: usize,
    seq_off: usize,
    peer: u32,
    seq: u64,
    expect: u64,
    /// Closed loop: messages to send at the next flush.
    pending: u32,
    dirty: bool,
    key: String,
    /// When the connect was issued.
    t_open: u64,
    /// diva: the address "ROOM:IDENT" the server confirmed; matchbox: the assigned uuid.
    addr: String,
}

#[derive(Default, Clone, Copy)]
struct Room {
    joined: u32,
    failed: u32,
    new_peers: u32,
    ready: bool,
}

#[derive(Default, Debug, Clone)]
pub struct Counters {
    pub connect_failed: u64,
    pub handshake_failed: u64,
    pub join_failed: u64,
    pub closed_by_server: u64,
    pub eof: u64,
    pub reset: u64,
    pub error_replies: u64,
    pub error_codes: std::collections::BTreeMap<String, u64>,
    /// A message arrived with a lower sequence number than one before it (out of order).
    pub seq_errors: u64,
    /// Messages skipped in a connection's sequence (never delivered).
    pub seq_gaps: u64,
    /// `rate-limited` replies: the server refused a message over the per-connection rate.
    /// Not an error: the scenario with default limits expects them; each is sent again.
    pub rate_limited: u64,
    pub bad_messages: u64,
    pub peer_left: u64,
    pub stun: u64,
    pub other_messages: u64,
    pub handshake_statuses: std::collections::BTreeMap<String, u64>,
    pub first_errors: Vec<String>,
}

pub struct Engine {
    cfg: Cfg,
    /// `--tls on`: the client settings every connection shares.
    tls_config: Option<std::sync::Arc<rustls::ClientConfig>>,
    poll: Poll,
    timer: Timer,
    conns: Vec<Conn>,
    rooms: Vec<Room>,
    scratch: Vec<u8>,
    dirty: Vec<u32>,
    /// Closed loop: messages refused as `rate-limited`, to send again at the given time.
    retry: std::collections::VecDeque<(u64, u32)>,
    pub c: Counters,
    pub hist: Hist,
    /// Connect to joined, per connection.
    pub join_hist: Hist,
    host: String,
    in_progress: usize,
    opened: usize,
    pub joined: usize,
    pub failed: usize,
    pub ready_rooms: usize,
    relay_on: bool,
    measuring: bool,
    pub delivered: u64,
    pub delivered_total: u64,
    /// `rate-limited` replies during the measured window.
    pub refused: u64,
    pub sent: u64,
    pub sent_total: u64,
    // Open loop schedule.
    sched_start: u64,
    sched_k: u64,
    pub sched_missed: u64,
    pub first_connect_ns: u64,
    pub last_join_ns: u64,
}

const TIMER: Token = Token(usize::MAX - 1);
const SCRATCH: usize = 256 * 1024;
const MAX_HEAD: usize = 16 * 1024;
/// How long a closed-loop connection waits before sending a `rate-limited` message again:
/// one token of diva-signal's default rate (100 messages/s).
const RETRY_NS: u64 = 10_000_000;

/// What the run measured, for the report.
#[derive(Default, Debug)]
pub struct Outcome {
    pub server_start: Option<ProcStats>,
    pub server_joined: Option<ProcStats>,
    pub server_w0: Option<ProcStats>,
    pub server_w1: Option<ProcStats>,
    /// Relay with a settle time: the server once the traffic stopped and settled.
    pub server_settled: Option<ProcStats>,
    pub join_s: f64,
    pub join_rate: f64,
    pub join_timed_out: bool,
    pub window_s: f64,
    pub gen_cpu_window_us: u64,
    pub gen_cpu_join_us: u64,
    /// CPU time the whole machine used during the window (all processes), in microseconds.
    pub machine_busy_window_us: u64,
    pub machine_busy_join_us: u64,
    pub rooms_used: usize,
    /// Cluster figures (each process's CPU, Redis's calls) at start, joined, window.
    pub snaps: [crate::cluster::Snap; 4],
}

impl Engine {
    pub fn new(cfg: Cfg) -> io::Result<Engine> {
        let poll = Poll::new()?;
        let timer = Timer::new()?;
        poll.registry().register(&mut SourceFd(&timer.raw()), TIMER, Interest::READABLE)?;
        let rooms = cfg.connections.div_ceil(cfg.room_size);
        let host = cfg.target.to_string();
        Ok(Engine {
            tls_config: cfg.tls.then(crate::tls::client_config),
            poll,
            timer,
            conns: Vec::with_capacity(cfg.connections),
            rooms: vec![Room::default(); rooms],
            scratch: vec![0; SCRATCH],
            dirty: Vec::with_capacity(cfg.connections),
            retry: std::collections::VecDeque::new(),
            c: Counters::default(),
            hist: Hist::default(),
            join_hist: Hist::default(),
            host,
            in_progress: 0,
            opened: 0,
            joined: 0,
            failed: 0,
            ready_rooms: 0,
            relay_on: false,
            measuring: false,
            delivered: 0,
            delivered_total: 0,
            refused: 0,
            sent: 0,
            sent_total: 0,
            sched_start: 0,
            sched_k: 0,
            sched_missed: 0,
            first_connect_ns: 0,
            last_join_ns: 0,
            cfg,
        })
    }

    fn server(&self) -> Option<ProcStats> {
        sys::proc_stats_sum(&self.cfg.server_pids)
    }

    fn snap(&self) -> crate::cluster::Snap {
        crate::cluster::snap(&self.cfg.server_pids, self.cfg.redis)
    }

    fn note_error(&mut self, what: String) {
        if self.c.first_errors.len() < 8 {
            self.c.first_errors.push(what);
        }
    }

    /// Runs the whole scenario and returns what it measured. Every phase has a time limit.
    pub fn run(&mut self) -> io::Result<Outcome> {
        let mut out = Outcome { server_start: self.server(), ..Outcome::default() };
        out.snaps[0] = self.snap();
        let mut events = Events::with_capacity(1024);
        let start = mono_ns();
        self.first_connect_ns = start;
        let join_deadline = start + self.cfg.join_timeout_ns;
        let gen0 = sys::self_cpu_us();
        let m0 = sys::machine_busy_us();

        // Phase 1: connect, handshake and join everyone, `concurrency` at a time.
        let mut last_progress = start;
        loop {
            self.open_more();
            if self.join_done() {
                break;
            }
            let now = mono_ns();
            if now >= join_deadline {
                out.join_timed_out = true;
                break;
            }
            if now - last_progress >= 1_000_000_000 && self.cfg.connections >= 5000 {
                last_progress = now;
                eprintln!("  joined {}/{} ...", self.joined, self.cfg.connections);
            }
            self.poll.poll(&mut events, Some(std::time::Duration::from_millis(10)))?;
            self.dispatch(&events);
            self.flush_dirty();
        }
        let joined_at = mono_ns();
        out.gen_cpu_join_us = sys::self_cpu_us() - gen0;
        out.machine_busy_join_us = sys::machine_busy_us().saturating_sub(m0);
        let join_end = if self.joined > 0 { self.last_join_ns } else { joined_at };
        out.join_s = (join_end.saturating_sub(self.first_connect_ns)) as f64 / 1e9;
        out.join_rate = if out.join_s > 0.0 { self.joined as f64 / out.join_s } else { 0.0 };
        out.server_joined = self.server();
        out.snaps[1] = self.snap();
        out.rooms_used = self.ready_rooms;
        eprintln!(
            "  joined {}/{} in {:.3} s ({:.0}/s), {} rooms ready{}",
            self.joined,
            self.cfg.connections,
            out.join_s,
            out.join_rate,
            self.ready_rooms,
            if out.join_timed_out { " (join time limit reached)" } else { "" }
        );

        match self.cfg.mode {
            Mode::Idle => {
                let until = mono_ns() + self.cfg.hold_ns;
                let g0 = sys::self_cpu_us();
                let m0 = sys::machine_busy_us();
                out.server_w0 = self.server();
                let t0 = mono_ns();
                self.pump_until(&mut events, until)?;
                out.window_s = (mono_ns() - t0) as f64 / 1e9;
                out.server_w1 = self.server();
                out.gen_cpu_window_us = sys::self_cpu_us() - g0;
                out.machine_busy_window_us = sys::machine_busy_us().saturating_sub(m0);
            }
            Mode::Relay => {
                self.build_frames();
                self.relay_on = true;
                let t0 = mono_ns();
                if self.cfg.rate > 0 {
                    self.sched_start = t0;
                    self.sched_k = 0;
                } else {
                    let conns: Vec<u32> =
                        (0..self.conns.len() as u32).filter(|&i| self.sendable(i as usize)).collect();
                    for i in conns {
                        self.conns[i as usize].pending = self.cfg.inflight;
                        self.mark_dirty(i);
                    }
                    self.flush_dirty();
                }
                self.pump_until(&mut events, t0 + self.cfg.warmup_ns)?;
                // The measured window.
                self.hist = Hist::default();
                self.delivered = 0;
                self.refused = 0;
                self.sent = 0;
                self.measuring = true;
                out.snaps[2] = self.snap();
                out.server_w0 = self.server();
                let g0 = sys::self_cpu_us();
                let m0 = sys::machine_busy_us();
                let w0 = mono_ns();
                self.pump_until(&mut events, w0 + self.cfg.duration_ns)?;
                let w1 = mono_ns();
                self.measuring = false;
                out.server_w1 = self.server();
                out.snaps[3] = self.snap();
                out.gen_cpu_window_us = sys::self_cpu_us() - g0;
                out.machine_busy_window_us = sys::machine_busy_us().saturating_sub(m0);
                out.window_s = (w1 - w0) as f64 / 1e9;
                self.relay_on = false;
                if self.cfg.settle_ns > 0 {
                    // Messages in flight still arrive; no new ones are sent.
                    self.pump_until(&mut events, mono_ns() + self.cfg.settle_ns)?;
                    out.server_settled = self.server();
                }
            }
        }
        Ok(out)
    }

    fn join_done(&self) -> bool {
        if self.joined + self.failed < self.cfg.connections {
            return false;
        }
        // matchbox: wait until each complete room has seen its NewPeer events.
        self.rooms.iter().all(|r| r.ready || r.failed > 0)
    }

    fn pump_until(&mut self, events: &mut Events, until: u64) -> io::Result<()> {
        loop {
            let now = mono_ns();
            if now >= until {
                return Ok(());
            }
            if self.relay_on && self.cfg.rate > 0 {
                self.schedule(now);
                self.flush_dirty();
                if !self.cfg.spin {
                    let next = self.next_send_at();
                    self.timer.arm_at(next.min(until));
                }
            }
            self.release_retries(now);
            let mut wait_ns = (until - now).min(50_000_000);
            if let Some(&(at, _)) = self.retry.front() {
                wait_ns = wait_ns.min(at.saturating_sub(now));
            }
            let wait = if self.cfg.spin { 0 } else { wait_ns.div_ceil(1_000_000) };
            self.poll.poll(events, Some(std::time::Duration::from_millis(wait)))?;
            self.dispatch(events);
            if self.relay_on && self.cfg.rate > 0 {
                self.schedule(mono_ns());
            }
            self.flush_dirty();
        }
    }

    /// Closed loop: puts each refused message whose wait is over back in its connection's queue.
    fn release_retries(&mut self, now: u64) {
        while let Some(&(at, i)) = self.retry.front() {
            if at > now {
                break;
            }
            self.retry.pop_front();
            if self.relay_on {
                self.conns[i as usize].pending += 1;
                self.mark_dirty(i);
            }
        }
    }

    fn next_send_at(&self) -> u64 {
        self.sched_start + ((self.sched_k as u128 * 1_000_000_000) / self.cfg.rate as u128) as u64
    }

    /// Open loop: send every message whose scheduled time has come, stamped with that time.
    fn schedule(&mut self, now: u64) {
        let n = self.conns.len().max(1) as u64;
        loop {
            let at = self.next_send_at();
            if at > now {
                return;
            }
            let i = (self.sched_k % n) as usize;
            self.sched_k += 1;
            if self.sendable(i) {
                self.push_relay(i, at);
                self.mark_dirty(i as u32);
            } else {
                self.sched_missed += 1;
            }
        }
    }

    fn sendable(&self, i: usize) -> bool {
        let c = &self.conns[i];
        c.state == State::Joined && !c.frame.is_empty() && self.rooms[c.room as usize].ready
    }

    fn open_more(&mut self) {
        let src_n = self.cfg.source_addrs.max(1) as usize;
        while self.in_progress < self.cfg.concurrency && self.opened < self.cfg.connections {
            let i = self.opened;
            self.opened += 1;
            let room = (i / self.cfg.room_size) as u32;
            let src = Ipv4Addr::new(127, 0, 0, (1 + i % src_n) as u8);
            let mut conn = Conn {
                stream: None,
                state: State::Closed,
                room,
                rbuf: Vec::new(),
                frag: Vec::new(),
                out: Vec::new(),
                out_pos: 0,
                frame: Vec::new(),
                ts_off: 0,
                seq_off: 0,
                peer: 0,
                seq: 0,
                expect: 0,
                pending: 0,
                dirty: false,
                key: String::new(),
                t_open: mono_ns(),
                addr: String::new(),
            };
            let target = match self.cfg.target2 {
                Some(second) if (i % self.cfg.room_size) % 2 == 1 => second,
                _ => self.cfg.target,
            };
            let stream =
                sys::connect_from(src, target).and_then(|tcp| Stream::new(tcp, self.tls_config.as_ref()));
            match stream {
                Ok(mut stream) => {
                    match self.poll.registry().register(
                        &mut stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        Ok(()) => {
                            conn.stream = Some(stream);
                            conn.state = State::Connecting;
                            self.in_progress += 1;
                        }
                        Err(e) => {
                            self.c.connect_failed += 1;
                            self.note_error(format!("register: {e}"));
                        }
                    }
                }
                Err(e) => {
                    self.c.connect_failed += 1;
                    self.note_error(format!("connect from {src}: {e}"));
                }
            }
            let failed = conn.state == State::Closed;
            self.conns.push(conn);
            if failed {
                self.failed += 1;
                self.rooms[room as usize].failed += 1;
            }
        }
    }

    fn dispatch(&mut self, events: &Events) {
        for ev in events.iter() {
            let tok = ev.token();
            if tok == TIMER {
                self.timer.drain();
                continue;
            }
            let i = tok.0;
            if i >= self.conns.len() {
                continue;
            }
            if ev.is_writable() {
                self.on_writable(i);
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                self.on_readable(i);
            }
        }
    }

    fn on_writable(&mut self, i: usize) {
        match self.conns[i].state {
            State::Closed => {}
            State::Connecting => {
                let conn = &mut self.conns[i];
                let stream = conn.stream.as_ref().expect("open");
                match stream.take_error() {
                    Ok(None) => {}
                    Ok(Some(e)) | Err(e) => {
                        self.c.connect_failed += 1;
                        self.note_error(format!("connect: {e}"));
                        return self.close(i);
                    }
                }
                if stream.peer_addr().is_err() {
                    return; // not connected yet
                }
                conn.key = tungstenite::handshake::client::generate_key();
                let path = match self.cfg.protocol {
                    Proto::Diva => "/".to_string(),
                    Proto::Matchbox => format!("/r{}", conn.room),
                };
                let req = format!(
                    "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
                    self.host, conn.key
                );
                conn.out.extend_from_slice(req.as_bytes());
                conn.state = State::Handshaking;
                self.flush(i);
            }
            _ => self.flush(i),
        }
    }

    fn on_readable(&mut self, i: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(stream) = self.conns[i].stream.as_mut() {
            match stream.read(&mut scratch) {
                Ok(0) => {
                    if self.conns[i].state == State::Connecting {
                        self.c.connect_failed += 1;
                    } else {
                        self.c.eof += 1;
                    }
                    self.close(i);
                    break;
                }
                Ok(n) => {
                    let now = mono_ns();
                    self.ingest(i, &scratch[..n], now);
                    // A short read drained the socket; edge-triggered epoll reports new data.
                    if n < scratch.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                Err(e) => {
                    if self.conns[i].state == State::Connecting {
                        self.c.connect_failed += 1;
                        self.note_error(format!("connect: {e}"));
                    } else {
                        self.c.reset += 1;
                        self.note_error(format!("read: {e}"));
                    }
                    self.close(i);
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    fn ingest(&mut self, i: usize, data: &[u8], now: u64) {
        if self.conns[i].rbuf.is_empty() {
            let used = self.parse(i, data, now);
            if used < data.len() && self.conns[i].state != State::Closed {
                self.conns[i].rbuf.extend_from_slice(&data[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.conns[i].rbuf);
            buf.extend_from_slice(data);
            let used = self.parse(i, &buf, now);
            buf.drain(..used);
            if self.conns[i].state != State::Closed {
                self.conns[i].rbuf = buf;
            }
        }
    }

    /// Consumes whole units (the HTTP response head, then frames); returns bytes used.
    ///
    /// Frame headers are read by hand, not with tungstenite's `FrameHeader::parse`: this is
    /// the generator's hot path, and that costs about 27 ns a frame against 10 here (through
    /// a `Cursor` and `io::Read`; measured on 150- and 300-byte text frames).
    fn parse(&mut self, i: usize, buf: &[u8], now: u64) -> usize {
        let mut pos = 0;
        if self.conns[i].state == State::Handshaking {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                if buf.len() > MAX_HEAD {
                    self.c.handshake_failed += 1;
                    self.close(i);
                }
                return 0;
            };
            pos = end + 4;
            if !self.check_handshake(i, &buf[..end]) {
                self.c.handshake_failed += 1;
                self.close(i);
                return pos;
            }
            self.on_upgraded(i);
        }
        while self.conns[i].state != State::Closed {
            let b = &buf[pos..];
            if b.len() < 2 {
                break;
            }
            let fin = b[0] & 0x80 != 0;
            let opcode = b[0] & 0x0f;
            let masked = b[1] & 0x80 != 0;
            let (mut hlen, len) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as usize),
                127 if b.len() >= 10 => {
                    (10, u64::from_be_bytes(b[2..10].try_into().unwrap()).min(usize::MAX as u64 / 2) as usize)
                }
                126 | 127 => break,
                l => (2, l as usize),
            };
            let mask = if masked {
                if b.len() < hlen + 4 {
                    break;
                }
                let m = [b[hlen], b[hlen + 1], b[hlen + 2], b[hlen + 3]];
                hlen += 4;
                Some(m)
            } else {
                None
            };
            if b.len() < hlen + len {
                break;
            }
            pos += hlen + len;
            let payload = &b[hlen..hlen + len];
            if let Some(m) = mask.filter(|m| m != &[0; 4]) {
                // Servers do not mask; unmask a copy if one does. (The floor relay passes
                // on our own frames, masked with a zero key: nothing to undo.)
                let owned: Vec<u8> = payload.iter().enumerate().map(|(k, x)| x ^ m[k % 4]).collect();
                self.on_frame(i, fin, opcode, &owned, now);
            } else {
                self.on_frame(i, fin, opcode, payload, now);
            }
        }
        pos
    }

    fn check_handshake(&mut self, i: usize, head: &[u8]) -> bool {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap_or("");
        let code = status.split_whitespace().nth(1).unwrap_or("?").to_string();
        if code != "101" {
            *self.c.handshake_statuses.entry(code).or_default() += 1;
            self.note_error(format!("handshake: {status}"));
            return false;
        }
        let want = tungstenite::handshake::derive_accept_key(self.conns[i].key.as_bytes());
        let ok = lines.any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == want
            })
        });
        if !ok {
            self.note_error("handshake: bad Sec-WebSocket-Accept".into());
        }
        ok
    }

    fn on_upgraded(&mut self, i: usize) {
        self.conns[i].state = State::Joining;
        if self.cfg.protocol == Proto::Diva {
            if self.cfg.server_ident {
                self.send_text(i, br#"["ident"]"#);
            } else {
                let msg = format!(r#"["join","c{i}","r{}"]"#, self.conns[i].room);
                self.send_text(i, msg.as_bytes());
            }
        }
        // matchbox: the server speaks first (IdAssigned).
    }

    fn on_frame(&mut self, i: usize, fin: bool, opcode: u8, payload: &[u8], now: u64) {
        match opcode {
            1 | 2 if fin => self.on_message(i, payload, now),
            1 | 2 => {
                let c = &mut self.conns[i];
                c.frag.clear();
                c.frag.extend_from_slice(payload);
            }
            0 => {
                self.conns[i].frag.extend_from_slice(payload);
                if fin {
                    let msg = std::mem::take(&mut self.conns[i].frag);
                    self.on_message(i, &msg, now);
                }
            }
            8 => {
                self.c.closed_by_server += 1;
                if payload.len() >= 2 {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    *self.c.error_codes.entry(format!("close-{code}")).or_default() += 1;
                }
                if self.conns[i].state == State::Joining {
                    self.c.join_failed += 1;
                }
                self.close(i);
            }
            9 => {
                // Pong with the same payload (masked with a zero key).
                let c = &mut self.conns[i];
                let n = payload.len().min(125);
                frame_header(&mut c.out, OpCode::Control(Control::Pong), n);
                c.out.extend_from_slice(&payload[..n]);
                self.mark_dirty(i as u32);
            }
            _ => {}
        }
    }

    fn on_message(&mut self, i: usize, msg: &[u8], now: u64) {
        let relay = msg.starts_with(br#"["signal""#) || msg.starts_with(br#"{"Signal""#);
        if relay && let Some(at) = msg.iter().take(400).position(|&b| b == b'@') {
            return self.on_relay(i, &msg[at..], now);
        }
        self.on_control(i, msg);
    }

    fn on_relay(&mut self, i: usize, stamp: &[u8], now: u64) {
        if stamp.len() < STAMP_LEN {
            self.c.bad_messages += 1;
            return;
        }
        let num = |from: usize, n: usize| -> Option<u64> {
            let mut v: u64 = 0;
            for &d in &stamp[from..from + n] {
                if !d.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + (d - b'0') as u64;
            }
            Some(v)
        };
        let (Some(ts), Some(seq), Some(src)) =
            (num(1, TS_DIGITS), num(2 + TS_DIGITS, SEQ_DIGITS), num(3 + TS_DIGITS + SEQ_DIGITS, SRC_DIGITS))
        else {
            self.c.bad_messages += 1;
            return;
        };
        self.delivered_total += 1;
        if self.measuring {
            self.hist.record(now.saturating_sub(ts));
            self.delivered += 1;
        }
        let c = &mut self.conns[i];
        if seq < c.expect {
            self.c.seq_errors += 1;
        } else {
            self.c.seq_gaps += seq - c.expect;
            c.expect = seq + 1;
        }
        let src = src as usize;
        if self.relay_on && self.cfg.rate == 0 && src < self.conns.len() {
            self.conns[src].pending += 1;
            self.mark_dirty(src as u32);
        }
    }

    fn on_control(&mut self, i: usize, msg: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(msg) else {
            self.c.bad_messages += 1;
            return;
        };
        match self.cfg.protocol {
            Proto::Diva => {
                let kind = v.get(0).and_then(Value::as_str).unwrap_or("");
                match kind {
                    "ident" => {
                        let ident = v.get(1).and_then(Value::as_str).unwrap_or("x").to_string();
                        let msg = format!(r#"["join","{ident}","r{}"]"#, self.conns[i].room);
                        self.send_text(i, msg.as_bytes());
                    }
                    "join" if self.conns[i].state == State::Joining => {
                        self.conns[i].addr = v.get(1).and_then(Value::as_str).unwrap_or("").to_string();
                        self.on_joined(i);
                    }
                    "stun" => {
                        self.c.stun += 1;
                        if self.cfg.target2.is_some() {
                            let r = self.conns[i].room as usize;
                            self.rooms[r].new_peers += 1;
                            self.check_room(r);
                        }
                    }
                    "leave" => self.c.peer_left += 1,
                    "error" if v.get(2).and_then(Value::as_str) == Some("rate-limited") => {
                        self.c.rate_limited += 1;
                        if self.measuring {
                            self.refused += 1;
                        }
                        if self.relay_on && self.cfg.rate == 0 {
                            self.retry.push_back((mono_ns() + RETRY_NS, i as u32));
                        }
                    }
                    "error" => {
                        self.c.error_replies += 1;
                        let code = v.get(2).and_then(Value::as_str).unwrap_or("?").to_string();
                        *self.c.error_codes.entry(code).or_default() += 1;
                        if self.conns[i].state == State::Joining {
                            self.c.join_failed += 1;
                            self.note_error(format!("join refused: {v}"));
                            self.close(i);
                        }
                    }
                    _ => self.c.other_messages += 1,
                }
            }
            Proto::Matchbox => {
                if let Some(id) = v.get("IdAssigned").and_then(Value::as_str) {
                    if self.conns[i].state == State::Joining {
                        self.conns[i].addr = id.to_string();
                        self.on_joined(i);
                    }
                } else if v.get("NewPeer").is_some() {
                    let r = self.conns[i].room as usize;
                    self.rooms[r].new_peers += 1;
                    self.check_room(r);
                } else if v.get("PeerLeft").is_some() {
                    self.c.peer_left += 1;
                } else {
                    self.c.other_messages += 1;
                }
            }
        }
    }

    fn on_joined(&mut self, i: usize) {
        self.conns[i].state = State::Joined;
        self.joined += 1;
        self.in_progress -= 1;
        self.last_join_ns = mono_ns();
        self.join_hist.record(self.last_join_ns - self.conns[i].t_open);
        let r = self.conns[i].room as usize;
        self.rooms[r].joined += 1;
        self.check_room(r);
    }

    fn room_members(&self, r: usize) -> usize {
        let first = r * self.cfg.room_size;
        (first + self.cfg.room_size).min(self.cfg.connections) - first
    }

    fn check_room(&mut self, r: usize) {
        let k = self.room_members(r) as u32;
        let room = &mut self.rooms[r];
        if room.ready || room.failed > 0 || room.joined < k {
            return;
        }
        // matchbox tells each pair once (the later one tells the earlier): k(k-1)/2 NewPeer
        // events mean every member is registered and can be signalled.
        if self.cfg.protocol == Proto::Matchbox && room.new_peers < k * (k - 1) / 2 {
            return;
        }
        // Across nodes, a member can be signalled once its node has heard of the join: each
        // pair's two `stun` messages say so.
        if self.cfg.target2.is_some() && room.new_peers < k * (k - 1) {
            return;
        }
        room.ready = true;
        self.ready_rooms += 1;
    }

    /// Prebuilds each ready connection's relay frame toward the next member of its room.
    fn build_frames(&mut self) {
        let k = self.cfg.room_size;
        for i in 0..self.conns.len() {
            let r = i / k;
            if !self.rooms[r].ready || self.room_members(r) < 2 {
                continue;
            }
            let first = r * k;
            let members = self.room_members(r);
            let peer = first + (i - first + 1) % members;
            let mut data = String::with_capacity(self.cfg.payload);
            data.push_str("\"@");
            data.push_str(&"0".repeat(TS_DIGITS));
            data.push('.');
            data.push_str(&"0".repeat(SEQ_DIGITS));
            data.push('.');
            data.push_str(&format!("{i:0width$}", width = SRC_DIGITS));
            data.push('.');
            while data.len() + 1 < self.cfg.payload {
                data.push('x');
            }
            data.push('"');
            let (prefix, suffix) = match self.cfg.protocol {
                Proto::Diva => {
                    (format!(r#"["signal","{}","{}","#, self.conns[i].addr, self.conns[peer].addr), "]")
                }
                Proto::Matchbox => {
                    (format!(r#"{{"Signal":{{"receiver":"{}","data":"#, self.conns[peer].addr), "}}")
                }
            };
            let text_len = prefix.len() + data.len() + suffix.len();
            let mut frame = Vec::with_capacity(text_len + 14);
            frame_header(&mut frame, TEXT, text_len);
            let ts_off = frame.len() + prefix.len() + 2;
            frame.extend_from_slice(prefix.as_bytes());
            frame.extend_from_slice(data.as_bytes());
            frame.extend_from_slice(suffix.as_bytes());
            let c = &mut self.conns[i];
            c.ts_off = ts_off;
            c.seq_off = ts_off + TS_DIGITS + 1;
            c.frame = frame;
            c.peer = peer as u32;
            c.out.reserve(c.frame.len() * (self.cfg.inflight as usize).max(4));
        }
    }

    /// Appends one relay message, stamped `ts`, to connection `i`'s output.
    #[inline]
    fn push_relay(&mut self, i: usize, ts: u64) {
        let c = &mut self.conns[i];
        write_digits(&mut c.frame[c.ts_off..c.ts_off + TS_DIGITS], ts);
        write_digits(&mut c.frame[c.seq_off..c.seq_off + SEQ_DIGITS], c.seq);
        c.seq += 1;
        c.out.extend_from_slice(&c.frame);
        self.sent_total += 1;
        if self.measuring {
            self.sent += 1;
        }
    }

    fn send_text(&mut self, i: usize, text: &[u8]) {
        let c = &mut self.conns[i];
        frame_header(&mut c.out, TEXT, text.len());
        c.out.extend_from_slice(text);
        self.flush(i);
    }

    #[inline]
    fn mark_dirty(&mut self, i: u32) {
        let c = &mut self.conns[i as usize];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(i);
        }
    }

    /// Closed loop: stamps and queues each dirty connection's pending messages with the
    /// current time, then writes every dirty connection's output once.
    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            let i = i as usize;
            self.conns[i].dirty = false;
            let pending = std::mem::take(&mut self.conns[i].pending);
            if pending > 0 && self.relay_on && self.sendable(i) {
                let now = mono_ns();
                for _ in 0..pending {
                    self.push_relay(i, now);
                }
            }
            self.flush(i);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_mut() else { return };
        while c.out_pos < c.out.len() {
            match stream.write(&c.out[c.out_pos..]) {
                Ok(0) => break,
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    self.c.reset += 1;
                    self.note_error(format!("write: {e}"));
                    return self.close(i);
                }
            }
        }
        // TLS: ciphertext the socket did not take goes on the next writable edge.
        match stream.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => {
                self.c.reset += 1;
                self.note_error(format!("write: {e}"));
                return self.close(i);
            }
        }
        c.out.clear();
        c.out_pos = 0;
    }

    fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.state == State::Closed {
            return;
        }
        let before = c.state;
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.state = State::Closed;
        c.out = Vec::new();
        c.rbuf = Vec::new();
        let r = c.room as usize;
        if matches!(before, State::Connecting | State::Handshaking | State::Joining) {
            self.in_progress -= 1;
            self.failed += 1;
            self.rooms[r].failed += 1;
        }
    }
}

const TEXT: OpCode = OpCode::Data(Data::Text);

/// Appends the header of a final client frame of `len` bytes; its masking key is all zero,
/// so the payload goes as is.
fn frame_header(out: &mut Vec<u8>, opcode: OpCode, len: usize) {
    let header =
        FrameHeader { is_final: true, rsv1: false, rsv2: false, rsv3: false, opcode, mask: Some([0; 4]) };
    header.format(len as u64, out).expect("a Vec takes any frame header");
}

#[inline]
fn write_digits(dst: &mut [u8], mut v: u64) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}
