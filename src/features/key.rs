//! Hash keys assembled on the stack: what the extractor once built in `String`s (lowercased,
//! length-capped pieces), byte for byte, without allocating.

/// A key of at most [`Key::CAP`] bytes.
pub(super) struct Key {
    buf: [u8; Key::CAP],
    len: usize,
}

impl Key {
    /// Room for the longest key: a language name, `:`, and two 40-byte chain links with a `.`.
    pub(super) const CAP: usize = 128;

    pub(super) fn new() -> Key {
        Key { buf: [0; Key::CAP], len: 0 }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Keeps the first `len` bytes.
    pub(super) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Appends `s` verbatim.
    pub(super) fn push(&mut self, s: &[u8]) {
        let n = s.len().min(Key::CAP - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    /// Appends the ASCII-lowercased `s`.
    pub(super) fn push_lower(&mut self, s: &[u8]) {
        let n = s.len().min(Key::CAP - self.len);
        for (d, c) in self.buf[self.len..self.len + n].iter_mut().zip(s) {
            *d = c.to_ascii_lowercase();
        }
        self.len += n;
    }

    /// Appends the ASCII-lowercased `s` (UTF-8), cut to at most `max` bytes at a char boundary.
    pub(super) fn push_lower_cut(&mut self, s: &[u8], max: usize) {
        self.push_lower(cut(s, max));
    }
}

/// UTF-8 `s` cut to at most `max` bytes at a char boundary.
pub(super) fn cut(s: &[u8], max: usize) -> &[u8] {
    let mut end = s.len().min(max);
    // Continuation bytes (0b10xx_xxxx) are the only ones that are not a char boundary.
    while end < s.len() && s[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_cut_lowercased_piece_is_what_string_building_gives(s in any::<String>(), max in 0usize..48) {
            // What the extractor did before: push chars of the cut prefix, ASCII-lowercased.
            let mut end = s.len().min(max);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            let want: String = s[..end].chars().map(|c| c.to_ascii_lowercase()).collect();
            let mut k = Key::new();
            k.push_lower_cut(s.as_bytes(), max);
            prop_assert_eq!(k.bytes(), want.as_bytes());
        }
    }
}
