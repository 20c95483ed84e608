//! The crate graph of DESIGN.md, enforced: a crate may depend only on the workspace crates it
//! is allowed to, coordinator and executor never meet except over gRPC, `core` and `udf`
//! link no tokio or tonic, and arrow and object_store are each built in one version.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

fn allowed() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([
        ("sluice-core", vec![]),
        ("sluice-rpc", vec!["sluice-core"]),
        (
            "sluice-worker",
            vec![
                "sluice-core",
                "sluice-udf",
                "sluice-storage",
                "sluice-shuffle",
            ],
        ),
        ("sluice-udf", vec!["sluice-core"]),
        ("sluice-storage", vec!["sluice-core"]),
        (
            "sluice-shuffle",
            vec!["sluice-core", "sluice-rpc", "sluice-storage"],
        ),
        (
            "sluice-coordinator",
            vec!["sluice-core", "sluice-rpc", "sluice-storage"],
        ),
        (
            "sluice-executor",
            vec![
                "sluice-core",
                "sluice-rpc",
                "sluice-storage",
                "sluice-shuffle",
                "sluice-udf",
                "sluice-worker",
            ],
        ),
        (
            "sluice-cli",
            vec![
                "sluice-core",
                "sluice-rpc",
                "sluice-storage",
                "sluice-udf",
                "sluice-coordinator",
                "sluice-executor",
                "sluice-worker",
            ],
        ),
    ])
}

/// Job crates under examples/ (`sluice-example-*`) link the user API, and the job-binary
/// entry point (`sluice_cli::job_main`, or the bare worker loop of `sluice-worker`).
const EXAMPLE_DEPS: [&str; 3] = ["sluice-udf", "sluice-worker", "sluice-cli"];

struct Graph {
    names: HashMap<String, (String, String)>, // id -> (name, version)
    normal: HashMap<String, Vec<String>>,     // id -> ids of normal (non-dev, non-build) deps
    members: Vec<String>,
}

fn metadata() -> Graph {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let mut names = HashMap::new();
    for p in v["packages"].as_array().unwrap() {
        names.insert(
            p["id"].as_str().unwrap().to_string(),
            (
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().unwrap().to_string(),
            ),
        );
    }
    let mut normal = HashMap::new();
    for n in v["resolve"]["nodes"].as_array().unwrap() {
        let deps = n["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| d["pkg"].as_str().unwrap().to_string())
            .collect();
        normal.insert(n["id"].as_str().unwrap().to_string(), deps);
    }
    let members = v["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    Graph {
        names,
        normal,
        members,
    }
}

impl Graph {
    fn name(&self, id: &str) -> &str {
        &self.names[id].0
    }

    fn closure(&self, id: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![id.to_string()];
        while let Some(x) = stack.pop() {
            for d in &self.normal[&x] {
                if seen.insert(self.name(d).to_string()) {
                    stack.push(d.clone());
                }
            }
        }
        seen
    }
}

#[test]
fn workspace_crates_depend_only_as_design_allows() {
    let g = metadata();
    let rules = allowed();
    let mut violations = Vec::new();
    for m in &g.members {
        let name = g.name(m);
        if name == "sluice-testkit" || name == "sluice-benches" {
            continue; // test and benchmark support may use anything
        }
        let rule = if name.starts_with("sluice-example-") {
            Some(&EXAMPLE_DEPS[..])
        } else {
            rules.get(name).map(Vec::as_slice)
        };
        let Some(ok) = rule else {
            violations.push(format!(
                "{name} is not in the allowed graph; add it to DESIGN and this test"
            ));
            continue;
        };
        for d in &g.normal[m] {
            let dn = g.name(d);
            if dn.starts_with("sluice-") && !ok.contains(&dn) {
                violations.push(format!("{name} -> {dn} is not allowed"));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn coordinator_and_executor_never_link_each_other() {
    let g = metadata();
    for m in &g.members {
        let (name, all) = (g.name(m), g.closure(m));
        if name == "sluice-coordinator" {
            assert!(
                !all.contains("sluice-executor"),
                "coordinator links the executor"
            );
            assert!(!all.contains("sluice-udf"), "coordinator links user code");
        }
        if name == "sluice-executor" {
            assert!(
                !all.contains("sluice-coordinator"),
                "executor links the coordinator"
            );
        }
    }
}

#[test]
fn core_udf_and_worker_link_no_runtime() {
    // The user API (udf, on core) brings neither the async runtime nor gRPC nor object_store.
    // The worker reads splits from object stores through storage, so it links object_store
    // (and tokio under it) but still no gRPC. Each crate is resolved on its own (`cargo tree
    // -p`), as a job crate would build it; `cargo metadata` would unify features with the
    // executor's and see shuffle's gRPC half.
    let api: &[&str] = &["tokio", "tonic", "object_store", "hyper"];
    for (krate, banned_list) in [
        ("sluice-core", api),
        ("sluice-udf", api),
        ("sluice-worker", &["tonic"][..]),
    ] {
        let out = Command::new(env!("CARGO"))
            .args([
                "tree", "--locked", "-e", "normal", "--prefix", "none", "--format", "{p}", "-p",
                krate,
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo tree");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = String::from_utf8_lossy(&out.stdout);
        let names: BTreeSet<&str> = tree
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(
            names.contains(krate),
            "cargo tree printed no {krate}: {tree}"
        );
        for &banned in banned_list {
            assert!(!names.contains(banned), "{krate} links {banned}");
        }
    }
}

#[test]
fn one_version_of_arrow_and_object_store() {
    let g = metadata();
    let mut versions: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, version) in g.names.values() {
        if name.starts_with("arrow") || name == "parquet" || name == "object_store" {
            versions.entry(name).or_default().insert(version);
        }
    }
    let dup: Vec<_> = versions.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(dup.is_empty(), "several versions built: {dup:?}");
    assert!(
        versions.contains_key("arrow-array"),
        "arrow is expected in the graph"
    );
}
