//! Text helpers for mappers.

/// Byte classes: 0 a token byte, 1 ASCII white space, 2 the lead byte of a sequence that
/// may be non-ASCII white space (U+0085, U+00A0: C2; U+1680: E1; U+2000..U+205F: E2; U+3000: E3).
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 9;
    while b <= 13 {
        t[b] = 1;
        b += 1;
    }
    t[32] = 1;
    t[0xC2] = 2;
    t[0xE1] = 2;
    t[0xE2] = 2;
    t[0xE3] = 2;
    t
};

/// Length of the white-space character at `i`, or 0 when the character there is not one.
/// These are exactly the characters with Unicode White_Space (`char::is_whitespace`).
#[inline]
fn ws_len(b: &[u8], i: usize) -> usize {
    match CLASS[b[i] as usize] {
        0 => 0,
        1 => 1,
        _ => {
            let (x, y) = (b.get(i + 1).copied(), b.get(i + 2).copied());
            match (b[i], x, y) {
                (0xC2, Some(0x85 | 0xA0), _) => 2,
                (0xE1, Some(0x9A), Some(0x80)) => 3,
                (0xE2, Some(0x80), Some(0x80..=0x8A | 0xA8 | 0xA9 | 0xAF)) => 3,
                (0xE2, Some(0x81), Some(0x9F)) => 3,
                (0xE3, Some(0x80), Some(0x80)) => 3,
                _ => 0,
            }
        }
    }
}

/// Calls `f` with every token of `text`, exactly as `str::split_whitespace` would yield them.
///
/// Works on 64-byte blocks: a white-space bitmask from plain byte comparisons (which the
/// compiler vectorizes), then token edges found with bit tricks instead of a branch per byte.
/// Only the four lead bytes that can start a non-ASCII white-space character are examined one
/// by one. No character is decoded, case-folded or normalised.
#[inline]
pub fn for_each_token<'t>(text: &'t str, mut f: impl FnMut(&'t str)) {
    let b = text.as_bytes();
    let n = b.len();
    let mut start: Option<usize> = None; // start of the token in progress
    let mut carry_ws: u64 = 0; // bits of a multi-byte white space reaching into the next block
    let mut base = 0;
    while base < n {
        let len = (n - base).min(64);
        let block = &b[base..base + len];
        let mut ws = 0u64;
        let mut lead = 0u64;
        for (k, &x) in block.iter().enumerate() {
            ws |= u64::from(x == b' ' || x.wrapping_sub(9) < 5) << k;
            lead |= u64::from(x >= 0xC2) << k;
        }
        ws |= carry_ws;
        carry_ws = 0;
        let mut l = lead;
        while l != 0 {
            let k = l.trailing_zeros() as usize;
            l &= l - 1;
            let w = ws_len(b, base + k);
            if w > 0 {
                for j in k..k + w {
                    if j < 64 {
                        ws |= 1 << j;
                    } else {
                        carry_ws |= 1 << (j - 64);
                    }
                }
            }
        }
        if len < 64 {
            ws |= !0u64 << len; // past the end counts as white space
        }
        // Walk the edges between white space and token bytes, in order.
        let mut pos = 0usize;
        loop {
            let rest = if pos >= 64 { 0 } else { ws >> pos };
            match start {
                None => {
                    // Next token byte: the first zero bit at or after pos.
                    let skip = (!rest).trailing_zeros() as usize;
                    if pos + skip >= len {
                        break;
                    }
                    pos += skip;
                    start = Some(base + pos);
                }
                Some(s) => {
                    let run = rest.trailing_zeros() as usize;
                    if pos + run >= len {
                        break; // the token goes on into the next block
                    }
                    pos += run;
                    f(&text[s..base + pos]);
                    start = None;
                }
            }
        }
        base += len;
    }
    if let Some(s) = start {
        f(&text[s..]);
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
    fn every_char_separates_exactly_when_it_is_white_space() {
        for c in (0..=char::MAX as u32).filter_map(char::from_u32) {
            let s = format!("a{c}b{c}{c}");
            assert_eq!(
                tokens(&s),
                s.split_whitespace().collect::<Vec<_>>(),
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn white_space_straddling_block_edges() {
        for sep in [
            "\u{a0}", "\u{85}", "\u{1680}", "\u{2009}", "\u{3000}", "\r\n", " ",
        ] {
            for pad in 55..=70 {
                for tail in ["", "z", "é日"] {
                    let s = format!(
                        "{}{sep}{}{sep}{tail}",
                        "x".repeat(pad),
                        "ab".repeat(pad % 7)
                    );
                    assert_eq!(
                        tokens(&s),
                        s.split_whitespace().collect::<Vec<_>>(),
                        "{s:?}"
                    );
                    let t = format!("{sep}{}é{sep}", "日".repeat(pad / 3));
                    assert_eq!(
                        tokens(&t),
                        t.split_whitespace().collect::<Vec<_>>(),
                        "{t:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn matches_split_whitespace_on_generated_text() {
        // Deterministic pseudo-random mix of ASCII, separators and multi-byte characters.
        let alphabet: Vec<char> = "ab Z\t\n\r\u{a0}é日🎉\u{2009}\u{0b}x".chars().collect();
        let mut state: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..200 {
            let mut s = String::new();
            for _ in 0..300 {
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
