//! The binary describes its jobs (and `cargo test` builds it for the job-binary tests).

#[test]
fn describes_its_jobs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faulty"))
        .arg("describe")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"jobs":["abort","lines","oom","panic"]}"#
    );
}
