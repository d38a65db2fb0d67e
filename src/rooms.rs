//! The room table: who holds which address, who is in which room, and what each
//! call makes the server send. Pure: it takes (connection, call) and appends
//! [`Effect`]s for the caller to carry out; it never touches a socket.

use std::collections::{HashMap, HashSet};

use crate::ident::{self, fresh_ident};
use crate::protocol::{Call, ErrorCode, Reply, ReplyKind};

/// A connection, as the server names it (its slab key).
pub type ConnId = usize;

/// What the room table asks the server to do.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Send this JSON text to the connection. `relayed_from` names the client whose
    /// `signal` this is; `None` for the server's own replies and notices.
    Send { to: ConnId, text: String, kind: ReplyKind, relayed_from: Option<ConnId> },
    /// Someone asked for an address this connection holds: check that it is still alive.
    Probe { holder: ConnId },
    /// Cluster: ask the registry for `address` for `conn`. [`Rooms::claimed`] follows
    /// when it is granted; the caller answers a refusal.
    Claim { conn: ConnId, address: Box<str> },
    /// Cluster: `address` was given up here; the registry releases it.
    Unclaim { address: Box<str> },
    /// Cluster: `text` for whoever holds `to` on `node` (a relayed signal from `from`).
    Forward { node: NodeName, to: Box<str>, text: String, from: ConnId },
}

/// A cluster node's id, as the registry names it.
pub type NodeName = std::sync::Arc<str>;

/// Where a room member is connected.
#[derive(Debug, Clone, PartialEq)]
enum Holder {
    Local(ConnId),
    /// On another node of the cluster: known from the registry's answers and events.
    Remote(NodeName),
}

/// Bounds on what one connection or room may hold.
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    /// Longest ident or room name, in bytes.
    pub max_name_len: usize,
    /// Addresses one connection may hold at once.
    pub max_idents_per_conn: usize,
    /// Members one room may have at once.
    pub max_room_members: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits { max_name_len: 256, max_idents_per_conn: 32, max_room_members: 256 }
    }
}

#[derive(Debug)]
struct Member {
    address: Box<str>,
    holder: Holder,
}

impl Member {
    fn local(&self) -> Option<ConnId> {
        match self.holder {
            Holder::Local(conn) => Some(conn),
            Holder::Remote(_) => None,
        }
    }
}

/// All rooms, their members in join order, and which connection holds each address.
#[derive(Debug, Default)]
pub struct Rooms {
    limits: RoomLimits,
    /// Room name -> members, oldest first.
    rooms: HashMap<Box<str>, Vec<Member>>,
    /// Address ("ROOM:IDENT") -> the connection holding it.
    holders: HashMap<Box<str>, ConnId>,
    /// Connection -> addresses it holds, oldest first.
    held: HashMap<ConnId, Vec<Box<str>>>,
    /// Cluster: members on other nodes of the rooms that have members here, by address.
    remote: HashMap<Box<str>, NodeName>,
    /// Cluster: addresses here whose registration was lost (the registry restarted empty,
    /// or declared this node dead) and is not made again yet. They heard every member
    /// elsewhere leave, and are paired afresh by their own registration, not before.
    awaiting_registration: HashSet<Box<str>>,
    /// Cluster: joins are claimed from the registry first, signals may go to other nodes.
    clustered: bool,
}

impl Rooms {
    pub fn new(limits: RoomLimits) -> Self {
        Rooms { limits, ..Rooms::default() }
    }

    /// A room table for a cluster node: a join becomes [`Effect::Claim`] and is done by
    /// [`Rooms::claimed`]; released addresses become [`Effect::Unclaim`].
    pub fn clustered(limits: RoomLimits) -> Self {
        Rooms { limits, clustered: true, ..Rooms::default() }
    }

    /// Every address held here, oldest connection's first: what a node registers again.
    pub fn local_addresses(&self) -> impl Iterator<Item = &str> {
        self.held.values().flatten().map(|a| &**a)
    }

    /// Number of rooms with at least one member.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Number of addresses held by all connections.
    pub fn address_count(&self) -> usize {
        self.holders.len()
    }

    /// The connection holding `address`, if any.
    pub fn holder(&self, address: &str) -> Option<ConnId> {
        self.holders.get(address).copied()
    }

    /// The addresses `conn` holds, oldest first.
    pub fn held_by(&self, conn: ConnId) -> &[Box<str>] {
        self.held.get(&conn).map_or(&[], Vec::as_slice)
    }

    /// Addresses of the members of `room`, in join order.
    pub fn members(&self, room: &str) -> impl Iterator<Item = &str> {
        self.rooms.get(room).into_iter().flatten().map(|m| &*m.address)
    }

    /// Every membership: (room, member address, connection holding it), with each
    /// room's members in join order and the rooms in no particular order. Read-only;
    /// for consistency checks (the `rooms_ops` fuzz target) and diagnostics.
    pub fn memberships(&self) -> impl Iterator<Item = (&str, &str, ConnId)> {
        self.rooms.iter().flat_map(|(room, members)| {
            members.iter().filter_map(move |m| Some((&**room, &*m.address, m.local()?)))
        })
    }

