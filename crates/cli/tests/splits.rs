//! Split boundaries: hand-made files whose lines, multi-byte characters, CRLF pairs and
//! Unicode white space straddle every split boundary; every tiny split size must give exactly
//! the counts of `str::split_whitespace` over the whole files (no token lost or counted twice).

use std::path::PathBuf;

use sluice_testkit::{
    assert_counts_eq, read_manifest, read_tsv_counts, reference_counts, sluice, total,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// Items placed across boundaries: 2-, 3- and 4-byte characters, 2- and 3-byte white space,
/// CRLF, LF and an empty line.
const STRADDLERS: &[&str] = &[
    "é", "日", "🎉", "\u{a0}", "\u{3000}", "\r\n", "\n", "\n\n", "ж\u{a0}",
];

/// ASCII filler of numbered words with varied separators; ASCII so any exact length is reachable.
struct Filler {
    n: u64,
    pending: Vec<u8>,
}

impl Filler {
    fn new(seed: u64) -> Self {
        Filler {
            n: seed * 1000,
            pending: Vec::new(),
        }
    }

    fn next(&mut self) -> char {
        if self.pending.is_empty() {
            self.n += 1;
            let sep = match self.n % 6 {
                0 => "\n",
                1 => "\t",
                2 => "\r\n",
                _ => " ",
            };
            let word = format!("w{}{}", self.n, sep);
            self.pending = word.into_bytes();
            self.pending.reverse();
        }
        self.pending.pop().unwrap() as char
    }
}

/// A file where, for split size `s`, every straddler sits at every offset across a boundary
/// (starting on it, ending on it, and every cut in between); it ends without a newline.
fn straddling(s: usize) -> String {
    let mut buf = String::new();
    let mut fill = Filler::new(s as u64);
    for item in STRADDLERS {
        for o in 0..=item.len() {
            let boundary = (buf.len() + 1 + o).div_ceil(s) * s;
            while buf.len() < boundary - o {
                buf.push(fill.next());
            }
            buf.push_str(item);
        }
    }
    for _ in 0..5 {
        buf.push(fill.next());
    }
    buf.push_str("tail日");
    buf
}

struct Corpus {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// Small hand-made files, used at every split size.
    generic: Vec<PathBuf>,
}

impl Corpus {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("in");
        std::fs::create_dir_all(&dir).unwrap();
        let long_token = "L".repeat(100);
        let long_line = format!(
            "{} {long_token} ünïcödé {} end\nshort\n",
            (0..12)
                .map(|i| format!("lw{i}"))
                .collect::<Vec<_>>()
                .join(" "),
            "日本語 🎉 ".repeat(8)
        );
        let files: &[(&str, String)] = &[
            ("crlf.txt", "alpha beta\r\ngamma\r\n\r\ndelta  epsilon\r\nαβ γ\r\nlast\r\n".into()),
            (
                "no_trailing_newline.txt",
                "first line\nsecond liné\nno newline at the end 終わり🎉".into(),
            ),
            ("empty.txt", String::new()),
            (
                "unicode_ws.txt",
                "a\u{a0}b\u{3000}c d\u{2028}e\u{85}f\u{a0}\u{a0}g\n\u{3000}lead\u{3000}trail\u{3000}\n\u{a0}\n日\u{3000}本\u{a0}語\n"
                    .into(),
            ),
            ("multibyte.txt", "é日🎉ж ω語 ßü 🎉🎉 x日y\nñ\u{1F600}z 語語 é\n𝄞 ab𝄞cd\n".into()),
            ("whitespace_only.txt", " \n\t\r\n\u{a0}\u{3000}\n\n  \u{2028}".into()),
            ("newlines_only.txt", "\n\n\n\n".into()),
            ("lone_cr.txt", "a\rb c\r\rd\r\nend\r".into()),
            ("long_line.txt", long_line),
        ];
        let mut generic = Vec::new();
        for (name, text) in files {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            generic.push(p);
        }
        Corpus {
            _tmp: tmp,
            dir,
            generic,
        }
    }

    /// Writes (once) the straddling file for split size `s`.
    fn straddling(&self, s: usize) -> PathBuf {
        let p = self.dir.join(format!("straddle_{s}.txt"));
        if !p.exists() {
            std::fs::write(&p, straddling(s)).unwrap();
        }
        p
    }

    /// A file with one line over 3 KiB holding a 1500-byte token.
    fn long_line_1k(&self) -> PathBuf {
        let p = self.dir.join("long_1k.txt");
        let mut text = String::from("before\n");
        for i in 0..120 {
            text.push_str(&format!("λόγος{i} "));
        }
        text.push_str(&"X".repeat(1500));
        text.push_str(" после\u{3000}конец\nafter\n");
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// The number of map tasks in the summary line `job ... succeeded in Xs: N maps, ...`.
fn maps_in_summary(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("job ") && l.contains(" maps, "))
        .unwrap_or_else(|| panic!("no summary line in stderr:\n{stderr}"));
    let before = &line[..line.find(" maps, ").unwrap()];
    before
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .expect("map count")
}

fn run_and_check(split_size: &str, size_bytes: u64, inputs: &[PathBuf]) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut args: Vec<String> = vec!["run".into(), "wordcount".into()];
    for i in inputs {
        args.push("--input".into());
        args.push(i.to_str().unwrap().into());
    }
    args.extend(
        [
            "--output",
            out.to_str().unwrap(),
            "--format",
            "tsv",
            "--split-size",
            split_size,
            "--executors",
            "2",
            "--slots",
            "4",
            "--reducers",
            "3",
            "--top",
            "0",
        ]
        .map(String::from),
    );
    let r = sluice(BIN, &args);
    r.assert_success();
    let want = reference_counts(inputs);
    let got = read_tsv_counts(&out);
    assert_counts_eq(&got, &want, &format!("split size {split_size}"));
    assert_eq!(total(&got), total(&want), "split size {split_size}: tokens");
    assert_eq!(
        read_manifest(&out)["rows"].as_u64(),
        Some(want.len() as u64)
    );
    // The split size was honoured: at most one map per started split of each file, and at
    // least one per two split sizes (a planner may merge a small tail into the last split).
    let lens: Vec<u64> = inputs.iter().map(|p| p.metadata().unwrap().len()).collect();
    let most: u64 = lens.iter().map(|l| l.div_ceil(size_bytes)).sum();
    let least: u64 = lens
        .iter()
        .filter(|&&l| l > 0)
        .map(|l| (l / (2 * size_bytes)).max(1))
        .sum();
    let maps = maps_in_summary(&r.stderr);
    assert!(
        (least..=most).contains(&maps),
        "{maps} map tasks for split size {split_size}, expected {least}..={most}"
    );
}

