//! `flood-latency`: what a control-frame flood from one client costs every other client.
//!
//! A probe connection sends `["ping"]` on a fixed schedule (open loop) and times each
//! `["pong"]` from the *scheduled* send time, so a stalled server loop counts in full. Every
//! so often a fresh connection fetches `/health`, timed from connect to the whole answer (a
//! new client's first contact). First a window with nothing else going on, then a window
//! during which N flooding connections write WebSocket ping (or unsolicited pong) frames back
//! to back, as fast as the server takes them, and read and drop whatever comes back, so that
//! they never count as not reading. With `--reconnect on`, a flooder that the server closes
//! (1008 for going over the rate limit) connects again at once, as an attacker would.
//!
//! The same machinery as the engine (mio loops, all sockets non-blocking, a timerfd for the
//! schedule), but on two threads, both on the generator's CPU: the probe's (the probe, the
//! `/health` fetches, the phases) and the flooders'. In one loop, the probe's replies waited
//! behind the flooders' reads (a ping flood brings back some 300,000 two-byte pongs a
//! second), which put up to tens of milliseconds of the generator's own into its tail
//! latency; as two threads they are as apart as the attacker and its victims would be.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde_json::{Map, Value, json};

use crate::hist::Hist;
use crate::sys::{self, ProcStats, Timer, mono_ns};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Frames {
    Ping,
    Pong,
    /// Pings and pongs in turn.
    Mixed,
}

#[derive(Clone, Debug)]
pub struct FloodCfg {
    pub target: SocketAddrV4,
    pub flooders: usize,
    pub frames: Frames,
    /// Payload bytes of each flood frame (at most 125, the control-frame limit).
    pub frame_payload: usize,
    /// The probe sends one `["ping"]` every this many nanoseconds.
    pub pace_ns: u64,
    /// A `/health` fetch every this many nanoseconds during the windows; 0: none.
    pub health_every_ns: u64,
    /// Before each window: the probe runs, but its samples are not kept (and the flood is
    /// on before the flood window, long enough for a backlog to build up).
    pub warmup_ns: u64,
    pub duration_ns: u64,
    pub reconnect: bool,
    /// The server's processes (CPU and memory are their sum); may be empty.
    pub server_pids: Vec<u32>,
    /// Flooders bind to 127.0.0.2 .. 127.0.0.(1+X) in turn (the probe to 127.0.0.1).
    pub source_addrs: u8,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Probe,
    Flooder,
    Health,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    Connecting,
    Handshaking,
    Open,
}

/// Which window a sample counts for.
const NONE: usize = 0;
const QUIET: usize = 1;
const FLOOD: usize = 2;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[repr(u8)]
enum Phase {
    Setup,
    QuietWarmup,
    QuietWindow,
    FloodWarmup,
    FloodWindow,
    /// No new probes or fetches; the flood goes on until every answer is in (bounded).
    Drain,
    Done,
}

struct Sock {
    stream: TcpStream,
    role: Role,
    st: St,
    key: String,
    rbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    t_open: u64,
    /// Health: the window the fetch counts for.
    window: usize,
    /// Flooder: where in the flood batch the next write starts.
    flood_pos: usize,
    /// Flooder: the last write did not block, so the next turn writes again.
    can_write: bool,
}

/// What happened during one window (or the warm-up before it).
#[derive(Default)]
struct Win {
    rtt: Hist,
    health: Hist,
    flood_bytes: u64,
    pongs: u64,
    cut_off: u64,
    reconnects: u64,
    secs: f64,
    server_cpu_us: u64,
    gen_cpu_us: u64,
    machine_busy_us: u64,
}

#[derive(Default)]
struct Errors {
    connect_failed: u64,
    handshake_failed: u64,
    /// The probe closed, reset or at EOF.
    probe_lost: u64,
    /// A reply to the probe other than `["pong"]`, or one with no ping outstanding.
    probe_bad_replies: u64,
    /// Pings still unanswered when the run ended.
    probe_unanswered: u64,
    health_failed: u64,
    /// Flooders closed other than with 1008 (the rate limit's close), or reset, or at EOF.
    flooder_lost: u64,
    close_codes: BTreeMap<String, u64>,
    first: Vec<String>,
}

