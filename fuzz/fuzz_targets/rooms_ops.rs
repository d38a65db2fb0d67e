//! Sequences of connect / ident / ping / join / signal / leave / disconnect from up to
//! eight connections against the room table, checked after every step against a
//! shadow model kept here.
//!
//! Connection ids come from a `Slab`, as in the server, so a closed connection's id is
//! soon handed to a new one. Idents and rooms come from small pools, so that addresses
//! collide, plus the odd arbitrary string; limits are small and fuzzed too.
//!
//! Checked after every step: the effects are exactly those the model predicts (errors
//! by call and code, everything else byte for byte) and none is for a closed
//! connection; each address is held by exactly one live connection, which lists it;
//! every room member is held by the connection the room lists for it; empty rooms are
//! gone; and once everyone has disconnected, nothing is left.

#![no_main]

use std::collections::{BTreeSet, HashMap};

use arbitrary::Arbitrary;
use diva_signal::protocol::{Call, ErrorCode, Reply, parse_call};
use diva_signal::rooms::{ConnId, Effect, RoomLimits, Rooms};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use slab::Slab;

const SLOTS: usize = 8;
const MAX_OPS: usize = 300;
/// Pools small enough that connections fight over the same addresses. "a:b" makes an
/// address with two colons; "R" and "r" differ only in case.
const IDENTS: [&str; 5] = ["a", "b", "alice", "a:b", "é"];
const ROOMS: [&str; 4] = ["r", "s", "room1", "R"];
const DATA: [&str; 4] =
    [r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}"#, "null", "[1, 2.50]", r#""x""#];

