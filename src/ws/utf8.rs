//! UTF-8 validation across fragments that fails as soon as a byte makes the text invalid,
//! not when the message ends (RFC 6455 §8.1, Autobahn cases 6.4.*).

/// Carries at most three bytes of an unfinished character from one chunk to the next.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Validator {
    pending: [u8; 4],
    len: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// Validates the next chunk of a text message.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), InvalidUtf8> {
        if self.len > 0 {
            let have = self.len as usize;
            let need = char_width(self.pending[0]);
            let take = (need - have).min(chunk.len());
            self.pending[have..have + take].copy_from_slice(&chunk[..take]);
            self.len += take as u8;
            chunk = &chunk[take..];
            match std::str::from_utf8(&self.pending[..self.len as usize]) {
                Ok(_) => self.len = 0,
                Err(e) if e.error_len().is_none() => return Ok(()),
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &chunk[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Whether the message may end here (no character left unfinished).
    pub fn is_complete(&self) -> bool {
        self.len == 0
    }

    pub fn reset(&mut self) {
        self.len = 0;
    }
}

/// Width of the character a valid lead byte starts; only called on bytes `from_utf8` has already
/// accepted as the start of an unfinished character.
fn char_width(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_split(bytes: &[u8], cuts: &[usize]) -> Result<bool, InvalidUtf8> {
        let mut v = Utf8Validator::default();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            v.feed(&bytes[start..cut])?;
            start = cut;
        }
        Ok(v.is_complete())
    }

    #[test]
    fn agrees_with_std_at_every_split() {
        let samples: [&[u8]; 6] = [
            "κόσμε".as_bytes(),
            "a€𝄞z".as_bytes(),
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            b"\xf4\x90\x80\x80",
            b"ab\xe2\x82",
            b"\xc0\xaf",
        ];
        for s in samples {
            let whole = std::str::from_utf8(s).is_ok();
            for i in 0..=s.len() {
                for j in i..=s.len() {
                    let got = validate_split(s, &[i, j]);
                    assert_eq!(matches!(got, Ok(true)), whole, "{s:?} at {i},{j}");
                }
            }
        }
    }

    #[test]
    fn fails_on_the_first_bad_byte() {
        let mut v = Utf8Validator::default();
        assert!(v.feed(b"hello").is_ok());
        // 0xF4 0x90 starts a code point above U+10FFFF: invalid before the character ends.
        assert_eq!(v.feed(b"\xf4"), Ok(()));
        assert_eq!(v.feed(b"\x90"), Err(InvalidUtf8));
    }
}