const TIMER: Token = Token(usize::MAX - 1);
const BATCH: usize = 64 * 1024;
const WRITES_PER_TURN: usize = 4;
const SETUP_LIMIT_NS: u64 = 10_000_000_000;
const DRAIN_LIMIT_NS: u64 = 3_000_000_000;
const MAX_HEAD: usize = 16 * 1024;
const PING: &[u8] = br#"["ping"]"#;

pub struct Flood {
    cfg: FloodCfg,
    poll: Poll,
    timer: Timer,
    socks: Vec<Option<Sock>>,
    free: Vec<usize>,
    /// Slots closed during this loop turn: reused only from the next one, so that a slot
    /// closed and refilled (a flooder's reconnect) is never mistaken for the old socket.
    released: Vec<usize>,
    flooders: Vec<usize>,
    probe: Option<usize>,
    /// Scheduled send time and window of each ping not yet answered (answers come in order).
    fifo: VecDeque<(u64, usize)>,
    health_pending: usize,
    batch: Vec<u8>,
    frame_len: usize,
    scratch: Vec<u8>,
    phase: Phase,
    phase_end: u64,
    next_probe: u64,
    next_health: u64,
    src_next: usize,
    win: [Win; 3],
    /// Start-of-window readings: server, generator CPU, machine CPU, time.
    w0: (Option<ProcStats>, u64, u64, u64),
    e: Errors,
    /// The phase, as the probe's thread sets it and the flooders' thread follows it.
    shared: Arc<AtomicU8>,
}

const PHASES: [Phase; 7] = [
    Phase::Setup,
    Phase::QuietWarmup,
    Phase::QuietWindow,
    Phase::FloodWarmup,
    Phase::FloodWindow,
    Phase::Drain,
    Phase::Done,
];

fn now_window(phase: Phase) -> usize {
    match phase {
        Phase::QuietWindow => QUIET,
        Phase::FloodWindow => FLOOD,
        _ => NONE,
    }
}

impl Flood {
    pub fn new(cfg: FloodCfg) -> io::Result<Flood> {
        Flood::with_phase(cfg, Arc::new(AtomicU8::new(Phase::Setup as u8)))
    }

    fn with_phase(cfg: FloodCfg, shared: Arc<AtomicU8>) -> io::Result<Flood> {
        let poll = Poll::new()?;
        let timer = Timer::new()?;
        poll.registry().register(&mut SourceFd(&timer.raw()), TIMER, Interest::READABLE)?;
        let payload = cfg.frame_payload.min(125);
        let frame = |opcode: u8| {
            let mut f = vec![0x80 | opcode, 0x80 | payload as u8, 0, 0, 0, 0];
            f.extend(std::iter::repeat_n(b'x', payload));
            f
        };
        let frame_len = 6 + payload;
        let mut batch = Vec::with_capacity(BATCH);
        let mut k = 0;
        while batch.len() + frame_len <= BATCH {
            let opcode = match cfg.frames {
                Frames::Ping => 0x9,
                Frames::Pong => 0xa,
                Frames::Mixed if k % 2 == 0 => 0x9,
                Frames::Mixed => 0xa,
            };
            batch.extend_from_slice(&frame(opcode));
            k += 1;
        }
        // An even number of frames, so that a mixed batch repeats cleanly.
        if k % 2 == 1 {
            batch.truncate(batch.len() - frame_len);
        }
        Ok(Flood {
            cfg,
            poll,
            timer,
            socks: Vec::new(),
            free: Vec::new(),
            released: Vec::new(),
            flooders: Vec::new(),
            probe: None,
            fifo: VecDeque::new(),
            health_pending: 0,
            batch,
            frame_len,
            scratch: vec![0; 256 * 1024],
            phase: Phase::Setup,
            phase_end: 0,
            next_probe: 0,
            next_health: 0,
            src_next: 0,
            win: Default::default(),
            w0: (None, 0, 0, 0),
            e: Errors::default(),
            shared,
        })
    }

    fn server(&self) -> Option<ProcStats> {
        sys::proc_stats_sum(&self.cfg.server_pids)
    }

