//! Text helpers for mappers.

/// True for the ASCII characters with Unicode White_Space (`\t \n \x0B \x0C \r` and space).
#[inline]
fn ascii_ws(b: u8) -> bool {
    matches!(b, 9..=13 | 32)
}

/// Calls `f` with every token of `text`, exactly as `str::split_whitespace` would yield them.
///
/// ASCII bytes are classified with one comparison; other characters are decoded and checked
/// with `char::is_whitespace`, so Unicode White_Space (NBSP, U+2028, ideographic space, ...)
/// separates tokens too and nothing is case-folded or normalised.
#[inline]
pub fn for_each_token<'t>(text: &'t str, mut f: impl FnMut(&'t str)) {
    let b = text.as_bytes();
    let n = b.len();
    let mut i = 0;
    loop {
        // skip separators
        while i < n {
            let c = b[i];
            if c < 0x80 {
                if !ascii_ws(c) {
                    break;
                }
                i += 1;
            } else {
                match text[i..].chars().next() {
                    Some(ch) if ch.is_whitespace() => i += ch.len_utf8(),
                    _ => break,
                }
            }
        }
        if i >= n {
            return;
        }
        let start = i;
        while i < n {
            let c = b[i];
            if c < 0x80 {
                if ascii_ws(c) {
                    break;
                }
                i += 1;
            } else {
                match text[i..].chars().next() {
                    Some(ch) if !ch.is_whitespace() => i += ch.len_utf8(),
                    _ => break,
                }
            }
        }
        f(&text[start..i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(s: &str) -> Vec<&str> {
        let mut v = Vec::new();
        for_each_token(s, |t| v.push(t));
        v
    }

    #[test]
    fn matches_split_whitespace_on_tricky_text() {
        let samples = [
            "",
            "   ",
            "a",
            " hello  world\r\n",
            "tab\tsep\x0bvt\x0cff",
            "nbsp\u{a0}sep\u{2028}line\u{3000}ideo\u{85}nel",
            "ünïcödé wörds 日本語 テキスト",
            "zero\u{200b}width is not white space",
            "emoji 🎉🎉 mixed\u{2003}em",
        ];
        for s in samples {
            assert_eq!(tokens(s), s.split_whitespace().collect::<Vec<_>>(), "{s:?}");
        }
    }

    #[test]
    fn matches_split_whitespace_on_generated_text() {
        // Deterministic pseudo-random mix of ASCII, separators and multi-byte characters.
        let alphabet: Vec<char> = "ab Z\t\n\r\u{a0}é日🎉\u{2009}\u{0b}x".chars().collect();
        let mut state: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..200 {
            let mut s = String::new();
            for _ in 0..64 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            assert_eq!(
                tokens(&s),
                s.split_whitespace().collect::<Vec<_>>(),
                "{s:?}"
            );
        }
    }
}
