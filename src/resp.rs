//! RESP, the Redis protocol, as bytes and values: commands out (arrays of bulk strings),
//! replies and push messages in, RESP3 with RESP2's replies read too. No I/O.
//!
//! Our own rather than the `redis-protocol` crate: that one brings `bytes`, `nom` and
//! more, and the stripped binary must stay under 2 MiB; what the server needs is this
//! one small file. Every byte from Redis is treated as hostile all the same (a proxy or
//! a wrong port may answer): nesting, aggregate counts, bulk lengths and line lengths are
//! bounded, recursion is bounded by [`MAX_DEPTH`], a declared count never preallocates
//! more than the input can hold, and nothing indexes, unwraps or panics.
//!
//! [`decode`] parses from the start of the buffer each time and returns `Ok(None)` while a
//! value is incomplete. A bulk string is skipped in constant time while it waits for its
//! bytes, so a big bulk costs nothing to wait for; a big incomplete *aggregate* is walked
//! again on each attempt. `redis::RedisLink` decodes once per readable event after
//! reading until the socket would block (not per read), and only when new bytes arrived,
//! so this stays negligible for the replies and messages the cluster exchanges.

use std::fmt;
use std::io::Write as _;

/// Deepest nesting of aggregates (arrays, maps, sets, pushes, attributes) accepted.
pub const MAX_DEPTH: usize = 16;
/// Most elements one aggregate may declare (a map counts its keys and values).
pub const MAX_AGGREGATE_LEN: usize = 1 << 20;
/// Longest bulk string (or verbatim string, or blob error) accepted: Redis's own
/// default `proto-max-bulk-len` is 512 MiB; we never send or expect anything near this.
pub const MAX_BULK_LEN: usize = 64 << 20;
/// Longest line (simple string, error, number) accepted, CRLF included.
pub const MAX_LINE_LEN: usize = 64 << 10;

/// One RESP value. RESP2's null bulk string and null array are read as [`Value::Nil`],
/// as is RESP3's null; a blob error as [`Value::Error`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Value>),
    Push(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Set(Vec<Value>),
    Boolean(bool),
    Double(f64),
    BigNumber(String),
    /// A verbatim string's text, without its three-letter format and colon.
    Verbatim(Vec<u8>),
}

