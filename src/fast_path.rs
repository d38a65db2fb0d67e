//! The call on the hot path, `signal`, read without serde_json when it comes in the compact
//! form clients send (`["signal","FROM","TO",DATA]`, as JSON.stringify writes it). Pure.
//!
//! Checking that DATA is JSON is most of the work of parsing a signal: serde_json looks at
//! string bytes eight at a time, this sixteen. It takes only what it is sure of. Anything
//! else (blanks between the call's items, escapes in the addresses, `\u` escapes, nesting
//! deeper than [`MAX_DEPTH`]) gives `None`, and `protocol` leaves the message to serde_json.
//! So it accepts a subset of what serde_json accepts, with the same result; the fuzz
//! target `parse_call` compares the two on every input.

use crate::json_text::plain_run_end;

/// The three arguments of a compact `signal` call, borrowed from the message.
#[derive(Debug, PartialEq, Eq)]
pub struct SignalParts<'a> {
    pub from: &'a str,
    pub to: &'a str,
    /// The text of DATA: one valid JSON value, without surrounding blanks.
    pub data: &'a str,
}

/// Containers nested in DATA beyond this are left to serde_json (whose limit is 128).
pub const MAX_DEPTH: u32 = 32;
// json_value_len keeps one bit per open container in a u64: deeper would lose bits silently.
const _: () = assert!(MAX_DEPTH <= u64::BITS);

/// `text` as a compact `signal` call, or `None` when serde_json should decide.
pub fn compact_signal(text: &str) -> Option<SignalParts<'_>> {
    let rest = text.strip_prefix(r#"["signal",""#)?;
    let (from, rest) = plain_string(rest)?;
    let rest = rest.strip_prefix(",\"")?;
    let (to, rest) = plain_string(rest)?;
    let rest = rest.strip_prefix(',')?;
    let (data, tail) = rest.split_at_checked(json_value_len(rest.as_bytes())?)?;
    (tail == "]").then_some(SignalParts { from, to, data })
}

/// The text up to the next quote and the text after it, when no byte before it needs an
/// escape (then the text is the string's value as it is).
fn plain_string(text: &str) -> Option<(&str, &str)> {
    let end = plain_run_end(text.as_bytes(), 0);
    if text.as_bytes().get(end) != Some(&b'"') {
        return None;
    }
    Some((text.get(..end)?, text.get(end + 1..)?))
}

/// The length of the one JSON value at the start of `bytes` (no blanks before it).
fn json_value_len(bytes: &[u8]) -> Option<usize> {
    // The containers open around `at`, innermost in the lowest bit: 1 an object, 0 an array.
    let mut open: u64 = 0;
    let mut depth: u32 = 0;
    let mut at = 0;
    loop {
        // A value starts at `at`.
        match *bytes.get(at)? {
            bracket @ (b'{' | b'[') => {
                let is_object = bracket == b'{';
                let close = if is_object { b'}' } else { b']' };
                if depth == MAX_DEPTH {
                    return None;
                }
                at = skip_blanks(bytes, at + 1);
                if bytes.get(at) == Some(&close) {
                    at += 1;
                } else {
                    depth += 1;
                    open = (open << 1) | u64::from(is_object);
                    if is_object {
                        at = member_value_start(bytes, at)?;
                    }
                    continue;
                }
            }
            b'"' => at = string_end(bytes, at + 1)?,
            b'-' | b'0'..=b'9' => at = number_end(bytes, at)?,
            b't' => at = word_end(bytes, at, b"true")?,
            b'f' => at = word_end(bytes, at, b"false")?,
            b'n' => at = word_end(bytes, at, b"null")?,
            _ => return None,
        }
        // A value ends at `at`: close the containers it completes, or go on to the next element.
        loop {
            if depth == 0 {
                return Some(at);
            }
            at = skip_blanks(bytes, at);
            let in_object = open & 1 == 1;
            match *bytes.get(at)? {
                b',' => {
                    at = skip_blanks(bytes, at + 1);
                    if in_object {
                        at = member_value_start(bytes, at)?;
                    }
                    break;
                }
                b'}' if in_object => {}
                b']' if !in_object => {}
                _ => return None,
            }
            at += 1;
            depth -= 1;
            open >>= 1;
        }
    }
}

/// Past an object member's key, its colon and blanks: where its value starts.
fn member_value_start(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let at = skip_blanks(bytes, string_end(bytes, at + 1)?);
    if bytes.get(at) != Some(&b':') {
        return None;
    }
    Some(skip_blanks(bytes, at + 1))
}

