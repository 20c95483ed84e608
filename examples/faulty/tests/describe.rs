//! The binary describes its jobs (and `cargo test` builds it for the job-binary tests).

#[test]
fn describes_its_jobs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faulty"))
        .arg("describe")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["jobs"],
        serde_json::json!([
            "abort",
            "flaky",
            "gpu-probe",
            "lines",
            "oom",
            "panic",
            "poison",
            "quarantine",
            "sales",
            "sales-by-region",
            "segv"
        ]),
        "{v}"
    );
}
