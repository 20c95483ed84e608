//! The datastore conformance suite (`support::conformance`) on a POSIX datastore and on an S3
//! datastore served by a real s3s-fs; the GlusterFS mount runs it in `glusterfs.rs`.

mod support;

use support::conformance;
use support::s3::{keys_under, S3Server, KEY, SECRET};

#[test]
fn posix_and_s3_datastores_pass_the_same_conformance_suite() {
    let server = S3Server::start();
    let store = server.bucket("lake");
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let ds = server.datastores(tmp.path(), "lake");
    let mut text = std::fs::read_to_string(&ds).unwrap();
    text.push_str(&format!(
        "\n[datastore.disk]\nkind = \"posix\"\nroot = \"{}\"\n",
        disk.display()
    ));
    std::fs::write(&ds, text).unwrap();
    // This binary's only test: the process-wide datastores are read once, from here.
    std::env::set_var("SLUICE_DATASTORES", &ds);
    std::env::set_var("LAKE_KEY", KEY);
    std::env::set_var("LAKE_SECRET", SECRET);

    let staging = tmp.path().join("staging");
    conformance::run(
        "posix",
        "ds://disk",
        &|sub| conformance::walk(&disk.join(sub)),
        &staging,
    );
    conformance::run(
        "s3",
        "ds://lake",
        &|sub| keys_under(&store, &format!("data/{sub}")),
        &staging,
    );
    let ops = server.operations();
    let count = |op: &str| ops.iter().filter(|o| o.as_str() == op).count();
    assert!(count("UploadPart") >= 2, "{ops:?}");
    assert!(count("AbortMultipartUpload") >= 3, "{ops:?}");
    assert_eq!(count("CopyObject") + count("UploadPartCopy"), 0, "{ops:?}");
    let open: Vec<String> = conformance::walk(&server.root.path().join("data"))
        .into_iter()
        .filter(|f| f.starts_with(".upload"))
        .collect();
    assert!(open.is_empty(), "uploads left open on the server: {open:?}");
}
