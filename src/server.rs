//! The event loop: one thread, one mio `Poll`, every connection in a `Slab`.
//!
//! mio is edge-triggered, so every accept, read and write is repeated until it
//! would block. Output for any connection is queued while events are handled and
//! flushed once at the end of each round, so a burst of relays costs one write
//! per recipient. Connections closed during a round leave the slab only after
//! it, so a key can never be reused while events for its old owner are pending.

mod clustering;

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::admission::{Admission, HTTP_RESERVE};
use crate::backlog::{QueueLimits, Refusal};
use crate::config::Config;
use crate::conn::{
    self, AfterReply, Charge, HeadRead, Inbox, Incoming, ReadAhead, ReadEnd, SendError, Stage, WriteEnd,
};
use crate::http::{self, Answer, Request};
use crate::metrics::{CloseReason, Metrics, Stats};
use crate::protocol::{self, ErrorCode, Reply};
use crate::rate::TokenBucket;
use crate::rooms::{ConnId, Effect, Rooms};
use crate::stream::{self, NetStream};
use crate::turn::{self, Secret};

/// A client connection as this server has it: over plain TCP or TLS.
type Conn = conn::Conn<NetStream>;
use crate::routes::{self, Entry, Routed, Site};

const LISTENER: Token = Token(usize::MAX - 1);
const SHUTDOWN: Token = Token(usize::MAX - 2);
const RELOAD: Token = Token(usize::MAX - 3);
/// The cluster's Redis connection.
const CLUSTER: Token = Token(usize::MAX - 4);

/// Messages read from one connection before others get their turn.
const READ_BUDGET: usize = 64;
/// Refused messages in a row after which a flooding client is dropped.
const MAX_STRIKES: u32 = 100;
/// At most one warning about failing accept() calls per this interval.
const ACCEPT_WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// Failed accept() calls in a row, of any kind, before accepting pauses.
const MAX_ACCEPT_FAILURES: u32 = 64;
/// How long accepting pauses when the process is out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Pending connections the kernel may queue for accept(). mio's own default, 128, is
/// overflowed by a burst of reconnecting clients, and each dropped SYN costs its client a
/// 1 s retry. The kernel caps this at somaxconn.
const LISTEN_BACKLOG: libc::c_int = 4096;
/// Descriptors kept free for the listener, the poll, logging and the like.
const FD_HEADROOM: u64 = 32;
/// A client quiet this long after traffic that grew its WebSocket buffers gets fresh ones.
const SHRINK_WHEN_QUIET: Duration = Duration::from_secs(1);
/// At most this often, the allocator is asked to give free memory back (0.1 ms each with
/// 18,000 connections).
const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// Asks a running server to shut down, or to read its secret file again, from any thread
/// or a signal handler: a byte on one of two socket pairs wakes the loop.
#[derive(Debug)]
pub struct ShutdownHandle {
    shutdown: StdUnixStream,
    reload: StdUnixStream,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown: stop accepting, close every client with 1001, exit.
    pub fn shutdown(&self) -> io::Result<()> {
        (&self.shutdown).write_all(&[1])
    }

    /// Has the loop read its TLS files and `--turn-secret-file` again (as SIGHUP does).
    pub fn reload(&self) -> io::Result<()> {
        (&self.reload).write_all(&[1])
    }

    /// The socket to register with `signal_hook::low_level::pipe` for SIGTERM/SIGINT.
    pub fn signal_pipe(&self) -> io::Result<StdUnixStream> {
        self.shutdown.try_clone()
    }

    /// The socket to register with `signal_hook::low_level::pipe` for SIGHUP.
    pub fn reload_pipe(&self) -> io::Result<StdUnixStream> {
        self.reload.try_clone()
    }
}

/// Asks a running server to read its TLS files and TURN secret file again (SIGHUP).
#[derive(Debug)]
pub struct ReloadHandle(StdUnixStream);

impl ReloadHandle {
    pub fn reload(&self) -> io::Result<()> {
        (&self.0).write_all(&[1])
    }

    /// The socket to register with `signal_hook::low_level::pipe` for SIGHUP.
    pub fn signal_pipe(&self) -> io::Result<StdUnixStream> {
        self.0.try_clone()
    }
}

pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    shutdown_rx: UnixStream,
    shutdown_tx: StdUnixStream,
    reload_rx: UnixStream,
    reload_tx: StdUnixStream,
    config: Config,
    ws_config: WebSocketConfig,
    max_connections: usize,
    /// Who may take a slot: the connection limit, the limit per address, the HTTP reserve.
    admission: Admission,
    started: Instant,
    metrics: Metrics,
    conns: Slab<Conn>,
    rooms: Rooms,
    /// Work queued while handling events, done in order.
    effects: VecDeque<Effect>,
    /// Reused buffers: messages read from one connection, effects of one call.
    inbox: Inbox,
    read_ahead: ReadAhead,
    room_effects: Vec<Effect>,
    /// Connections with output queued since the last flush.
    to_flush: Vec<ConnId>,
    /// Connections whose read budget ran out: read them again next round.
    to_read: Vec<ConnId>,
    /// Connections finished this round; removed from the slab after it.
    to_remove: Vec<ConnId>,
    accept_paused_until: Option<Instant>,
    /// accept() is failing for want of descriptors or memory (logged once per episode).
    last_accept_warning: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    /// When the current round began: the time for what happens in it.
    round_time: Instant,
    next_sweep: Instant,
    last_sweep: Instant,
    /// Buffers were released since the allocator last gave free memory back.
    released_since_trim: bool,
    /// Not before then again: a stream of big messages releases buffers all the time.
    next_trim: Instant,
    /// Bytes queued for all open connections and not yet taken by their sockets: the sum
    /// of their [`Conn::pending_output`], kept in step by [`Server::with_output`].
    outbound_total: u64,
    /// What relayed signals may take of one client's queue.
    queue_limits: QueueLimits,
    /// A signal was refused because all queues together were full, and a quarter of the
    /// bound has not been free since.
    outbound_bound_hit: bool,
    /// Connections that were still open when the shutdown's grace period ran out.
    dropped_at_shutdown: usize,
    /// The TLS settings new connections get, when the port speaks TLS.
    #[cfg(feature = "tls")]
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// With `--redis-url`: this node's part in the cluster.
    cluster: Option<crate::cluster::Cluster>,
    /// Clients whose join waits for the registry, with what they sent meanwhile.
    waiting: HashMap<ConnId, clustering::Waiting>,
    /// Reused: what the cluster reported in one call.
    happenings: Vec<crate::cluster::Happening>,
}

/// The TLS settings of a `rediss://` link, read from the files the configuration names.
#[cfg(feature = "tls")]
fn redis_tls(config: &Config) -> io::Result<Option<crate::redis::TlsSettings>> {
    crate::tls::redis_settings(config).map_err(|why| io::Error::new(ErrorKind::InvalidInput, why))
}

#[cfg(not(feature = "tls"))]
fn redis_tls(_config: &Config) -> io::Result<Option<crate::redis::TlsSettings>> {
    Ok(None)
}

impl Server {
    /// Binds the listening socket and prepares the loop. Nothing runs until [`Server::run`].
    pub fn bind(config: Config) -> io::Result<Server> {
        #[cfg(feature = "tls")]
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(
                crate::tls::load(cert, key).map_err(|why| io::Error::new(ErrorKind::InvalidInput, why))?,
            ),
            _ => None,
        };
        #[allow(unused_mut)]
        let mut metrics = Metrics::default();
        #[cfg(feature = "tls")]
        if let Some(settings) = &tls {
            // Zero when it could not be read: an alert on "expires soon" fires.
            metrics.tls_certificate_expiry = Some(settings.expires.unwrap_or(0));
        }
        let poll = Poll::new()?;
        let mut listener =
            TcpListener::from_std(crate::listen::open(config.bind, config.port, LISTEN_BACKLOG)?);
        let local_addr = listener.local_addr()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let (shutdown_tx, shutdown_rx) = StdUnixStream::pair()?;
        shutdown_rx.set_nonblocking(true)?;
        shutdown_tx.set_nonblocking(true)?;
        let mut shutdown_rx = UnixStream::from_std(shutdown_rx);
        poll.registry().register(&mut shutdown_rx, SHUTDOWN, Interest::READABLE)?;
        let (reload_tx, reload_rx) = StdUnixStream::pair()?;
        reload_rx.set_nonblocking(true)?;
        reload_tx.set_nonblocking(true)?;
        let mut reload_rx = UnixStream::from_std(reload_rx);
        poll.registry().register(&mut reload_rx, RELOAD, Interest::READABLE)?;
        let max_connections = config.max_connections.unwrap_or_else(default_max_connections);
        let ws_config = conn::websocket_config(config.max_message_size, config.max_outbound);
        let queue_limits = QueueLimits::new(config.max_outbound as u64);
        let now = Instant::now();
        let cluster = match &config.redis_url {
            Some(url) => Some(crate::cluster::Cluster::new(
                url,
                config.node_timeout,
                config.room_limits.max_room_members,
                CLUSTER,
                redis_tls(&config)?,
            )?),
            None => None,
        };
        let rooms = if cluster.is_some() {
            Rooms::clustered(config.room_limits)
        } else {
            Rooms::new(config.room_limits)
        };
        Ok(Server {
            cluster,
            waiting: HashMap::new(),
            happenings: Vec::new(),
            poll,
            listener: Some(listener),
            local_addr,
            shutdown_rx,
            shutdown_tx,
            reload_rx,
            reload_tx,
            rooms,
            admission: Admission::new(max_connections, config.max_connections_per_ip),
            config,
            ws_config,
            max_connections,
            started: now,
            metrics,
            conns: Slab::new(),
            effects: VecDeque::new(),
            inbox: Inbox::default(),
            read_ahead: ReadAhead::new(),
            room_effects: Vec::new(),
            to_flush: Vec::new(),
            to_read: Vec::new(),
            to_remove: Vec::new(),
            accept_paused_until: None,
            last_accept_warning: None,
            shutdown_deadline: None,
            round_time: now,
            next_sweep: now,
            last_sweep: now,
            released_since_trim: false,
            next_trim: now,
            outbound_total: 0,
            outbound_bound_hit: false,
            queue_limits,
            dropped_at_shutdown: 0,
            #[cfg(feature = "tls")]
            tls: tls.map(|settings| settings.config),
        })
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The most client connections this server holds at once.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    pub fn shutdown_handle(&self) -> io::Result<ShutdownHandle> {
        Ok(ShutdownHandle { shutdown: self.shutdown_tx.try_clone()?, reload: self.reload_tx.try_clone()? })
    }

