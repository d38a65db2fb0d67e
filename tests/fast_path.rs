//! The compact-signal fast path and serde_json agree: wherever `fast_path::compact_signal`
//! answers, serde_json reads the same FROM, TO and DATA in the message (and so does the
//! general parser built on it). The fuzz target `parse_call` checks the same property on
//! arbitrary bytes; these property tests run in plain `cargo test`, on messages shaped as
//! browsers write them (`JSON.stringify`) and on near misses of them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a panic fails the test

use diva_signal::fast_path::{self, MAX_DEPTH};
use diva_signal::protocol::{Call, parse_call_general};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use serde_json::value::RawValue;

/// A few hundred cases per property: a second or two in a debug build.
fn config() -> ProptestConfig {
    ProptestConfig { cases: 384, failure_persistence: None, ..ProptestConfig::default() }
}

/// The property: where the fast path answers, serde_json reads the same call.
fn agree(text: &str) -> Result<bool, TestCaseError> {
    let Some(fast) = fast_path::compact_signal(text) else { return Ok(false) };
    // serde_json alone: a four-element array, two strings and a JSON value.
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|err| {
        TestCaseError::fail(format!("fast path took {text:?}, serde_json refuses it: {err}"))
    })?;
    prop_assert_eq!(items.len(), 4, "{}", text);
    let string = |item: &RawValue| serde_json::from_str::<String>(item.get()).ok();
    prop_assert_eq!(string(items[0]), Some("signal".to_owned()), "{}", text);
    prop_assert_eq!(string(items[1]), Some(fast.from.to_owned()), "{}", text);
    prop_assert_eq!(string(items[2]), Some(fast.to.to_owned()), "{}", text);
    prop_assert_eq!(items[3].get(), fast.data, "{}", text);
    // The general parser (serde_json under the protocol's rules).
    match parse_call_general(text) {
        Ok(Call::Signal { from, to, data }) => {
            prop_assert_eq!(
                (fast.from, fast.to, fast.data),
                (from.as_ref(), to.as_ref(), data.get()),
                "{}",
                text
            );
        }
        other => {
            prop_assert!(false, "fast path took {:?} as {:?}; the general parser: {:?}", text, fast, other)
        }
    }
    Ok(true)
}

/// Strings as they come: any characters, controls, quotes and backslashes included.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z:]{0,12}",
        proptest::collection::vec(
            prop_oneof![
                Just('"'),
                Just('\\'),
                Just('/'),
                Just('\n'),
                Just('\t'),
                Just('\u{1}'),
                Just('\u{1f}'),
                Just('\u{7f}'),
                Just('é'),
                Just('😀'),
                Just(' '),
                Just('a'),
            ],
            0..24,
        )
        .prop_map(|chars| chars.into_iter().collect()),
    ]
}

/// A JSON value as `JSON.stringify` would give it (serde_json writes strings and
/// structure the same way), nested up to `depth`.
fn json_value(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(Value::from),
        any_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((any_text(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// How deep containers nest in `value`.
fn depth_of(value: &Value) -> u32 {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        Value::Object(members) => 1 + members.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

/// `value` inside `levels` arrays or objects, to go past [`MAX_DEPTH`] now and then.
fn nested(value: Value, levels: u32, objects: bool) -> Value {
    (0..levels).fold(value, |inner, level| {
        if objects && level % 2 == 1 {
            Value::Object([("k".to_owned(), inner)].into_iter().collect())
        } else {
            Value::Array(vec![inner])
        }
    })
}

/// A number as the JSON grammar allows it, beyond what serde_json writes (`1E+400`, `-0.0e-0`).
fn number_text() -> impl Strategy<Value = String> {
    "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,12})?([eE][+-]?[0-9]{1,4})?"
}

/// A string literal with escapes written by hand: `\/`, `\u` (pairs included), short escapes.
fn escaped_string_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("a"),
            Just("é"),
            Just("\\\""),
            Just("\\\\"),
            Just("\\/"),
            Just("\\b"),
            Just("\\f"),
            Just("\\n"),
            Just("\\r"),
            Just("\\t"),
            Just("\\u0041"),
            Just("\\u00e9"),
            Just("\\ud83d\\ude00"),
            Just("\\ud83d"),
        ],
        0..10,
    )
    .prop_map(|parts| format!("\"{}\"", parts.concat()))
}

/// Pieces of JSON syntax strung together at random: valid JSON now and then, mostly close misses
/// (`01`, `1.`, `[1,]`, `{"a"}`, `tru`, `"\x"`).
fn token_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("["),
        Just("]"),
        Just("{"),
        Just("}"),
        Just(","),
        Just(":"),
        Just(" "),
        Just("\n"),
        Just("\""),
        Just("\\"),
        Just("\"a\""),
        Just("\\x"),
        Just("\\u00"),
        Just("0"),
        Just("1"),
        Just("-"),
        Just("."),
        Just("e"),
        Just("E+"),
        Just("true"),
        Just("tru"),
        Just("null"),
        Just("\u{1}"),
    ];
    proptest::collection::vec(token, 1..12).prop_map(|tokens| tokens.concat())
}

