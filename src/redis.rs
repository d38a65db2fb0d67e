//! A connection to Redis on the server's own mio loop: [`RedisUrl`] says where, and
//! [`RedisLink`] keeps one non-blocking TCP connection (with TLS over it for `rediss://`)
//! speaking RESP3, pipelined, with reconnects. Transport only: what the commands mean is
//! the caller's business.
//!
//! The link is driven like a client connection: the caller registers nothing itself but
//! passes the link's events (`on_event`), calls `on_timer` when `next_deadline` is due
//! (or every round: it is cheap), and `flush` once per round after queuing commands.
//! Sockets are edge-triggered: every read and write goes on until it would block.
//!
//! Ordering is the link's one promise: replies and push messages are reported in the
//! order they arrive on the socket, and replies answer the caller's commands in the order
//! they were sent. A connection that subscribes in its setup and runs scripts afterwards
//! can therefore tell which messages came before which reply. When the link goes down,
//! every command not answered is lost; the caller, who keeps its own queue, fails them.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::resp::{self, Value};
use crate::stream::NetStream;

pub const DEFAULT_PORT: u16 = 6379;

/// Where Redis is: `redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// `rediss://`: TLS, and Redis's certificate is checked against the host.
    pub tls: bool,
    /// A host name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub db: u32,
    /// The ACL user; `None` is Redis's `default` user.
    pub user: Option<String>,
    /// Never shown: not by `Display`, not by `Debug`.
    password: Option<String>,
}

impl RedisUrl {
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("redis://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("rediss://") {
            (true, rest)
        } else {
            return Err(format!("a Redis URL starts with redis:// or rediss:// (got {:?})", scheme_of(url)));
        };
        if rest.contains(['?', '#']) {
            return Err("a Redis URL takes no query or fragment".into());
        }
        // The password may hold '@' when percent-encoded only, so the last '@' ends it.
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, Some(path)),
            None => (rest, None),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let Some((user, password)) = info.split_once(':') else {
                    return Err("a Redis URL with a user needs a password: redis://user:password@host".into());
                };
                let user = percent_decode(user).map_err(|why| format!("the user in the Redis URL: {why}"))?;
                let password = percent_decode(password).map_err(|_| {
                    // Not the password itself: it would end up in a log.
                    "the password in the Redis URL is not valid percent-encoded UTF-8".to_string()
                })?;
                (Some(user).filter(|u| !u.is_empty()), Some(password).filter(|p| !p.is_empty()))
            }
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some((host, after)) = bracketed.split_once(']') else {
                return Err("an IPv6 address in a Redis URL needs its closing ']'".into());
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("not an IPv6 address: [{host}]"));
            }
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or("a ':' and a port may follow ']', nothing else")?),
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("a Redis URL needs a host: redis://host[:port][/db]".into());
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(format!("not a port: {port:?}")),
            },
        };
        let db = match path {
            None | Some("") => 0,
            Some(db) => db.parse::<u32>().map_err(|_| format!("not a database number: {db:?}"))?,
        };
        if user.is_some() && password.is_none() {
            return Err("a Redis URL with a user needs a password: redis://user:password@host".into());
        }
        Ok(RedisUrl { tls, host: host.to_string(), port, db, user, password })
    }

    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// The addresses of the host. Resolving a name blocks (the standard library asks
    /// getaddrinfo), so it is done once, before the loop runs: [`RedisLink::new`] calls
    /// this, and reconnects reuse what it found. An IP address is not looked up.
    pub fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(ErrorKind::NotFound, format!("{} has no address", self.host)));
        }
        Ok(addrs)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.tls { "rediss://" } else { "redis://" })?;
        match (&self.user, &self.password) {
            (Some(user), _) => write!(f, "{user}:***@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (None, None) => {}
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

fn scheme_of(url: &str) -> &str {
    url.split_once("://").map_or(url, |(scheme, _)| scheme)
}

fn percent_decode(text: &str) -> Result<String, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex = |b: Option<u8>| b.and_then(|b| char::from(b).to_digit(16));
        match (hex(bytes.next()), hex(bytes.next())) {
            // Two hex digits make at most 255.
            (Some(high), Some(low)) => out.push((high * 16 + low) as u8),
            _ => return Err("a '%' is not followed by two hex digits".into()),
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 once percent-decoded".into())
}

/// How a link behaves; the same for every connection it makes.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `CLIENT SETNAME` on every connection (seen in `CLIENT LIST`). No spaces.
    pub name: String,
    /// Commands sent on every connection after the link's own (HELLO, SELECT, SETNAME),
    /// before it is up: `SUBSCRIBE`, `FUNCTION LOAD`, `SCRIPT LOAD`... Their replies are
    /// checked, not reported: an error reply drops the connection. A (P|S)SUBSCRIBE is
    /// confirmed by its push messages, one per channel.
    pub setup: Vec<Vec<Vec<u8>>>,
    /// The oldest command not answered for this long (the handshake, or a connect
    /// attempt, likewise) drops the connection.
    pub reply_timeout: Duration,
    /// Bytes of commands queued and not yet taken by the socket, at most.
    pub max_queued_bytes: usize,
    /// Pause before reconnecting: from `backoff_min`, doubled after each failed attempt
    /// up to `backoff_max`, with jitter.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// What a `rediss://` link checks Redis with ([`crate::tls::redis_client_config`]).
    pub tls: Option<TlsSettings>,
}

/// The TLS settings of a `rediss://` link; a build without TLS has none to give.
#[cfg(feature = "tls")]
pub type TlsSettings = std::sync::Arc<rustls::ClientConfig>;
#[cfg(not(feature = "tls"))]
pub type TlsSettings = std::convert::Infallible;

impl LinkConfig {
    pub fn new(name: &str) -> LinkConfig {
        LinkConfig {
            name: name.to_string(),
            setup: Vec::new(),
            reply_timeout: Duration::from_secs(5),
            max_queued_bytes: 16 << 20,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// What a link reports, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// Connected, the handshake and setup answered: commands may be sent.
    Up,
    /// The answer to the oldest command not yet answered (an error reply too).
    Reply(Value),
    /// A push message (`message`, `pmessage`, `smessage`, invalidations...): every push
    /// but the confirmations of setup subscriptions.
    Push(Value),
    /// The connection that was up is gone; `unanswered` commands sent on it got no reply
    /// and never will. Reported only after `Up`: failed attempts to connect are logged and
    /// kept in [`LinkStats::last_error`].
    Down { unanswered: usize, why: String },
}

/// Why [`RedisLink::send`] refused a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRefused {
    /// The link is not up.
    Down,
    /// `max_queued_bytes` would be passed.
    Full,
}

impl fmt::Display for SendRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendRefused::Down => "Redis is not connected",
            SendRefused::Full => "too much queued for Redis",
        })
    }
}

