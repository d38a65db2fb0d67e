//! What a connection has queued for its client and not yet written, and who queued it.
//!
//! Pure bookkeeping in wire bytes: the connection reports what it queues and how many
//! bytes its socket has taken so far; this answers whether a relayed message still fits,
//! how much each sender holds of the queue, and when a queued liveness ping has reached
//! the socket. Positions are counted like the socket's byte counter, from the start of the
//! connection, so "written up to" needs no separate bookkeeping.

use std::collections::VecDeque;

use crate::rooms::ConnId;

/// How much of one client's queue relayed messages may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Relayed messages are refused once the queue holds this many bytes.
    pub max_queued: u64,
    /// One sender's relayed messages are refused once it holds this many bytes of the
    /// queue, so that one sender cannot shut everyone else out.
    pub max_per_sender: u64,
}

impl QueueLimits {
    /// One sender may hold a quarter of a queue of `max_queued` bytes.
    pub fn new(max_queued: u64) -> Self {
        QueueLimits { max_queued, max_per_sender: max_queued / SENDER_SHARE }
    }
}

/// Entries of relayed messages whose memory is kept for the next round (24 bytes each).
const KEPT_ENTRIES: usize = 64;

/// One sender may hold 1/SENDER_SHARE of a client's queue: four senders (four connections
/// in the client's room) are needed to fill it, and each pays the rate limit.
pub const SENDER_SHARE: u64 = 4;

/// Why a relayed message does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client's queue is full.
    QueueFull,
    /// The sender already holds its share of the client's queue.
    SenderShare,
}

/// One relayed message, not yet wholly written.
#[derive(Debug, Clone, Copy)]
struct Relayed {
    sender: ConnId,
    /// Position just past its last byte.
    end: u64,
    len: u64,
}

#[derive(Debug, Default)]
pub struct Backlog {
    /// Position just past the last byte queued.
    queued_end: u64,
    /// Position the socket has taken bytes up to.
    written: u64,
    /// Who queued what; made on the first relayed message and dropped by
    /// [`Backlog::release`], so that an idle connection pays one pointer for it.
    relays: Option<Box<Relays>>,
}

#[derive(Debug, Default)]
struct Relays {
    /// Relayed messages not yet wholly written, oldest first.
    queue: VecDeque<Relayed>,
    /// Bytes each sender has in `queue`; few senders at a time, so a list.
    by_sender: Vec<(ConnId, u64)>,
}

impl Backlog {
    /// Starts counting at `written`, the bytes the socket has taken before (the HTTP reply).
    pub fn starting_at(written: u64) -> Self {
        Backlog { queued_end: written, written, ..Backlog::default() }
    }

    /// Bytes queued and not yet taken by the socket.
    pub fn pending(&self) -> u64 {
        self.queued_end.saturating_sub(self.written)
    }

    /// Bytes of `sender`'s relayed messages still queued.
    pub fn held_by(&self, sender: ConnId) -> u64 {
        let Some(relays) = &self.relays else { return 0 };
        relays.by_sender.iter().find(|(s, _)| *s == sender).map_or(0, |(_, bytes)| *bytes)
    }

    /// Whether a relayed message of `len` wire bytes from `sender` may be queued. An empty
    /// queue takes any message, and so does an empty share, so that a message larger than
    /// a share can still go to a client that reads.
    pub fn admits(&self, sender: ConnId, len: u64, limits: QueueLimits) -> Result<(), Refusal> {
        let pending = self.pending();
        if pending > 0 && pending.saturating_add(len) > limits.max_queued {
            return Err(Refusal::QueueFull);
        }
        let held = self.held_by(sender);
        if held > 0 && held.saturating_add(len) > limits.max_per_sender {
            return Err(Refusal::SenderShare);
        }
        Ok(())
    }

    /// Records `len` wire bytes queued by the server itself (replies, notices, pings).
    /// Returns the position just past them.
    pub fn queued(&mut self, len: u64) -> u64 {
        self.queued_end = self.queued_end.max(self.written).saturating_add(len);
        self.queued_end
    }

    /// Records a relayed message of `len` wire bytes from `sender`.
    pub fn queued_relay(&mut self, sender: ConnId, len: u64) {
        let end = self.queued(len);
        let relays = self.relays.get_or_insert_with(Box::default);
        relays.queue.push_back(Relayed { sender, end, len });
        match relays.by_sender.iter_mut().find(|(s, _)| *s == sender) {
            Some((_, bytes)) => *bytes = bytes.saturating_add(len),
            None => relays.by_sender.push((sender, len)),
        }
    }

