//! The Python the tests use: pyarrow to read Sluice output back, moto as a second
//! S3-compatible server.

use std::path::Path;
use std::process::Command;

/// The Python to run: `$SLUICE_PYTHON`, else the venv `.ci/run` makes
/// (`~/.cache/sluice-venv`), made here once if missing so that `cargo test --workspace` needs
/// nothing set up by hand; fails unless it imports pyarrow.
pub fn python_with_pyarrow() -> String {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| python_importing("pyarrow", "pyarrow"))
        .clone()
}

/// The same Python, made to import moto's S3 server (`pip install 'moto[server]'`).
pub fn python_with_moto() -> String {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| python_importing("moto.server", "moto[server]"))
        .clone()
}

/// A Python that imports `module`, installing pip's `package` into the venv if it is missing.
fn python_importing(module: &str, package: &str) -> String {
    let imports = |python: &str| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .output()
            .map_err(|e| e.to_string())
            .and_then(|o| {
                o.status
                    .success()
                    .then_some(())
                    .ok_or_else(|| String::from_utf8_lossy(&o.stderr).trim().to_string())
            })
    };
    if let Ok(python) = std::env::var("SLUICE_PYTHON") {
        if let Err(why) = imports(&python) {
            panic!("SLUICE_PYTHON={python} cannot import {module}: {why}; pip install '{package}' into it");
        }
        return python;
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let venv = Path::new(&home).join(".cache/sluice-venv");
    let python = venv.join("bin/python").to_string_lossy().into_owned();
    if imports(&python).is_ok() {
        return python;
    }
    let made = (venv.join("bin/pip").exists()
        || Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success()))
        && Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", package])
            .status()
            .is_ok_and(|s| s.success());
    match imports(&python) {
        Ok(()) if made => python,
        other => panic!(
            "this test needs Python's {module}, and installing '{package}' into the venv at {} \
             failed ({other:?}); make one by hand and point SLUICE_PYTHON at it:\n  \
             python3 -m venv ~/.cache/sluice-venv && ~/.cache/sluice-venv/bin/pip install pyarrow 'moto[server]'",
            venv.display()
        ),
    }
}