    pub fn reload_handle(&self) -> io::Result<ReloadHandle> {
        Ok(ReloadHandle(self.reload_tx.try_clone()?))
    }

    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.conns.len(),
            rooms: self.rooms.room_count(),
            addresses: self.rooms.address_count(),
            queued_output: self.outbound_total,
            cluster: self.cluster.as_ref().map(crate::cluster::Cluster::stats),
        }
    }

    /// Runs until shut down through a [`ShutdownHandle`]; returns once every client is closed.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_event = Instant::now();
        loop {
            let now = Instant::now();
            let mut timeout = self.poll_timeout(now);
            if now.duration_since(last_event) < self.config.busy_poll {
                timeout = Duration::ZERO;
            }
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
            let now = Instant::now();
            self.round_time = now;
            if !events.is_empty() {
                last_event = now;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(now),
                    SHUTDOWN => self.begin_shutdown(now),
                    RELOAD => self.reload(),
                    CLUSTER => self.on_cluster_event(event, now),
                    Token(key) => {
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.on_readiness(event.is_read_closed() || event.is_error());
                        }
                        if event.is_writable() || event.is_write_closed() {
                            self.on_writable(key, now);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.queue_read(key);
                        }
                    }
                }
            }
            // One turn each, whether a connection got an event, was left over from the last
            // round, or both: a client that keeps its socket full gets no more than others.
            for key in std::mem::take(&mut self.to_read) {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.delist_for_read();
                }
                self.on_readable(key, now);
            }
            if self.accept_paused_until.is_some_and(|until| now >= until) {
                self.accept_paused_until = None;
                self.accept_all(now);
            }
            if now >= self.next_sweep {
                self.sweep(now);
            }
            self.cluster_timers(now);
            self.flush_queued(now);
            self.flush_cluster(now);
            self.remove_finished();
            if self.released_since_trim && now >= self.next_trim {
                self.released_since_trim = false;
                self.next_trim = now + TRIM_INTERVAL;
                return_free_memory();
            }
            if let Some(deadline) = self.shutdown_deadline
                && (self.conns.is_empty() || now >= deadline)
            {
                let dropped = self.dropped_at_shutdown + self.conns.len();
                info!("shut down; {dropped} connection(s) that did not finish closing were dropped");
                return Ok(());
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        if !self.to_read.is_empty() {
            return Duration::ZERO;
        }
        let mut wake = self.next_sweep;
        if let Some(until) = self.accept_paused_until {
            wake = wake.min(until);
        }
        if let Some(deadline) = self.shutdown_deadline {
            wake = wake.min(deadline);
        }
        if let Some(deadline) = self.cluster.as_ref().and_then(crate::cluster::Cluster::next_deadline) {
            wake = wake.min(deadline);
        }
        wake.saturating_duration_since(now)
    }

    fn accept_all(&mut self, now: Instant) {
        if self.accept_paused_until.is_some() || self.shutdown_deadline.is_some() {
            return;
        }
        let mut failures = 0;
        loop {
            let Some(listener) = &self.listener else { return };
            match listener.accept() {
                Ok((stream, peer)) => {
                    // A `::` listener sees IPv4 clients as ::ffff:a.b.c.d, which is neither
                    // loopback nor in any IPv4 network to the standard library. From here on
                    // every address is in its plain form, so each check sees the same one.
                    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                    self.metrics.connections_accepted += 1;
                    let local_ip = || stream.local_addr().ok().map(|local| local.ip().to_canonical());
                    match routes::admit(&self.config, &self.admission, &mut self.metrics, peer.ip(), local_ip)
                    {
                        Entry::Admit { charge, reserved } => self.admit(stream, peer, charge, reserved, now),
                        // A TLS client could not read a plain refusal: it is just closed.
                        Entry::Refuse(response) => {
                            refuse(stream, if self.speaks_tls() { &[] } else { &response })
                        }
                    }
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    self.metrics.accept_errors += 1;
                    failures += 1;
                    let exhausted = stream::is_resource_exhaustion(&err);
                    if exhausted
                        && self.last_accept_warning.is_none_or(|at| now - at >= ACCEPT_WARNING_INTERVAL)
                    {
                        // Once per burst: the retries every ACCEPT_BACKOFF stay quiet.
                        self.last_accept_warning = Some(now);
                        warn!(
                            "accept failed ({err}); new connections wait, retried every {ACCEPT_BACKOFF:?} \
                             ({} failed accepts so far)",
                            self.metrics.accept_errors
                        );
                    } else if !exhausted {
                        // A client that gave up while queued (ECONNABORTED and the like).
                        debug!("accept failed: {err}");
                    }
                    // Edge-triggered: clients already waiting bring no new event, so retry
                    // on a timer rather than spin on an error that does not go away.
                    if exhausted || failures >= MAX_ACCEPT_FAILURES {
                        self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                        return;
                    }
                }
            }
        }
    }

    fn admit(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        charge: Option<IpAddr>,
        reserved: bool,
        now: Instant,
    ) {
        stream::tune_for_signaling(&stream);
        let stream = match self.client_stream(stream) {
            Ok(stream) => stream,
            Err(err) => {
                warn!("cannot start TLS with {peer}: {err}");
                return;
            }
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let rate = TokenBucket::new(self.config.rate_burst, now);
        let mut conn = Conn::new(stream, peer, now, self.config.handshake_timeout, rate);
        if let Err(err) = conn.register(self.poll.registry(), Token(key)) {
            warn!("cannot watch a new connection from {peer}: {err}");
            return;
        }
        debug!("connection {key} from {peer}");
        entry.insert(conn);
        self.admission.admit(key, charge, reserved);
    }

    /// True when the port speaks TLS (https:// and wss:// only).
    pub fn speaks_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// The stream a freshly accepted socket becomes: TLS when the port speaks it.
    fn client_stream(&self, tcp: TcpStream) -> io::Result<NetStream> {
        #[cfg(feature = "tls")]
        if let Some(config) = &self.tls {
            return Ok(NetStream::Tls(Box::new(crate::tls::TlsStream::new(tcp, config.clone())?)));
        }
        Ok(NetStream::Plain(tcp))
    }

    /// What reading the request head came to.
    fn on_head(&mut self, key: ConnId, head: HeadRead, now: Instant) {
        match head {
            HeadRead::Partial => {}
            HeadRead::Gone => self.finish(key, CloseReason::Client),
            HeadRead::Invalid(status) => {
                debug!("connection {key}: bad request head ({})", status.code());
                self.metrics.handshake_failures += 1;
                let body = http::error_response(status, "The request could not be read.");
                self.reply(key, body, AfterReply::Close, now);
            }
            HeadRead::Complete { request, leftover } => self.answer_request(key, &request, leftover, now),
        }
    }

    fn on_readable(&mut self, key: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        match conn.stage() {
            Stage::ReadingHead => {
                let head = conn.read_head();
                if conn.stream_mut().take_handshake_completed() {
                    self.metrics.tls_handshakes += 1;
                }
                self.on_head(key, head, now);
            }
            // A client whose join waits for the registry is read again when it is answered.
            Stage::Open if self.waiting.contains_key(&key) => {}
            Stage::Open => self.read_messages(key, now),
            Stage::WritingReply | Stage::Finished => {}
            Stage::Closing => match conn.discard_input() {
                ReadEnd::Drained => {}
                ReadEnd::MoreLeft => self.queue_read(key),
                ReadEnd::Gone | ReadEnd::Fail(..) => {
                    let reason = conn.close_reason();
                    self.finish(key, reason);
                }
            },
        }
    }

    fn on_writable(&mut self, key: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.is_finished() {
            return;
        }
        let was_open = conn.is_open();
        let ws_config = self.ws_config;
        let probe_timeout = self.config.probe_timeout;
        let Some(end) = self.with_output(key, |conn| {
            let end = conn.flush(&ws_config, now);
            conn.time_probe(now, probe_timeout);
            end
        }) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(key) else { return };
        match end {
            WriteEnd::Gone => {
                let reason = if was_open { CloseReason::Error } else { conn.close_reason() };
                self.finish(key, reason);
            }
            WriteEnd::Done | WriteEnd::Blocked => {
                if end == WriteEnd::Done && conn.release_buffers(&self.ws_config) {
                    self.metrics.buffers_released += 1;
                    self.released_since_trim = true;
                }
                // Just upgraded: frames may already wait behind the handshake, and no new edge will say so.
                if !was_open && self.conns.get(key).is_some_and(Conn::is_open) {
                    self.on_readable(key, now);
                }
            }
        }
    }

    fn answer_request(&mut self, key: ConnId, request: &Request, leftover: Vec<u8>, now: Instant) {
        let Some(peer) = self.conns.get(key).map(Conn::peer) else { return };
        let stats = self.stats();
        let conns = &self.conns;
        let live_bytes = || {
            conns.iter().fold((0, 0), |(read, written), (_, conn)| {
                let counts = conn.byte_counts();
                (read + counts.read, written + counts.written)
            })
        };
        let mut site = Site {
            config: &self.config,
            admission: &mut self.admission,
            metrics: &mut self.metrics,
            stats,
            uptime: self.started.elapsed(),
            live_bytes: &live_bytes,
            unix_time: unix_time(),
            turn_tag: &turn_tag,
        };
        let Routed { answer, client } = routes::route(&mut site, key, peer, request);
        match answer {
            Answer::Close(body) => {
                if request.wants_websocket() {
                    self.metrics.handshake_failures += 1;
                }
                self.reply(key, body, AfterReply::Close, now);
            }
            Answer::Upgrade(body) => {
                self.metrics.websocket_upgrades += 1;
                if let Some(ip) = client {
                    debug!("connection {key}: WebSocket on {} from {ip}", request.path());
                }
                self.reply(key, body, AfterReply::Upgrade { leftover }, now);
            }
        }
    }

    fn reply(&mut self, key: ConnId, body: Vec<u8>, then: AfterReply, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        match conn.reply(body, then, &self.ws_config, now) {
            WriteEnd::Gone => {
                let reason = conn.close_reason();
                self.finish(key, reason);
            }
            WriteEnd::Blocked => {}
            WriteEnd::Done => {
                if self.conns.get(key).is_some_and(Conn::is_open) {
                    self.on_readable(key, now);
                }
            }
        }
    }

    fn read_messages(&mut self, key: ConnId, now: Instant) {
        let mut inbox = std::mem::take(&mut self.inbox);
        let Some(conn) = self.conns.get_mut(key) else { return };
        let end = conn.read_messages(READ_BUDGET, now, &mut self.read_ahead, &mut inbox);
        self.queue_flush(key);
        for index in 0..inbox.len() {
            if let Some(message) = inbox.get(index)
                && self.conns.get(key).is_some_and(Conn::is_open)
            {
                if self.is_waiting(key) {
                    self.hold(key, message);
                } else {
                    self.handle_message(key, message, now);
                }
            }
        }
        inbox.clear();
        self.inbox = inbox;
        if !self.conns.get(key).is_some_and(Conn::is_open) {
            return;
        }
        match end {
            ReadEnd::Drained => {}
            ReadEnd::MoreLeft => self.queue_read(key),
            ReadEnd::Gone => self.finish(key, CloseReason::Client),
            ReadEnd::Fail(code, why) => {
                debug!("connection {key}: {why}; closing with {}", u16::from(code));
                let reason =
                    if code == CloseCode::Size { CloseReason::TooLarge } else { CloseReason::ProtocolError };
                self.close(key, code, why, reason);
            }
        }
    }

    /// Handles one message. Every kind, control frames included, is paid for from the
    /// connection's rate: a flood of pings costs the loop as much as a flood of calls.
    fn handle_message(&mut self, key: ConnId, message: Incoming<'_>, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let charge = conn.charge_message(self.config.rate_per_sec, self.config.rate_burst, MAX_STRIKES, now);
        if charge == Charge::Flooding {
            debug!("connection {key}: kept sending over the rate limit; closing");
            return self.close(key, CloseCode::Policy, "rate limit exceeded", CloseReason::RateLimited);
        }
        if charge == Charge::Refused {
            if message == Incoming::Control {
                // Nothing to answer a control frame with; the strike is the whole cost.
                return;
            }
            self.metrics.count_call(None);
            let reply = Reply::Error { call: "", code: ErrorCode::RateLimited, detail: "slow down" };
            self.effects.push_back(Effect::Send {
                to: key,
                text: reply.to_json(),
                kind: reply.kind(),
                relayed_from: None,
            });
        } else {
            let parsed = match message {
                Incoming::Text(text) => protocol::parse_call_text(text),
                Incoming::NotUtf8 => Err(protocol::ParseError::not_utf8()),
                Incoming::Control => return,
            };
            let mut effects = std::mem::take(&mut self.room_effects);
            match parsed {
                Ok(call) => {
                    self.metrics.count_call(Some(call.name()));
                    if call == protocol::Call::Turn {
                        effects.push(self.turn_reply(key));
                    } else {
                        self.rooms.handle(key, &call, &mut effects);
                    }
                }
                Err(err) => {
                    self.metrics.count_call(None);
                    let reply = err.reply();
                    effects.push(Effect::Send {
                        to: key,
                        text: reply.to_json(),
                        kind: reply.kind(),
                        relayed_from: None,
                    });
                }
            }
            self.effects.extend(effects.drain(..));
            self.room_effects = effects;
        }
        self.apply_effects();
    }

    /// The answer to `["turn"]` from `key`: ICE servers with a fresh credential, whose
    /// username carries a random tag (logged at debug level, to match coturn's log).
    fn turn_reply(&mut self, key: ConnId) -> Effect {
        let tag = turn_tag();
        let ice_servers = turn::ice_servers(&self.config.turn, unix_time(), &tag);
        if self.config.turn.issues_credentials() {
            self.metrics.turn_credentials += 1;
            debug!("connection {key}: TURN credential issued (tag {tag})");
        }
        let reply = Reply::Turn { ice_servers: &ice_servers };
        Effect::Send { to: key, text: reply.to_json(), kind: reply.kind(), relayed_from: None }
    }

    /// SIGHUP (`systemctl reload`): reads what may change on disk again, the TLS
    /// certificate and key, the TURN secret file and the files of a `rediss://` link.
    /// Whatever fails keeps what it had.
    fn reload(&mut self) {
        let mut sink = [0u8; 64];
        while matches!(self.reload_rx.read(&mut sink), Ok(n) if n > 0) {}
        let tls = self.reload_tls();
        let turn = self.reload_turn_secret();
        let redis = self.reload_redis_tls();
        if !tls && !turn && !redis {
            info!(
                "reload asked for: nothing to read again (no TLS files, no --turn-secret-file, no rediss://)"
            );
        }
    }

    /// Reads the CA and client files of a `rediss://` link again: the next connection to
    /// Redis uses them, the one up keeps its session. False without `rediss://`.
    fn reload_redis_tls(&mut self) -> bool {
        if !self.config.redis_url.as_ref().is_some_and(|url| url.tls) {
            return false;
        }
        match redis_tls(&self.config) {
            Ok(Some(settings)) => {
                if let Some(cluster) = &mut self.cluster {
                    cluster.set_tls(settings);
                }
                info!("reloaded the rediss:// CA and client files: the next connection to Redis uses them");
            }
            Ok(None) => {}
            Err(why) => log::error!("rediss:// reload failed, keeping the files loaded before: {why}"),
        }
        true
    }

    /// Reads `--turn-secret-file` again; on failure the old secret stays. False when there
    /// is no such file.
    fn reload_turn_secret(&mut self) -> bool {
        let Some(path) = &self.config.turn.secret_file else { return false };
        match Secret::read(path) {
            Ok(secret) => {
                let changed = self.config.turn.secret.as_ref() != Some(&secret);
                self.config.turn.secret = Some(secret);
                let what = if changed { "a new one" } else { "unchanged" };
                info!("TURN secret read again from {}: {what}", path.display());
            }
            Err(why) => error!("TURN secret not reloaded, the old one stays in use: {why}"),
        }
        true
    }

    /// Carries out queued effects, including any that closing a connection adds.
    fn apply_effects(&mut self) {
        while let Some(effect) = self.effects.pop_front() {
            match effect {
                Effect::Send { to, text, kind, relayed_from } => {
                    let relayed = relayed_from.map(|sender| (sender, self.queue_limits));
                    let result = if relayed.is_some() && self.outbound_full(text.len()) {
                        // Memory for queued output is spent: signals wait; replies and
                        // notices, which keep the room state right, still go.
                        self.outbound_bound_hit = true;
                        Err(SendError::Busy(Refusal::QueueFull))
                    } else {
                        match self.with_output(to, |conn| conn.send(text, relayed)) {
                            Some(result) => result,
                            None => continue,
                        }
                    };
                    match result {
                        Ok(()) => {
                            self.metrics.count_sent(kind);
                            self.queue_flush(to);
                        }
                        Err(SendError::NotOpen) => {}
                        Err(SendError::Busy(refusal)) => {
                            if let Some(sender) = relayed_from {
                                self.refuse_busy_signal(sender, refusal);
                            }
                        }
                        Err(SendError::Overflow) => {
                            debug!("connection {to}: does not read its messages; closing");
                            self.close(to, CloseCode::Policy, "not reading", CloseReason::NotReading);
                        }
                    }
                }
                Effect::Probe { holder } => {
                    if self.with_output(holder, Conn::start_probe) == Some(true) {
                        self.metrics.probes_sent += 1;
                        self.queue_flush(holder);
                    }
                }
                Effect::Claim { conn, address } => self.claim(conn, &address),
                Effect::Unclaim { address } => {
                    let now = self.round_time;
                    if let Some(cluster) = self.cluster.as_mut() {
                        cluster.unclaim(&address, now);
                    }
                }
                Effect::Forward { node, to, text, from } => self.forward(&node, &to, &text, from),
            }
        }
    }

    /// True when `len` more bytes of relayed output would pass the server-wide bound.
    fn outbound_full(&self, len: usize) -> bool {
        let cap = u64::try_from(self.config.max_outbound_total).unwrap_or(u64::MAX);
        self.outbound_total.saturating_add(len as u64) > cap
    }

    /// Tells `sender` that its signal was not queued because its recipient is busy.
    fn refuse_busy_signal(&mut self, sender: ConnId, refusal: Refusal) {
        let detail = match refusal {
            Refusal::QueueFull => "the peer has too much queued; try again later",
            Refusal::SenderShare => "you have too much queued for that peer; try again later",
        };
        let reply = Reply::Error { call: "signal", code: ErrorCode::PeerBusy, detail };
        let text = reply.to_json();
        self.effects.push_back(Effect::Send { to: sender, text, kind: reply.kind(), relayed_from: None });
    }

    /// Runs `op` on connection `key` and keeps [`Server::outbound_total`] in step with
    /// what it queued or wrote. Every change to a connection's queued output goes through
    /// here; `None` when there is no such connection.
    fn with_output<R>(&mut self, key: ConnId, op: impl FnOnce(&mut Conn) -> R) -> Option<R> {
        let conn = self.conns.get_mut(key)?;
        let before = conn.pending_output();
        let result = op(conn);
        let after = conn.pending_output();
        self.outbound_total = self.outbound_total.saturating_sub(before).saturating_add(after);
        Some(result)
    }

    /// Gives `key` a read turn this round (or the next, when called during the reads).
    fn queue_read(&mut self, key: ConnId) {
        if self.conns.get_mut(key).is_some_and(Conn::enlist_for_read) {
            self.to_read.push(key);
        }
    }

    fn queue_flush(&mut self, key: ConnId) {
        if self.conns.get_mut(key).is_some_and(Conn::enlist_for_flush) {
            self.to_flush.push(key);
        }
    }

    fn flush_queued(&mut self, now: Instant) {
        for key in std::mem::take(&mut self.to_flush) {
            let Some(conn) = self.conns.get_mut(key) else { continue };
            conn.delist_for_flush();
            self.on_writable(key, now);
        }
    }

    /// Closes cleanly: the client's addresses are released now, the close frame goes out.
    fn close(&mut self, key: ConnId, code: CloseCode, why: &'static str, reason: CloseReason) {
        self.release_addresses(key);
        let ws_config = self.ws_config;
        let now = self.round_time;
        let end = self.with_output(key, |conn| conn.close(code, why, reason, &ws_config, now));
        if end == Some(WriteEnd::Gone) {
            self.finish(key, reason);
        }
    }

    /// Drops a connection: releases its addresses now and its slot after this round.
    /// Its queued output counts as gone at once; its memory goes when it leaves the slab.
    fn finish(&mut self, key: ConnId, reason: CloseReason) {
        let timed_out = reason == CloseReason::HandshakeTimeout;
        let tls_failure = self.conns.get(key).and_then(|conn| conn.stream().handshake_failure(timed_out));
        let held_output = self.conns.get(key).is_some_and(|conn| conn.pending_output() > 0);
        let Some(Some(counts)) = self.with_output(key, Conn::finish) else { return };
        // What a connection that held much leaves behind goes back to the system soon,
        // not at the next unrelated release.
        self.released_since_trim |= held_output;
        self.metrics.count_close(reason);
        if let Some(failure) = tls_failure {
            debug!("connection {key}: TLS handshake failed ({})", failure.as_str());
            self.metrics.count_tls_failure(failure);
        }
        self.metrics.bytes_received += counts.read;
        self.metrics.bytes_sent += counts.written;
        if let Some(conn) = self.conns.get(key) {
            debug!("connection {key} from {} closed ({})", conn.peer(), reason.as_str());
        }
        self.to_remove.push(key);
        self.forget_waiting(key);
        self.release_addresses(key);
    }

    fn release_addresses(&mut self, key: ConnId) {
        let mut effects = std::mem::take(&mut self.room_effects);
        self.rooms.disconnect(key, &mut effects);
        if !effects.is_empty() {
            self.effects.extend(effects.drain(..));
            self.apply_effects();
        }
        self.room_effects = effects;
    }

    fn remove_finished(&mut self) {
        for key in std::mem::take(&mut self.to_remove) {
            if let Some(mut conn) = self.conns.try_remove(key) {
                let _ = conn.deregister(self.poll.registry());
                // (Its queued output was counted out when it finished.)
                if conn.buffers_grown() {
                    self.released_since_trim = true;
                }
                // Here and only here: the one place a connection leaves the table.
                self.admission.release(key);
            }
        }
    }

    /// Enforces deadlines: slow handshakes, idle clients, unanswered probes, stalled
    /// readers, slow closes; and the bound on queued output.
    fn sweep(&mut self, now: Instant) {
        self.next_sweep = now + self.sweep_interval();
        debug_assert_eq!(
            self.outbound_total,
            self.conns.iter().map(|(_, conn)| conn.pending_output()).sum::<u64>(),
            "the count of queued output went out of step"
        );
        let mut expired = Vec::new();
        let mut idle = Vec::new();
        let mut to_ping = Vec::new();
        let mut to_shrink = Vec::new();
        let mut too_slow = Vec::new();
        let since_last_sweep = now.saturating_duration_since(self.last_sweep);
        self.last_sweep = now;
        for (key, conn) in self.conns.iter_mut() {
            if conn.is_finished() {
                continue;
            }
            conn.time_probe(now, self.config.probe_timeout);
            conn.release_idle_bookkeeping();
            let pace = conn.output_pace(now, since_last_sweep);
            let quiet = conn.quiet_for(now);
            if conn.is_open() && quiet >= SHRINK_WHEN_QUIET && conn.buffers_grown() {
                to_shrink.push(key);
            }
            if conn.probe_expired(now) {
                expired.push((key, CloseReason::ProbeTimeout));
            } else if pace.stalled_for >= self.config.stall_timeout {
                expired.push((key, CloseReason::NotReading));
            } else if let Some(reason) = conn.deadline_passed(now) {
                expired.push((key, reason));
            } else if conn.is_open() && quiet >= self.config.idle_timeout {
                idle.push(key);
            } else if conn.wants_keep_alive(self.config.ping_interval, now) {
                to_ping.push(key);
            }
            if pace.too_slow_for(self.config.stall_timeout) {
                // Slowest first: nothing taken at all, then the longest time to drain.
                let drain = pace.drain.unwrap_or(Duration::MAX);
                too_slow.push((drain, pace.stalled_for, conn.pending_output(), key));
            }
        }
        for (key, reason) in expired {
            debug!("connection {key}: deadline passed ({}); dropping", reason.as_str());
            if self.shutdown_deadline.is_some() {
                self.dropped_at_shutdown += 1;
            }
            self.finish(key, reason);
        }
        self.relieve_outbound_pressure(too_slow);
        for key in idle {
            debug!("connection {key}: idle; closing");
            self.close(key, CloseCode::Away, "idle timeout", CloseReason::Idle);
        }
        for key in to_ping {
            if self.with_output(key, Conn::keep_alive) == Some(true) {
                self.queue_flush(key);
            }
        }
        for key in to_shrink {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.request_shrink();
                self.queue_flush(key);
            }
        }
    }

    /// Once the server-wide bound on queued output has refused a signal, drops the clients
    /// that would not drain their queues within `--stall-timeout` at their pace (`too_slow`:
    /// time to drain, time without progress, bytes queued, which), slowest first, until a
    /// quarter of the bound is free again. A client that reads just enough to never stall
    /// cannot hold the server's memory this way; one that keeps up with its queue, however
    /// slowly, is not dropped for it: signals to it are refused instead.
    fn relieve_outbound_pressure(&mut self, mut too_slow: Vec<(Duration, Duration, u64, ConnId)>) {
        let room = self.config.max_outbound_total / 4;
        if !self.outbound_bound_hit || !self.outbound_full(room) {
            // Not pressed, or no longer: clients that read have made room by themselves.
            self.outbound_bound_hit = false;
            return;
        }
        too_slow.sort_unstable_by(|a, b| b.cmp(a));
        for (drain, stalled_for, queued, key) in too_slow {
            if !self.outbound_full(room) {
                break;
            }
            if self.conns.get(key).is_none_or(Conn::is_finished) {
                continue;
            }
            debug!(
                "connection {key}: {queued} bytes queued, would drain in {drain:?}, nothing taken \
                 for {stalled_for:?}; dropping to free memory"
            );
            self.metrics.pressure_drops += 1;
            // Its memory is freed when it leaves the slab; finishing counts it as gone now.
            self.finish(key, CloseReason::NotReading);
        }
    }

    fn sweep_interval(&self) -> Duration {
        let shortest = [
            self.config.handshake_timeout,
            self.config.ping_interval,
            self.config.probe_timeout,
            self.config.stall_timeout,
        ]
        .into_iter()
        .min()
        .unwrap_or(Duration::from_secs(1));
        (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// Reads the TLS certificate and key again. New handshakes use them; open connections
    /// keep what they have. Unreadable, invalid or mismatched files leave the old ones
    /// in place, with an error in the log. False when the server speaks no TLS.
    fn reload_tls(&mut self) -> bool {
        #[cfg(feature = "tls")]
        if let (Some(cert), Some(key)) = (&self.config.tls_cert, &self.config.tls_key) {
            match crate::tls::load(cert, key) {
                Ok(settings) => {
                    self.tls = Some(settings.config);
                    self.metrics.tls_certificate_expiry = Some(settings.expires.unwrap_or(0));
                    self.metrics.tls_reloads += 1;
                    info!("reloaded the TLS certificate {} and key {}", cert.display(), key.display());
                }
                Err(why) => {
                    self.metrics.tls_reload_failures += 1;
                    log::error!("TLS reload failed, still serving the certificate loaded before: {why}");
                }
            }
            return true;
        }
        false
    }

    fn begin_shutdown(&mut self, now: Instant) {
        let mut sink = [0u8; 64];
        while matches!(self.shutdown_rx.read(&mut sink), Ok(n) if n > 0) {}
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!("shutting down: closing {} connection(s)", self.conns.len());
        self.shutdown_deadline = Some(now + conn::CLOSE_GRACE);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        // Everyone is leaving: no one needs to hear about the others (here; the other
        // nodes of a cluster are told at once).
        self.rooms = Rooms::new(self.config.room_limits);
        self.leave_cluster(now);
        let keys: Vec<ConnId> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if self.conns.get(key).is_some_and(Conn::is_open) {
                self.close(key, CloseCode::Away, "server shutting down", CloseReason::Shutdown);
            } else {
                self.finish(key, CloseReason::Shutdown);
            }
        }
    }
}

/// Seconds since the Unix epoch: TURN credentials expire at a Unix time.
fn unix_time() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

/// An opaque word naming who asked for a TURN credential: random, so that it says
/// nothing about the client (coturn logs it as part of the username).
fn turn_tag() -> String {
    crate::ident::fresh_ident().unwrap_or_else(|| "anonymous".into())
}

/// Answers a client that may not come in with `response` and closes, without keeping it.
fn refuse(mut stream: TcpStream, response: &[u8]) {
    if !response.is_empty() {
        let _ = stream.write(response);
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Read what the client already sent so that closing does not reset the connection.
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

/// Hands the allocator's free pages back to the system. glibc keeps freed small blocks
/// (such as released WebSocket buffers) in its heap, so without this the resident size
/// would stay at its high-water mark; musl's allocator gives memory back by itself.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_free_memory() {}

/// Connections the open-file limit allows, after raising the soft limit to the hard one.
fn default_max_connections() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    // The reserved HTTP slots take descriptors too.
    let headroom = FD_HEADROOM + HTTP_RESERVE as u64;
    usize::try_from(soft.saturating_sub(headroom).clamp(16, 1 << 20)).unwrap_or(1024)
}