    /// Number of members on other nodes that this node knows of (cluster).
    pub fn remote_count(&self) -> usize {
        self.remote.len()
    }

    /// Carries out one call from `conn`, appending what to send to `out`.
    pub fn handle(&mut self, conn: ConnId, call: &Call<'_>, out: &mut Vec<Effect>) {
        match call {
            Call::Ident => match fresh_ident() {
                Some(ident) => send(out, conn, Reply::Ident(&ident)),
                None => refuse(out, conn, call, ErrorCode::Internal, "no randomness available"),
            },
            Call::Ping => send(out, conn, Reply::Pong),
            // The server answers it (configuration and clock): nothing for the rooms to do.
            Call::Turn => {}
            Call::Join { ident, room } => self.join(conn, call, ident, room, out),
            Call::Signal { from, to, data } => {
                if self.holder(from) != Some(conn) {
                    return refuse(out, conn, call, ErrorCode::NotOwner, NOT_OWNER);
                }
                // Peers learn addresses only from `stun`, which pairs members of one room,
                // so a signal across rooms is never one a client needs.
                let from_room = from.split_once(':').map(|(room, _)| room);
                match to.split_once(':') {
                    Some((room, _)) if Some(room) != from_room => {
                        return refuse(out, conn, call, ErrorCode::OtherRoom, OTHER_ROOM);
                    }
                    _ => {}
                }
                let reply = Reply::Signal { to, from, data: *data };
                if let Some(peer) = self.holder(to) {
                    let kind = reply.kind();
                    out.push(Effect::Send {
                        to: peer,
                        text: reply.to_json(),
                        kind,
                        relayed_from: Some(conn),
                    });
                } else if let Some(node) = self.remote.get(&**to) {
                    let node = node.clone();
                    out.push(Effect::Forward { node, to: (&**to).into(), text: reply.to_json(), from: conn });
                } else {
                    refuse(out, conn, call, ErrorCode::UnknownPeer, UNKNOWN_PEER);
                }
            }
            Call::Leave { address } => {
                if self.holder(address) != Some(conn) {
                    return refuse(out, conn, call, ErrorCode::NotOwner, NOT_OWNER);
                }
                send(out, conn, Reply::Left { address });
                self.release(conn, address, out);
            }
        }
    }

    /// Forgets every address `conn` holds and tells the rooms it was in.
    pub fn disconnect(&mut self, conn: ConnId, out: &mut Vec<Effect>) {
        for address in self.held.remove(&conn).unwrap_or_default() {
            self.holders.remove(&address);
            self.awaiting_registration.remove(&address);
            self.remove_member(conn, &address, Notify::OtherConnections, out);
            if self.clustered {
                out.push(Effect::Unclaim { address });
            }
        }
    }

    fn join(&mut self, conn: ConnId, call: &Call<'_>, ident: &str, room: &str, out: &mut Vec<Effect>) {
        if let Err(detail) = self.check_name(ident).and(self.check_name(room)) {
            return refuse(out, conn, call, ErrorCode::BadRequest, detail);
        }
        if room.contains(':') {
            return refuse(out, conn, call, ErrorCode::BadRequest, "room must not contain ':'");
        }
        let address: Box<str> = format!("{room}:{ident}").into();
        match self.holder(&address) {
            Some(holder) if holder == conn => {
                return refuse(out, conn, call, ErrorCode::AlreadyJoined, ALREADY_JOINED);
            }
            Some(holder) => {
                refuse(out, conn, call, ErrorCode::Taken, TAKEN);
                return out.push(Effect::Probe { holder });
            }
            None => {}
        }
        if self.held_by(conn).len() >= self.limits.max_idents_per_conn {
            return refuse(out, conn, call, ErrorCode::Limit, "too many idents on this connection");
        }
        if self.rooms.get(room).map_or(0, Vec::len) >= self.limits.max_room_members {
            return refuse(out, conn, call, ErrorCode::Limit, ROOM_FULL);
        }
        if self.clustered {
            // The registry decides (ownership and room size are cluster-wide).
            return out.push(Effect::Claim { conn, address });
        }
        let members = self.rooms.entry(room.into()).or_default();

        send(out, conn, Reply::Join { address: &address });
        for member in members.iter() {
            let Some(holder) = member.local() else { continue };
            let stun = Reply::Stun { own: &member.address, peer: &address, initiator: false };
            send(out, holder, stun);
            let stun = Reply::Stun { own: &address, peer: &member.address, initiator: true };
            send(out, conn, stun);
        }
        members.push(Member { address: address.clone(), holder: Holder::Local(conn) });
        self.holders.insert(address.clone(), conn);
        self.held.entry(conn).or_default().push(address);
    }