/// Past the closing quote of the string whose text starts at `at`.
fn string_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        at = plain_run_end(bytes, at);
        match *bytes.get(at)? {
            b'"' => return Some(at + 1),
            b'\\'
                if matches!(
                    bytes.get(at + 1),
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't')
                ) =>
            {
                at += 2;
            }
            // `\u` escapes (serde_json checks their hex and surrogates) and control characters.
            _ => return None,
        }
    }
}

/// Past a number of the JSON grammar starting at `at`.
fn number_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    match *bytes.get(at)? {
        b'0' => at += 1,
        b'1'..=b'9' => at = digits_end(bytes, at + 1),
        _ => return None,
    }
    if bytes.get(at) == Some(&b'.') {
        at = some_digits_end(bytes, at + 1)?;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        at = some_digits_end(bytes, at)?;
    }
    Some(at)
}

fn digits_end(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_digit) {
        at += 1;
    }
    at
}

/// Past one or more digits.
fn some_digits_end(bytes: &[u8], at: usize) -> Option<usize> {
    let end = digits_end(bytes, at);
    (end > at).then_some(end)
}

fn word_end(bytes: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    let end = at + word.len();
    (bytes.get(at..end) == Some(word)).then_some(end)
}

fn skip_blanks(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_of(data: &str) -> Option<&str> {
        let message = format!(r#"["signal","r:a","r:b",{data}]"#);
        compact_signal(&message).map(|parts| parts.data.len()).map(|len| &data[..len])
    }

    #[test]
    fn reads_the_compact_form() {
        let text = r#"["signal","room:alice","room:bob",{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n"}]"#;
        let parts = compact_signal(text).expect("compact signal");
        assert_eq!(parts.from, "room:alice");
        assert_eq!(parts.to, "room:bob");
        assert_eq!(parts.data, r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n"}"#);
    }

    #[test]
    fn takes_every_kind_of_json_value() {
        for data in [
            "null",
            "true",
            "false",
            "0",
            "-0",
            "12.5e-3",
            "1E+400",
            "123456789012345678901234567890",
            r#""""#,
            r#""a\"b\\c\/d\b\f\n\r\te""#,
            "[]",
            "{}",
            "[ ]",
            "{ }",
            r#"{"a":[1,{"b":null}],"c":"d"}"#,
            " [ 1 , \"x\" ,\n{ \"k\" :\t[ ] } ] ".trim(),
            "\"ünïcødé and more than sixteen bytes of it\"",
        ] {
            assert_eq!(data_of(data), Some(data), "{data}");
        }
    }

    #[test]
    fn leaves_to_serde_json_what_it_is_not_sure_of() {
        for text in [
            // Not compact.
            r#"[ "signal","a","b",1]"#,
            r#"["signal", "a","b",1]"#,
            r#"["signal","a" ,"b",1]"#,
            r#"["signal","a","b", 1]"#,
            r#"["signal","a","b",1 ]"#,
            r#"["signal","a","b",1] "#,
            // Escapes in the addresses.
            r#"["signal","a\"","b",1]"#,
            r#"["signal","a","\u0062",1]"#,
            // \u escapes in DATA.
            r#"["signal","a","b","\u00e9"]"#,
            // Not a signal with three arguments.
            r#"["signal","a","b"]"#,
            r#"["signal","a","b",1,2]"#,
            r#"["join","a","b"]"#,
        ] {
            assert_eq!(compact_signal(text), None, "{text}");
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH as usize + 1), "]".repeat(MAX_DEPTH as usize + 1));
        assert_eq!(data_of(&deep), None);
        let deepest = format!("{}{}", "[".repeat(MAX_DEPTH as usize), "]".repeat(MAX_DEPTH as usize));
        assert_eq!(data_of(&deepest), Some(deepest.as_str()));
    }

    #[test]
    fn refuses_what_is_not_json() {
        for data in [
            "",
            "01",
            "-",
            "1.",
            "1e",
            "1e+",
            ".5",
            "+1",
            "tru",
            "nul",
            "True",
            "[1,]",
            "[,1]",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{1:2}",
            "[1 2]",
            "{\"a\":1 \"b\":2}",
            "\"open",
            "\"bad \\x\"",
            "\"tab\there\"",
            "[}",
            "{]",
            "[[]",
            "\"a\"\"b\"",
        ] {
            assert_eq!(data_of(data), None, "{data:?}");
        }
    }
}
