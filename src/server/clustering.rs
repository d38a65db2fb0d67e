//! The loop's side of the cluster ([`crate::cluster`]): claims in flight, with the
//! claimant's later messages held back until the registry answers; what the registry
//! and the other nodes say, carried into the room table.

use std::collections::VecDeque;
use std::time::Instant;

use log::debug;

use super::Server;
use crate::cluster::{Happening, Refusal};
use crate::conn::Incoming;
use crate::protocol::{ErrorCode, Reply, ReplyKind};
use crate::rooms::{ConnId, Effect, NodeName};

/// Signals from other nodes are relayed under this sender: they share one sender's part
/// of a recipient's queue, and a refusal has no one here to go to.
pub(super) const FROM_OTHER_NODES: ConnId = usize::MAX;

/// A message read from a client while its join waited for the registry.
pub(super) enum Held {
    Text(String),
    NotUtf8,
}

/// A client whose join waits for the registry, and what it sent meanwhile.
#[derive(Default)]
pub(super) struct Waiting {
    pub(super) held: VecDeque<Held>,
}

const UNAVAILABLE: &str = "the cluster's registry cannot be reached; try again";

impl Server {
    /// Whether `key`'s messages wait for a claim of its to be answered.
    pub(super) fn is_waiting(&self, key: ConnId) -> bool {
        self.waiting.contains_key(&key)
    }

    /// Keeps `message` from `key` until its claim is answered.
    pub(super) fn hold(&mut self, key: ConnId, message: Incoming<'_>) {
        let Some(waiting) = self.waiting.get_mut(&key) else { return };
        match message {
            Incoming::Text(text) => waiting.held.push_back(Held::Text(text.to_owned())),
            Incoming::NotUtf8 => waiting.held.push_back(Held::NotUtf8),
            Incoming::Control => {}
        }
    }

    /// Asks the registry for `address` for `key`; its next messages wait for the answer.
    pub(super) fn claim(&mut self, key: ConnId, address: &str) {
        let now = self.round_time;
        let Some(cluster) = self.cluster.as_mut() else { return };
        match cluster.claim(key, address, now) {
            Ok(()) => {
                self.waiting.entry(key).or_default();
            }
            Err(_) => self.refuse_join(key, ErrorCode::ClusterUnavailable, UNAVAILABLE),
        }
    }

    pub(super) fn forward(&mut self, node: &NodeName, to: &str, text: &str, from: ConnId) {
        let now = self.round_time;
        let Some(cluster) = self.cluster.as_mut() else { return };
        if cluster.forward(node, to, text, now).is_err() {
            let reply =
                Reply::Error { call: "signal", code: ErrorCode::ClusterUnavailable, detail: UNAVAILABLE };
            self.effects.push_back(Effect::Send {
                to: from,
                text: reply.to_json(),
                kind: reply.kind(),
                relayed_from: None,
            });
        }
    }

    fn refuse_join(&mut self, key: ConnId, code: ErrorCode, detail: &str) {
        let reply = Reply::Error { call: "join", code, detail };
        self.effects.push_back(Effect::Send {
            to: key,
            text: reply.to_json(),
            kind: reply.kind(),
            relayed_from: None,
        });
    }