    /// Cluster: the registry gave `address` to `conn`. `before` are the room's members
    /// in join order as the registry holds them, each with its node; those on `own_node`
    /// are here. Acknowledges the join and pairs the joiner with each of them (the joiner
    /// initiates); members elsewhere hear of it from their own nodes.
    pub fn claimed(
        &mut self,
        conn: ConnId,
        address: &str,
        before: &[(Box<str>, NodeName)],
        own_node: &str,
        out: &mut Vec<Effect>,
    ) {
        let Some((room, _)) = address.split_once(':') else { return };
        send(out, conn, Reply::Join { address });
        self.pair_with(conn, address, before, own_node, out);
        let address: Box<str> = address.into();
        let members = self.rooms.entry(room.into()).or_default();
        members.push(Member { address: address.clone(), holder: Holder::Local(conn) });
        self.holders.insert(address.clone(), conn);
        self.held.entry(conn).or_default().push(address);
    }

    /// Cluster: `address`, held here, had been released in the registry (this node was
    /// declared dead, or the registry restarted empty) and is registered again; `before`
    /// are the room's members as listed now. The other nodes were told it left, so its
    /// pairs with members elsewhere are redone: each one it knew hears `leave`, those no
    /// longer listed are gone, and it initiates with every listed one, as a fresh join
    /// would. Members here stay paired with it.
    pub fn registered_again(
        &mut self,
        address: &str,
        before: &[(Box<str>, NodeName)],
        own_node: &str,
        out: &mut Vec<Effect>,
    ) {
        let Some(conn) = self.holder(address) else { return };
        let Some((room, _)) = address.split_once(':') else { return };
        let unlisted: Vec<Box<str>> = self
            .rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter(|m| m.local().is_none() && !before.iter().any(|(a, _)| *a == m.address))
            .map(|m| m.address.clone())
            .collect();
        for gone in unlisted {
            self.remote_left(&gone, out);
        }
        let elsewhere: Vec<(Box<str>, NodeName)> =
            before.iter().filter(|(_, node)| &**node != own_node).cloned().collect();
        // One that waited heard every member elsewhere leave already; one that did not
        // (its registration alone went missing) hears it of those it was paired with.
        let heard_leaves = self.awaiting_registration.remove(address);
        for (member, _) in &elsewhere {
            if !heard_leaves && self.remote.contains_key(member) {
                send(out, conn, Reply::PeerLeft { own: address, gone: member });
            }
        }
        self.pair_with(conn, address, &elsewhere, own_node, out);
    }

    /// Stun pairs between `conn`'s `address` (the initiator) and `before`, in order.
    fn pair_with(
        &mut self,
        conn: ConnId,
        address: &str,
        before: &[(Box<str>, NodeName)],
        own_node: &str,
        out: &mut Vec<Effect>,
    ) {
        let Some((room, _)) = address.split_once(':') else { return };
        for (member, node) in before {
            if &**member == address {
                continue;
            }
            if &**node == own_node {
                // Here: it hears of the joiner from us. (Gone meanwhile: its release is on its way.)
                let Some(holder) = self.holder(member) else { continue };
                send(out, holder, Reply::Stun { own: member, peer: address, initiator: false });
            } else if !self.remote.contains_key(&**member) {
                self.remote.insert(member.clone(), node.clone());
                let members = self.rooms.entry(room.into()).or_default();
                members.push(Member { address: member.clone(), holder: Holder::Remote(node.clone()) });
            }
            send(out, conn, Reply::Stun { own: address, peer: member, initiator: true });
        }
    }

    /// Cluster: `address` joined its room on `node`. The members here are paired with it
    /// (it initiates). If it was known already: with `redo` (a join or a registration
    /// from scratch: its node pairs it afresh) the members here hear it left first;
    /// without (a registry listing) it is left as it is.
    pub fn remote_joined(&mut self, address: &str, node: NodeName, redo: bool, out: &mut Vec<Effect>) {
        let Some((room, _)) = address.split_once(':') else { return };
        if self.holders.contains_key(address) {
            return;
        }
        if !self.rooms.contains_key(room) {
            return;
        }
        if let Some(known) = self.remote.get_mut(address) {
            *known = node.clone();
            if !redo {
                return;
            }
            // Its leave went missing (this node was cut off): said now, then paired again.
            self.remote_left(address, out);
        }
        let Some(members) = self.rooms.get_mut(room) else { return };
        for member in members.iter() {
            // One awaiting its registration pairs with this one when registered.
            if let Some(holder) = member.local()
                && !self.awaiting_registration.contains(&member.address)
            {
                send(out, holder, Reply::Stun { own: &member.address, peer: address, initiator: false });
            }
        }
        members.push(Member { address: address.into(), holder: Holder::Remote(node.clone()) });
        self.remote.insert(address.into(), node);
    }

    /// Cluster: `address`, held on another node, left its room; the members here hear it.
    pub fn remote_left(&mut self, address: &str, out: &mut Vec<Effect>) {
        if self.remote.remove(address).is_none() {
            return;
        }
        let Some((room, _)) = address.split_once(':') else { return };
        let Some(members) = self.rooms.get_mut(room) else { return };
        members.retain(|m| &*m.address != address);
        for member in members.iter() {
            // One awaiting its registration is not paired with it (yet): nothing to undo.
            if let Some(holder) = member.local()
                && !self.awaiting_registration.contains(&member.address)
            {
                send(out, holder, Reply::PeerLeft { own: &member.address, gone: address });
            }
        }
    }

