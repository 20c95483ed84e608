//! One conformance suite that every datastore kind runs, through the storage crate's own
//! calls (the ones the coordinator and executors make): list, ranged read, multipart write,
//! commit, abort and cleanup. Each kind's test hands it a root URI and a raw lister that sees
//! everything stored there, independently of Sluice, so leftovers show.

use std::path::{Path, PathBuf};

use sluice_storage::{
    list_inputs, plan_splits, read_split_text, Manifest, ManifestFile, OutputCommitter,
    StorageError,
};

/// Lists every file under `ROOT/SUB` (relative to it, any name, recursively), sorted.
pub type RawLister<'a> = &'a dyn Fn(&str) -> Vec<String>;

/// Every file under `dir`, relative to it, sorted; none if it does not exist.
pub fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// About `size` bytes of numbered lines with multi-byte characters.
fn text(size: usize) -> String {
    let mut t = String::with_capacity(size + 64);
    let mut i = 0u64;
    while t.len() < size {
        t.push_str(&format!(
            "line {i} ünïcödé {}\n",
            i.wrapping_mul(2654435761) % 1000
        ));
        i += 1;
    }
    t
}

/// Writes `data` as file `name` of attempt 1 of `task` of `job`; returns the attempt dir.
fn attempt(c: &OutputCommitter, job: &str, task: &str, name: &str, data: &[u8]) -> PathBuf {
    let dir = c.attempt_dir(job, task, 1);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
    dir
}

/// Runs the suite against `root` (`ds://NAME` or `ds://NAME/prefix`), staging object-store
/// attempts under `staging`.
pub fn run(kind: &str, root: &str, raw: RawLister, staging: &Path) {
    let out = format!("{root}/conf-out");
    let c = OutputCommitter::open(&out)
        .unwrap_or_else(|e| panic!("{kind}: {e}"))
        .with_staging(staging);
    c.check(false).unwrap();
    c.setup_job(false).unwrap();

    // Multipart write: 9 MiB is two parts on an object store.
    let data = text(9 << 20);
    let lines = data.lines().count() as u64;
    let d0 = attempt(&c, "jc", "r-00000", "part-r-00000-jc.txt", data.as_bytes());
    let staged = c.stage_task("jc", &d0).unwrap();
    assert!(
        !raw("conf-out").contains(&"part-r-00000-jc.txt".to_string()),
        "{kind}: staged output must not be visible before its commit"
    );
    let committed = staged.commit().unwrap();
    assert_eq!(committed.len(), 1, "{kind}: {committed:?}");
    assert!(
        raw("conf-out").contains(&"part-r-00000-jc.txt".to_string()),
        "{kind}: committed output is visible"
    );

    // Abort: an attempt that may not commit leaves nothing.
    let d1 = attempt(&c, "jc", "r-00001", "part-r-00001-jc.txt", b"aborted\n");
    c.stage_task("jc", &d1).unwrap().abort();
    assert!(
        !raw("conf-out").iter().any(|f| f.contains("r-00001")),
        "{kind}: aborted attempt left {:?}",
        raw("conf-out")
    );
    assert!(!d1.exists(), "{kind}: aborted attempt's staging is removed");

    // An attempt that dies after staging: neither committed nor aborted.
    let d2 = attempt(&c, "jc", "r-00002", "part-r-00002-jc.txt", b"dead\n");
    drop(c.stage_task("jc", &d2).unwrap());

    // Job commit, then cleanup: exactly the committed part and _SUCCESS remain.
    let manifest = Manifest {
        bad_records: Vec::new(),
        job_id: "jc".into(),
        job: "conformance".into(),
        format: "text".into(),
        files: vec![ManifestFile {
            path: "part-r-00000-jc.txt".into(),
            rows: lines,
            bytes: data.len() as u64,
        }],
        rows: lines,
        bytes: data.len() as u64,
    };
    c.commit_job(&manifest).unwrap();
    assert_eq!(
        raw("conf-out"),
        vec!["_SUCCESS".to_string(), "part-r-00000-jc.txt".to_string()],
        "{kind}: after the job commit"
    );
    assert_eq!(c.read_manifest().unwrap(), manifest, "{kind}");
    let e = c.check(false).unwrap_err();
    assert!(
        matches!(e, StorageError::OutputCommitted(_)),
        "{kind}: a committed output refuses a second job: {e}"
    );

    // List: the committed part, not _SUCCESS.
    let files = list_inputs(std::slice::from_ref(&out)).unwrap();
    assert_eq!(files.len(), 1, "{kind}: {files:?}");
    assert!(files[0].path.ends_with("/part-r-00000-jc.txt"), "{kind}");
    assert_eq!(files[0].len, data.len() as u64, "{kind}");

    // Ranged reads: 1 MiB line-aligned splits put the file back together exactly.
    let splits = plan_splits(&files, 1 << 20, false);
    assert!(splits.len() >= 8, "{kind}: {} splits", splits.len());
    let mut back = String::new();
    for s in &splits {
        back.push_str(&read_split_text(s).unwrap().text);
    }
    assert!(back == data, "{kind}: split reads differ from the file");

    // A failed job's abort removes its committed parts, open uploads and temporary files.
    let failed = format!("{root}/conf-failed");
    let f = OutputCommitter::open(&failed)
        .unwrap()
        .with_staging(staging);
    f.setup_job(false).unwrap();
    let d = attempt(&f, "jf", "r-00000", "part-r-00000-jf.txt", b"committed\n");
    f.stage_task("jf", &d).unwrap().commit().unwrap();
    let d = attempt(
        &f,
        "jf",
        "r-00001",
        "part-r-00001-jf.txt",
        &data.as_bytes()[..1 << 20],
    );
    drop(f.stage_task("jf", &d).unwrap());
    assert!(!raw("conf-failed").is_empty());
    f.abort_job("jf").unwrap();
    assert_eq!(
        raw("conf-failed"),
        Vec::<String>::new(),
        "{kind}: a failed job leaves nothing"
    );
}
