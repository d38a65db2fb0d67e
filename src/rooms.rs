//! The room table: who holds which address, who is in which room, and what each
//! call makes the server send. Pure: it takes (connection, call) and appends
//! [`Effect`]s for the caller to carry out; it never touches a socket.

use std::collections::HashMap;

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
    conn: ConnId,
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
}

impl Rooms {
    pub fn new(limits: RoomLimits) -> Self {
        Rooms { limits, ..Rooms::default() }
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
        self.rooms
            .iter()
            .flat_map(|(room, members)| members.iter().map(move |m| (&**room, &*m.address, m.conn)))
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
                match self.holder(to) {
                    Some(peer) => {
                        let reply = Reply::Signal { to, from, data: *data };
                        let kind = reply.kind();
                        out.push(Effect::Send {
                            to: peer,
                            text: reply.to_json(),
                            kind,
                            relayed_from: Some(conn),
                        });
                    }
                    None => refuse(out, conn, call, ErrorCode::UnknownPeer, UNKNOWN_PEER),
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
            self.remove_member(conn, &address, Notify::OtherConnections, out);
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
        let members = self.rooms.entry(room.into()).or_default();
        if members.len() >= self.limits.max_room_members {
            if members.is_empty() {
                self.rooms.remove(room);
            }
            return refuse(out, conn, call, ErrorCode::Limit, "room is full");
        }

        send(out, conn, Reply::Join { address: &address });
        for member in members.iter() {
            let stun = Reply::Stun { own: &member.address, peer: &address, initiator: false };
            send(out, member.conn, stun);
            let stun = Reply::Stun { own: &address, peer: &member.address, initiator: true };
            send(out, conn, stun);
        }
        members.push(Member { address: address.clone(), conn });
        self.holders.insert(address.clone(), conn);
        self.held.entry(conn).or_default().push(address);
    }

    /// Gives up one address held by `conn` and tells the rest of its room.
    fn release(&mut self, conn: ConnId, address: &str, out: &mut Vec<Effect>) {
        self.holders.remove(address);
        if let Some(held) = self.held.get_mut(&conn) {
            held.retain(|a| &**a != address);
            if held.is_empty() {
                self.held.remove(&conn);
            }
        }
        self.remove_member(conn, address, Notify::AllMembers, out);
    }

    fn remove_member(&mut self, conn: ConnId, address: &str, notify: Notify, out: &mut Vec<Effect>) {
        let Some((room, _)) = address.split_once(':') else { return };
        let Some(members) = self.rooms.get_mut(room) else { return };
        members.retain(|m| !(m.conn == conn && &*m.address == address));
        if members.is_empty() {
            self.rooms.remove(room);
            return;
        }
        let told = |m: &&Member| notify == Notify::AllMembers || m.conn != conn;
        for member in members.iter().filter(told) {
            send(out, member.conn, Reply::PeerLeft { own: &member.address, gone: address });
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