/// Small JSON text with short values (`[1,{"a":null}]`), where one edit makes a near miss
/// of the grammar likely (`[1,]`, `{"a"}`, `[1{`).
fn small_json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(Value::Null),
        Just(Value::Bool(true)),
        (0..10u8).prop_map(Value::from),
        Just(Value::from(-1.5)),
        Just(Value::from("a")),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::vec(("[ab]", inner), 0..3)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
    .prop_map(|value| value.to_string())
}

/// DATA text: stringified, pretty-printed, with hand-written numbers and escapes inside, or
/// a near miss of JSON.
fn data_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => json_value(4).prop_map(|value| value.to_string()),
        2 => token_soup(),
        2 => (small_json(), any::<usize>(), any::<u8>(), syntax_token())
            .prop_map(|(data, at, edit, with)| token_near_miss(&data, at, edit, with)),
        1 => json_value(3).prop_map(|value| serde_json::to_string_pretty(&value).expect("JSON")),
        1 => (json_value(2), 0..MAX_DEPTH + 4, any::<bool>())
            .prop_map(|(value, levels, objects)| nested(value, levels, objects).to_string()),
        1 => number_text(),
        1 => escaped_string_text(),
        1 => proptest::collection::vec(prop_oneof![number_text(), escaped_string_text()], 0..4)
            .prop_map(|items| format!("[{}]", items.join(","))),
    ]
}

/// An address: a plain `room:ident`, or any string, as JSON text.
fn address_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9]{1,8}:[a-z0-9]{1,8}".prop_map(|address| format!("\"{address}\"")),
        1 => any_text().prop_map(|address| Value::String(address).to_string()),
        1 => escaped_string_text(),
    ]
}

/// Changes `text` a little: a blank, a byte of JSON syntax, or a character dropped or doubled.
fn near_miss(text: &str, at: usize, edit: u8, with: char) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let at = at % (chars.len() + 1);
    match edit % 4 {
        0 => chars.insert(at, with),
        1 if at < chars.len() => {
            chars.remove(at);
        }
        2 if at < chars.len() => chars[at] = with,
        _ if at < chars.len() => chars.insert(at, chars[at]),
        _ => chars.push(with),
    }
    chars.into_iter().collect()
}

/// The tokens of compact JSON text without escapes (what [`small_json`] writes).
fn tokens(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(first) = rest.chars().next() {
        let len = match first {
            '"' => rest[1..].find('"').map_or(rest.len(), |end| end + 2),
            '-' | '0'..='9' => rest
                .find(|c: char| !matches!(c, '-' | '+' | '.' | 'e' | 'E' | '0'..='9'))
                .unwrap_or(rest.len()),
            'a'..='z' => rest.find(|c: char| !c.is_ascii_lowercase()).unwrap_or(rest.len()),
            other => other.len_utf8(),
        };
        let (token, tail) = rest.split_at(len);
        tokens.push(token);
        rest = tail;
    }
    tokens
}

