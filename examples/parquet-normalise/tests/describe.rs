//! The binary describes its job and its defaults (and `cargo test` builds it for the
//! job-binary tests of sluice-cli).

#[test]
fn describes_its_job() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_parquet-normalise"))
        .arg("describe")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["jobs"], serde_json::json!(["parquet-normalise"]), "{v}");
    assert_eq!(
        v["defaults"]["parquet-normalise"]["input_format"],
        serde_json::json!("Parquet"),
        "{v}"
    );
}