    /// The Redis socket is ready.
    pub(super) fn on_cluster_event(&mut self, event: &mio::event::Event, now: Instant) {
        let mut happenings = std::mem::take(&mut self.happenings);
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.on_event(self.poll.registry(), event, now, &mut happenings);
        }
        self.carry_out(&mut happenings, now);
        self.happenings = happenings;
    }

    /// The cluster's timers, when due.
    pub(super) fn cluster_timers(&mut self, now: Instant) {
        let due = self.cluster.as_ref().and_then(|c| c.next_deadline()).is_some_and(|at| now >= at);
        if !due {
            return;
        }
        let mut happenings = std::mem::take(&mut self.happenings);
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.on_timer(self.poll.registry(), now, &mut happenings);
        }
        self.carry_out(&mut happenings, now);
        self.happenings = happenings;
    }

    /// Sends what the round gathered for Redis.
    pub(super) fn flush_cluster(&mut self, now: Instant) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.flush(self.poll.registry(), now);
        }
    }

    fn carry_out(&mut self, happenings: &mut Vec<Happening>, now: Instant) {
        let own_node: NodeName = match &self.cluster {
            Some(cluster) => cluster.node().into(),
            None => return,
        };
        let mut effects = std::mem::take(&mut self.room_effects);
        let mut resumed = Vec::new();
        for happening in happenings.drain(..) {
            match happening {
                Happening::Claimed { conn, address, before } => {
                    self.rooms.claimed(conn, &address, &before, &own_node, &mut effects);
                    resumed.push(conn);
                }
                Happening::Refused { conn, why, address } => {
                    match why {
                        Refusal::Taken { node } => {
                            self.refuse_join(conn, ErrorCode::Taken, "another connection holds that address");
                            if let Some(holder) = self.rooms.holder(&address) {
                                if holder == conn {
                                    // (Cannot happen: its messages waited. Said plainly if it does.)
                                    debug!("connection {conn}: claimed an address it holds");
                                } else {
                                    self.effects.push_back(Effect::Probe { holder });
                                }
                            } else if let Some(cluster) = self.cluster.as_mut() {
                                if *node != *own_node {
                                    cluster.probe_remote(&node, &address);
                                } else if !cluster.claim_in_flight(&address) {
                                    // Registered to this node, held by no one here: a
                                    // release that went missing. Given up; a retry succeeds.
                                    cluster.unclaim(&address, now);
                                }
                            }
                        }
                        Refusal::Full => self.refuse_join(conn, ErrorCode::Limit, "room is full"),
                        Refusal::Unavailable => {
                            self.refuse_join(conn, ErrorCode::ClusterUnavailable, UNAVAILABLE)
                        }
                    }
                    resumed.push(conn);
                }
                Happening::RegisteredAgain { address, members } => {
                    self.rooms.registered_again(&address, &members, &own_node, &mut effects);
                }
                Happening::StillRegistered { address, members } => {
                    self.rooms.reconcile(&address, &members, &own_node, &mut effects);
                }
                Happening::Lost { address } => self.rooms.lost(&address, &mut effects),
                Happening::RemoteJoined { address, node } => {
                    self.rooms.remote_joined(&address, node, true, &mut effects);
                }
                Happening::RemoteLeft { address } => self.rooms.remote_left(&address, &mut effects),
                Happening::Deliver { to, text } => {
                    if let Some(holder) = self.rooms.holder(&to) {
                        effects.push(Effect::Send {
                            to: holder,
                            text,
                            kind: ReplyKind::Signal,
                            relayed_from: Some(FROM_OTHER_NODES),
                        });
                    }
                }
                Happening::Probe { address } => {
                    if let Some(holder) = self.rooms.holder(&address) {
                        effects.push(Effect::Probe { holder });
                    }
                }
                Happening::RegisterAgain { from_scratch } => {
                    if from_scratch {
                        self.rooms.forget_remote(&mut effects);
                    }
                    if let Some(cluster) = self.cluster.as_mut() {
                        cluster.register_again(self.rooms.local_addresses(), now);
                    }
                }
                Happening::Registered { addresses } => {
                    for address in addresses {
                        if self.rooms.holder(&address).is_none()
                            && let Some(cluster) = self.cluster.as_mut()
                        {
                            cluster.unclaim(&address, now);
                        }
                    }
                }
            }
        }
        self.effects.extend(effects.drain(..));
        self.room_effects = effects;
        self.apply_effects();
        for conn in resumed {
            self.resume(conn, now);
        }
    }

    /// `key`'s claim is answered: what it sent meanwhile is handled now, in order, until
    /// one of those waits for the registry again.
    fn resume(&mut self, key: ConnId, now: Instant) {
        let Some(mut waiting) = self.waiting.remove(&key) else { return };
        while let Some(message) = waiting.held.pop_front() {
            if !self.conns.get(key).is_some_and(super::Conn::is_open) {
                return;
            }
            match &message {
                Held::Text(text) => self.handle_message(key, Incoming::Text(text), now),
                Held::NotUtf8 => self.handle_message(key, Incoming::NotUtf8, now),
            }
            if let Some(again) = self.waiting.get_mut(&key) {
                again.held.extend(waiting.held.drain(..));
                return;
            }
        }
        // Its socket was not read while it waited.
        self.queue_read(key);
    }

    /// Shutting down: the other nodes hear now that this node's members are gone.
    pub(super) fn leave_cluster(&mut self, now: Instant) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.leave_cluster(self.poll.registry(), now);
        }
    }

    /// A connection is gone: nothing of it waits any more.
    pub(super) fn forget_waiting(&mut self, key: ConnId) {
        self.waiting.remove(&key);
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.forget_conn(key);
        }
    }
}
