//! Arbitrary bytes as what Redis sends, fed to `resp::decode` the way `redis::RedisLink`
//! does: values are taken from the front one after another until the rest is incomplete
//! or invalid.
//!
//! Checked: no panic; a decoded value's length is within the buffer and not zero; every
//! value decodes the same from a buffer cut right after it, and the buffer cut one byte
//! earlier is incomplete (decode never claims a value before its last byte); encoding a
//! command and decoding it gives back its arguments.

#![no_main]

use diva_signal::resp::{self, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut pos = 0;
    while let Some(rest) = data.get(pos..) {
        match resp::decode(rest) {
            Ok(Some((value, used))) => {
                assert!(used > 0 && used <= rest.len(), "used {used} of {}", rest.len());
                let exact = &rest[..used];
                assert_eq!(same(resp::decode(exact)), same(Ok(Some((value, used)))));
                assert_eq!(resp::decode(&exact[..used - 1]), Ok(None), "complete before its last byte");
                pos += used;
            }
            Ok(None) | Err(_) => break,
        }
    }

    // Commands: the fuzz bytes cut at zero bytes into arguments.
    let args: Vec<&[u8]> = data.split(|&b| b == 0).take(64).collect();
    let mut out = Vec::new();
    resp::encode_command(&mut out, &args);
    assert_eq!(out.len(), resp::encoded_len(&args));
    let (value, used) = resp::decode(&out).expect("valid").expect("complete");
    assert_eq!(used, out.len());
    let items = value.into_array().expect("an array");
    assert_eq!(items.len(), args.len());
    for (item, arg) in items.iter().zip(&args) {
        assert_eq!(item.as_bytes(), Some(*arg));
    }
});

/// Results compared by their debug text: a NaN double is not equal to itself.
fn same(result: Result<Option<(Value, usize)>, resp::DecodeError>) -> String {
    format!("{result:?}")
}