    /// Cluster: the members elsewhere of `address`'s room, as the registry lists them now
    /// (`listed`, with their nodes). Those we did not know joined while this node could
    /// not hear of it; those we knew and are not listed left meanwhile.
    pub fn reconcile(
        &mut self,
        address: &str,
        listed: &[(Box<str>, NodeName)],
        own_node: &str,
        out: &mut Vec<Effect>,
    ) {
        let Some((room, _)) = address.split_once(':') else { return };
        let gone: Vec<Box<str>> = self
            .rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter(|m| m.local().is_none() && !listed.iter().any(|(a, _)| *a == m.address))
            .map(|m| m.address.clone())
            .collect();
        for address in gone {
            self.remote_left(&address, out);
        }
        for (member, node) in listed {
            if &**node != own_node {
                self.remote_joined(member, node.clone(), false, out);
            }
        }
    }

    /// Cluster: this node's registrations were lost (it was declared dead, or the
    /// registry restarted empty), so the other nodes dropped its members. Forgets every
    /// member elsewhere and tells the members here they left; registering again pairs
    /// them afresh.
    pub fn forget_remote(&mut self, out: &mut Vec<Effect>) {
        let gone: Vec<Box<str>> = self.remote.keys().cloned().collect();
        for address in gone {
            self.remote_left(&address, out);
        }
        self.awaiting_registration = self.holders.keys().cloned().collect();
    }

    /// Cluster: `address` could not be registered again (another node took it, or its
    /// room filled up, while this node was cut off): its holder loses it.
    pub fn lost(&mut self, address: &str, out: &mut Vec<Effect>) {
        let Some(conn) = self.holder(address) else { return };
        send(out, conn, Reply::Left { address });
        self.holders.remove(address);
        self.awaiting_registration.remove(address);
        if let Some(held) = self.held.get_mut(&conn) {
            held.retain(|a| &**a != address);
            if held.is_empty() {
                self.held.remove(&conn);
            }
        }
        self.remove_member(conn, address, Notify::OtherConnections, out);
    }

    /// Gives up one address held by `conn` and tells the rest of its room.
    fn release(&mut self, conn: ConnId, address: &str, out: &mut Vec<Effect>) {
        self.holders.remove(address);
        self.awaiting_registration.remove(address);
        if let Some(held) = self.held.get_mut(&conn) {
            held.retain(|a| &**a != address);
            if held.is_empty() {
                self.held.remove(&conn);
            }
        }
        self.remove_member(conn, address, Notify::AllMembers, out);
        if self.clustered {
            out.push(Effect::Unclaim { address: address.into() });
        }
    }

    fn remove_member(&mut self, conn: ConnId, address: &str, notify: Notify, out: &mut Vec<Effect>) {
        let Some((room, _)) = address.split_once(':') else { return };
        let Some(members) = self.rooms.get_mut(room) else { return };
        members.retain(|m| !(m.holder == Holder::Local(conn) && &*m.address == address));
        if !members.iter().any(|m| m.local().is_some()) {
            // No member here any more: the registry stops telling this node of the room.
            for member in members.iter() {
                self.remote.remove(&member.address);
            }
            self.rooms.remove(room);
            return;
        }
        for member in members.iter() {
            let Some(holder) = member.local() else { continue };
            if notify == Notify::AllMembers || holder != conn {
                send(out, holder, Reply::PeerLeft { own: &member.address, gone: address });
            }
        }
    }

    fn check_name(&self, name: &str) -> Result<(), &'static str> {
        if name.is_empty() {
            Err("ident and room must not be empty")
        } else if name.len() > self.limits.max_name_len {
            Err("ident or room is too long")
        } else if name.chars().any(ident::is_forbidden_in_name) {
            Err("ident and room must not contain control or invisible formatting characters")
        } else {
            Ok(())
        }
    }
}

/// Who hears that an address left its room.
#[derive(Clone, Copy, PartialEq)]
enum Notify {
    /// An explicit leave: the holder's other addresses in the room hear it too.
    AllMembers,
    /// A closed connection: it cannot hear anything any more.
    OtherConnections,
}

const NOT_OWNER: &str = "this connection has not joined that address";
const UNKNOWN_PEER: &str = "no peer holds that address";
const OTHER_ROOM: &str = "signals go only between addresses of one room";
const ALREADY_JOINED: &str = "this connection already holds that address";
const TAKEN: &str = "another connection holds that address";
const ROOM_FULL: &str = "room is full";

fn send(out: &mut Vec<Effect>, to: ConnId, reply: Reply<'_>) {
    out.push(Effect::Send { to, text: reply.to_json(), kind: reply.kind(), relayed_from: None });
}