impl Value {
    /// The bytes of a bulk, simple or verbatim string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(bytes) | Value::Verbatim(bytes) => Some(bytes),
            Value::Simple(text) => Some(text.as_bytes()),
            _ => None,
        }
    }

    /// A string value as UTF-8 text, if it is that.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|bytes| std::str::from_utf8(bytes).ok())
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The owned bytes of a bulk, simple or verbatim string.
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Value::Bulk(bytes) | Value::Verbatim(bytes) => Some(bytes),
            Value::Simple(text) => Some(text.into_bytes()),
            _ => None,
        }
    }

    /// The elements of an array, set or push message.
    pub fn into_array(self) -> Option<Vec<Value>> {
        match self {
            Value::Array(items) | Value::Set(items) | Value::Push(items) => Some(items),
            _ => None,
        }
    }

    /// The elements of an array, set or push message, borrowed.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) | Value::Set(items) | Value::Push(items) => Some(items),
            _ => None,
        }
    }

    /// The value under a string `key` in a map (as HELLO answers).
    pub fn map_get(&self, key: &[u8]) -> Option<&Value> {
        match self {
            Value::Map(pairs) => pairs.iter().find(|(k, _)| k.as_bytes() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }
}

/// Why bytes are not RESP (or not RESP this decoder accepts). The connection they came
/// on cannot be trusted to be in step any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A type byte RESP does not have (or a streamed string, which Redis never sends).
    UnknownType(u8),
    /// A length or count that is not a number, or negative where -1 is not allowed.
    InvalidLength,
    /// A number, boolean or double that does not parse.
    InvalidNumber,
    /// A bulk string not followed by CRLF, or a line with a lone CR.
    MissingCrlf,
    /// Past [`MAX_LINE_LEN`], [`MAX_BULK_LEN`] or [`MAX_AGGREGATE_LEN`].
    TooLarge,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnknownType(byte) => write!(f, "unknown RESP type byte 0x{byte:02x}"),
            DecodeError::InvalidLength => f.write_str("invalid RESP length"),
            DecodeError::InvalidNumber => f.write_str("invalid RESP number"),
            DecodeError::MissingCrlf => f.write_str("RESP value not ended by CRLF"),
            DecodeError::TooLarge => f.write_str("RESP value too large"),
            DecodeError::TooDeep => f.write_str("RESP value nested too deep"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Appends one command, an array of bulk strings, to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// The bytes [`encode_command`] appends for `args`.
pub fn encoded_len(args: &[&[u8]]) -> usize {
    let digits = |n: usize| n.checked_ilog10().map_or(1, |d| d as usize + 1);
    3 + digits(args.len()) + args.iter().map(|arg| 5 + digits(arg.len()) + arg.len()).sum::<usize>()
}

/// Decodes one value from the start of `buf`: the value and the bytes it took, or
/// `Ok(None)` when `buf` holds only the beginning of one. Attributes (`|`) are read and
/// dropped.
pub fn decode(buf: &[u8]) -> Result<Option<(Value, usize)>, DecodeError> {
    let mut parser = Parser { buf, pos: 0 };
    match parser.value(0) {
        Ok(value) => Ok(Some((value, parser.pos))),
        Err(Stop::Incomplete) => Ok(None),
        Err(Stop::Invalid(err)) => Err(err),
    }
}

enum Stop {
    Incomplete,
    Invalid(DecodeError),
}

impl From<DecodeError> for Stop {
    fn from(err: DecodeError) -> Stop {
        Stop::Invalid(err)
    }
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// The line at the cursor without its CRLF; the cursor moves past it.
    fn line(&mut self) -> Result<&'a [u8], Stop> {
        let rest = self.rest();
        let window = rest.get(..MAX_LINE_LEN).unwrap_or(rest);
        match window.iter().position(|&b| b == b'\r') {
            Some(cr) => {
                match window.get(cr + 1) {
                    Some(b'\n') => {}
                    Some(_) => return Err(DecodeError::MissingCrlf.into()),
                    None if window.len() < MAX_LINE_LEN => return Err(Stop::Incomplete),
                    None => return Err(DecodeError::TooLarge.into()),
                }
                self.pos += cr + 2;
                Ok(window.get(..cr).unwrap_or_default())
            }
            None if window.len() < MAX_LINE_LEN => Err(Stop::Incomplete),
            None => Err(DecodeError::TooLarge.into()),
        }
    }

    /// Exactly `len` bytes and a CRLF at the cursor.
    fn blob(&mut self, len: usize) -> Result<&'a [u8], Stop> {
        let rest = self.rest();
        let Some(bytes) = rest.get(..len) else { return Err(Stop::Incomplete) };
        match rest.get(len..len + 2) {
            Some(b"\r\n") => {}
            Some(_) => return Err(DecodeError::MissingCrlf.into()),
            // One byte present: it must be the CR.
            None if rest.get(len).is_some_and(|&b| b != b'\r') => return Err(DecodeError::MissingCrlf.into()),
            None => return Err(Stop::Incomplete),
        }
        self.pos += len + 2;
        Ok(bytes)
    }

    /// A length line: `None` for -1 (RESP2's null), the length otherwise.
    fn length(&mut self, max: usize) -> Result<Option<usize>, Stop> {
        let line = self.line()?;
        if line == b"-1" {
            return Ok(None);
        }
        let n = parse_int(line).ok_or(DecodeError::InvalidLength)?;
        let n = usize::try_from(n).map_err(|_| DecodeError::InvalidLength)?;
        if n > max {
            return Err(DecodeError::TooLarge.into());
        }
        Ok(Some(n))
    }

    fn value(&mut self, depth: usize) -> Result<Value, Stop> {
        let Some(&kind) = self.rest().first() else { return Err(Stop::Incomplete) };
        self.pos += 1;
        Ok(match kind {
            b'+' => Value::Simple(text(self.line()?)),
            b'-' => Value::Error(text(self.line()?)),
            b':' => Value::Integer(parse_int(self.line()?).ok_or(DecodeError::InvalidNumber)?),
            b'(' => {
                let line = self.line()?;
                let digits = line.strip_prefix(b"-").unwrap_or(line);
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return Err(DecodeError::InvalidNumber.into());
                }
                Value::BigNumber(text(line))
            }
            b',' => {
                let line = std::str::from_utf8(self.line()?).map_err(|_| DecodeError::InvalidNumber)?;
                Value::Double(line.parse().map_err(|_| DecodeError::InvalidNumber)?)
            }
            b'#' => match self.line()? {
                b"t" => Value::Boolean(true),
                b"f" => Value::Boolean(false),
                _ => return Err(DecodeError::InvalidNumber.into()),
            },
            b'_' => {
                if !self.line()?.is_empty() {
                    return Err(DecodeError::InvalidLength.into());
                }
                Value::Nil
            }
            b'$' => match self.length(MAX_BULK_LEN)? {
                None => Value::Nil,
                Some(len) => Value::Bulk(self.blob(len)?.to_vec()),
            },
            b'!' => {
                let len = self.length(MAX_BULK_LEN)?.ok_or(DecodeError::InvalidLength)?;
                Value::Error(text(self.blob(len)?))
            }
            b'=' => {
                let len = self.length(MAX_BULK_LEN)?.ok_or(DecodeError::InvalidLength)?;
                let blob = self.blob(len)?;
                // "txt:" or "mkd:" first; what follows is the text.
                match blob.get(3) {
                    Some(b':') => Value::Verbatim(blob.get(4..).unwrap_or_default().to_vec()),
                    _ => return Err(DecodeError::InvalidLength.into()),
                }
            }
            b'*' | b'~' | b'>' => {
                let Some(len) = self.length(MAX_AGGREGATE_LEN)? else {
                    // RESP2's null array; sets and pushes have no null.
                    if kind == b'*' {
                        return Ok(Value::Nil);
                    }
                    return Err(DecodeError::InvalidLength.into());
                };
                let items = self.items(len, depth)?;
                match kind {
                    b'*' => Value::Array(items),
                    b'~' => Value::Set(items),
                    _ => Value::Push(items),
                }
            }
            b'%' => {
                let len = self.length(MAX_AGGREGATE_LEN / 2)?.ok_or(DecodeError::InvalidLength)?;
                let mut pairs = Vec::with_capacity(self.capacity_for(len));
                for _ in 0..len {
                    let key = self.nested(depth)?;
                    let value = self.nested(depth)?;
                    pairs.push((key, value));
                }
                Value::Map(pairs)
            }
            b'|' => {
                // Attributes describe the value that follows; nothing here uses them.
                let len = self.length(MAX_AGGREGATE_LEN / 2)?.ok_or(DecodeError::InvalidLength)?;
                for _ in 0..len * 2 {
                    self.nested(depth)?;
                }
                self.nested(depth)?
            }
            other => return Err(DecodeError::UnknownType(other).into()),
        })
    }

    fn nested(&mut self, depth: usize) -> Result<Value, Stop> {
        if depth + 1 >= MAX_DEPTH {
            return Err(DecodeError::TooDeep.into());
        }
        self.value(depth + 1)
    }

    fn items(&mut self, len: usize, depth: usize) -> Result<Vec<Value>, Stop> {
        let mut items = Vec::with_capacity(self.capacity_for(len));
        for _ in 0..len {
            items.push(self.nested(depth)?);
        }
        Ok(items)
    }

    /// Room for `len` elements, but never more than the unread input could hold (each
    /// element takes at least three bytes): a declared count alone allocates nothing big.
    fn capacity_for(&self, len: usize) -> usize {
        len.min(self.rest().len() / 3)
    }
}

