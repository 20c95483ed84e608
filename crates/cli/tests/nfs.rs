//! NFS for real, with no mount: `scripts/nfs-ganesha.sh up` starts nfs-ganesha (userspace
//! NFSv3 server) and rpcbind on loopback; word count reads from and commits to an
//! `nfs://127.0.0.1/export/...` datastore through Sluice's userspace NFSv3 client, and the
//! datastore conformance suite runs on it. The kernel here cannot mount NFS at all, so an
//! `nfs-mount` datastore on a plain directory is the "unmounted NFS root" case.
//!
//! Needs root and the nfs-ganesha packages (the script installs them with apt-get when missing).
//! Where ganesha cannot run, the test fails with the script's reason.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_testkit::{
    assert_counts_eq, generate_text, path_str as s, read_manifest, read_tsv_counts,
    reference_counts, snapshot_dir, total, CmdOutput,
};
use support::conformance;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/nfs-ganesha.sh");
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);
const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// A running ganesha exporting a local directory as `/export`; dropping it (also on a panic)
/// runs `nfs-ganesha.sh down`, which kills ganesha (and the rpcbind it started) by PID.
struct Ganesha {
    dir: PathBuf,
}

impl Ganesha {
    fn up(dir: PathBuf, export: &Path) -> Ganesha {
        std::fs::create_dir_all(&dir).unwrap();
        let g = Ganesha { dir };
        let (ok, log) = g.script("up", Some(export));
        assert!(
            ok,
            "NFS could not be set up: `{SCRIPT} up` failed (it needs root and nfs-ganesha):\n{log}"
        );
        g
    }

    fn script(&self, sub: &str, export: Option<&Path>) -> (bool, String) {
        let log = self.dir.join(format!("script-{sub}.log"));
        let mut args = vec![sub.as_ref(), self.dir.as_os_str()];
        if let Some(e) = export {
            args.push(e.as_os_str());
        }
        support::script::run(SCRIPT, &args, &log, SCRIPT_TIMEOUT)
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        let (ok, log) = self.script("down", None);
        if !ok {
            eprintln!("`{SCRIPT} down` failed:\n{log}");
        }
    }
}

fn sluice_ds(args: &[&str], datastores: &Path) -> CmdOutput {
    support::script::sluice_ds(BIN, args, datastores, JOB_TIMEOUT)
}

/// Part files listed in the manifest of `out`, sorted.
fn manifest_files(out: &Path) -> Vec<String> {
    let m = read_manifest(out);
    let mut listed: Vec<String> = m["files"]
        .as_array()
        .expect("files array")
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    listed
}

