//! Inputs for Sluice's micro-benchmarks; the benchmarks themselves live in `benches/`.

/// Deterministic text of about `bytes` bytes: Zipf-like words over a vocabulary of `vocab`.
pub fn zipf_text(bytes: usize, vocab: usize) -> String {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = String::with_capacity(bytes + 64);
    let mut in_line = 0;
    while out.len() < bytes {
        // rank ~ vocab^u: a cheap heavy-tailed draw, with rank 1 the most common.
        let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
        let rank = (vocab as f64).powf(u) as u64;
        out.push_str(&format!("w{rank:x}"));
        in_line += 1;
        if in_line == 12 {
            out.push('\n');
            in_line = 0;
        } else {
            out.push(' ');
        }
    }
    out
}
