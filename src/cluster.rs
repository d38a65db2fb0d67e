//! The cluster: nodes share rooms through Redis ([CLUSTER.md](../docs/CLUSTER.md)).
//!
//! Redis is the registry: who holds which address (`P:owner`), each room's members in
//! join order (`P:room:ROOM`), each node's addresses (`P:held:NODE`) and the live nodes
//! with their lease (`P:nodes`, expiry in Redis's own clock). Joins and leaves are Lua
//! scripts, so each is atomic; a script publishes what other nodes must hear on their
//! channel (`P:node:NODE`). One RESP3 connection carries both the scripts and the
//! subscription, so a node hears events in the order Redis made them, interleaved
//! correctly with the replies to its own scripts: this is what makes every pair get
//! exactly one `stun` pair across nodes.
//!
//! This module knows the registry's scripts, the events between nodes and the calls in
//! flight; the room table stays pure ([`crate::rooms`]), and the server carries what
//! [`Happening`]s say into it.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::event::Event;
use mio::{Registry, Token};

use crate::metrics::ClusterStats;
use crate::redis::{LinkConfig, LinkEvent, RedisLink, RedisUrl, TlsSettings};
use crate::resp::Value;
use crate::rooms::{ConnId, NodeName};

/// Keys and channels begin with this.
const PREFIX: &str = "diva";
/// Addresses one lease renewal may take from dead nodes (bounds a script's run time).
const REAP_BATCH: u32 = 2000;
/// Relayed signals for one node are published in pieces of at most this many bytes.
const MAX_BATCH: usize = 256 * 1024;
/// What may wait for Redis at once (commands queued, not yet taken by its socket).
const MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;
/// Calls waiting for their reply at once; past this, calls that need Redis are refused.
const MAX_OWED: usize = 10_000;

/// Shared by the scripts: netstrings for events, and giving up one address.
const COMMON: &str = r#"
local P = ARGV[1]
local function ns(s) return #s .. ':' .. s end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function owner_of(a) return redis.call('HGET', P .. ':owner', a) end
local function release(node, a)
  if owner_of(a) ~= node then return 0 end
  redis.call('HDEL', P .. ':owner', a)
  redis.call('SREM', P .. ':held:' .. node, a)
  local room = string.match(a, '^([^:]*):')
  if not room then return 1 end
  local key = P .. ':room:' .. room
  redis.call('LREM', key, 0, a)
  local told = {[node] = true}
  local event = 'L' .. ns(a)
  for _, m in ipairs(redis.call('LRANGE', key, 0, -1)) do
    local n = owner_of(m)
    if n and not told[n] then
      told[n] = true
      redis.call('PUBLISH', P .. ':node:' .. n, event)
    end
  end
  return 1
end
"#;