#[test]
fn wordcount_reads_from_and_commits_to_nfs_without_a_mount() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    let data = export.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Written on the server's disk before it starts: the client sees the files over NFS.
    let files = generate_text(BIN, data.join("in"), "3MiB", 3, 5);
    let want = reference_counts(&files);
    assert!(want.len() > 1000, "reference has only {} words", want.len());
    let ganesha = Ganesha::up(tmp.path().join("ganesha"), &export);
    eprintln!("ganesha up in {:?}", t0.elapsed());

    let plain = tmp.path().join("plain");
    std::fs::create_dir_all(plain.join("in")).unwrap();
    std::fs::write(plain.join("in/a.txt"), "a b\n").unwrap();
    let ds = tmp.path().join("datastores.toml");
    std::fs::write(
        &ds,
        format!(
            "[datastore.nas]\nkind = \"nfs\"\nroot = \"nfs://127.0.0.1/export/data\"\n\n\
             [datastore.direct]\nkind = \"nfs\"\nroot = \"nfs://127.0.0.1/export/data\"\n\
             port = 2049\nmount_port = 20048\n\n\
             [datastore.unmounted]\nkind = \"nfs-mount\"\nroot = \"{}\"\n\n\
             [datastore.noserver]\nkind = \"nfs\"\nroot = \"nfs://127.0.0.1/export/data\"\n\
             port = 9\nmount_port = 9\n",
            s(&plain)
        ),
    )
    .unwrap();

    // Input by plain URI (ports from the portmapper), output by name (ports given).
    let t1 = Instant::now();
    let r = sluice_ds(
        &[
            "run",
            "wordcount",
            "--input",
            "nfs://127.0.0.1/export/data/in",
            "--output",
            "ds://direct/out",
            "--format",
            "tsv",
            "--split-size",
            "1MiB",
            "--top",
            "0",
        ],
        &ds,
    );
    r.assert_success();
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    eprintln!("word count over NFS in {:?}", t1.elapsed());

    // The output, read on the server's disk: exact counts, and the manifest lists exactly the
    // part files there, with nothing else beside them.
    let out = data.join("out");
    let got = read_tsv_counts(&out);
    assert_counts_eq(&got, &want, "word count over NFS");
    assert_eq!(total(&got), total(&want), "total tokens");
    let listed = manifest_files(&out);
    let mut entries = conformance::walk(&out);
    assert!(entries.contains(&"_SUCCESS".to_string()), "{entries:?}");
    entries.retain(|e| e != "_SUCCESS");
    assert!(!listed.is_empty());
    assert_eq!(listed, entries, "manifest files vs files on the export");
    let m = read_manifest(&out);
    for f in m["files"].as_array().unwrap() {
        let p = out.join(f["path"].as_str().unwrap());
        assert_eq!(
            f["bytes"].as_u64(),
            Some(p.metadata().unwrap().len()),
            "{f}"
        );
    }
    let uploads = export.join(".sluice-uploads");
    assert_eq!(
        conformance::walk(&uploads),
        Vec::<String>::new(),
        "writes left in progress"
    );

    // The same output read back by a Sluice job through the other datastore name.
    let r = sluice_ds(
        &[
            "run",
            "wordcount",
            "--input",
            "ds://nas/in",
            "--output",
            "ds://nas/out",
            "--format",
            "tsv",
        ],
        &ds,
    );
    assert!(!r.success(), "a committed output is not overwritten");
    assert!(r.stderr.contains("ds://nas/out"), "{}", r.stderr);

    // Bad datastores: one error line naming the datastore, nothing written anywhere.
    let before = (snapshot_dir(&export), snapshot_dir(&plain));
    for (input, output, words) in [
        (
            "ds://unmounted/in",
            "ds://nas/out-neg",
            vec!["datastore 'unmounted'", "not nfs or nfs4"],
        ),
        (
            "ds://nas/in",
            "ds://unmounted/out",
            vec!["datastore 'unmounted'", "not nfs or nfs4"],
        ),
        (
            "ds://noserver/in",
            "ds://nas/out-neg",
            vec!["datastore 'noserver'", "127.0.0.1"],
        ),
        (
            "nfs://127.0.0.1/nope/in",
            "ds://nas/out-neg",
            vec!["nfs://127.0.0.1/nope/in", "check the export path"],
        ),
    ] {
        let r = sluice_ds(
            &["run", "wordcount", "--input", input, "--output", output],
            &ds,
        );
        assert!(
            !r.success(),
            "{input} -> {output} should fail:\n{}",
            r.stderr
        );
        let errors: Vec<&str> = r
            .stderr_lines()
            .into_iter()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{input} -> {output}: {}", r.stderr);
        for w in words {
            assert!(
                errors[0].contains(w),
                "{input} -> {output}: error line lacks {w:?}: {}",
                errors[0]
            );
        }
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        assert_eq!(
            (snapshot_dir(&export), snapshot_dir(&plain)),
            before,
            "{input} -> {output} wrote something"
        );
    }

    // The datastore conformance suite, through this process's own NFS client.
    std::env::set_var("SLUICE_DATASTORES", &ds);
    conformance::run(
        "nfs",
        "ds://nas",
        &|sub| conformance::walk(&data.join(sub)),
        &tmp.path().join("staging"),
    );
    assert_eq!(
        conformance::walk(&uploads),
        Vec::<String>::new(),
        "writes left in progress"
    );

    drop(ganesha);
    eprintln!("whole test {:?}", t0.elapsed());
}
