//! Helper scripts (servers for the datastore tests) and `sluice` runs with a datastores file.

use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sluice_testkit::CmdOutput;

/// Runs `bash SCRIPT ARGS`, killed after `timeout`; returns success and its output. The output
/// goes to `log`, not a pipe, so that daemons the script starts cannot hold the test's pipes open.
pub fn run(script: &str, args: &[&OsStr], log: &Path, timeout: Duration) -> (bool, String) {
    let out = File::create(log).expect("creating the script log");
    let err = out.try_clone().expect("cloning the script log");
    let mut child = match Command::new("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot start bash {script}: {e}")),
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    match status {
        Some(st) if st.success() => (true, text),
        Some(st) => (false, format!("{st}\n{text}")),
        None => (false, format!("timed out after {timeout:?}\n{text}")),
    }
}

/// `BIN ARGS` with `SLUICE_DATASTORES=datastores`; killed, and the test failed, after `timeout`.
pub fn sluice_ds(bin: &str, args: &[&str], datastores: &Path, timeout: Duration) -> CmdOutput {
    let line = format!("sluice {}", args.join(" "));
    let child = Command::new(bin)
        .args(args)
        .env("SLUICE_DATASTORES", datastores)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting `{line}`: {e}"));
    let pid = child.id().to_string();
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || match finished.recv_timeout(timeout) {
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = Command::new("kill").args(["-9", &pid]).status();
            true
        }
        _ => false,
    });
    let out = child.wait_with_output().expect("waiting for sluice");
    let _ = done.send(());
    let killed = watchdog.join().expect("watchdog thread");
    let r = CmdOutput {
        cmdline: line,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !killed,
        "`{}` did not finish within {timeout:?}; stderr:\n{}",
        r.cmdline, r.stderr
    );
    r
}