/// A RESP integer: an optional sign and decimal digits, within i64.
fn parse_int(line: &[u8]) -> Option<i64> {
    let (negative, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(d - b'0');
        // Accumulate negatively so that i64::MIN fits.
        n = n.checked_mul(10)?.checked_sub(digit)?;
    }
    if negative { Some(n) } else { n.checked_neg() }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Value {
        let (value, used) = decode(bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len(), "{:?}", String::from_utf8_lossy(bytes));
        value
    }

    fn bulk(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"key", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$0\r\n\r\n");
        assert_eq!(one(&out), Value::Array(vec![bulk("SET"), bulk("key"), bulk("")]));
        for args in [&[][..], &[&b"PING"[..]], &[&[7u8; 9][..], &[1u8; 10][..], &[0u8; 1000][..]]] {
            let mut out = Vec::new();
            encode_command(&mut out, args);
            assert_eq!(out.len(), encoded_len(args));
        }
    }

    #[test]
    fn every_type() {
        assert_eq!(one(b"+OK\r\n"), Value::Simple("OK".into()));
        assert_eq!(one(b"-ERR no\r\n"), Value::Error("ERR no".into()));
        assert_eq!(one(b":-42\r\n"), Value::Integer(-42));
        assert_eq!(one(b":9223372036854775807\r\n"), Value::Integer(i64::MAX));
        assert_eq!(one(b":-9223372036854775808\r\n"), Value::Integer(i64::MIN));
        assert_eq!(one(b"$5\r\na\r\nbc\r\n"), bulk("a\r\nbc"));
        assert_eq!(one(b"$-1\r\n"), Value::Nil);
        assert_eq!(one(b"*-1\r\n"), Value::Nil);
        assert_eq!(one(b"_\r\n"), Value::Nil);
        assert_eq!(one(b"#t\r\n"), Value::Boolean(true));
        assert_eq!(one(b"#f\r\n"), Value::Boolean(false));
        assert_eq!(one(b",1.5\r\n"), Value::Double(1.5));
        assert_eq!(one(b",-inf\r\n"), Value::Double(f64::NEG_INFINITY));
        assert!(matches!(one(b",nan\r\n"), Value::Double(d) if d.is_nan()));
        assert_eq!(
            one(b"(-3492890328409238509324850943850943825024385\r\n"),
            Value::BigNumber("-3492890328409238509324850943850943825024385".into())
        );
        assert_eq!(one(b"!9\r\nSYNTAX no\r\n"), Value::Error("SYNTAX no".into()));
        assert_eq!(one(b"=8\r\ntxt:Some\r\n"), Value::Verbatim(b"Some".to_vec()));
        assert_eq!(one(b"*2\r\n:1\r\n*0\r\n"), Value::Array(vec![Value::Integer(1), Value::Array(vec![])]));
        assert_eq!(one(b"~1\r\n+a\r\n"), Value::Set(vec![Value::Simple("a".into())]));
        assert_eq!(
            one(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"),
            Value::Push(vec![bulk("message"), bulk("ch"), bulk("hi")])
        );
        let map = one(b"%2\r\n+server\r\n+redis\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(map.map_get(b"proto"), Some(&Value::Integer(3)));
        assert_eq!(map.map_get(b"server").and_then(Value::as_str), Some("redis"));
        // An attribute is read and dropped: the value after it is what is returned.
        assert_eq!(one(b"|1\r\n+key-popularity\r\n%0\r\n:7\r\n"), Value::Integer(7));
    }

    #[test]
    fn several_values_one_after_another() {
        let bytes = b"+OK\r\n:1\r\n$-1\r\n";
        let mut pos = 0;
        let mut values = Vec::new();
        while let Some((value, used)) = decode(&bytes[pos..]).unwrap() {
            values.push(value);
            pos += used;
        }
        assert_eq!(values, [Value::Simple("OK".into()), Value::Integer(1), Value::Nil]);
        assert_eq!(pos, bytes.len());
    }

    #[test]
    fn split_at_every_byte_is_incomplete_until_the_end() {
        let samples: [&[u8]; 6] = [
            b"*3\r\n$3\r\nSET\r\n%1\r\n+a\r\n~2\r\n#t\r\n,0.25\r\n=7\r\ntxt:abc\r\n",
            b">4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$0\r\n\r\n",
            b"|1\r\n+a\r\n+b\r\n(123\r\n",
            b"!3\r\nERR\r\n",
            b"$-1\r\n",
            b"_\r\n",
        ];
        for sample in samples {
            let whole = one(sample);
            for cut in 0..sample.len() {
                assert_eq!(
                    decode(&sample[..cut]),
                    Ok(None),
                    "cut at {cut} of {:?}",
                    String::from_utf8_lossy(sample)
                );
            }
            let mut longer = sample.to_vec();
            longer.extend_from_slice(b"+next\r\n");
            assert_eq!(decode(&longer), Ok(Some((whole, sample.len()))));
        }
    }

    #[test]
    fn malformed_input_is_refused() {
        let bad: [(&[u8], DecodeError); 14] = [
            (b"?x\r\n", DecodeError::UnknownType(b'?')),
            (b"$?\r\n", DecodeError::InvalidLength),
            (b"$-2\r\n", DecodeError::InvalidLength),
            (b"$3\r\nabcd\r\n", DecodeError::MissingCrlf),
            (b"$3\r\nabcX", DecodeError::MissingCrlf),
            (b"+a\rb\r\n", DecodeError::MissingCrlf),
            (b":12a\r\n", DecodeError::InvalidNumber),
            (b":99999999999999999999\r\n", DecodeError::InvalidNumber),
            (b"#x\r\n", DecodeError::InvalidNumber),
            (b"~-1\r\n", DecodeError::InvalidLength),
            (b"=2\r\nab\r\n", DecodeError::InvalidLength),
            (b"_x\r\n", DecodeError::InvalidLength),
            (b"$67108865\r\n", DecodeError::TooLarge),
            (b"*1048577\r\n", DecodeError::TooLarge),
        ];
        for (bytes, err) in bad {
            assert_eq!(decode(bytes), Err(err), "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn limits_hold() {
        // Nesting: MAX_DEPTH levels are fine, one more is not.
        let nested = |levels: usize| {
            let mut bytes = b"*1\r\n".repeat(levels);
            bytes.extend_from_slice(b":1\r\n");
            bytes
        };
        assert!(decode(&nested(MAX_DEPTH - 1)).unwrap().is_some());
        assert_eq!(decode(&nested(MAX_DEPTH)), Err(DecodeError::TooDeep));
        assert_eq!(decode(&nested(100_000)), Err(DecodeError::TooDeep));
        // A huge declared count with nothing behind it waits without allocating for it.
        assert_eq!(decode(b"*1048576\r\n"), Ok(None));
        assert_eq!(decode(b"%524288\r\n"), Ok(None));
        // A line without an end is refused once it is too long to be one.
        assert_eq!(decode(&[b'+'; MAX_LINE_LEN]), Ok(None));
        assert_eq!(decode(&[b'+'; MAX_LINE_LEN + 1]), Err(DecodeError::TooLarge));
        let mut big = b"$67108864\r\n".to_vec();
        assert_eq!(decode(&big), Ok(None));
        big.resize(big.len() + MAX_BULK_LEN, b'x');
        big.extend_from_slice(b"\r\n");
        assert_eq!(decode(&big).unwrap().unwrap().1, big.len());
    }

    #[test]
    fn accessors() {
        assert_eq!(bulk("x").as_bytes(), Some(&b"x"[..]));
        assert_eq!(Value::Simple("OK".into()).as_str(), Some("OK"));
        assert_eq!(Value::Integer(3).as_int(), Some(3));
        assert_eq!(bulk("3").as_int(), None);
        assert_eq!(Value::Push(vec![Value::Nil]).into_array(), Some(vec![Value::Nil]));
        assert_eq!(Value::Nil.into_array(), None);
        assert!(Value::Error("ERR".into()).is_error());
        assert!(Value::Nil.is_nil());
        assert_eq!(Value::Verbatim(b"v".to_vec()).into_bytes(), Some(b"v".to_vec()));
    }
}