/// Figures for health and metrics.
#[derive(Debug, Clone, Default)]
pub struct LinkStats {
    /// Since when the link is up.
    pub up_since: Option<Instant>,
    /// Times the link came up again after being up before.
    pub reconnects: u64,
    /// Attempts that failed before the link came up (refused, timed out, handshake or
    /// setup refused).
    pub failed_attempts: u64,
    /// Why the last connection or attempt ended.
    pub last_error: Option<String>,
    /// From a command being queued to its reply: the last one, and smoothed (1/8 weight
    /// per reply, as TCP's SRTT).
    pub last_rtt: Option<Duration>,
    pub smoothed_rtt: Option<Duration>,
    pub replies: u64,
    pub pushes: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The Redis version from HELLO.
    pub server_version: Option<String>,
}

/// Whose reply is owed, so that the link's own and the setup's are not reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Hello,
    Select,
    SetName,
    Setup(usize),
    Caller,
}

#[derive(Debug)]
struct Owed {
    owner: Owner,
    /// When it was queued (`now` as the caller passed it).
    sent: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection; the next attempt at `retry_at`.
    Idle,
    /// connect() in progress, since `since`.
    Connecting,
    /// Connected; the handshake and setup are not all answered.
    Handshake,
    Up,
}

/// Largest incomplete input kept: a bulk at the decoder's limit and some room around it.
const MAX_READ_BUFFER: usize = resp::MAX_BULK_LEN + (1 << 20);
/// What one read asks for.
const READ_CHUNK: usize = 64 << 10;
/// Input read before what is complete of it is decoded and dropped.
const READ_TURN: usize = 1 << 20;
/// Buffer capacity kept when empty (input and output); more is given back.
const KEEP_CAPACITY: usize = 256 << 10;