/// ARGV: prefix, node, address, room, max members, mode (`j` a join, `r` registering
/// again). Replies `{"ok", member, node, ...}` with the members before it in join order,
/// `{"kept", member, node, ...}` (mode `r`, still ours: the members but itself),
/// `{"taken", node}`, `{"full"}`, or `{"gone"}` when this node's lease has run out.
const JOIN: &str = r#"
local node, a, room, max, mode = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local lease = redis.call('ZSCORE', P .. ':nodes', node)
if not lease or tonumber(lease) < now_ms() then return {'gone'} end
local key = P .. ':room:' .. room
local owner = owner_of(a)
local members = redis.call('LRANGE', key, 0, -1)
local reply = {'ok'}
if owner == node and mode == 'r' then
  reply[1] = 'kept'
  for _, m in ipairs(members) do
    if m ~= a then
      reply[#reply + 1] = m
      reply[#reply + 1] = owner_of(m) or ''
    end
  end
  return reply
end
if owner then return {'taken', owner} end
if #members >= max then return {'full'} end
redis.call('HSET', P .. ':owner', a, node)
redis.call('RPUSH', key, a)
redis.call('SADD', P .. ':held:' .. node, a)
local told = {[node] = true}
local event = (mode == 'r' and 'R' or 'J') .. ns(a) .. ns(node)
for _, m in ipairs(members) do
  local n = owner_of(m) or ''
  reply[#reply + 1] = m
  reply[#reply + 1] = n
  if n ~= '' and not told[n] then
    told[n] = true
    redis.call('PUBLISH', P .. ':node:' .. n, event)
  end
end
return reply
"#;

/// ARGV: prefix, node, address. Gives the address up if this node holds it.
const LEAVE: &str = r#"
return release(ARGV[2], ARGV[3])
"#;

/// ARGV: prefix, node, lease in ms, most addresses to reap. Renews this node's lease and
/// releases addresses of nodes whose lease ran out. Replies `{new, live nodes}`, `new`
/// being 1 when this node was not registered (first start, declared dead, or Redis lost
/// its data): its addresses must be registered again.
const TICK: &str = r#"
local node, lease, budget = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local nodes = P .. ':nodes'
local score = redis.call('ZSCORE', nodes, node)
local new = 0
if not score or tonumber(score) < now then new = 1 end
if new == 1 and score then
  -- Declared dead while alive: what it held is released (and others told) first.
  for _, a in ipairs(redis.call('SMEMBERS', P .. ':held:' .. node)) do release(node, a) end
end
redis.call('ZADD', nodes, now + lease, node)
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', nodes, '-inf', '(' .. now, 'LIMIT', 0, 8)) do
  local held = P .. ':held:' .. dead
  for _, a in ipairs(redis.call('SRANDMEMBER', held, budget)) do
    release(dead, a)
    budget = budget - 1
  end
  if redis.call('SCARD', held) == 0 then redis.call('ZREM', nodes, dead) end
  if budget <= 0 then break end
end
return {new, redis.call('ZCOUNT', nodes, now, '+inf')}
"#;

/// ARGV: prefix, node. A node shutting down: gives up all it holds (others are told)
/// and its lease.
const BYE: &str = r#"
local node = ARGV[2]
for _, a in ipairs(redis.call('SMEMBERS', P .. ':held:' .. node)) do release(node, a) end
redis.call('DEL', P .. ':held:' .. node)
return redis.call('ZREM', P .. ':nodes', node)
"#;

/// One registry script: its text and the SHA1 that EVALSHA names it by.
struct Script {
    text: String,
    sha: String,
}

impl Script {
    fn new(body: &str) -> Script {
        use sha1::Digest;
        let text = format!("{COMMON}{body}");
        let digest = sha1::Sha1::digest(text.as_bytes());
        let mut sha = String::with_capacity(40);
        for byte in digest {
            let _ = write!(sha, "{byte:02x}");
        }
        Script { text, sha }
    }
}

/// What the server is to carry into the room table or tell clients.
#[derive(Debug, PartialEq)]
pub enum Happening {
    /// The registry gave `address` to `conn`; `before` are the room's members before it.
    Claimed { conn: ConnId, address: Box<str>, before: Vec<(Box<str>, NodeName)> },
    /// `conn`'s claim was refused; the server answers the join and lets `conn` go on.
    Refused { conn: ConnId, why: Refusal, address: Box<str> },
    /// An address held here was registered again from scratch: it pairs with `members`.
    RegisteredAgain { address: Box<str>, members: Vec<(Box<str>, NodeName)> },
    /// An address held here is still registered; `members` is its room as listed now.
    StillRegistered { address: Box<str>, members: Vec<(Box<str>, NodeName)> },
    /// An address held here could not be registered again: its holder loses it.
    Lost { address: Box<str> },
    /// A member of a room with members here joined on another node, or was registered
    /// there again after its node lost its registrations: pairs with it are made afresh.
    RemoteJoined { address: Box<str>, node: NodeName },
    /// A member on another node left.
    RemoteLeft { address: Box<str> },
    /// A relayed signal for the holder of `to` here.
    Deliver { to: Box<str>, text: String },
    /// Someone elsewhere asked for `address`, held here: probe its holder.
    Probe { address: Box<str> },
    /// The registry lost this node's addresses (declared dead, or restarted empty): the
    /// server forgets the members elsewhere, then calls [`Cluster::register_again`].
    RegisterAgain { from_scratch: bool },
    /// These addresses are registered for this node; those not held here any more are to
    /// be released ([`Cluster::unclaim`]).
    Registered { addresses: Vec<Box<str>> },
}

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Held by a connection on `node`.
    Taken {
        node: NodeName,
    },
    Full,
    /// No Redis connection, or too much waits for it.
    Unavailable,
}

/// A call to Redis whose reply has not come yet, in the order they were sent.
#[derive(Debug)]
enum Owed {
    Claim { conn: Option<ConnId>, address: Box<str> },
    Register { address: Box<str> },
    Leave,
    Tick,
    Held,
    Publish,
}

pub struct Cluster {
    link: RedisLink,
    node: NodeName,
    node_number: u64,
    node_timeout: Duration,
    max_room_members: usize,
    join: Script,
    leave: Script,
    tick: Script,
    bye: Script,
    owed: VecDeque<Owed>,
    /// Relayed signals for other nodes gathered this round, one payload per node.
    batches: HashMap<NodeName, Vec<u8>>,
    next_tick: Instant,
    /// A lease renewal is in flight: no second one.
    tick_owed: bool,
    /// This node has registered since the link last came up.
    registered: bool,
    /// Shutting down: the lease was given up ([`Cluster::leave_cluster`]) and is not
    /// renewed any more.
    left: bool,
    live_nodes: u64,
    messages_out: u64,
    messages_in: u64,
    link_events: Vec<LinkEvent>,
}

impl Cluster {
    /// Prepares the node; it connects on the first timer.
    pub fn new(
        url: &RedisUrl,
        node_timeout: Duration,
        max_room_members: usize,
        token: Token,
        tls: Option<TlsSettings>,
    ) -> io::Result<Cluster> {
        let node_number = fresh_node_id()?;
        let node = format!("{node_number:016x}");
        let join = Script::new(JOIN);
        let leave = Script::new(LEAVE);
        let tick = Script::new(TICK);
        let bye = Script::new(BYE);
        let mut setup: Vec<Vec<Vec<u8>>> = [&join, &leave, &tick, &bye]
            .iter()
            .map(|script| vec![b"SCRIPT".to_vec(), b"LOAD".to_vec(), script.text.as_bytes().to_vec()])
            .collect();
        setup.push(vec![b"SUBSCRIBE".to_vec(), format!("{PREFIX}:node:{node}").into_bytes()]);
        let config = LinkConfig {
            name: format!("diva-signal-{node}"),
            setup,
            reply_timeout: (node_timeout / 2).clamp(Duration::from_millis(500), Duration::from_secs(5)),
            max_queued_bytes: MAX_QUEUED_BYTES + 2 * MAX_BATCH,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            tls,
        };
        let link = RedisLink::new(url, token, config)?;
        info!("cluster node {node}, registry {url}, node timeout {node_timeout:?}");
        let now = Instant::now();
        Ok(Cluster {
            link,
            node: node.into(),
            node_number,
            node_timeout,
            max_room_members,
            join,
            leave,
            tick,
            bye,
            owed: VecDeque::new(),
            batches: HashMap::new(),
            next_tick: now,
            tick_owed: false,
            registered: false,
            left: false,
            live_nodes: 0,
            messages_out: 0,
            messages_in: 0,
            link_events: Vec::new(),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether calls that need Redis can be made now.
    pub fn available(&self) -> bool {
        self.link.is_up() && self.registered && self.owed.len() < MAX_OWED
    }

    /// TLS settings for the next connection to Redis (a reload of the `rediss://` files).
    pub fn set_tls(&mut self, tls: TlsSettings) {
        self.link.set_tls(tls);
    }

    pub fn stats(&self) -> ClusterStats {
        let link = self.link.stats();
        ClusterStats {
            node: self.node_number,
            redis_up: self.link.is_up(),
            live_nodes: if self.link.is_up() { self.live_nodes } else { 0 },
            messages_out: self.messages_out,
            messages_in: self.messages_in,
            reconnects: link.reconnects,
            round_trip_micros: link
                .smoothed_rtt
                .map_or(0, |rtt| u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX)),
        }
    }

    /// Asks the registry for `address` for `conn`. Err when it cannot be asked now.
    pub fn claim(&mut self, conn: ConnId, address: &str, now: Instant) -> Result<(), Refusal> {
        if !self.available() {
            return Err(Refusal::Unavailable);
        }
        self.eval_join(address, b"j", now).map_err(|()| Refusal::Unavailable)?;
        self.owed.push_back(Owed::Claim { conn: Some(conn), address: address.into() });
        Ok(())
    }

    /// `conn` is gone: a claim of its still in flight is given back when granted.
    pub fn forget_conn(&mut self, conn: ConnId) {
        for owed in &mut self.owed {
            if let Owed::Claim { conn: claimant @ Some(_), .. } = owed
                && *claimant == Some(conn)
            {
                *claimant = None;
            }
        }
    }

    /// Gives `address` up in the registry. Without Redis it is dropped: registering
    /// again after the outage releases what is not held any more.
    pub fn unclaim(&mut self, address: &str, now: Instant) {
        if !self.link.is_up() {
            return;
        }
        let node = self.node.clone();
        let args: [&[u8]; 6] = [
            b"EVALSHA",
            self.leave.sha.as_bytes(),
            b"0",
            PREFIX.as_bytes(),
            node.as_bytes(),
            address.as_bytes(),
        ];
        if self.link.send(&args, now).is_ok() {
            self.owed.push_back(Owed::Leave);
        }
    }

    /// Whether a claim of `address` from here waits for its answer.
    pub fn claim_in_flight(&self, address: &str) -> bool {
        self.owed.iter().any(|owed| matches!(owed, Owed::Claim { address: a, .. } if &**a == address))
    }

    /// Shutting down: gives up every address and the lease now, so that the other nodes
    /// tell their members at once rather than after the node timeout.
    pub fn leave_cluster(&mut self, registry: &Registry, now: Instant) {
        self.left = true;
        if !self.link.is_up() {
            return;
        }
        let node = self.node.clone();
        let args: [&[u8]; 5] =
            [b"EVALSHA", self.bye.sha.as_bytes(), b"0", PREFIX.as_bytes(), node.as_bytes()];
        if self.link.send(&args, now).is_ok() {
            self.owed.push_back(Owed::Leave);
        }
        self.registered = false;
        self.link.flush(registry, now);
    }

    /// Queues `text` for the holder of `to` on `node`; sent with the round's other
    /// messages for that node as one publish.
    pub fn forward(&mut self, node: &NodeName, to: &str, text: &str, now: Instant) -> Result<(), Refusal> {
        let gathered: usize = self.batches.values().map(Vec::len).sum();
        if !self.available() || self.link.queued_bytes() + gathered + text.len() > MAX_QUEUED_BYTES {
            // Redis is away or not keeping up: the sender hears it now, not never.
            return Err(Refusal::Unavailable);
        }
        let batch = self.batches.entry(node.clone()).or_default();
        push_record(batch, b'S', &[to.as_bytes(), text.as_bytes()]);
        self.messages_out += 1;
        if batch.len() >= MAX_BATCH {
            let payload = std::mem::take(batch);
            self.publish(node, &payload, now);
        }
        Ok(())
    }

    /// Asks `node` to probe the holder of `address`.
    pub fn probe_remote(&mut self, node: &NodeName, address: &str) {
        if self.link.is_up() {
            let batch = self.batches.entry(node.clone()).or_default();
            push_record(batch, b'P', &[address.as_bytes()]);
        }
    }

    /// Registers every address held here again (after [`Happening::RegisterAgain`]).
    pub fn register_again<'a>(&mut self, addresses: impl Iterator<Item = &'a str>, now: Instant) {
        for address in addresses {
            if self.eval_join(address, b"r", now).is_ok() {
                self.owed.push_back(Owed::Register { address: address.into() });
            }
        }
    }

    /// Sends what the round gathered: one publish per node.
    pub fn flush(&mut self, registry: &Registry, now: Instant) {
        if !self.batches.is_empty() {
            let batches: Vec<(NodeName, Vec<u8>)> = self
                .batches
                .iter_mut()
                .filter(|(_, b)| !b.is_empty())
                .map(|(n, b)| (n.clone(), std::mem::take(b)))
                .collect();
            for (node, payload) in batches {
                self.publish(&node, &payload, now);
            }
            // Nodes come and go: keep the map from growing with dead ones.
            if self.batches.len() > 64 {
                self.batches.clear();
            }
        }
        self.link.flush(registry, now);
    }

    fn publish(&mut self, node: &str, payload: &[u8], now: Instant) {
        let channel = format!("{PREFIX}:node:{node}");
        let args: [&[u8]; 3] = [b"PUBLISH", channel.as_bytes(), payload];
        if self.link.send(&args, now).is_ok() {
            self.owed.push_back(Owed::Publish);
        }
    }

    fn eval_join(&mut self, address: &str, mode: &[u8], now: Instant) -> Result<(), ()> {
        let Some((room, _)) = address.split_once(':') else { return Err(()) };
        let node = self.node.clone();
        let max = self.max_room_members.to_string();
        let args: [&[u8]; 9] = [
            b"EVALSHA",
            self.join.sha.as_bytes(),
            b"0",
            PREFIX.as_bytes(),
            node.as_bytes(),
            address.as_bytes(),
            room.as_bytes(),
            max.as_bytes(),
            mode,
        ];
        self.link.send(&args, now).map_err(|_| ())
    }

    /// When the cluster next needs a timer call.
    pub fn next_deadline(&self) -> Option<Instant> {
        let tick = if self.link.is_up() { Some(self.next_tick) } else { None };
        match (tick, self.link.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Timers: connecting, reply deadlines, lease renewal.
    pub fn on_timer(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Happening>) {
        let mut events = std::mem::take(&mut self.link_events);
        self.link.on_timer(registry, now, &mut events);
        self.take_link_events(&mut events, now, out);
        self.link_events = events;
        if self.link.is_up() && now >= self.next_tick && !self.tick_owed && !self.left {
            self.renew_lease(now);
        }
    }

    /// The Redis socket is ready.
    pub fn on_event(&mut self, registry: &Registry, event: &Event, now: Instant, out: &mut Vec<Happening>) {
        let mut events = std::mem::take(&mut self.link_events);
        self.link.on_event(registry, event, now, &mut events);
        self.take_link_events(&mut events, now, out);
        self.link_events = events;
    }

    fn renew_lease(&mut self, now: Instant) {
        let node = self.node.clone();
        let lease = self.node_timeout.as_millis().to_string();
        let budget = REAP_BATCH.to_string();
        let args: [&[u8]; 7] = [
            b"EVALSHA",
            self.tick.sha.as_bytes(),
            b"0",
            PREFIX.as_bytes(),
            node.as_bytes(),
            lease.as_bytes(),
            budget.as_bytes(),
        ];
        if self.link.send(&args, now).is_ok() {
            self.owed.push_back(Owed::Tick);
            self.tick_owed = true;
        }
        self.next_tick = now + self.tick_interval();
    }

    fn tick_interval(&self) -> Duration {
        (self.node_timeout / 4).max(Duration::from_millis(100))
    }

    fn take_link_events(&mut self, events: &mut Vec<LinkEvent>, now: Instant, out: &mut Vec<Happening>) {
        for event in events.drain(..) {
            match event {
                LinkEvent::Up => {
                    info!("cluster: connected to Redis");
                    self.registered = false;
                    self.tick_owed = false;
                    if !self.left {
                        self.renew_lease(now);
                    }
                }
                LinkEvent::Down { why, .. } => {
                    warn!("cluster: Redis connection lost ({why}); relaying among this node's clients only");
                    self.registered = false;
                    self.tick_owed = false;
                    self.batches.clear();
                    for owed in std::mem::take(&mut self.owed) {
                        if let Owed::Claim { conn: Some(conn), address } = owed {
                            out.push(Happening::Refused { conn, why: Refusal::Unavailable, address });
                        }
                    }
                }
                LinkEvent::Reply(value) => self.on_reply(value, now, out),
                LinkEvent::Push(value) => self.on_push(value, out),
            }
        }
    }

    fn on_reply(&mut self, value: Value, now: Instant, out: &mut Vec<Happening>) {
        let Some(owed) = self.owed.pop_front() else {
            warn!("cluster: a reply from Redis that no call was waiting for");
            return;
        };
        if let Value::Error(why) = &value {
            warn!("cluster: Redis refused a call ({why})");
        }
        match owed {
            Owed::Claim { conn, address } => {
                let (status, members) = join_reply(value);
                match (status.as_str(), conn) {
                    ("ok", Some(conn)) => out.push(Happening::Claimed { conn, address, before: members }),
                    ("ok", None) => self.unclaim(&address, now),
                    (_, None) => {}
                    ("taken", Some(conn)) => {
                        let node: NodeName =
                            members.first().map_or_else(|| "".into(), |(n, _)| (&**n).into());
                        out.push(Happening::Refused { conn, why: Refusal::Taken { node }, address });
                    }
                    ("full", Some(conn)) => {
                        out.push(Happening::Refused { conn, why: Refusal::Full, address })
                    }
                    (other, Some(conn)) => {
                        if other == "gone" {
                            // Our lease ran out while we were busy: renew now.
                            self.registered = false;
                            self.renew_lease(now);
                        }
                        out.push(Happening::Refused { conn, why: Refusal::Unavailable, address });
                    }
                }
            }
            Owed::Register { address } => {
                let (status, members) = join_reply(value);
                match status.as_str() {
                    "ok" => out.push(Happening::RegisteredAgain { address, members }),
                    "kept" => out.push(Happening::StillRegistered { address, members }),
                    "taken" | "full" => {
                        info!(
                            "cluster: {address:?} was taken or its room filled while this node was cut off"
                        );
                        out.push(Happening::Lost { address });
                    }
                    _ => {}
                }
            }
            Owed::Tick => {
                self.tick_owed = false;
                let fields = value.into_array().unwrap_or_default();
                let mut numbers = fields.iter().filter_map(Value::as_int);
                let new = numbers.next();
                self.live_nodes = numbers.next().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
                let Some(new) = new else { return };
                if new == 1 || !self.registered {
                    let from_scratch = new == 1;
                    if from_scratch {
                        debug!("cluster: node registered (again)");
                    }
                    self.registered = true;
                    out.push(Happening::RegisterAgain { from_scratch });
                    // What Redis still lists for us that is not held here any more.
                    let key = format!("{PREFIX}:held:{}", self.node);
                    let args: [&[u8]; 2] = [b"SMEMBERS", key.as_bytes()];
                    if self.link.send(&args, now).is_ok() {
                        self.owed.push_back(Owed::Held);
                    }
                }
            }
            Owed::Held => {
                let addresses = value
                    .into_array()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(text)
                    .map(String::into_boxed_str)
                    .collect();
                out.push(Happening::Registered { addresses });
            }
            Owed::Leave | Owed::Publish => {}
        }
    }

    fn on_push(&mut self, value: Value, out: &mut Vec<Happening>) {
        let mut parts = value.into_array().unwrap_or_default().into_iter();
        let kind = parts.next().and_then(text);
        if kind.as_deref() != Some("message") {
            return;
        }
        let Some(payload) = parts.nth(1).and_then(Value::into_bytes) else { return };
        let mut rest = payload.as_slice();
        while let Some((&kind, tail)) = rest.split_first() {
            rest = tail;
            let fields = match kind {
                b'S' | b'J' | b'R' => 2,
                b'L' | b'P' => 1,
                _ => {
                    warn!("cluster: an event of unknown kind {kind}; rest of the message dropped");
                    return;
                }
            };
            let mut values: [&[u8]; 2] = [&[], &[]];
            for slot in values.iter_mut().take(fields) {
                let Some((field, tail)) = take_field(rest) else {
                    warn!("cluster: a malformed event; rest of the message dropped");
                    return;
                };
                *slot = field;
                rest = tail;
            }
            let [first, second] = values;
            let (Ok(first), Ok(second)) = (std::str::from_utf8(first), std::str::from_utf8(second)) else {
                continue;
            };
            match kind {
                b'S' => {
                    self.messages_in += 1;
                    out.push(Happening::Deliver { to: first.into(), text: second.to_owned() });
                }
                b'J' | b'R' => {
                    out.push(Happening::RemoteJoined { address: first.into(), node: second.into() })
                }
                b'L' => out.push(Happening::RemoteLeft { address: first.into() }),
                _ => out.push(Happening::Probe { address: first.into() }),
            }
        }
    }
}

/// A join script's reply: its status word and (member, node) pairs, or for `taken` the
/// holder's node as the first pair's first field.
fn join_reply(value: Value) -> (String, Vec<(Box<str>, NodeName)>) {
    let mut fields = value.into_array().unwrap_or_default().into_iter().filter_map(text);
    let status = fields.next().unwrap_or_default();
    let mut pairs = Vec::new();
    if status == "taken" {
        if let Some(node) = fields.next() {
            pairs.push((node.into_boxed_str(), NodeName::from("")));
        }
        return (status, pairs);
    }
    while let (Some(member), Some(node)) = (fields.next(), fields.next()) {
        pairs.push((member.into_boxed_str(), NodeName::from(node)));
    }
    (status, pairs)
}

/// A string reply as text.
fn text(value: Value) -> Option<String> {
    value.into_bytes().and_then(|bytes| String::from_utf8(bytes).ok())
}

/// One event: its kind, then each field as a netstring (`LEN:BYTES`).
fn push_record(out: &mut Vec<u8>, kind: u8, fields: &[&[u8]]) {
    out.push(kind);
    for field in fields {
        out.extend_from_slice(field.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(field);
    }
}

/// Reads one netstring field; None when malformed.
fn take_field(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = input.iter().take(12).position(|&b| b == b':')?;
    let (digits, rest) = input.split_at(colon);
    let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let rest = rest.get(1..)?;
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// A random name for this node for this run (shown as 16 hex digits).
fn fresh_node_id() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|err| io::Error::other(format!("no randomness for the node id: {err}")))?;
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_malformed_ones_stop() {
        let mut payload = Vec::new();
        push_record(&mut payload, b'S', &[b"r:b", br#"["signal","r:b","r:a",{"x":"1:2"}]"#]);
        push_record(&mut payload, b'P', &[b"r:c"]);
        let (to, rest) = take_field(payload.get(1..).unwrap()).unwrap();
        assert_eq!(to, b"r:b");
        let (text, rest) = take_field(rest).unwrap();
        assert_eq!(text, br#"["signal","r:b","r:a",{"x":"1:2"}]"#);
        assert_eq!(rest.first(), Some(&b'P'));
        assert_eq!(take_field(b"5:abc"), None);
        assert_eq!(take_field(b"x:abc"), None);
        assert_eq!(take_field(b"99999999999999999999:a"), None);
    }

    #[test]
    fn scripts_are_named_by_the_sha1_of_their_text() {
        let script = Script::new("return 1");
        assert_eq!(script.sha.len(), 40);
        assert!(script.text.ends_with("return 1"));
    }
}
