//! The Python that reads Sluice output back with pyarrow.

use std::path::Path;
use std::process::Command;

/// The Python to run: `$SLUICE_PYTHON`, else the venv `.ci/run` makes
/// (`~/.cache/sluice-venv`), made here once if missing so that `cargo test --workspace` needs
/// nothing set up by hand; fails unless it imports pyarrow.
pub fn python_with_pyarrow() -> String {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON.get_or_init(find_python).clone()
}

fn find_python() -> String {
    let has_pyarrow = |python: &str| {
        Command::new(python)
            .args(["-c", "import pyarrow"])
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
        if let Err(why) = has_pyarrow(&python) {
            panic!("SLUICE_PYTHON={python} cannot import pyarrow: {why}");
        }
        return python;
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let venv = Path::new(&home).join(".cache/sluice-venv");
    let python = venv.join("bin/python").to_string_lossy().into_owned();
    if has_pyarrow(&python).is_ok() {
        return python;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "pyarrow"])
            .status()
            .is_ok_and(|s| s.success());
    match has_pyarrow(&python) {
        Ok(()) if made => python,
        other => panic!(
            "this test reads the output back with pyarrow, and making a venv with it at {} \
             failed ({other:?}); make one by hand and point SLUICE_PYTHON at it:\n  \
             python3 -m venv ~/.cache/sluice-venv && ~/.cache/sluice-venv/bin/pip install pyarrow",
            venv.display()
        ),
    }
}