/// One connection to Redis, with the commands on it in flight. See the module doc.
pub struct RedisLink {
    url: RedisUrl,
    addrs: Vec<SocketAddr>,
    /// The address the next attempt goes to (they are tried in turn).
    next_addr: usize,
    token: Token,
    config: LinkConfig,
    phase: Phase,
    stream: Option<NetStream>,
    /// When the current phase began (connect attempt, handshake).
    phase_since: Instant,
    retry_at: Instant,
    backoff: Duration,
    /// Commands encoded and not yet written; `written` of them went out.
    output: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    /// `input.len()` when decoding last found an incomplete value: nothing new, no retry.
    decoded_upto: Option<usize>,
    owed: VecDeque<Owed>,
    /// Setup subscriptions whose push confirmations have not come yet.
    subscriptions_owed: usize,
    /// Pushes that came during the handshake: reported right after `Up`.
    held: Vec<Value>,
    /// Caller commands sent on this connection and not answered.
    caller_owed: usize,
    ever_up: bool,
    /// A Down found by `flush`, which has no `out`: reported by the next call that has.
    pending_down: Option<LinkEvent>,
    stats: LinkStats,
}

impl RedisLink {
    /// Resolves the host (blocking, once) and prepares the link; the first connection
    /// attempt is made by the first [`RedisLink::on_timer`].
    /// A `rediss://` URL needs `config.tls`.
    pub fn new(url: &RedisUrl, token: Token, config: LinkConfig) -> io::Result<RedisLink> {
        if url.tls && config.tls.is_none() {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                if cfg!(feature = "tls") {
                    "rediss:// needs TLS settings (LinkConfig::tls)"
                } else {
                    "rediss://: this build has no TLS (built without the `tls` feature)"
                },
            ));
        }
        let addrs = url.resolve()?;
        let now = Instant::now();
        Ok(RedisLink {
            url: url.clone(),
            addrs,
            next_addr: 0,
            token,
            backoff: config.backoff_min,
            config,
            phase: Phase::Idle,
            stream: None,
            phase_since: now,
            retry_at: now,
            output: Vec::new(),
            written: 0,
            input: Vec::new(),
            decoded_upto: None,
            owed: VecDeque::new(),
            subscriptions_owed: 0,
            held: Vec::new(),
            caller_owed: 0,
            ever_up: false,
            pending_down: None,
            stats: LinkStats::default(),
        })
    }

    pub fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }

    pub fn token(&self) -> Token {
        self.token
    }

    /// Queues a command; it goes out at the next [`RedisLink::flush`], and its reply comes
    /// as one [`LinkEvent::Reply`], in order. The (P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE
    /// commands are answered by push messages in RESP3, not by a reply: no reply is owed
    /// for them, and their confirmations come as [`LinkEvent::Push`] (an error reply to
    /// one, say for a missing argument, would be taken for the next command's reply).
    pub fn send(&mut self, args: &[&[u8]], now: Instant) -> Result<(), SendRefused> {
        if self.phase != Phase::Up {
            return Err(SendRefused::Down);
        }
        let queued = self.output.len() - self.written;
        if queued + resp::encoded_len(args) > self.config.max_queued_bytes {
            return Err(SendRefused::Full);
        }
        resp::encode_command(&mut self.output, args);
        if !is_pubsub_command(args) {
            self.owed.push_back(Owed { owner: Owner::Caller, sent: now });
            self.caller_owed += 1;
        }
        Ok(())
    }

    /// Bytes queued and not yet taken by the socket.
    pub fn queued_bytes(&self) -> usize {
        self.output.len() - self.written
    }

    /// Caller commands sent and not yet answered.
    pub fn owed_replies(&self) -> usize {
        self.caller_owed
    }

    /// Writes what is queued until the socket would block; the rest goes when it is
    /// writable again. Call once per loop round.
    pub fn flush(&mut self, registry: &Registry, now: Instant) {
        if matches!(self.phase, Phase::Handshake | Phase::Up)
            && let Err(why) = self.write_out()
        {
            let mut down = Vec::new();
            self.fail(registry, now, why, &mut down);
            self.pending_down = down.pop();
        }
    }

    /// Handles a readiness event for the link's token. Which readiness does not matter:
    /// the link reads and writes until the socket would block either way.
    pub fn on_event(
        &mut self,
        registry: &Registry,
        _event: &mio::event::Event,
        now: Instant,
        out: &mut Vec<LinkEvent>,
    ) {
        self.report_pending_down(out);
        match self.phase {
            Phase::Idle => {}
            Phase::Connecting => {
                if let Err(why) = self.check_connected(now) {
                    self.fail(registry, now, why, out);
                    return;
                }
                if self.phase == Phase::Handshake {
                    self.progress(registry, now, out);
                }
            }
            Phase::Handshake | Phase::Up => self.progress(registry, now, out),
        }
    }

    /// Connects when an attempt is due; drops a connection whose oldest reply (or
    /// connect, or handshake) is overdue.
    pub fn on_timer(&mut self, registry: &Registry, now: Instant, out: &mut Vec<LinkEvent>) {
        self.report_pending_down(out);
        let timeout = self.config.reply_timeout;
        match self.phase {
            Phase::Idle if now >= self.retry_at => self.connect(registry, now, out),
            Phase::Idle => {}
            Phase::Connecting if now >= self.phase_since + timeout => {
                self.fail(registry, now, format!("connect timed out after {timeout:?}"), out)
            }
            Phase::Handshake if now >= self.phase_since + timeout => {
                self.fail(registry, now, format!("handshake not answered within {timeout:?}"), out)
            }
            Phase::Connecting | Phase::Handshake | Phase::Up => {
                if let Some(oldest) = self.owed.front()
                    && now >= oldest.sent + timeout
                {
                    self.fail(registry, now, format!("no reply within {timeout:?}"), out);
                }
            }
        }
    }

    /// When [`RedisLink::on_timer`] has something to do next.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.pending_down.is_some() {
            return Some(self.phase_since);
        }
        let timeout = self.config.reply_timeout;
        match self.phase {
            Phase::Idle => Some(self.retry_at),
            Phase::Connecting | Phase::Handshake => Some(self.phase_since + timeout),
            Phase::Up => self.owed.front().map(|oldest| oldest.sent + timeout),
        }
    }

    /// TLS settings for the next connection; the one up (if any) keeps its session.
    pub fn set_tls(&mut self, tls: TlsSettings) {
        self.config.tls = Some(tls);
    }

    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    fn report_pending_down(&mut self, out: &mut Vec<LinkEvent>) {
        if let Some(down) = self.pending_down.take() {
            out.push(down);
        }
    }

    fn connect(&mut self, registry: &Registry, now: Instant, out: &mut Vec<LinkEvent>) {
        let Some(&addr) = self.addrs.get(self.next_addr % self.addrs.len().max(1)) else { return };
        self.next_addr = self.next_addr.wrapping_add(1);
        debug!("redis: connecting to {} ({addr})", self.url);
        let attempt = TcpStream::connect(addr).and_then(|tcp| {
            let _ = tcp.set_nodelay(true);
            let mut stream = self.over_tls(tcp)?;
            registry.register(&mut stream, self.token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(stream)
        });
        match attempt {
            Ok(stream) => {
                self.stream = Some(stream);
                self.enter(Phase::Connecting, now);
                self.queue_handshake(now);
            }
            Err(err) => self.fail(registry, now, format!("connect to {addr}: {err}"), out),
        }
    }

    /// TLS over `tcp` for `rediss://`; its handshake runs inside the first reads and
    /// writes, bounded by the handshake's timeout like Redis's.
    #[cfg(feature = "tls")]
    fn over_tls(&self, tcp: TcpStream) -> io::Result<NetStream> {
        let Some(config) = self.config.tls.as_ref().filter(|_| self.url.tls) else {
            return Ok(NetStream::Plain(tcp));
        };
        let name = rustls::pki_types::ServerName::try_from(self.url.host.clone()).map_err(|err| {
            io::Error::new(ErrorKind::InvalidInput, format!("TLS name {:?}: {err}", self.url.host))
        })?;
        Ok(NetStream::Tls(Box::new(crate::tls::TlsStream::client(tcp, config.clone(), name)?)))
    }

    #[cfg(not(feature = "tls"))]
    fn over_tls(&self, tcp: TcpStream) -> io::Result<NetStream> {
        Ok(NetStream::Plain(tcp))
    }

    fn enter(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.phase_since = now;
    }

    /// HELLO (with AUTH), SELECT, CLIENT SETNAME and the setup, pipelined: they go out as
    /// soon as the connection is made.
    fn queue_handshake(&mut self, now: Instant) {
        self.output.clear();
        self.written = 0;
        self.input.clear();
        self.decoded_upto = None;
        self.owed.clear();
        self.held.clear();
        self.caller_owed = 0;
        self.subscriptions_owed = 0;
        let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
        if let Some(password) = &self.url.password {
            hello.push(b"AUTH");
            hello.push(self.url.user.as_deref().unwrap_or("default").as_bytes());
            hello.push(password.as_bytes());
        }
        resp::encode_command(&mut self.output, &hello);
        self.owed.push_back(Owed { owner: Owner::Hello, sent: now });
        if self.url.db != 0 {
            resp::encode_command(&mut self.output, &[b"SELECT", self.url.db.to_string().as_bytes()]);
            self.owed.push_back(Owed { owner: Owner::Select, sent: now });
        }
        resp::encode_command(&mut self.output, &[b"CLIENT", b"SETNAME", self.config.name.as_bytes()]);
        self.owed.push_back(Owed { owner: Owner::SetName, sent: now });
        for (i, command) in self.config.setup.iter().enumerate() {
            let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
            resp::encode_command(&mut self.output, &args);
            if is_subscribe_command(&args) {
                self.subscriptions_owed += args.len().saturating_sub(1);
            } else if !is_pubsub_command(&args) {
                self.owed.push_back(Owed { owner: Owner::Setup(i), sent: now });
            }
        }
    }

    /// After a writable (or any) event while connecting: connected, still connecting, or
    /// failed.
    fn check_connected(&mut self, now: Instant) -> Result<(), String> {
        let Some(stream) = self.stream.as_ref().map(NetStream::tcp) else { return Ok(()) };
        if let Ok(Some(err)) | Err(err) = stream.take_error() {
            return Err(format!("connect: {err}"));
        }
        match stream.peer_addr() {
            Ok(_) => {
                self.enter(Phase::Handshake, now);
                Ok(())
            }
            Err(err) if err.kind() == ErrorKind::NotConnected => Ok(()),
            Err(err) => Err(format!("connect: {err}")),
        }
    }

    /// Reads what arrived, reports it, and writes what is queued. Input is decoded after
    /// each [`READ_TURN`] bytes too, so that a burst of small messages never fills the
    /// read buffer: only one value bigger than the limit does.
    fn progress(&mut self, registry: &Registry, now: Instant, out: &mut Vec<LinkEvent>) {
        let result = loop {
            let drained = match self.read_in() {
                Ok(drained) => drained,
                Err(why) => break Err(why),
            };
            if let Err(why) = self.take_values(now, out) {
                break Err(why);
            }
            if drained {
                break self.write_out();
            }
        };
        if let Err(why) = result {
            self.fail(registry, now, why, out);
        }
    }

    /// Reads until the socket would block (true) or [`READ_TURN`] bytes came (false).
    fn read_in(&mut self) -> Result<bool, String> {
        let Some(stream) = &mut self.stream else { return Ok(true) };
        let mut taken = 0;
        while taken < READ_TURN {
            let filled = self.input.len();
            if filled >= MAX_READ_BUFFER {
                return Err(format!("a reply over {MAX_READ_BUFFER} bytes"));
            }
            self.input.resize(filled + READ_CHUNK.min(MAX_READ_BUFFER - filled), 0);
            let result = match self.input.get_mut(filled..) {
                Some(spare) => stream.read(spare),
                None => Ok(0),
            };
            match result {
                Ok(0) => {
                    self.input.truncate(filled);
                    return Err("Redis closed the connection".into());
                }
                Ok(n) => {
                    self.input.truncate(filled + n);
                    self.stats.bytes_in += n as u64;
                    taken += n;
                }
                Err(err) => {
                    self.input.truncate(filled);
                    match err.kind() {
                        ErrorKind::WouldBlock => return Ok(true),
                        ErrorKind::Interrupted => {}
                        _ if self.url.tls && err.kind() == ErrorKind::InvalidData => {
                            return Err(format!("TLS: {err}"));
                        }
                        _ => return Err(format!("read: {err}")),
                    }
                }
            }
        }
        Ok(false)
    }

    fn write_out(&mut self) -> Result<(), String> {
        let Some(stream) = &mut self.stream else { return Ok(()) };
        while let Some(pending) = self.output.get(self.written..).filter(|rest| !rest.is_empty()) {
            match stream.write(pending) {
                Ok(0) => return Err("write: the socket took nothing".into()),
                Ok(n) => {
                    self.written += n;
                    self.stats.bytes_out += n as u64;
                }
                Err(err) => match err.kind() {
                    ErrorKind::WouldBlock => {
                        // A link that never quite catches up must not grow its buffer with
                        // what was written long ago.
                        if self.written > self.output.len() / 2 {
                            self.output.drain(..self.written);
                            self.written = 0;
                        }
                        return Ok(());
                    }
                    ErrorKind::Interrupted => {}
                    _ => return Err(format!("write: {err}")),
                },
            }
        }
        // TLS: ciphertext rustls still holds (WouldBlock: the next writable edge takes it).
        match stream.flush() {
            Err(err) if err.kind() != ErrorKind::WouldBlock && err.kind() != ErrorKind::Interrupted => {
                return Err(format!("write: {err}"));
            }
            _ => {}
        }
        self.output.clear();
        self.written = 0;
        if self.output.capacity() > KEEP_CAPACITY {
            self.output.shrink_to(KEEP_CAPACITY);
        }
        Ok(())
    }

    /// Decodes every complete value in the input and reports it.
    fn take_values(&mut self, now: Instant, out: &mut Vec<LinkEvent>) -> Result<(), String> {
        if self.decoded_upto == Some(self.input.len()) {
            return Ok(());
        }
        let mut pos = 0;
        let mut result = Ok(());
        while let Some(rest) = self.input.get(pos..).filter(|rest| !rest.is_empty()) {
            match resp::decode(rest) {
                Ok(Some((value, used))) => {
                    pos += used;
                    result = self.on_value(value, now, out);
                    if result.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    result = Err(format!("protocol error from Redis: {err}"));
                    break;
                }
            }
        }
        self.input.drain(..pos.min(self.input.len()));
        if self.input.capacity() > KEEP_CAPACITY && self.input.len() < KEEP_CAPACITY {
            self.input.shrink_to(KEEP_CAPACITY);
        }
        self.decoded_upto = Some(self.input.len());
        result
    }

    fn on_value(&mut self, value: Value, now: Instant, out: &mut Vec<LinkEvent>) -> Result<(), String> {
        if let Value::Push(items) = &value {
            self.stats.pushes += 1;
            if self.phase == Phase::Handshake
                && self.subscriptions_owed > 0
                && items.first().and_then(Value::as_bytes).is_some_and(is_subscribe_confirmation)
            {
                self.subscriptions_owed -= 1;
                return self.maybe_up(now, out);
            }
            if self.phase == Phase::Up {
                out.push(LinkEvent::Push(value));
            } else {
                self.held.push(value);
            }
            return Ok(());
        }
        let Some(owed) = self.owed.pop_front() else {
            return Err(format!("a reply with no command waiting for it: {}", brief(&value)));
        };
        self.stats.replies += 1;
        let rtt = now.saturating_duration_since(owed.sent);
        self.stats.last_rtt = Some(rtt);
        self.stats.smoothed_rtt = Some(match self.stats.smoothed_rtt {
            None => rtt,
            Some(srtt) => (srtt * 7 + rtt) / 8,
        });
        match owed.owner {
            Owner::Caller => {
                self.caller_owed = self.caller_owed.saturating_sub(1);
                out.push(LinkEvent::Reply(value));
                Ok(())
            }
            owner => {
                if let Value::Error(message) = &value {
                    return Err(match owner {
                        Owner::Hello if self.url.has_password() => {
                            format!("HELLO 3 with AUTH refused: {message}")
                        }
                        Owner::Hello => format!("HELLO 3 refused (RESP3 needs Redis 6 or later): {message}"),
                        Owner::Select => format!("SELECT {} refused: {message}", self.url.db),
                        Owner::SetName => format!("CLIENT SETNAME refused: {message}"),
                        Owner::Setup(i) => format!("setup command {} refused: {message}", self.setup_name(i)),
                        Owner::Caller => message.clone(),
                    });
                }
                if owner == Owner::Hello {
                    self.stats.server_version =
                        value.map_get(b"version").and_then(Value::as_str).map(String::from);
                }
                self.maybe_up(now, out)
            }
        }
    }

    fn setup_name(&self, i: usize) -> String {
        let name = self.config.setup.get(i).and_then(|command| command.first());
        format!("#{} ({})", i + 1, String::from_utf8_lossy(name.map_or(&[][..], Vec::as_slice)))
    }

    /// Up once the handshake and setup are all answered.
    fn maybe_up(&mut self, now: Instant, out: &mut Vec<LinkEvent>) -> Result<(), String> {
        if self.phase != Phase::Handshake || !self.owed.is_empty() || self.subscriptions_owed > 0 {
            return Ok(());
        }
        self.enter(Phase::Up, now);
        if self.ever_up {
            self.stats.reconnects += 1;
        }
        self.ever_up = true;
        self.backoff = self.config.backoff_min;
        self.stats.up_since = Some(now);
        info!(
            "redis: connected to {} as {:?} (Redis {})",
            self.url,
            self.config.name,
            self.stats.server_version.as_deref().unwrap_or("?")
        );
        out.push(LinkEvent::Up);
        out.extend(self.held.drain(..).map(LinkEvent::Push));
        Ok(())
    }

    /// Drops the connection or attempt, reports Down if it was up, and schedules the next
    /// attempt.
    fn fail(&mut self, registry: &Registry, now: Instant, why: String, out: &mut Vec<LinkEvent>) {
        if let Some(mut stream) = self.stream.take() {
            let _ = registry.deregister(&mut stream);
        }
        let was_up = self.phase == Phase::Up;
        let unanswered = self.caller_owed;
        if was_up {
            warn!("redis: connection to {} lost ({why}); {unanswered} command(s) unanswered", self.url);
            out.push(LinkEvent::Down { unanswered, why: why.clone() });
        } else {
            self.stats.failed_attempts += 1;
            // One warning per kind of failure; the retries after it are quiet.
            if self.stats.last_error.as_deref() == Some(why.as_str()) {
                debug!("redis: {} still failing: {why}", self.url);
            } else {
                warn!("redis: cannot connect to {}: {why}; retrying with backoff", self.url);
            }
        }
        self.stats.last_error = Some(why);
        self.stats.up_since = None;
        self.output.clear();
        self.written = 0;
        self.input = Vec::new();
        self.decoded_upto = None;
        self.owed.clear();
        self.held.clear();
        self.caller_owed = 0;
        self.subscriptions_owed = 0;
        let delay = jittered(self.backoff);
        self.backoff = (self.backoff * 2).min(self.config.backoff_max).max(self.config.backoff_min);
        self.retry_at = now + delay.max(self.config.backoff_min);
        self.enter(Phase::Idle, now);
    }
}

