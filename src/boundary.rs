//! Where a client's WebSocket frames begin and end in the bytes handed to tungstenite.
//!
//! tungstenite keeps its buffers at the size of the largest frame or message they ever held,
//! and has no call to shrink them; the only way to give that memory back is a fresh
//! `WebSocketContext`, which is safe only when tungstenite holds no part of a frame or of a
//! fragmented message. This reads just the frame headers (RFC 6455, section 5.2) to know
//! when that is; tungstenite still checks and decodes every frame itself. A frame it
//! rejects closes the connection, so a wrong reading here can only cost that client.
//!
//! One check tungstenite lacks is made here: a 64-bit payload length must have its most
//! significant bit clear (RFC 6455, section 5.2). tungstenite takes such a length for a
//! size over the limit; [`FrameBoundaries::saw_invalid_length`] lets the server call it
//! what it is, a protocol error.

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_HEADER_LEN: usize = 14;

#[derive(Debug, Clone)]
pub struct FrameBoundaries {
    stage: Stage,
    /// A data frame without FIN was seen: a fragmented message is still being assembled.
    in_message: bool,
    /// Payload length of the largest frame since [`FrameBoundaries::take_largest`].
    largest: u64,
    /// A frame header had a 64-bit length with its most significant bit set.
    invalid_length: bool,
}

#[derive(Debug, Clone)]
enum Stage {
    /// Reading a header; `have` bytes of it so far.
    Header { head: [u8; MAX_HEADER_LEN], have: usize },
    /// Inside a payload; `left` bytes of it to come.
    Payload { left: u64 },
}

impl Default for FrameBoundaries {
    fn default() -> Self {
        FrameBoundaries {
            stage: Stage::Header { head: [0; MAX_HEADER_LEN], have: 0 },
            in_message: false,
            largest: 0,
            invalid_length: false,
        }
    }
}

impl FrameBoundaries {
    /// Follows `bytes`, the next ones of the client's stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.stage {
                Stage::Payload { left } => {
                    let skipped = bytes.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= skipped as u64;
                    bytes = bytes.get(skipped..).unwrap_or_default();
                    if *left == 0 {
                        self.stage = Stage::Header { head: [0; MAX_HEADER_LEN], have: 0 };
                    }
                }
                Stage::Header { head, have } => {
                    // Takes the header in at most two copies: its first two bytes, which
                    // tell its length, then the rest.
                    let wanted = header_len(head, *have);
                    let take = wanted.saturating_sub(*have).min(bytes.len());
                    let (part, rest) = bytes.split_at(take);
                    if let Some(slots) = head.get_mut(*have..*have + take) {
                        slots.copy_from_slice(part);
                    }
                    bytes = rest;
                    *have += take;
                    if let Some(header) = parse_header(head, *have) {
                        self.frame_started(header);
                    }
                }
            }
        }
    }

    /// True when the bytes fed so far end exactly after a whole message (or control frame).
    pub fn at_message_boundary(&self) -> bool {
        matches!(self.stage, Stage::Header { have: 0, .. }) && !self.in_message
    }

    /// The largest payload length seen since the last call.
    pub fn take_largest(&mut self) -> u64 {
        std::mem::take(&mut self.largest)
    }

    /// True once a frame header has had a 64-bit payload length with its most significant
    /// bit set, which RFC 6455 (section 5.2) forbids. tungstenite reads such a length as
    /// a size over its limit and fails on that frame, so the connection ends there.
    pub fn saw_invalid_length(&self) -> bool {
        self.invalid_length
    }

    fn frame_started(&mut self, header: Header) {
        const CONTINUATION: u8 = 0x0;
        const TEXT: u8 = 0x1;
        const BINARY: u8 = 0x2;
        if matches!(header.opcode, CONTINUATION | TEXT | BINARY) {
            self.in_message = !header.fin;
        }
        self.largest = self.largest.max(header.payload_len);
        self.invalid_length |= header.payload_len >> 63 != 0;
        self.stage = if header.payload_len == 0 {
            Stage::Header { head: [0; MAX_HEADER_LEN], have: 0 }
        } else {
            Stage::Payload { left: header.payload_len }
        };
    }
}

struct Header {
    fin: bool,
    opcode: u8,
    payload_len: u64,
}

/// The lengths of the extended payload length and of the masking key that follow a
/// header's first two bytes, as its second byte says.
fn field_lens(second: u8) -> (usize, usize) {
    let length_len = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask_len = if second & 0x80 != 0 { 4 } else { 0 };
    (length_len, mask_len)
}

/// How long the header in `head[..have]` is: 2 bytes until those are in, then its whole
/// length (at most [`MAX_HEADER_LEN`]).
fn header_len(head: &[u8; MAX_HEADER_LEN], have: usize) -> usize {
    let [_, second, ..] = *head;
    if have < 2 {
        return 2;
    }
    let (length_len, mask_len) = field_lens(second);
    2 + length_len + mask_len
}