    /// The socket has taken bytes up to `written`: what lies before is no one's any more.
    pub fn written_up_to(&mut self, written: u64) {
        self.written = self.written.max(written);
        let Some(relays) = &mut self.relays else { return };
        while let Some(first) = relays.queue.front().copied().filter(|r| r.end <= self.written) {
            relays.queue.pop_front();
            if let Some(index) = relays.by_sender.iter().position(|(s, _)| *s == first.sender)
                && let Some((_, bytes)) = relays.by_sender.get_mut(index)
            {
                *bytes = bytes.saturating_sub(first.len);
                if *bytes == 0 {
                    relays.by_sender.swap_remove(index);
                }
            }
        }
    }

    /// Everything queued is written (the WebSocket layer said so). Frames it queues by
    /// itself, such as pongs, are not seen here; this is where they stop mattering.
    pub fn all_written(&mut self, written: u64) {
        self.written = self.written.max(written);
        self.queued_end = self.written;
        let Some(relays) = &mut self.relays else { return };
        if relays.queue.capacity() > KEPT_ENTRIES {
            // A queue that was long keeps no memory.
            self.relays = None;
        } else {
            // The common case, every round of a busy client: no allocation next time.
            relays.queue.clear();
            relays.by_sender.clear();
        }
    }

    /// Gives back the memory kept for who queued what, when nothing is queued (the
    /// connection has gone quiet).
    pub fn release(&mut self) {
        if self.pending() == 0 {
            self.relays = None;
        }
    }
}

/// Bytes on the wire for an unmasked (server) frame with `payload` bytes.
pub fn frame_len(payload: usize) -> u64 {
    let header = match payload {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    };
    (payload as u64).saturating_add(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QueueLimits = QueueLimits { max_queued: 1000, max_per_sender: 250 };

    #[test]
    fn frame_lengths_follow_rfc_6455() {
        assert_eq!(frame_len(0), 2);
        assert_eq!(frame_len(125), 127);
        assert_eq!(frame_len(126), 130);
        assert_eq!(frame_len(65_535), 65_539);
        assert_eq!(frame_len(65_536), 65_546);
    }

    #[test]
    fn an_empty_queue_takes_any_message() {
        let backlog = Backlog::starting_at(129);
        assert_eq!(backlog.pending(), 0);
        assert_eq!(backlog.admits(1, 5000, LIMITS), Ok(()));
    }

    #[test]
    fn one_sender_holds_a_share_and_others_still_get_through() {
        let mut backlog = Backlog::starting_at(0);
        backlog.queued_relay(1, 200);
        assert_eq!(backlog.admits(1, 100, LIMITS), Err(Refusal::SenderShare));
        assert_eq!(backlog.admits(1, 50, LIMITS), Ok(()));
        assert_eq!(backlog.admits(2, 200, LIMITS), Ok(()));
        backlog.queued_relay(2, 200);
        backlog.queued_relay(3, 200);
        backlog.queued_relay(4, 200);
        backlog.queued(150);
        assert_eq!(backlog.pending(), 950);
        assert_eq!(backlog.admits(5, 100, LIMITS), Err(Refusal::QueueFull));
        assert_eq!(backlog.admits(5, 50, LIMITS), Ok(()));
    }

    #[test]
    fn written_bytes_free_the_senders_share_in_order() {
        let mut backlog = Backlog::starting_at(10);
        backlog.queued_relay(1, 100); // 10..110
        backlog.queued(20); // 110..130
        backlog.queued_relay(2, 100); // 130..230
        backlog.written_up_to(109);
        assert_eq!((backlog.held_by(1), backlog.held_by(2)), (100, 100));
        backlog.written_up_to(110);
        assert_eq!((backlog.held_by(1), backlog.held_by(2)), (0, 100));
        assert_eq!(backlog.pending(), 120);
        // The counter never goes back.
        backlog.written_up_to(50);
        assert_eq!(backlog.pending(), 120);
        backlog.all_written(240);
        assert_eq!((backlog.pending(), backlog.held_by(2)), (0, 0));
        assert_eq!(backlog.queued(2), 242);
    }

    #[test]
    fn frames_the_server_did_not_count_never_make_pending_negative() {
        let mut backlog = Backlog::starting_at(0);
        backlog.queued(10);
        // A pong of 7 bytes went out too.
        backlog.written_up_to(17);
        assert_eq!(backlog.pending(), 0);
        assert_eq!(backlog.queued(5), 22);
        assert_eq!(backlog.pending(), 5);
    }
}