fn refuse(out: &mut Vec<Effect>, conn: ConnId, call: &Call<'_>, code: ErrorCode, detail: &str) {
    send(out, conn, Reply::Error { call: call.name(), code, detail });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse_call;

    /// Applies one JSON call and returns (recipient, text) pairs and probes.
    fn call(rooms: &mut Rooms, conn: ConnId, json: &str) -> Vec<(ConnId, String)> {
        let call = parse_call(json.as_bytes()).expect("test call parses");
        let mut out = Vec::new();
        rooms.handle(conn, &call, &mut out);
        out.into_iter()
            .map(|effect| match effect {
                Effect::Send { to, text, .. } => (to, text),
                Effect::Probe { holder } => (holder, "PROBE".to_owned()),
                other => panic!("a single node makes no cluster effect: {other:?}"),
            })
            .collect()
    }

    fn sent(to: ConnId, text: &str) -> (ConnId, String) {
        (to, text.to_owned())
    }

    fn error_code(replies: &[(ConnId, String)]) -> Option<String> {
        let (_, text) = replies.first()?;
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        (value.get(0)? == "error").then(|| value.get(2)?.as_str().map(str::to_owned))?
    }

    #[test]
    fn join_stuns_every_member_in_join_order() {
        let mut rooms = Rooms::default();
        assert_eq!(call(&mut rooms, 1, r#"["join","a","r"]"#), [sent(1, r#"["join","r:a"]"#)]);
        assert_eq!(
            call(&mut rooms, 2, r#"["join","b","r"]"#),
            [
                sent(2, r#"["join","r:b"]"#),
                sent(1, r#"["stun","r:a","r:b",false]"#),
                sent(2, r#"["stun","r:b","r:a",true]"#),
            ]
        );
        assert_eq!(
            call(&mut rooms, 3, r#"["join","c","r"]"#),
            [
                sent(3, r#"["join","r:c"]"#),
                sent(1, r#"["stun","r:a","r:c",false]"#),
                sent(3, r#"["stun","r:c","r:a",true]"#),
                sent(2, r#"["stun","r:b","r:c",false]"#),
                sent(3, r#"["stun","r:c","r:b",true]"#),
            ]
        );
        assert_eq!(rooms.members("r").collect::<Vec<_>>(), ["r:a", "r:b", "r:c"]);
    }

    #[test]
    fn one_connection_may_hold_several_idents() {
        let mut rooms = Rooms::default();
        call(&mut rooms, 1, r#"["join","a","r"]"#);
        call(&mut rooms, 1, r#"["join","b","r"]"#);
        call(&mut rooms, 1, r#"["join","a","s"]"#);
        assert_eq!(rooms.held_by(1).len(), 3);
        assert_eq!(rooms.room_count(), 2);
    }

    #[test]
    fn signal_goes_to_the_holder_of_the_address() {
        let mut rooms = Rooms::default();
        call(&mut rooms, 1, r#"["join","a","r"]"#);
        call(&mut rooms, 2, r#"["join","b","r"]"#);
        assert_eq!(
            call(&mut rooms, 1, r#"["signal","r:a","r:b",{"x": [1, "é"]}]"#),
            [sent(2, r#"["signal","r:b","r:a",{"x": [1, "é"]}]"#)]
        );
    }

    #[test]
    fn signal_from_an_address_not_held_is_refused() {
        let mut rooms = Rooms::default();
        call(&mut rooms, 1, r#"["join","a","r"]"#);
        call(&mut rooms, 2, r#"["join","b","r"]"#);
        let replies = call(&mut rooms, 3, r#"["signal","r:a","r:b","x"]"#);
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].0, 3);
        assert_eq!(error_code(&replies).as_deref(), Some("not-owner"));
    }

    #[test]
    fn signal_to_an_unknown_address_is_refused() {
        let mut rooms = Rooms::default();
        call(&mut rooms, 1, r#"["join","a","r"]"#);
        let replies = call(&mut rooms, 1, r#"["signal","r:a","r:zz","x"]"#);
        assert_eq!(error_code(&replies).as_deref(), Some("unknown-peer"));
        assert_eq!(replies.len(), 1);
    }

    #[test]
    fn taken_address_stays_with_its_holder_and_is_probed() {
        let mut rooms = Rooms::default();
        call(&mut rooms, 1, r#"["join","a","r"]"#);
        let replies = call(&mut rooms, 2, r#"["join","a","r"]"#);
        assert_eq!(error_code(&replies).as_deref(), Some("taken"));
        assert_eq!(replies.get(1), Some(&sent(1, "PROBE")));
        assert_eq!(rooms.holder("r:a"), Some(1));
        assert!(rooms.held_by(2).is_empty());
    }

    #[test]
    fn repeated_join_is_refused_without_a_second_stun_round() {
        let mut rooms = Rooms::default();
        call(&mut rooms, 1, r#"["join","a","r"]"#);
        call(&mut rooms, 2, r#"["join","b","r"]"#);
        let replies = call(&mut rooms, 2, r#"["join","b","r"]"#);
        assert_eq!(replies.len(), 1);
        assert_eq!(error_code(&replies).as_deref(), Some("already-joined"));
    }

    #[test]
    fn leave_tells_the_holder_and_the_rest_of_the_room() {
        let mut rooms = Rooms::default();
        call(&mut rooms, 1, r#"["join","a","r"]"#);
        call(&mut rooms, 2, r#"["join","b","r"]"#);
        call(&mut rooms, 3, r#"["join","c","r"]"#);
        assert_eq!(
            call(&mut rooms, 2, r#"["leave","r:b"]"#),
            [
                sent(2, r#"["leave","r:b"]"#),
                sent(1, r#"["leave","r:a","r:b"]"#),
                sent(3, r#"["leave","r:c","r:b"]"#),
            ]
        );
        assert_eq!(rooms.holder("r:b"), None);
        assert_eq!(call(&mut rooms, 4, r#"["join","b","r"]"#).len(), 5);
    }

    #[test]
    fn leave_of_an_address_not_held_is_refused() {
        let mut rooms = Rooms::default();
        call(&mut rooms, 1, r#"["join","a","r"]"#);
        let replies = call(&mut rooms, 2, r#"["leave","r:a"]"#);
        assert_eq!(error_code(&replies).as_deref(), Some("not-owner"));
        assert_eq!(rooms.holder("r:a"), Some(1));
    }

    #[test]
    fn disconnect_removes_exactly_that_connections_addresses() {
        let mut rooms = Rooms::default();
        call(&mut rooms, 1, r#"["join","a","r"]"#);
        call(&mut rooms, 1, r#"["join","a","s"]"#);
        call(&mut rooms, 2, r#"["join","a","t"]"#);
        call(&mut rooms, 2, r#"["join","b","r"]"#);
        let mut out = Vec::new();
        rooms.disconnect(1, &mut out);
        assert_eq!(
            out,
            [Effect::Send {
                to: 2,
                text: r#"["leave","r:b","r:a"]"#.into(),
                kind: ReplyKind::Leave,
                relayed_from: None
            }]
        );
        assert_eq!(rooms.holder("r:a"), None);
        assert_eq!(rooms.holder("s:a"), None);
        assert_eq!(rooms.holder("t:a"), Some(2));
        assert_eq!(rooms.room_count(), 2);
        rooms.disconnect(2, &mut out);
        assert_eq!((rooms.room_count(), rooms.address_count()), (0, 0));
    }

    #[test]
    fn disconnect_does_not_notify_the_leaving_connection() {
        let mut rooms = Rooms::default();
        call(&mut rooms, 1, r#"["join","a","r"]"#);
        call(&mut rooms, 1, r#"["join","b","r"]"#);
        let mut out = Vec::new();
        rooms.disconnect(1, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn names_are_validated() {
        let mut rooms = Rooms::new(RoomLimits { max_name_len: 8, ..RoomLimits::default() });
        for bad in [
            r#"["join","","r"]"#,
            r#"["join","a",""]"#,
            r#"["join","a","r:x"]"#,
            r#"["join","a\n","r"]"#,
            r#"["join","abcdefghi","r"]"#,
        ] {
            let replies = call(&mut rooms, 1, bad);
            assert_eq!(error_code(&replies).as_deref(), Some("bad-request"), "{bad}");
        }
        assert_eq!(rooms.address_count(), 0);
        assert_eq!(rooms.room_count(), 0);
    }

    #[test]
    fn per_connection_and_per_room_limits() {
        let limits = RoomLimits { max_idents_per_conn: 2, max_room_members: 3, ..RoomLimits::default() };
        let mut rooms = Rooms::new(limits);
        call(&mut rooms, 1, r#"["join","a","r"]"#);
        call(&mut rooms, 1, r#"["join","b","r"]"#);
        let replies = call(&mut rooms, 1, r#"["join","c","s"]"#);
        assert_eq!(error_code(&replies).as_deref(), Some("limit"));
        call(&mut rooms, 2, r#"["join","c","r"]"#);
        let replies = call(&mut rooms, 3, r#"["join","d","r"]"#);
        assert_eq!(error_code(&replies).as_deref(), Some("limit"));
        assert_eq!(rooms.members("r").count(), 3);
        assert_eq!(rooms.room_count(), 1);
    }

    #[test]
    fn memberships_list_every_room_member_with_its_connection() {
        let mut rooms = Rooms::default();
        call(&mut rooms, 1, r#"["join","a","r"]"#);
        call(&mut rooms, 2, r#"["join","b","r"]"#);
        call(&mut rooms, 2, r#"["join","a","s"]"#);
        let mut all: Vec<_> = rooms.memberships().collect();
        all.sort_unstable();
        assert_eq!(all, [("r", "r:a", 1), ("r", "r:b", 2), ("s", "s:a", 2)]);
        let mut out = Vec::new();
        rooms.disconnect(2, &mut out);
        assert_eq!(rooms.memberships().collect::<Vec<_>>(), [("r", "r:a", 1)]);
    }

    /// Effects as readable lines: sends as (to, text), cluster effects spelled out.
    fn lines(out: Vec<Effect>) -> Vec<String> {
        out.into_iter()
            .map(|effect| match effect {
                Effect::Send { to, text, .. } => format!("{to} {text}"),
                Effect::Probe { holder } => format!("{holder} PROBE"),
                Effect::Claim { conn, address } => format!("{conn} CLAIM {address}"),
                Effect::Unclaim { address } => format!("UNCLAIM {address}"),
                Effect::Forward { node, to, text, from } => format!("{from} FORWARD {node} {to} {text}"),
            })
            .collect()
    }

    fn cluster_call(rooms: &mut Rooms, conn: ConnId, json: &str) -> Vec<String> {
        let call = parse_call(json.as_bytes()).expect("test call parses");
        let mut out = Vec::new();
        rooms.handle(conn, &call, &mut out);
        lines(out)
    }

    fn listed(members: &[(&str, &str)]) -> Vec<(Box<str>, NodeName)> {
        members.iter().map(|(a, n)| ((*a).into(), NodeName::from(*n))).collect()
    }

    /// Node "here" with a:1 and b:2 in room r, and x on node "n2" who joined between them.
    fn clustered_room() -> Rooms {
        let mut rooms = Rooms::clustered(RoomLimits::default());
        let mut out = Vec::new();
        assert_eq!(cluster_call(&mut rooms, 1, r#"["join","a","r"]"#), ["1 CLAIM r:a"]);
        rooms.claimed(1, "r:a", &[], "here", &mut out);
        rooms.remote_joined("r:x", "n2".into(), true, &mut out);
        assert_eq!(cluster_call(&mut rooms, 2, r#"["join","b","r"]"#), ["2 CLAIM r:b"]);
        rooms.claimed(2, "r:b", &listed(&[("r:a", "here"), ("r:x", "n2")]), "here", &mut out);
        rooms
    }

    #[test]
    fn a_cluster_join_waits_for_the_registry_then_pairs_in_its_order() {
        let mut rooms = Rooms::clustered(RoomLimits::default());
        let mut out = Vec::new();
        assert_eq!(cluster_call(&mut rooms, 1, r#"["join","a","r"]"#), ["1 CLAIM r:a"]);
        assert_eq!(rooms.address_count(), 0, "nothing is held before the registry says so");
        rooms.claimed(1, "r:a", &[], "here", &mut out);
        assert_eq!(lines(std::mem::take(&mut out)), [r#"1 ["join","r:a"]"#]);
        rooms.remote_joined("r:x", "n2".into(), true, &mut out);
        assert_eq!(lines(std::mem::take(&mut out)), [r#"1 ["stun","r:a","r:x",false]"#]);
        rooms.claimed(2, "r:b", &listed(&[("r:a", "here"), ("r:x", "n2")]), "here", &mut out);
        assert_eq!(
            lines(out),
            [
                r#"2 ["join","r:b"]"#,
                r#"1 ["stun","r:a","r:b",false]"#,
                r#"2 ["stun","r:b","r:a",true]"#,
                r#"2 ["stun","r:b","r:x",true]"#,
            ]
        );
        assert_eq!((rooms.address_count(), rooms.remote_count()), (2, 1));
        assert_eq!(rooms.members("r").collect::<Vec<_>>(), ["r:a", "r:x", "r:b"]);
    }

    #[test]
    fn signals_to_members_elsewhere_are_forwarded_to_their_node() {
        let mut rooms = clustered_room();
        assert_eq!(
            cluster_call(&mut rooms, 2, r#"["signal","r:b","r:x",{"s":1}]"#),
            [r#"2 FORWARD n2 r:x ["signal","r:x","r:b",{"s":1}]"#]
        );
        assert_eq!(
            cluster_call(&mut rooms, 2, r#"["signal","r:b","r:a",2]"#),
            [r#"1 ["signal","r:a","r:b",2]"#]
        );
        let replies = cluster_call(&mut rooms, 2, r#"["signal","r:b","r:nobody",2]"#);
        assert!(replies[0].contains("unknown-peer"), "{replies:?}");
    }

    #[test]
    fn members_elsewhere_leave_and_are_forgotten_with_the_last_member_here() {
        let mut rooms = clustered_room();
        let mut out = Vec::new();
        rooms.remote_left("r:x", &mut out);
        assert_eq!(
            lines(std::mem::take(&mut out)),
            [r#"1 ["leave","r:a","r:x"]"#, r#"2 ["leave","r:b","r:x"]"#]
        );
        rooms.remote_left("r:x", &mut out);
        assert!(out.is_empty(), "a second leave is not told twice");
        rooms.remote_joined("r:y", "n3".into(), true, &mut out);
        out.clear();
        assert_eq!(
            cluster_call(&mut rooms, 1, r#"["leave","r:a"]"#),
            [r#"1 ["leave","r:a"]"#, r#"2 ["leave","r:b","r:a"]"#, "UNCLAIM r:a"]
        );
        rooms.disconnect(2, &mut out);
        assert_eq!(lines(out), ["UNCLAIM r:b"]);
        assert_eq!(
            (rooms.room_count(), rooms.remote_count()),
            (0, 0),
            "no view of a room without members here"
        );
        let mut out = Vec::new();
        rooms.remote_joined("r:z", "n2".into(), true, &mut out);
        assert!(out.is_empty() && rooms.remote_count() == 0, "events for rooms not here are ignored");
    }

    #[test]
    fn registering_again_pairs_only_what_changed() {
        let mut rooms = clustered_room();
        let mut out = Vec::new();
        // Kept: x left and y joined while this node was cut off.
        rooms.reconcile("r:a", &listed(&[("r:a", "here"), ("r:y", "n3"), ("r:b", "here")]), "here", &mut out);
        assert_eq!(
            lines(std::mem::take(&mut out)),
            [
                r#"1 ["leave","r:a","r:x"]"#,
                r#"2 ["leave","r:b","r:x"]"#,
                r#"1 ["stun","r:a","r:y",false]"#,
                r#"2 ["stun","r:b","r:y",false]"#,
            ]
        );
        rooms.reconcile("r:b", &listed(&[("r:a", "here"), ("r:y", "n3"), ("r:b", "here")]), "here", &mut out);
        assert!(out.is_empty(), "listed again: not paired twice");
        // y's node lost its registrations and registered it again: the pairs are redone.
        rooms.remote_joined("r:y", "n3".into(), true, &mut out);
        assert_eq!(
            lines(std::mem::take(&mut out)),
            [
                r#"1 ["leave","r:a","r:y"]"#,
                r#"2 ["leave","r:b","r:y"]"#,
                r#"1 ["stun","r:a","r:y",false]"#,
                r#"2 ["stun","r:b","r:y",false]"#,
            ]
        );
        // This node's registration of a was lost and made again: a redoes its pairs
        // elsewhere (z, no longer listed, is gone for everyone here).
        rooms.remote_joined("r:z", "n2".into(), true, &mut out);
        out.clear();
        rooms.registered_again("r:a", &listed(&[("r:y", "n3"), ("r:b", "here")]), "here", &mut out);
        assert_eq!(
            lines(std::mem::take(&mut out)),
            [
                r#"1 ["leave","r:a","r:z"]"#,
                r#"2 ["leave","r:b","r:z"]"#,
                r#"1 ["leave","r:a","r:y"]"#,
                r#"1 ["stun","r:a","r:y",true]"#,
            ]
        );
        // From scratch: everyone elsewhere is forgotten, then paired afresh.
        rooms.forget_remote(&mut out);
        assert_eq!(
            lines(std::mem::take(&mut out)),
            [r#"1 ["leave","r:a","r:y"]"#, r#"2 ["leave","r:b","r:y"]"#]
        );
        rooms.registered_again("r:a", &listed(&[("r:y", "n3"), ("r:b", "here")]), "here", &mut out);
        assert_eq!(lines(std::mem::take(&mut out)), [r#"1 ["stun","r:a","r:y",true]"#]);
        rooms.lost("r:b", &mut out);
        assert_eq!(lines(out), [r#"2 ["leave","r:b"]"#, r#"1 ["leave","r:a","r:b"]"#]);
        assert_eq!(rooms.held_by(2).len(), 0);
    }

    #[test]
    fn after_a_registry_restart_each_pair_elsewhere_hears_one_leave_and_one_stun() {
        let mut rooms = clustered_room();
        let mut out = Vec::new();
        rooms.forget_remote(&mut out);
        assert_eq!(
            lines(std::mem::take(&mut out)),
            [r#"1 ["leave","r:a","r:x"]"#, r#"2 ["leave","r:b","r:x"]"#]
        );
        // x's node registered it first: a and b pair with it when they register.
        rooms.remote_joined("r:x", "n2".into(), true, &mut out);
        assert!(out.is_empty(), "members awaiting registration are not paired by others: {out:?}");
        rooms.registered_again("r:a", &listed(&[("r:x", "n2")]), "here", &mut out);
        assert_eq!(lines(std::mem::take(&mut out)), [r#"1 ["stun","r:a","r:x",true]"#]);
        // y registers between a and b: a pairs with it now, b when registered.
        rooms.remote_joined("r:y", "n3".into(), true, &mut out);
        assert_eq!(lines(std::mem::take(&mut out)), [r#"1 ["stun","r:a","r:y",false]"#]);
        rooms.registered_again(
            "r:b",
            &listed(&[("r:x", "n2"), ("r:a", "here"), ("r:y", "n3")]),
            "here",
            &mut out,
        );
        assert_eq!(
            lines(std::mem::take(&mut out)),
            [r#"2 ["stun","r:b","r:x",true]"#, r#"2 ["stun","r:b","r:y",true]"#]
        );
        // Registered: later events reach both as before.
        rooms.remote_left("r:x", &mut out);
        assert_eq!(lines(out), [r#"1 ["leave","r:a","r:x"]"#, r#"2 ["leave","r:b","r:x"]"#]);
    }

    #[test]
    fn ident_and_ping() {
        let mut rooms = Rooms::default();
        assert_eq!(call(&mut rooms, 1, r#"["ping"]"#), [sent(1, r#"["pong"]"#)]);
        let replies = call(&mut rooms, 1, r#"["ident"]"#);
        let value: Vec<String> = serde_json::from_str(&replies[0].1).expect("JSON");
        assert_eq!(value[0], "ident");
        assert!(value[1].len() >= 12);
    }
}