/// The header in `head[..have]`, once it is complete.
fn parse_header(head: &[u8; MAX_HEADER_LEN], have: usize) -> Option<Header> {
    let [first, second, ..] = *head;
    if have < 2 || have < header_len(head, have) {
        return None;
    }
    let (length_len, _) = field_lens(second);
    let payload_len = match length_len {
        0 => u64::from(second & 0x7f),
        _ => head.get(2..2 + length_len)?.iter().fold(0u64, |len, &byte| (len << 8) | u64::from(byte)),
    };
    Some(Header { fin: first & 0x80 != 0, opcode: first & 0x0f, payload_len })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
    use tungstenite::protocol::frame::{Frame, FrameHeader};

    /// A client frame as a client sends it: masked, with its payload.
    fn client_frame(opcode: OpCode, fin: bool, payload_len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i % 251) as u8).collect();
        let header = FrameHeader {
            is_final: fin,
            opcode,
            mask: Some([0x11, 0x22, 0x33, 0x44]),
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        Frame::from_payload(header, payload.into()).format(&mut out).expect("format");
        out
    }

    fn fed_one_byte_at_a_time(bytes: &[u8]) -> FrameBoundaries {
        let mut boundaries = FrameBoundaries::default();
        for byte in bytes {
            boundaries.feed(std::slice::from_ref(byte));
        }
        boundaries
    }

    #[test]
    fn finds_the_end_of_frames_of_every_length_encoding() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let frame = client_frame(OpCode::Data(Data::Text), true, len);
            let header_len = FrameHeader::default().len(len as u64) + 4; // and the mask
            assert_eq!(frame.len(), header_len + len);
            // Whole, and cut at every byte of the header and around the end.
            let mut boundaries = FrameBoundaries::default();
            boundaries.feed(&frame);
            assert!(boundaries.at_message_boundary(), "len {len}");
            assert_eq!(boundaries.take_largest(), len as u64);
            for cut in (1..frame.len()).filter(|&cut| cut <= header_len + 1 || cut + 2 >= frame.len()) {
                let mut boundaries = FrameBoundaries::default();
                boundaries.feed(frame.get(..cut).unwrap_or_default());
                assert!(!boundaries.at_message_boundary(), "len {len}, cut {cut}");
                boundaries.feed(frame.get(cut..).unwrap_or_default());
                assert!(boundaries.at_message_boundary(), "len {len}, cut {cut}");
            }
        }
    }

    #[test]
    fn a_fragmented_message_ends_with_its_final_fragment_not_with_control_frames_inside_it() {
        let first = client_frame(OpCode::Data(Data::Text), false, 300);
        let ping = client_frame(OpCode::Control(Control::Ping), true, 4);
        let middle = client_frame(OpCode::Data(Data::Continue), false, 10);
        let last = client_frame(OpCode::Data(Data::Continue), true, 0);
        let mut boundaries = FrameBoundaries::default();
        for (part, complete_after) in [(&first, false), (&ping, false), (&middle, false), (&last, true)] {
            boundaries.feed(part);
            assert_eq!(boundaries.at_message_boundary(), complete_after);
        }
        assert_eq!(boundaries.take_largest(), 300);
        assert_eq!(boundaries.take_largest(), 0);
    }

    #[test]
    fn a_64_bit_length_with_its_top_bit_set_is_seen() {
        for (len, invalid) in [(u64::MAX, true), (1 << 63, true), ((1 << 63) - 1, false), (70_000, false)] {
            let mut header = vec![0x82, 0x80 | 127];
            header.extend_from_slice(&len.to_be_bytes());
            header.extend_from_slice(&[1, 2, 3, 4]);
            let mut boundaries = FrameBoundaries::default();
            boundaries.feed(client_frame(OpCode::Data(Data::Text), true, 3).as_slice());
            assert!(!boundaries.saw_invalid_length());
            boundaries.feed(header.get(..9).unwrap_or_default());
            assert!(!boundaries.saw_invalid_length(), "not before the header is complete");
            boundaries.feed(header.get(9..).unwrap_or_default());
            assert_eq!(boundaries.saw_invalid_length(), invalid, "{len:#x}");
        }
    }

    #[test]
    fn many_frames_in_one_stream_byte_by_byte() {
        let mut stream = Vec::new();
        for len in [5, 200, 0, 4_000, 126] {
            stream.extend(client_frame(OpCode::Data(Data::Binary), true, len));
        }
        let ping = client_frame(OpCode::Control(Control::Ping), true, 0);
        stream.extend(&ping);
        let mut boundaries = fed_one_byte_at_a_time(&stream);
        assert!(boundaries.at_message_boundary());
        assert_eq!(boundaries.take_largest(), 4_000);
        boundaries.feed(stream.get(..3).unwrap_or_default());
        assert!(!boundaries.at_message_boundary());
    }
}