/// Tokens that make near misses of JSON where they land.
fn syntax_token() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just(","),
        Just(":"),
        Just("["),
        Just("]"),
        Just("{"),
        Just("}"),
        Just("\"a\""),
        Just("0"),
        Just("01"),
        Just("1."),
        Just("-"),
        Just(".5"),
        Just("1e"),
        Just("tru"),
        Just(" "),
    ]
}

/// Changes `text` by one token: one dropped, doubled, replaced by `with`, or `with` put before it.
fn token_near_miss(text: &str, at: usize, edit: u8, with: &str) -> String {
    let mut tokens = tokens(text);
    let at = at % (tokens.len() + 1);
    match edit % 4 {
        0 => tokens.insert(at, with),
        1 if at < tokens.len() => {
            tokens.remove(at);
        }
        2 if at < tokens.len() => tokens[at] = with,
        _ if at < tokens.len() => tokens.insert(at, tokens[at]),
        _ => tokens.push(with),
    }
    tokens.concat()
}

fn syntax_char() -> impl Strategy<Value = char> {
    prop_oneof![
        Just(' '),
        Just('\t'),
        Just('\n'),
        Just('\r'),
        Just('"'),
        Just('\\'),
        Just(','),
        Just(':'),
        Just('['),
        Just(']'),
        Just('{'),
        Just('}'),
        Just('0'),
        Just('-'),
        Just('.'),
        Just('e'),
        Just('u'),
        Just('\u{0}'),
        Just('é'),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Signals as browsers send them. The fast path takes every one whose addresses need no
    /// escape and whose DATA has no `\u` escape and is nested no deeper than it goes, and
    /// reads what serde_json reads.
    #[test]
    fn compact_signals_read_the_same(
        from in "[a-z0-9]{1,8}:[a-z0-9]{1,8}",
        to in "[a-z0-9]{1,8}:[a-z0-9]{1,8}",
        data in prop_oneof![
            json_value(5),
            (json_value(2), 0..MAX_DEPTH + 4, any::<bool>())
                .prop_map(|(value, levels, objects)| nested(value, levels, objects)),
        ],
    ) {
        let text = Value::Array(vec!["signal".into(), from.into(), to.into(), data.clone()]).to_string();
        let taken = agree(&text)?;
        let data_text = data.to_string();
        if !data_text.contains("\\u") && depth_of(&data) <= MAX_DEPTH {
            prop_assert!(taken, "the fast path declined {:?}", text);
        }
    }

    /// Any pieces in the compact form: addresses with escapes, DATA with hand-written
    /// numbers and escapes, values nested past the fast path's depth.
    #[test]
    fn compact_form_with_any_pieces_reads_the_same(
        from in address_text(),
        to in address_text(),
        data in data_text(),
    ) {
        agree(&format!(r#"["signal",{from},{to},{data}]"#))?;
    }

    /// Near misses of small DATA between plain addresses: the grammar's edges (`[1,]`,
    /// `01`, `{"a"}`, `1.`), where the fast path must decline whatever serde_json refuses.
    #[test]
    fn near_misses_of_small_data_read_the_same(
        data in small_json(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), syntax_token()), 1..3),
    ) {
        let mut data = data;
        for (at, edit, with) in edits {
            data = token_near_miss(&data, at, edit, with);
        }
        agree(&format!(r#"["signal","r:a","r:b",{data}]"#))?;
    }

    /// Near misses: one blank, byte of syntax, or character too many, too few or changed,
    /// anywhere in a signal; most are no longer compact, many no longer JSON.
    #[test]
    fn near_misses_read_the_same(
        from in address_text(),
        to in address_text(),
        data in data_text(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), syntax_char()), 1..3),
    ) {
        let mut text = format!(r#"["signal",{from},{to},{data}]"#);
        for (at, edit, with) in edits {
            text = near_miss(&text, at, edit, with);
        }
        agree(&text)?;
    }
}
