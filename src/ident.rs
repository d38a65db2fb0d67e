//! Idents and room names: fresh random idents, 12 to 23 lowercase letters, as the original
//! hands out; and which characters a name a client chooses may not hold.

use std::cmp::Ordering;

/// Shortest and longest ident we generate.
pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 23;

const LETTERS: u8 = 26;
const LENGTHS: u8 = (MAX_LEN - MIN_LEN + 1) as u8;

/// A fresh ident from the OS's random source, or `None` if it cannot give any.
///
/// Letters and lengths are drawn by rejection sampling so that each is
/// exactly uniform (a plain `byte % 26` would favour the first letters).
pub fn fresh_ident() -> Option<String> {
    let mut pool = [0u8; 64];
    let mut next = pool.len();
    let mut draw = |range: u8| -> Option<u8> {
        // Largest multiple of `range` that fits in a byte: bytes above it are skipped.
        let zone = u8::MAX - (u8::MAX % range) - 1;
        loop {
            if next == pool.len() {
                getrandom::fill(&mut pool).ok()?;
                next = 0;
            }
            let byte = pool.get(next).copied()?;
            next += 1;
            if byte <= zone {
                return Some(byte % range);
            }
        }
    };
    let len = MIN_LEN + usize::from(draw(LENGTHS)?);
    let mut ident = String::with_capacity(len);
    for _ in 0..len {
        ident.push(char::from(b'a' + draw(LETTERS)?));
    }
    Some(ident)
}