    fn note(&mut self, what: String) {
        if self.e.first.len() < 8 {
            self.e.first.push(what);
        }
    }

    /// Runs the scenario; returns its results (also printed).
    pub fn run(&mut self, label: &str) -> io::Result<Value> {
        let (cfg, shared) = (self.cfg.clone(), Arc::clone(&self.shared));
        let flooders = std::thread::Builder::new().name("flooders".into()).spawn(move || {
            let mut side = Flood::with_phase(cfg, shared)?;
            side.run_flooders()?;
            Ok::<_, io::Error>((side.win, side.e))
        })?;
        let probed = self.run_probe();
        self.set_phase(Phase::Done);
        let (win, e) = flooders.join().map_err(|_| io::Error::other("the flooders' thread panicked"))??;
        probed?;
        for (mine, theirs) in self.win.iter_mut().zip(win) {
            mine.flood_bytes += theirs.flood_bytes;
            mine.pongs += theirs.pongs;
            mine.cut_off += theirs.cut_off;
            mine.reconnects += theirs.reconnects;
        }
        self.e.connect_failed += e.connect_failed;
        self.e.handshake_failed += e.handshake_failed;
        self.e.flooder_lost += e.flooder_lost;
        for (code, n) in e.close_codes {
            *self.e.close_codes.entry(code).or_default() += n;
        }
        for what in e.first {
            self.note(what);
        }
        Ok(self.report(label))
    }

    fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.shared.store(phase as u8, Ordering::Release);
    }

    /// The flooders' thread: floods from the flood's warm-up until the probe's side is done.
    fn run_flooders(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut started = false;
        loop {
            self.free.append(&mut self.released);
            self.phase = PHASES[self.shared.load(Ordering::Acquire) as usize];
            if self.phase == Phase::Done {
                break;
            }
            if self.phase >= Phase::FloodWarmup && !started {
                started = true;
                eprintln!("  starting {} flooder(s)", self.cfg.flooders);
                for _ in 0..self.cfg.flooders {
                    self.open_flooder();
                }
            }
            self.flood_turn();
            let busy = self.flooders.iter().any(|&f| self.socks[f].as_ref().is_some_and(|s| s.can_write));
            // Not busy: wait for the sockets, and look at the phase now and then.
            let timeout = std::time::Duration::from_millis(if busy { 0 } else { 5 });
            self.poll_once(&mut events, timeout)?;
        }
        self.close_all();
        Ok(())
    }

    fn poll_once(&mut self, events: &mut Events, timeout: std::time::Duration) -> io::Result<()> {
        match self.poll.poll(events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let tok = ev.token();
            if tok == TIMER {
                self.timer.drain();
                continue;
            }
            let i = tok.0;
            if ev.is_writable() {
                self.on_writable(i);
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                self.on_readable(i);
            }
        }
        Ok(())
    }

    fn close_all(&mut self) {
        for i in 0..self.socks.len() {
            if self.socks[i].is_some() {
                self.drop_sock(i, true);
            }
        }
    }

    /// The probe's thread: the phases, the probe and the `/health` fetches.
    fn run_probe(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let start = mono_ns();
        self.phase_end = start + SETUP_LIMIT_NS;
        self.probe = self.open(Role::Probe, Ipv4Addr::new(127, 0, 0, 1));
        if self.probe.is_none() {
            return Ok(());
        }
        loop {
            self.free.append(&mut self.released);
            let now = mono_ns();
            if self.phase == Phase::Setup {
                let open = self.probe.and_then(|p| self.socks[p].as_ref()).is_some_and(|s| s.st == St::Open);
                if open {
                    self.next_phase(now);
                } else if self.probe.is_none() || now >= self.phase_end {
                    self.note("the probe did not connect in time".into());
                    break;
                }
            } else if now >= self.phase_end
                || (self.phase == Phase::Drain && self.fifo.is_empty() && self.health_pending == 0)
            {
                self.next_phase(now);
            }
            if self.phase == Phase::Done {
                break;
            }
            if self.probe.is_none() && self.phase != Phase::Setup {
                break; // lost; counted
            }
            self.send_due(now);
            let mut wake = self.phase_end;
            if self.sending() {
                wake = wake.min(self.next_probe);
                if self.cfg.health_every_ns > 0 && now_window(self.phase) != NONE {
                    wake = wake.min(self.next_health);
                }
            }
            self.timer.arm_at(wake.max(now + 1));
            self.poll_once(&mut events, std::time::Duration::from_millis(50))?;
        }
        self.e.probe_unanswered += self.fifo.len() as u64;
        self.e.health_failed += self.health_pending as u64;
        self.close_all();
        Ok(())
    }

    fn sending(&self) -> bool {
        matches!(
            self.phase,
            Phase::QuietWarmup | Phase::QuietWindow | Phase::FloodWarmup | Phase::FloodWindow
        )
    }

    fn next_phase(&mut self, now: u64) {
        let ended = now_window(self.phase);
        if ended != NONE {
            let (s0, g0, m0, t0) = self.w0;
            let s1 = self.server();
            let w = &mut self.win[ended];
            w.secs = (now - t0) as f64 / 1e9;
            w.gen_cpu_us = sys::self_cpu_us().saturating_sub(g0);
            w.machine_busy_us = sys::machine_busy_us().saturating_sub(m0);
            if let (Some(a), Some(b)) = (s0, s1) {
                w.server_cpu_us = b.cpu_us.saturating_sub(a.cpu_us);
            }
        }
        self.set_phase(match self.phase {
            Phase::Setup => Phase::QuietWarmup,
            Phase::QuietWarmup => Phase::QuietWindow,
            Phase::QuietWindow => Phase::FloodWarmup,
            Phase::FloodWarmup => Phase::FloodWindow,
            Phase::FloodWindow => Phase::Drain,
            Phase::Drain | Phase::Done => Phase::Done,
        });
        self.phase_end = now
            + match self.phase {
                Phase::QuietWarmup | Phase::FloodWarmup => self.cfg.warmup_ns,
                Phase::QuietWindow | Phase::FloodWindow => self.cfg.duration_ns,
                Phase::Drain => DRAIN_LIMIT_NS,
                Phase::Setup | Phase::Done => 0,
            };
        match self.phase {
            Phase::QuietWarmup => {
                self.next_probe = now;
            }
            Phase::QuietWindow | Phase::FloodWindow => {
                self.next_health = now;
                self.w0 = (self.server(), sys::self_cpu_us(), sys::machine_busy_us(), now);
            }
            _ => {}
        }
    }

    fn open_flooder(&mut self) {
        let n = self.cfg.source_addrs.max(1) as usize;
        let src = Ipv4Addr::new(127, 0, 0, (2 + self.src_next % n) as u8);
        self.src_next += 1;
        if let Some(i) = self.open(Role::Flooder, src) {
            self.flooders.push(i);
        }
    }

    /// Sends every probe ping and starts every `/health` fetch whose time has come.
    fn send_due(&mut self, now: u64) {
        if !self.sending() {
            return;
        }
        let window = now_window(self.phase);
        let mut sent = false;
        while self.next_probe <= now {
            let at = self.next_probe;
            self.next_probe += self.cfg.pace_ns;
            let Some(p) = self.probe else { return };
            let Some(s) = self.socks[p].as_mut() else { return };
            s.out.extend_from_slice(&[0x81, 0x80 | PING.len() as u8, 0, 0, 0, 0]);
            s.out.extend_from_slice(PING);
            // The window the ping's scheduled time falls in.
            self.fifo.push_back((at, window));
            sent = true;
        }
        if sent && let Some(p) = self.probe {
            self.flush(p);
        }
        if self.cfg.health_every_ns > 0 && window != NONE {
            while self.next_health <= now {
                self.next_health += self.cfg.health_every_ns;
                if let Some(i) = self.open(Role::Health, Ipv4Addr::new(127, 0, 0, 1)) {
                    if let Some(s) = self.socks[i].as_mut() {
                        s.window = window;
                    }
                    self.health_pending += 1;
                }
            }
        }
    }

    /// Every flooder whose socket takes bytes writes up to a few batches of frames.
    fn flood_turn(&mut self) {
        let window = now_window(self.phase);
        // A flooder that is cut off is replaced during the turn: go over the ones it began with.
        for i in self.flooders.clone() {
            let Some(s) = self.socks[i].as_mut() else { continue };
            if !s.can_write || s.st != St::Open {
                continue;
            }
            let mut failed = None;
            for _ in 0..WRITES_PER_TURN {
                match s.stream.write(&self.batch[s.flood_pos..]) {
                    Ok(n) => {
                        s.flood_pos = (s.flood_pos + n) % self.batch.len();
                        self.win[window].flood_bytes += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        s.can_write = false;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                // The server may have closed it for the rate limit: its close frame can
                // still be waiting to be read.
                self.on_readable(i);
                if self.socks[i].is_some() {
                    self.e.flooder_lost += 1;
                    self.note(format!("flooder write: {e}"));
                    self.lost_flooder(i);
                }
            }
        }
    }

    fn open(&mut self, role: Role, src: Ipv4Addr) -> Option<usize> {
        let mut stream = match sys::connect_from(src, self.cfg.target) {
            Ok(s) => s,
            Err(e) => {
                self.e.connect_failed += 1;
                self.note(format!("connect from {src}: {e}"));
                return None;
            }
        };
        let i = self.free.pop().unwrap_or_else(|| {
            self.socks.push(None);
            self.socks.len() - 1
        });
        if let Err(e) =
            self.poll.registry().register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)
        {
            self.e.connect_failed += 1;
            self.note(format!("register: {e}"));
            self.free.push(i);
            return None;
        }
        self.socks[i] = Some(Sock {
            stream,
            role,
            st: St::Connecting,
            key: String::new(),
            rbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            t_open: mono_ns(),
            window: NONE,
            flood_pos: 0,
            can_write: false,
        });
        Some(i)
    }

    /// Closes and forgets socket `i`; `reset`: with SO_LINGER 0, so that no TIME_WAIT is left.
    fn drop_sock(&mut self, i: usize, reset: bool) {
        let Some(mut s) = self.socks[i].take() else { return };
        let _ = self.poll.registry().deregister(&mut s.stream);
        if reset {
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: setsockopt on a descriptor we own, with a fully initialised struct.
            unsafe {
                libc::setsockopt(
                    s.stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
        }
        match s.role {
            Role::Probe => self.probe = None,
            Role::Flooder => self.flooders.retain(|&f| f != i),
            Role::Health => {}
        }
        self.released.push(i);
    }

    /// A flooder is gone: connect another while the flood is on, if asked to.
    fn lost_flooder(&mut self, i: usize) {
        self.drop_sock(i, true);
        if self.cfg.reconnect && matches!(self.phase, Phase::FloodWarmup | Phase::FloodWindow | Phase::Drain)
        {
            self.win[now_window(self.phase)].reconnects += 1;
            self.open_flooder();
        }
    }

    fn fail(&mut self, i: usize, why: String) {
        let Some(s) = self.socks[i].as_ref() else { return };
        let role = s.role;
        match (role, s.st) {
            (Role::Health, _) => {
                self.e.health_failed += 1;
                self.health_pending -= 1;
            }
            (_, St::Connecting) => self.e.connect_failed += 1,
            (_, St::Handshaking) => self.e.handshake_failed += 1,
            (Role::Probe, St::Open) => self.e.probe_lost += 1,
            (Role::Flooder, St::Open) => self.e.flooder_lost += 1,
        }
        self.note(format!("{role:?}: {why}"));
        if role == Role::Flooder {
            self.lost_flooder(i);
        } else {
            self.drop_sock(i, false);
        }
    }

    fn on_writable(&mut self, i: usize) {
        let Some(s) = self.socks.get_mut(i).and_then(Option::as_mut) else { return };
        match s.st {
            St::Connecting => {
                match s.stream.take_error() {
                    Ok(None) => {}
                    Ok(Some(e)) | Err(e) => return self.fail(i, format!("connect: {e}")),
                }
                if s.stream.peer_addr().is_err() {
                    return; // not connected yet
                }
                let host = self.cfg.target;
                if s.role == Role::Health {
                    let req = format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
                    s.out.extend_from_slice(req.as_bytes());
                } else {
                    s.key = tungstenite::handshake::client::generate_key();
                    let req = format!(
                        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
                        s.key
                    );
                    s.out.extend_from_slice(req.as_bytes());
                }
                s.st = St::Handshaking;
                self.flush(i);
            }
            St::Handshaking => self.flush(i),
            St::Open => {
                if s.role == Role::Flooder {
                    s.can_write = true;
                } else {
                    self.flush(i);
                }
            }
        }
    }

    fn flush(&mut self, i: usize) {
        let Some(s) = self.socks[i].as_mut() else { return };
        while s.out_pos < s.out.len() {
            match s.stream.write(&s.out[s.out_pos..]) {
                Ok(n) => s.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.fail(i, format!("write: {e}")),
            }
        }
        s.out.clear();
        s.out_pos = 0;
    }

    fn on_readable(&mut self, i: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(s) = self.socks.get_mut(i).and_then(Option::as_mut) {
            match s.stream.read(&mut scratch) {
                Ok(0) => {
                    self.fail(i, "EOF".into());
                    break;
                }
                Ok(n) => {
                    let now = mono_ns();
                    self.ingest(i, &scratch[..n], now);
                    if n < scratch.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                Err(e) => {
                    self.fail(i, format!("read: {e}"));
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    fn ingest(&mut self, i: usize, data: &[u8], now: u64) {
        let Some(s) = self.socks[i].as_mut() else { return };
        // Flooders only look for a close frame in the pongs: parse in place when nothing
        // is left over from the last read (the usual case), else append.
        let mut buf = std::mem::take(&mut s.rbuf);
        let used = if buf.is_empty() {
            let used = self.parse(i, data, now);
            if used < data.len() {
                buf.extend_from_slice(&data[used..]);
            }
            0
        } else {
            buf.extend_from_slice(data);
            self.parse(i, &buf, now)
        };
        if let Some(s) = self.socks[i].as_mut() {
            buf.drain(..used);
            s.rbuf = buf;
        }
    }

    /// Consumes whole units (an HTTP head, then frames); returns the bytes used.
    fn parse(&mut self, i: usize, buf: &[u8], now: u64) -> usize {
        let mut pos = 0;
        let Some(s) = self.socks[i].as_ref() else { return 0 };
        if s.st == St::Handshaking {
            if s.role == Role::Health {
                return self.parse_health(i, buf);
            }
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                if buf.len() > MAX_HEAD {
                    self.fail(i, "response head too long".into());
                }
                return 0;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let want = tungstenite::handshake::derive_accept_key(s.key.as_bytes());
            let status = head.split("\r\n").next().unwrap_or("").to_string();
            let accepted = head.split("\r\n").any(|l| {
                l.split_once(':').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == want
                })
            });
            if status.split_whitespace().nth(1) != Some("101") || !accepted {
                self.fail(i, format!("handshake: {status}"));
                return buf.len();
            }
            pos = end + 4;
            let Some(s) = self.socks[i].as_mut() else { return pos };
            s.st = St::Open;
            if s.role == Role::Flooder {
                s.can_write = true;
            }
        }
        loop {
            let b = &buf[pos..];
            if b.len() < 2 {
                break;
            }
            let fin = b[0] & 0x80 != 0;
            let opcode = b[0] & 0x0f;
            let (hlen, len) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as usize),
                127 if b.len() >= 10 => {
                    (10, u64::from_be_bytes(b[2..10].try_into().unwrap()).min(1 << 40) as usize)
                }
                126 | 127 => break,
                l => (2, l as usize),
            };
            let hlen = hlen + if b[1] & 0x80 != 0 { 4 } else { 0 };
            if b.len() < hlen + len {
                break;
            }
            pos += hlen + len;
            let payload = &b[hlen..hlen + len];
            if !self.on_frame(i, fin, opcode, payload, now) {
                return buf.len(); // closed
            }
        }
        pos
    }

    /// One frame from the server; false once the socket is gone.
    fn on_frame(&mut self, i: usize, fin: bool, opcode: u8, payload: &[u8], now: u64) -> bool {
        let Some(s) = self.socks[i].as_mut() else { return false };
        let role = s.role;
        match opcode {
            0x8 => {
                let code =
                    if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                *self.e.close_codes.entry(format!("{role:?}-close-{code}").to_lowercase()).or_default() += 1;
                if role == Role::Flooder && code == 1008 {
                    self.win[now_window(self.phase)].cut_off += 1;
                    self.lost_flooder(i);
                } else {
                    self.fail(i, format!("closed with {code}"));
                }
                return false;
            }
            0x9 if role == Role::Probe => {
                // The server's liveness ping: answer it (masked with a zero key).
                let n = payload.len().min(125);
                s.out.extend_from_slice(&[0x8a, 0x80 | n as u8, 0, 0, 0, 0]);
                s.out.extend_from_slice(&payload[..n]);
                self.flush(i);
            }
            0xa if role == Role::Flooder => self.win[now_window(self.phase)].pongs += 1,
            0x1 if role == Role::Probe => {
                if fin
                    && payload == br#"["pong"]"#
                    && let Some((at, window)) = self.fifo.pop_front()
                {
                    self.win[window].rtt.record(now.saturating_sub(at));
                } else {
                    self.e.probe_bad_replies += 1;
                    let text = String::from_utf8_lossy(&payload[..payload.len().min(120)]).to_string();
                    self.note(format!("probe got {text}"));
                }
            }
            _ => {}
        }
        self.socks[i].is_some()
    }

    /// The `/health` answer so far: done once the head and Content-Length bytes are in.
    fn parse_health(&mut self, i: usize, buf: &[u8]) -> usize {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if buf.len() > MAX_HEAD {
                self.fail(i, "/health: head too long".into());
            }
            return 0;
        };
        let head = String::from_utf8_lossy(&buf[..end]);
        let length: Option<usize> = head.split("\r\n").find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))?
                .1
                .trim()
                .parse()
                .ok()
        });
        if let Some(length) = length
            && buf.len() >= end + 4 + length
        {
            let ok = head.split_whitespace().nth(1) == Some("200");
            if !ok {
                let status = head.split("\r\n").next().unwrap_or("").to_string();
                self.note(format!("/health: {status}"));
            }
            self.health_done(i, ok);
            return buf.len();
        }
        0
    }

    fn health_done(&mut self, i: usize, ok: bool) {
        let Some(s) = self.socks[i].as_ref() else { return };
        let took = mono_ns().saturating_sub(s.t_open);
        let window = s.window;
        if ok {
            self.win[window].health.record(took);
        } else {
            self.e.health_failed += 1;
        }
        self.health_pending -= 1;
        self.drop_sock(i, false);
    }

    fn report(&self, label: &str) -> Value {
        let mut r = Map::new();
        let mut put = |k: &str, v: Value| {
            r.insert(k.to_string(), v);
        };
        let us = |ns: u64| round(ns as f64 / 1000.0, 1);
        put("label", json!(label));
        put("mode", json!("flood-latency"));
        put("protocol", json!("diva"));
        put("flooders", json!(self.cfg.flooders));
        put("frames", json!(format!("{:?}", self.cfg.frames).to_lowercase()));
        put("frame_bytes", json!(self.frame_len));
        put("pace_us", json!(self.cfg.pace_ns / 1000));
        put("reconnect", json!(self.cfg.reconnect));
        for (name, w) in [("quiet", &self.win[QUIET]), ("flood", &self.win[FLOOD])] {
            put(&format!("rtt_{name}_n"), json!(w.rtt.count()));
            put(&format!("rtt_{name}_p50_us"), json!(us(w.rtt.quantile(0.5))));
            put(&format!("rtt_{name}_p99_us"), json!(us(w.rtt.quantile(0.99))));
            put(&format!("rtt_{name}_max_us"), json!(us(w.rtt.max())));
            put(&format!("health_{name}_n"), json!(w.health.count()));
            put(&format!("health_{name}_p50_us"), json!(us(w.health.quantile(0.5))));
            put(&format!("health_{name}_p99_us"), json!(us(w.health.quantile(0.99))));
            put(&format!("health_{name}_max_us"), json!(us(w.health.max())));
            put(&format!("window_{name}_s"), json!(round(w.secs, 3)));
            if w.secs > 0.0 {
                let pct = |x: u64| round(x as f64 / (w.secs * 1e6) * 100.0, 1);
                put(&format!("server_cpu_{name}_pct"), json!(pct(w.server_cpu_us)));
                put(&format!("gen_cpu_{name}_pct"), json!(pct(w.gen_cpu_us)));
                let other = w.machine_busy_us.saturating_sub(w.server_cpu_us + w.gen_cpu_us);
                put(&format!("other_cpu_{name}_pct"), json!(pct(other)));
            }
        }
        let (q, f) = (&self.win[QUIET], &self.win[FLOOD]);
        let ratio = |a: u64, b: u64| if b > 0 { round(a as f64 / b as f64, 2) } else { 0.0 };
        put("rtt_p50_ratio", json!(ratio(f.rtt.quantile(0.5), q.rtt.quantile(0.5))));
        put("rtt_p99_ratio", json!(ratio(f.rtt.quantile(0.99), q.rtt.quantile(0.99))));
        if f.secs > 0.0 {
            let per_s = |x: u64| round(x as f64 / f.secs, 0);
            put("flood_frames_per_s", json!(per_s(f.flood_bytes / self.frame_len as u64)));
            put("flood_mb_per_s", json!(round(f.flood_bytes as f64 / f.secs / 1e6, 1)));
            put("flood_pongs_per_s", json!(per_s(f.pongs)));
            put("flooders_cut_off_per_s", json!(per_s(f.cut_off)));
            put("flooder_reconnects_per_s", json!(per_s(f.reconnects)));
        }
        let cut: u64 = self.win.iter().map(|w| w.cut_off).sum();
        put("flooders_cut_off", json!(cut));
        let e = &self.e;
        let errors = e.connect_failed
            + e.handshake_failed
            + e.probe_lost
            + e.probe_bad_replies
            + e.probe_unanswered
            + e.health_failed
            + e.flooder_lost;
        put("errors_total", json!(errors));
        put(
            "errors",
            json!({
                "connect_failed": e.connect_failed,
                "handshake_failed": e.handshake_failed,
                "probe_lost": e.probe_lost,
                "probe_bad_replies": e.probe_bad_replies,
                "probe_unanswered": e.probe_unanswered,
                "health_failed": e.health_failed,
                "flooder_lost": e.flooder_lost,
                "codes": e.close_codes,
                "first": e.first,
            }),
        );
        let v = Value::Object(r);
        print_human(&v);
        v
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

fn print_human(v: &Value) {
    let g = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    println!("== {} (flood-latency, {} flooder(s) of {} frames)", g("label"), g("flooders"), g("frames"));
    for (name, what) in [("quiet", "unloaded"), ("flood", "under flood")] {
        println!(
            "{what:>12}: [\"ping\"] round trip us p50 {}  p99 {}  max {} ({} samples); /health us p50 {}  max {}; \
             server CPU {} %",
            g(&format!("rtt_{name}_p50_us")),
            g(&format!("rtt_{name}_p99_us")),
            g(&format!("rtt_{name}_max_us")),
            g(&format!("rtt_{name}_n")),
            g(&format!("health_{name}_p50_us")),
            g(&format!("health_{name}_max_us")),
            g(&format!("server_cpu_{name}_pct")),
        );
    }
    println!(
        "flood: {} frames/s written ({} MB/s), {} pongs/s back; cut off (1008) {}/s, reconnects {}/s; \
         round trip under flood / unloaded: p50 {}x, p99 {}x",
        g("flood_frames_per_s"),
        g("flood_mb_per_s"),
        g("flood_pongs_per_s"),
        g("flooders_cut_off_per_s"),
        g("flooder_reconnects_per_s"),
        g("rtt_p50_ratio"),
        g("rtt_p99_ratio"),
    );
    println!(
        "generator CPU {} %, other processes {} % of a core (flood window)",
        g("gen_cpu_flood_pct"),
        g("other_cpu_flood_pct")
    );
    println!("errors: {} {}", g("errors_total"), g("errors"));
}