/// Between half of `backoff` and all of it, so that nodes that lost Redis together do
/// not come back in step.
fn jittered(backoff: Duration) -> Duration {
    let mut byte = [0u8; 2];
    let fraction = match getrandom::fill(&mut byte) {
        Ok(()) => u32::from(u16::from_le_bytes(byte)),
        Err(_) => u32::from(u16::MAX),
    };
    backoff / 2 + (backoff / 2) * fraction / u32::from(u16::MAX)
}

/// (P|S)SUBSCRIBE: confirmed by one push per channel.
fn is_subscribe_command(args: &[&[u8]]) -> bool {
    let Some(name) = args.first() else { return false };
    ["SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"].iter().any(|kind| name.eq_ignore_ascii_case(kind.as_bytes()))
}

/// Pub/sub commands whose confirmations are push messages in RESP3, not replies.
fn is_pubsub_command(args: &[&[u8]]) -> bool {
    let Some(name) = args.first() else { return false };
    ["SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE"]
        .iter()
        .any(|kind| name.eq_ignore_ascii_case(kind.as_bytes()))
}

fn is_subscribe_confirmation(kind: &[u8]) -> bool {
    [&b"subscribe"[..], b"psubscribe", b"ssubscribe"].iter().any(|k| kind.eq_ignore_ascii_case(k))
}