/// True for characters an ident or room name may not contain. Names end up in user
/// interfaces and logs, so besides control characters (Unicode category Cc: C0, DEL, C1)
/// this refuses what changes or hides text there without being seen: Unicode's format
/// characters (category Cf: bidirectional overrides and isolates such as U+202E, zero-width
/// characters, U+FEFF, tag characters) and the line and paragraph separators U+2028 and
/// U+2029. Letters, digits, marks, symbols and spaces of every script are fine.
pub fn is_forbidden_in_name(c: char) -> bool {
    c.is_control() || is_format(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// True for Unicode's format characters (general category Cf), which Rust's standard
/// library has no query for.
pub fn is_format(c: char) -> bool {
    if c < '\u{ad}' {
        return false;
    }
    FORMAT_CHARACTERS
        .binary_search_by(|&(first, last)| {
            if last < c {
                Ordering::Less
            } else if first > c {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        })
        .is_ok()
}

/// Every character of general category Cf (Format) in Unicode 16.0, as ranges in code point
/// order (from the Unicode Character Database's DerivedGeneralCategory.txt). The category
/// grows rarely: Unicode 14 added U+0890..U+0891, Unicode 15 U+13439..U+1343F.
const FORMAT_CHARACTERS: [(char, char); 21] = [
    ('\u{ad}', '\u{ad}'),       // SOFT HYPHEN
    ('\u{600}', '\u{605}'),     // Arabic number signs (prepended concatenation marks)
    ('\u{61c}', '\u{61c}'),     // ARABIC LETTER MARK
    ('\u{6dd}', '\u{6dd}'),     // ARABIC END OF AYAH
    ('\u{70f}', '\u{70f}'),     // SYRIAC ABBREVIATION MARK
    ('\u{890}', '\u{891}'),     // Arabic pound and piastre marks above
    ('\u{8e2}', '\u{8e2}'),     // ARABIC DISPUTED END OF AYAH
    ('\u{180e}', '\u{180e}'),   // MONGOLIAN VOWEL SEPARATOR
    ('\u{200b}', '\u{200f}'),   // zero width space, non-joiner, joiner; LRM, RLM
    ('\u{202a}', '\u{202e}'),   // bidirectional embeddings and overrides (LRE .. RLO)
    ('\u{2060}', '\u{2064}'),   // word joiner, invisible operators
    ('\u{2066}', '\u{206f}'),   // bidirectional isolates; deprecated format characters
    ('\u{feff}', '\u{feff}'),   // ZERO WIDTH NO-BREAK SPACE (byte order mark)
    ('\u{fff9}', '\u{fffb}'),   // interlinear annotation
    ('\u{110bd}', '\u{110bd}'), // KAITHI NUMBER SIGN
    ('\u{110cd}', '\u{110cd}'), // KAITHI NUMBER SIGN ABOVE
    ('\u{13430}', '\u{1343f}'), // Egyptian hieroglyph format controls
    ('\u{1bca0}', '\u{1bca3}'), // shorthand format controls
    ('\u{1d173}', '\u{1d17a}'), // musical symbol beams, ties, slurs, phrases
    ('\u{e0001}', '\u{e0001}'), // LANGUAGE TAG
    ('\u{e0020}', '\u{e007f}'), // tag characters
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_ranges_are_sorted_and_apart() {
        for pair in FORMAT_CHARACTERS.windows(2) {
            let [(first, last), (next, _)] = [pair[0], pair[1]];
            assert!(first <= last, "{first:?}..{last:?}");
            // Apart by at least one character that is not in the table, or they would be one range.
            assert!(u32::from(last) + 1 < u32::from(next), "{last:?} and {next:?}");
        }
    }

    #[test]
    fn every_format_character_and_none_around_them() {
        let total: u32 =
            FORMAT_CHARACTERS.iter().map(|&(first, last)| u32::from(last) - u32::from(first) + 1).sum();
        // Unicode 16.0 has 170 characters of category Cf.
        assert_eq!(total, 170);
        for (first, last) in FORMAT_CHARACTERS {
            for c in (u32::from(first)..=u32::from(last)).filter_map(char::from_u32) {
                assert!(is_format(c) && is_forbidden_in_name(c), "{c:?}");
            }
            for outside in [u32::from(first) - 1, u32::from(last) + 1].into_iter().filter_map(char::from_u32)
            {
                assert!(!is_format(outside), "{outside:?}");
            }
        }
        // Everything is checked: the count of characters found equals the table's.
        let found = (0..=u32::from(char::MAX)).filter_map(char::from_u32).filter(|&c| is_format(c)).count();
        assert_eq!(found, total as usize);
    }

    #[test]
    fn names_may_hold_any_script_but_no_invisible_or_control_characters() {
        for c in [
            '\u{0}', '\n', '\u{1f}', '\u{7f}', '\u{85}', '\u{9f}', '\u{202e}', '\u{feff}', '\u{2028}',
            '\u{2029}',
        ] {
            assert!(is_forbidden_in_name(c), "{c:?}");
        }
        for c in [
            'a', 'Z', '0', ':', ' ', '-', 'é', '\u{301}', 'ß', 'ع', '日', '😀', '\u{a0}', '\u{3000}',
            '\u{fe0f}',
        ] {
            assert!(!is_forbidden_in_name(c), "{c:?}");
        }
    }

    #[test]
    fn idents_are_lowercase_letters_of_allowed_length() {
        for _ in 0..2000 {
            let ident = fresh_ident().expect("randomness");
            assert!((MIN_LEN..=MAX_LEN).contains(&ident.len()), "{ident}");
            assert!(ident.bytes().all(|b| b.is_ascii_lowercase()), "{ident}");
        }
    }

    #[test]
    fn every_length_and_letter_occurs() {
        let mut lengths = [0u32; MAX_LEN + 1];
        let mut letters = [0u32; 26];
        for _ in 0..5000 {
            let ident = fresh_ident().expect("randomness");
            lengths[ident.len()] += 1;
            for b in ident.bytes() {
                letters[usize::from(b - b'a')] += 1;
            }
        }
        assert!(lengths[MIN_LEN..=MAX_LEN].iter().all(|&n| n > 0));
        // About 87,500 letters: each expected ~3,365 times; a biased draw would skew far more.
        let expected = letters.iter().sum::<u32>() / 26;
        assert!(letters.iter().all(|&n| n > expected * 8 / 10 && n < expected * 12 / 10));
    }

    #[test]
    fn rejection_zone_is_a_multiple_of_the_range() {
        for range in [LETTERS, LENGTHS] {
            let zone = u8::MAX - (u8::MAX % range) - 1;
            assert_eq!((u16::from(zone) + 1) % u16::from(range), 0);
        }
    }
}