fn inputs(c: &Corpus, straddle: &[usize], long_1k: bool) -> Vec<PathBuf> {
    let mut v = c.generic.clone();
    v.extend(straddle.iter().map(|&s| c.straddling(s)));
    if long_1k {
        v.push(c.long_line_1k());
    }
    v
}

#[test]
fn straddling_file_puts_items_across_boundaries() {
    // Self-check of the generator: every straddler occurs at every cut of every boundary size.
    for s in [7, 13, 64, 1024] {
        let text = straddling(s);
        let b = text.as_bytes();
        for item in STRADDLERS {
            for o in 0..=item.len() {
                let found = (1..=b.len() / s).any(|k| {
                    let start = k * s - o;
                    b[start..].starts_with(item.as_bytes())
                });
                assert!(
                    found,
                    "size {s}: {item:?} not found {o} bytes before a boundary"
                );
            }
        }
    }
}

#[test]
fn split_size_1_byte() {
    let c = Corpus::new();
    run_and_check("1", 1, &inputs(&c, &[], false));
}

#[test]
fn split_size_7_bytes() {
    let c = Corpus::new();
    run_and_check("7", 7, &inputs(&c, &[7], false));
}

#[test]
fn split_size_13_bytes() {
    let c = Corpus::new();
    run_and_check("13", 13, &inputs(&c, &[7, 13], false));
}

#[test]
fn split_size_64_bytes() {
    let c = Corpus::new();
    run_and_check("64", 64, &inputs(&c, &[7, 13, 64], true));
}

#[test]
fn split_size_1kib() {
    let c = Corpus::new();
    run_and_check("1KiB", 1024, &inputs(&c, &[13, 64, 1024], true));
}

/// The whole directory as one input, at a size that is not a divisor of anything.
#[test]
fn directory_input_split_size_5_bytes() {
    let c = Corpus::new();
    let files = inputs(&c, &[7], false);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let r = sluice(
        BIN,
        &[
            "run",
            "wordcount",
            "--input",
            c.dir.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--format",
            "tsv",
            "--split-size",
            "5",
            "--executors",
            "2",
            "--slots",
            "4",
            "--top",
            "0",
        ],
    );
    r.assert_success();
    assert_eq!(sluice_testkit::list_input_files(&c.dir), {
        let mut f = files.clone();
        f.sort();
        f
    });
    assert_counts_eq(
        &read_tsv_counts(&out),
        &reference_counts(&files),
        "directory, size 5",
    );
}

/// Inputs that hold only empty files plan no map task; the job still commits, with no rows.
#[test]
fn only_empty_files_commit_empty_output() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.txt");
    let b = tmp.path().join("b.txt");
    std::fs::write(&a, "").unwrap();
    std::fs::write(&b, "").unwrap();
    let out = tmp.path().join("out");
    let r = sluice(
        BIN,
        &[
            "run",
            "wordcount",
            "--input",
            a.to_str().unwrap(),
            "--input",
            b.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--format",
            "tsv",
            "--split-size",
            "1",
            "--executors",
            "2",
            "--top",
            "3",
        ],
    );
    r.assert_success();
    assert!(read_tsv_counts(&out).is_empty());
    assert_eq!(read_manifest(&out)["rows"].as_u64(), Some(0));
}
