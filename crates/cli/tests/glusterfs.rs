//! GlusterFS for real: `scripts/glusterfs.sh up` starts `glusterd`, creates a one-brick volume
//! on `gluster-local` (a name for 127.0.0.1) and mounts it with `mount -t glusterfs`; word count
//! then reads from and commits to the mount through a `glusterfs` datastore, and the datastore
//! conformance suite runs on it.
//!
//! Needs root, `/dev/fuse` and the GlusterFS packages (the script installs them with apt-get
//! when `glusterd` is missing; `.ci/run` pre-installs them). Where GlusterFS cannot run, the
//! test fails with the script's reason: it never passes without a real mount.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_testkit::{
    assert_counts_eq, generate_text, part_files, path_str as s, read_manifest, read_tsv_counts,
    reference_counts, snapshot_dir, total, CmdOutput,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/glusterfs.sh");
/// `up` may install packages with apt-get first.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);
const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// A mounted `sluicetest` volume; dropping it (also on a panic) runs `glusterfs.sh down`, which
/// unmounts, stops and deletes the volume and kills glusterd by its PID.
struct Gluster {
    dir: PathBuf,
    mnt: PathBuf,
}

impl Gluster {
    /// Runs `glusterfs.sh up DIR MOUNTPOINT`; panics with the script's output if it fails.
    fn up(dir: PathBuf, mnt: PathBuf) -> Gluster {
        let g = Gluster { dir, mnt };
        let (ok, log) = g.script("up");
        assert!(
            ok,
            "GlusterFS could not be set up: `{SCRIPT} up` failed (it needs root, /dev/fuse and \
             glusterfs-server/glusterfs-client):\n{log}"
        );
        g
    }

    /// Runs the script with `sub`; returns success and its output.
    fn script(&self, sub: &str) -> (bool, String) {
        let log = self
            .dir
            .parent()
            .expect("DIR has a parent")
            .join(format!("glusterfs-{sub}.log"));
        support::script::run(
            SCRIPT,
            &[sub.as_ref(), self.dir.as_os_str(), self.mnt.as_os_str()],
            &log,
            SCRIPT_TIMEOUT,
        )
    }
}

impl Drop for Gluster {
    fn drop(&mut self) {
        let (ok, log) = self.script("down");
        if !ok {
            // No panic here: this may run while the test is already panicking.
            eprintln!("`{SCRIPT} down` failed:\n{log}");
        }
    }
}

/// The filesystem type mounted at `point` (the last mount there), from `/proc/self/mountinfo`.
fn fstype_at(point: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    let mut found = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(dash) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.get(4) == Some(&s(point)) {
            found = f.get(dash + 1).map(|t| t.to_string());
        }
    }
    found
}

/// `sluice ARGS` with `SLUICE_DATASTORES=datastores`.
fn sluice_ds(args: &[&str], datastores: &Path) -> CmdOutput {
    support::script::sluice_ds(BIN, args, datastores, JOB_TIMEOUT)
}

