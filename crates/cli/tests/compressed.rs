//! gzip and zstd inputs: each file one split, read whole; a truncated file fails clearly.

use std::io::Write;

use sluice_testkit::path_str as s;
use sluice_testkit::{assert_counts_eq, generate_text, read_tsv_counts, reference_counts, sluice};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

#[test]
fn wordcount_reads_gzip_zstd_and_plain_files_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    let files = generate_text(BIN, &plain, "3MiB", 3, 31);
    let want = reference_counts(&files);
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let data: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&data[0]).unwrap();
    std::fs::write(input.join("a.txt.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(
        input.join("b.txt.zst"),
        zstd::encode_all(data[1].as_slice(), 3).unwrap(),
    )
    .unwrap();
    std::fs::write(input.join("c.txt"), &data[2]).unwrap();
    let out = tmp.path().join("out");
    let r = sluice(
        BIN,
        &[
            "run",
            "wordcount",
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--format",
            "tsv",
            "--split-size",
            "256KiB",
            "--top",
            "0",
        ],
    );
    r.assert_success();
    assert_counts_eq(&read_tsv_counts(&out), &want, "gzip + zstd + plain");

    // Cut the gzip in half: the job fails naming the file, and commits nothing.
    let gz_bytes = std::fs::read(input.join("a.txt.gz")).unwrap();
    std::fs::write(input.join("a.txt.gz"), &gz_bytes[..gz_bytes.len() / 2]).unwrap();
    let out2 = tmp.path().join("out2");
    let r = sluice(
        BIN,
        &[
            "run",
            "wordcount",
            "--input",
            s(&input),
            "--output",
            s(&out2),
        ],
    );
    assert!(!r.success());
    let line = r.last_stderr_line();
    assert!(
        line.contains("a.txt.gz") && line.contains("truncated or corrupt"),
        "{line}"
    );
    assert!(!out2.join("_SUCCESS").exists());
}
