//! The bytes of JSON string text: which ones need an escape, and where a run of bytes that
//! need none ends. Reading (`fast_path`) and writing (`protocol`) strings share these.

/// A quote, a backslash or a control character: the bytes a JSON string cannot hold as
/// they are. Written with `|`, not `||`: a short circuit would keep the compiler from
/// checking many bytes at once where this is folded over a slice.
pub fn needs_escape(byte: u8) -> bool {
    (byte == b'"') | (byte == b'\\') | (byte < 0x20)
}

/// The index of the first byte from `at` on that needs an escape, or the length of `bytes`.
/// Whole steps of sixteen bytes first, each checked with a few vector instructions (a
/// byte-by-byte search over a 500-byte signal cost twice as much), then byte by byte.
pub fn plain_run_end(bytes: &[u8], at: usize) -> usize {
    const STEP: usize = 16;
    let rest = bytes.get(at..).unwrap_or_default();
    let plain_steps = rest
        .chunks_exact(STEP)
        .take_while(|step| !step.iter().fold(false, |any, &byte| any | needs_escape(byte)))
        .count();
    let mut end = at + plain_steps * STEP;
    while bytes.get(end).is_some_and(|&byte| !needs_escape(byte)) {
        end += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_byte_to_escape_anywhere_in_a_long_run() {
        let plain = "ünï x".repeat(10);
        for at in 0..plain.len() {
            for special in [b'"', b'\\', b'\n', 0x1f, 0] {
                let mut bytes = plain.clone().into_bytes();
                bytes[at] = special;
                assert_eq!(plain_run_end(&bytes, 0), at);
                assert_eq!(plain_run_end(&bytes, at), at);
                if at > 0 {
                    assert_eq!(plain_run_end(&bytes, at - 1), at);
                }
            }
        }
        assert_eq!(plain_run_end(plain.as_bytes(), 0), plain.len());
        assert_eq!(plain_run_end(plain.as_bytes(), plain.len() - 3), plain.len());
    }

    #[test]
    fn only_quotes_backslashes_and_control_characters_need_escapes() {
        let needing: Vec<u8> = (0..=255).filter(|&byte| needs_escape(byte)).collect();
        let mut expected: Vec<u8> = (0..0x20).collect();
        expected.extend([b'"', b'\\']);
        expected.sort_unstable();
        assert_eq!(needing, expected);
    }
}
