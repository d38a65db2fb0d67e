//! Fresh random idents: 12 to 23 lowercase letters, as the original hands out.

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

#[cfg(test)]
mod tests {
    use super::*;

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