#[test]
fn wordcount_reads_from_and_commits_to_a_real_glusterfs_mount() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    // Declared after `tmp`, so dropped (unmounted, stopped) before the tempdir is removed.
    let gluster = Gluster::up(tmp.path().join("gluster"), mnt.clone());
    assert_eq!(
        fstype_at(&mnt).as_deref(),
        Some("fuse.glusterfs"),
        "{} is not a GlusterFS FUSE mount after `up`",
        mnt.display()
    );
    eprintln!("glusterfs up in {:?}", t0.elapsed());

    // The corpus is written through the mount.
    let data = mnt.join("data");
    let files = generate_text(BIN, data.join("in"), "4MiB", 3, 11);
    assert_eq!(files.len(), 3, "{files:?}");
    let want = reference_counts(&files);
    assert!(want.len() > 1000, "reference has only {} words", want.len());

    // A plain directory (not on the volume) for the negative cases.
    let plain = tmp.path().join("plain");
    std::fs::create_dir_all(plain.join("in")).unwrap();
    std::fs::write(plain.join("in/a.txt"), "a b\n").unwrap();
    let ds = tmp.path().join("datastores.toml");
    std::fs::write(
        &ds,
        format!(
            "[datastore.gv]\nkind = \"glusterfs\"\nroot = \"{}\"\n\n\
             [datastore.plain]\nkind = \"glusterfs\"\nroot = \"{}\"\n",
            s(&data),
            s(&plain)
        ),
    )
    .unwrap();

    let t1 = Instant::now();
    let r = sluice_ds(
        &[
            "run",
            "wordcount",
            "--input",
            "ds://gv/in",
            "--output",
            "ds://gv/out",
            "--format",
            "tsv",
            "--top",
            "0",
        ],
        &ds,
    );
    r.assert_success();
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    eprintln!("word count on glusterfs in {:?}", t1.elapsed());

    let out = data.join("out");
    let got = read_tsv_counts(&out);
    assert_counts_eq(&got, &want, "word count on GlusterFS");
    assert_eq!(total(&got), total(&want), "total tokens");

    // `_SUCCESS` lists exactly the part files present, and nothing else is left.
    let m = read_manifest(&out);
    assert_eq!(m["job"], "wordcount");
    assert_eq!(m["format"], "tsv");
    assert_eq!(m["rows"].as_u64(), Some(want.len() as u64), "{m}");
    let mut listed: Vec<String> = m["files"]
        .as_array()
        .expect("files array")
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let on_disk: Vec<String> = part_files(&out, "tsv")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(!on_disk.is_empty(), "no part files in {}", out.display());
    assert_eq!(listed, on_disk, "manifest files vs part files on the mount");
    for f in m["files"].as_array().unwrap() {
        let p = out.join(f["path"].as_str().unwrap());
        assert_eq!(
            f["bytes"].as_u64(),
            Some(p.metadata().unwrap().len()),
            "{f}"
        );
    }
    assert!(!out.join("_temporary").exists(), "_temporary left behind");
    let mut entries: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    let mut expected = on_disk.clone();
    expected.insert(0, "_SUCCESS".to_string());
    assert_eq!(entries, expected, "entries of {}", out.display());

    // A `glusterfs` datastore whose root is not on a GlusterFS mount: refused, on the input
    // side and on the output side, with one error line, and nothing written anywhere.
    let plain_before = snapshot_dir(&plain);
    let data_before = snapshot_dir(&data);
    for (input, output) in [
        ("ds://plain/in", "ds://gv/out-neg"),
        ("ds://gv/in", "ds://plain/out"),
    ] {
        let r = sluice_ds(
            &[
                "run",
                "wordcount",
                "--input",
                input,
                "--output",
                output,
                "--format",
                "tsv",
            ],
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
        let line = errors[0];
        for w in ["datastore 'plain'", s(&plain), "not fuse.glusterfs"] {
            assert!(
                line.contains(w),
                "{input} -> {output}: error line lacks {w:?}: {line}"
            );
        }
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        assert_eq!(snapshot_dir(&plain), plain_before, "{input} -> {output}");
        assert_eq!(snapshot_dir(&data), data_before, "{input} -> {output}");
    }

    // The datastore conformance suite, on the same mount (this process reads the datastores
    // file once, here).
    std::env::set_var("SLUICE_DATASTORES", &ds);
    support::conformance::run(
        "glusterfs",
        "ds://gv",
        &|sub| support::conformance::walk(&data.join(sub)),
        &tmp.path().join("staging"),
    );

    let t2 = Instant::now();
    drop(gluster);
    assert_eq!(fstype_at(&mnt), None, "{} still mounted", mnt.display());
    eprintln!(
        "glusterfs down in {:?}; whole test {:?}",
        t2.elapsed(),
        t0.elapsed()
    );
}
