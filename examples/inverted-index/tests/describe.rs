//! The binary describes its job (and `cargo test` builds it for the job-binary tests).

#[test]
fn describes_its_job() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inverted-index"))
        .arg("describe")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"jobs":["inverted-index"]}"#
    );
}