#[derive(Arbitrary, Debug)]
struct Input {
    limits: Limits,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct Limits {
    name_len: u8,
    idents: u8,
    members: u8,
}

impl Limits {
    fn room_limits(&self) -> RoomLimits {
        RoomLimits {
            // Mostly the default; sometimes short enough to refuse pool names.
            max_name_len: if self.name_len < 192 { 256 } else { usize::from(self.name_len % 8) },
            max_idents_per_conn: usize::from(self.idents % 7),
            max_room_members: usize::from(self.members % 7),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Opens the slot's connection; an open one is closed first, so its id is reused.
    Connect(u8),
    Ident(u8),
    Ping(u8),
    Join {
        slot: u8,
        ident: Name,
        room: Name,
    },
    Signal {
        slot: u8,
        from: Addr,
        to: Addr,
        data: u8,
    },
    Leave {
        slot: u8,
        address: Addr,
    },
    Disconnect(u8),
}

#[derive(Arbitrary, Debug)]
enum Name {
    Pool(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Addr {
    /// ROOM:IDENT from the pools.
    Pool {
        room: u8,
        ident: u8,
    },
    /// One of the addresses a slot's connection holds now (a pool address if none).
    HeldBy {
        slot: u8,
        index: u8,
    },
    Other(String),
}

/// What the model says one effect must be.
#[derive(Debug)]
enum Expect {
    Send { to: ConnId, text: String },
    Error { to: ConnId, call: &'static str, code: ErrorCode },
    Ident { to: ConnId },
    Probe { holder: ConnId },
}

/// The shadow model of the room table.
#[derive(Default)]
struct Model {
    limits: RoomLimits,
    /// Address -> holder.
    holders: HashMap<String, ConnId>,
    /// Connection -> addresses, oldest first.
    held: HashMap<ConnId, Vec<String>>,
    /// Room -> (address, holder), in join order.
    rooms: HashMap<String, Vec<(String, ConnId)>>,
}

struct World {
    rooms: Rooms,
    model: Model,
    /// Live connections, keyed by id as in the server; the value is the slot.
    conns: Slab<usize>,
    /// Slot -> its live connection.
    slots: [Option<ConnId>; SLOTS],
}

fuzz_target!(|input: Input| {
    let limits = input.limits.room_limits();
    let mut world = World {
        rooms: Rooms::new(limits),
        model: Model { limits, ..Model::default() },
        conns: Slab::new(),
        slots: [None; SLOTS],
    };
    for op in input.ops.iter().take(MAX_OPS) {
        world.apply(op);
        world.check();
    }
    for slot in 0..SLOTS {
        world.disconnect(slot);
        world.check();
    }
    assert_eq!((world.rooms.room_count(), world.rooms.address_count()), (0, 0));
    assert_eq!(world.rooms.memberships().count(), 0);
});

impl World {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Connect(slot) => {
                let slot = usize::from(*slot) % SLOTS;
                self.disconnect(slot);
                self.conn(slot);
            }
            Op::Disconnect(slot) => self.disconnect(usize::from(*slot) % SLOTS),
            Op::Ident(slot) => {
                let conn = self.conn(usize::from(*slot) % SLOTS);
                self.call(conn, r#"["ident"]"#.to_owned(), vec![Expect::Ident { to: conn }]);
            }
            Op::Ping(slot) => {
                let conn = self.conn(usize::from(*slot) % SLOTS);
                let pong = Expect::Send { to: conn, text: Reply::Pong.to_json() };
                self.call(conn, r#"["ping"]"#.to_owned(), vec![pong]);
            }
            Op::Join { slot, ident, room } => {
                let conn = self.conn(usize::from(*slot) % SLOTS);
                let (ident, room) = (ident.get(&IDENTS), room.get(&ROOMS));
                let message = format!(r#"["join",{},{}]"#, json(ident), json(room));
                let expected = self.model.join(conn, ident, room);
                self.call(conn, message, expected);
            }
            Op::Signal { slot, from, to, data } => {
                let conn = self.conn(usize::from(*slot) % SLOTS);
                let (from, to) = (self.address(from), self.address(to));
                let data = DATA[usize::from(*data) % DATA.len()];
                let message = format!(r#"["signal",{},{},{data}]"#, json(&from), json(&to));
                let expected = self.model.signal(conn, &from, &to, data);
                self.call(conn, message, expected);
            }
            Op::Leave { slot, address } => {
                let conn = self.conn(usize::from(*slot) % SLOTS);
                let address = self.address(address);
                let message = format!(r#"["leave",{}]"#, json(&address));
                let expected = self.model.leave(conn, &address);
                self.call(conn, message, expected);
            }
        }
    }

    /// The slot's live connection, connecting it first if it is closed.
    fn conn(&mut self, slot: usize) -> ConnId {
        *self.slots[slot].get_or_insert_with(|| self.conns.insert(slot))
    }

    /// Closes the slot's connection, as the server does when a client goes.
    fn disconnect(&mut self, slot: usize) {
        let mut out = Vec::new();
        let Some(conn) = self.slots[slot].take() else {
            // A closed connection's id, or one never used: releasing it does nothing.
            let stale = self.conns.vacant_key();
            self.rooms.disconnect(stale, &mut out);
            assert!(out.is_empty(), "disconnecting {stale}, which holds nothing: {out:?}");
            return;
        };
        self.conns.remove(conn);
        let expected = self.model.disconnect(conn);
        self.rooms.disconnect(conn, &mut out);
        self.compare(&expected, &out);
        // Twice is harmless (the server releases on close and again when it drops the socket).
        out.clear();
        self.rooms.disconnect(conn, &mut out);
        assert!(out.is_empty(), "second disconnect of {conn}: {out:?}");
    }

    fn call(&mut self, conn: ConnId, message: String, expected: Vec<Expect>) {
        let call = parse_call(message.as_bytes()).expect("the harness sends well-formed calls");
        check_call_fields(&message, &call);
        let mut out = Vec::new();
        self.rooms.handle(conn, &call, &mut out);
        self.compare(&expected, &out);
    }

    fn address(&self, addr: &Addr) -> String {
        match addr {
            Addr::Pool { room, ident } => pool_address(*room, *ident),
            Addr::HeldBy { slot, index } => self.slots[usize::from(*slot) % SLOTS]
                .and_then(|conn| self.model.held.get(&conn))
                .and_then(|held| held.get(usize::from(*index) % held.len().max(1)).cloned())
                .unwrap_or_else(|| pool_address(*slot, *index)),
            Addr::Other(text) => text.clone(),
        }
    }

    fn compare(&self, expected: &[Expect], actual: &[Effect]) {
        for effect in actual {
            let to = match effect {
                Effect::Send { to, .. } => *to,
                Effect::Probe { holder } => *holder,
                // This table is a single node's: it never asks a registry for anything.
                Effect::Claim { .. } | Effect::Unclaim { .. } | Effect::Forward { .. } => {
                    panic!("cluster effect from a single-node table: {effect:?}")
                }
            };
            assert!(self.conns.contains(to), "effect for closed connection {to}: {effect:?}");
        }
        assert_eq!(expected.len(), actual.len(), "expected {expected:?}\n got {actual:?}");
        for (want, got) in expected.iter().zip(actual) {
            let ok = match (want, got) {
                (Expect::Send { to, text }, Effect::Send { to: got_to, text: got_text, .. }) => {
                    to == got_to && text == got_text
                }
                (Expect::Error { to, call, code }, Effect::Send { to: got_to, text, .. }) => {
                    let value: Value = serde_json::from_str(text).expect("an error reply is JSON");
                    to == got_to
                        && value.as_array().is_some_and(|a| a.len() == 4 && a[3].is_string())
                        && value[0] == "error"
                        && value[1] == *call
                        && value[2] == code.as_str()
                }
                (Expect::Ident { to }, Effect::Send { to: got_to, text, .. }) => {
                    let value: Vec<String> = serde_json::from_str(text).expect("an ident reply");
                    to == got_to
                        && value.len() == 2
                        && value[0] == "ident"
                        && (12..=23).contains(&value[1].len())
                        && value[1].bytes().all(|b| b.is_ascii_lowercase())
                }
                (Expect::Probe { holder }, Effect::Probe { holder: got }) => holder == got,
                _ => false,
            };
            assert!(ok, "expected {want:?}\n got {got:?}\n all expected {expected:?}\n all got {actual:?}");
        }
    }

    /// The room table and the model agree, and the table is consistent in itself.
    fn check(&self) {
        let (rooms, model) = (&self.rooms, &self.model);
        // Each address is held by exactly one live connection, which lists it.
        assert_eq!(rooms.address_count(), model.holders.len());
        for (address, &conn) in &model.holders {
            assert_eq!(rooms.holder(address), Some(conn), "holder of {address:?}");
            assert!(self.conns.contains(conn));
        }
        let mut listed = 0;
        for (conn, _) in self.conns.iter() {
            let held: Vec<&str> = rooms.held_by(conn).iter().map(|a| &**a).collect();
            let want: Vec<&str> = model.held.get(&conn).into_iter().flatten().map(String::as_str).collect();
            assert_eq!(held, want, "addresses of {conn}");
            for address in &held {
                assert_eq!(rooms.holder(address), Some(conn));
            }
            listed += held.len();
        }
        assert_eq!(listed, rooms.address_count(), "an address is held by a closed connection");
        assert!(rooms.held_by(self.conns.vacant_key()).is_empty());

        // Every room member is held by the connection listed for it, in its room.
        let mut real: HashMap<&str, Vec<(String, ConnId)>> = HashMap::new();
        for (room, address, conn) in rooms.memberships() {
            assert_eq!(address.split_once(':').map(|(r, _)| r), Some(room), "{address:?} in room {room:?}");
            assert_eq!(rooms.holder(address), Some(conn), "member {address:?} of {room:?}");
            assert!(self.conns.contains(conn));
            real.entry(room).or_default().push((address.to_owned(), conn));
        }
        assert_eq!(real.len(), model.rooms.len());
        for (room, members) in &model.rooms {
            assert!(!members.is_empty(), "the model keeps an empty room");
            assert_eq!(real.get(room.as_str()), Some(members), "members of {room:?}");
            let addresses: Vec<&str> = rooms.members(room).collect();
            assert!(addresses.iter().eq(members.iter().map(|(a, _)| a)));
        }
        // Empty rooms are gone: the rooms are exactly those of the held addresses.
        let distinct: BTreeSet<&str> =
            model.holders.keys().filter_map(|a| a.split_once(':')).map(|(room, _)| room).collect();
        assert_eq!(rooms.room_count(), distinct.len());
        assert_eq!(real.len(), distinct.len());
    }
}

impl Model {
    fn join(&mut self, conn: ConnId, ident: &str, room: &str) -> Vec<Expect> {
        let refuse = |code| vec![Expect::Error { to: conn, call: "join", code }];
        if !self.valid_name(ident) || !self.valid_name(room) || room.contains(':') {
            return refuse(ErrorCode::BadRequest);
        }
        let address = format!("{room}:{ident}");
        match self.holders.get(&address) {
            Some(&holder) if holder == conn => return refuse(ErrorCode::AlreadyJoined),
            Some(&holder) => {
                let mut out = refuse(ErrorCode::Taken);
                out.push(Expect::Probe { holder });
                return out;
            }
            None => {}
        }
        if self.held.get(&conn).map_or(0, Vec::len) >= self.limits.max_idents_per_conn {
            return refuse(ErrorCode::Limit);
        }
        let members = self.rooms.get(room).map_or(&[][..], Vec::as_slice);
        if members.len() >= self.limits.max_room_members {
            return refuse(ErrorCode::Limit);
        }
        let mut out = vec![Expect::Send { to: conn, text: Reply::Join { address: &address }.to_json() }];
        for (member, member_conn) in members {
            let stun = Reply::Stun { own: member, peer: &address, initiator: false };
            out.push(Expect::Send { to: *member_conn, text: stun.to_json() });
            let stun = Reply::Stun { own: &address, peer: member, initiator: true };
            out.push(Expect::Send { to: conn, text: stun.to_json() });
        }
        self.rooms.entry(room.to_owned()).or_default().push((address.clone(), conn));
        self.holders.insert(address.clone(), conn);
        self.held.entry(conn).or_default().push(address);
        out
    }

    fn signal(&self, conn: ConnId, from: &str, to: &str, data: &str) -> Vec<Expect> {
        let refuse = |code| vec![Expect::Error { to: conn, call: "signal", code }];
        if self.holders.get(from) != Some(&conn) {
            return refuse(ErrorCode::NotOwner);
        }
        // Signals stay within a room: the parts before the first ':' must match.
        let room_of = |address: &str| address.split_once(':').map(|(room, _)| room.to_owned());
        if room_of(to).is_some() && room_of(to) != room_of(from) {
            return refuse(ErrorCode::OtherRoom);
        }
        let Some(&peer) = self.holders.get(to) else { return refuse(ErrorCode::UnknownPeer) };
        let text = format!(r#"["signal",{},{},{data}]"#, json(to), json(from));
        vec![Expect::Send { to: peer, text }]
    }

    fn leave(&mut self, conn: ConnId, address: &str) -> Vec<Expect> {
        if self.holders.get(address) != Some(&conn) {
            return vec![Expect::Error { to: conn, call: "leave", code: ErrorCode::NotOwner }];
        }
        let mut out = vec![Expect::Send { to: conn, text: Reply::Left { address }.to_json() }];
        self.holders.remove(address);
        if let Some(held) = self.held.get_mut(&conn) {
            held.retain(|a| a != address);
            if held.is_empty() {
                self.held.remove(&conn);
            }
        }
        // An explicit leave: every remaining member hears it, the leaver's other addresses too.
        self.remove_member(conn, address, None, &mut out);
        out
    }

    fn disconnect(&mut self, conn: ConnId) -> Vec<Expect> {
        let mut out = Vec::new();
        for address in self.held.remove(&conn).unwrap_or_default() {
            self.holders.remove(&address);
            // A closed connection hears nothing.
            self.remove_member(conn, &address, Some(conn), &mut out);
        }
        out
    }

    fn remove_member(&mut self, conn: ConnId, address: &str, deaf: Option<ConnId>, out: &mut Vec<Expect>) {
        let (room, _) = address.split_once(':').expect("a held address has a room");
        let members = self.rooms.get_mut(room).expect("a held address has its room");
        members.retain(|(a, c)| !(a == address && *c == conn));
        if members.is_empty() {
            self.rooms.remove(room);
            return;
        }
        for (member, member_conn) in members.iter().filter(|(_, c)| Some(*c) != deaf) {
            let text = Reply::PeerLeft { own: member, gone: address }.to_json();
            out.push(Expect::Send { to: *member_conn, text });
        }
    }

    fn valid_name(&self, name: &str) -> bool {
        !name.is_empty()
            && name.len() <= self.limits.max_name_len
            && !name.chars().any(diva_signal::ident::is_forbidden_in_name)
    }
}

/// The parsed call carries the strings the harness put in.
fn check_call_fields(message: &str, call: &Call<'_>) {
    let value: Value = serde_json::from_str(message).expect("harness JSON");
    match call {
        Call::Join { ident, room } => assert!(value[1] == **ident && value[2] == **room),
        Call::Signal { from, to, .. } => assert!(value[1] == **from && value[2] == **to),
        Call::Leave { address } => assert!(value[1] == **address),
        Call::Ident | Call::Ping | Call::Turn => {}
    }
}

impl Name {
    fn get<'a>(&'a self, pool: &[&'a str]) -> &'a str {
        match self {
            Name::Pool(i) => pool[usize::from(*i) % pool.len()],
            Name::Other(text) => text,
        }
    }
}

fn pool_address(room: u8, ident: u8) -> String {
    format!("{}:{}", ROOMS[usize::from(room) % ROOMS.len()], IDENTS[usize::from(ident) % IDENTS.len()])
}

fn json(text: &str) -> String {
    serde_json::to_string(text).expect("a string encodes")
}