/// A reply shown in a log line: its start only.
fn brief(value: &Value) -> String {
    let text = format!("{value:?}");
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", text.get(..cut).unwrap_or_default()),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let url = RedisUrl::parse("redis://localhost").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.db, url.user.as_deref()), ("localhost", 6379, 0, None));
        assert!(!url.has_password());
        let url = RedisUrl::parse("redis://:p%40ss%3Aword@10.0.0.1:7000/3").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.db), ("10.0.0.1", 7000, 3));
        assert_eq!(url.password.as_deref(), Some("p@ss:word"));
        assert_eq!(url.user, None);
        let url = RedisUrl::parse("redis://al%20ice:pw@[::1]:6380/").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.db), ("::1", 6380, 0));
        assert_eq!(url.user.as_deref(), Some("al ice"));
        let url = RedisUrl::parse("redis://[fe80::1]").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("fe80::1", 6379));
        // A raw '@' in the password: the last '@' ends the user part.
        let url = RedisUrl::parse("redis://:a@b@host").unwrap();
        assert_eq!((url.host.as_str(), url.password.as_deref()), ("host", Some("a@b")));
    }

    #[test]
    fn rediss_urls_parse_with_tls() {
        let url = RedisUrl::parse("rediss://u:pw@redis.example:6380/1").unwrap();
        assert!(url.tls);
        assert_eq!((url.host.as_str(), url.port, url.db), ("redis.example", 6380, 1));
        assert_eq!(url.to_string(), "rediss://u:***@redis.example:6380/1");
        let url = RedisUrl::parse("rediss://[::1]").unwrap();
        assert!(url.tls && url.port == DEFAULT_PORT);
        assert!(!RedisUrl::parse("redis://h").unwrap().tls);
        assert!(RedisUrl::parse("redisss://h").unwrap_err().contains("redis:// or rediss://"));
    }

    #[test]
    fn a_rediss_link_needs_tls_settings() {
        let url = RedisUrl::parse("rediss://127.0.0.1:1").unwrap();
        let err = RedisLink::new(&url, Token(0), LinkConfig::new("x")).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for bad in [
            "http://host",
            "host:6379",
            "redis://",
            "redis://host:0",
            "redis://host:65536",
            "redis://host:x",
            "redis://host/x",
            "redis://host/-1",
            "redis://[::1",
            "redis://[nope]:1",
            "redis://[::1]x",
            "redis://user@host",
            "redis://u:%zz@host",
            "redis://host?db=1",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_password_is_never_shown() {
        let url = RedisUrl::parse("redis://bob:hunter2@[::1]:7000/2").unwrap();
        assert_eq!(url.to_string(), "redis://bob:***@[::1]:7000/2");
        assert!(!format!("{url:?}").contains("hunter2"));
        let url = RedisUrl::parse("redis://:hunter2@h").unwrap();
        assert_eq!(url.to_string(), "redis://:***@h:6379");
        let err = RedisUrl::parse("redis://:hunter2%ff@h").unwrap_err();
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn ip_addresses_resolve_without_a_lookup() {
        let url = RedisUrl::parse("redis://[::1]:7000").unwrap();
        assert_eq!(url.resolve().unwrap(), ["[::1]:7000".parse().unwrap()]);
    }

    #[test]
    fn backoff_jitter_stays_within_half_and_whole() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(800));
            assert!(d >= Duration::from_millis(400) && d <= Duration::from_millis(800), "{d:?}");
        }
    }
}
