//! A job binary in worker mode: serves tasks on a Unix socket for the executor that spawned it.

use std::io::{BufReader, BufWriter, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::ExitCode;

use sluice_shuffle::ShuffleStore;
use sluice_udf::Registry;

use crate::protocol::{read_msg, write_msg, Request, Response};
use crate::{run_map, run_reduce, TaskFailure};

/// Environment variable with the worker's memory limit in bytes (its address space).
pub const MEMORY_LIMIT_ENV: &str = "SLUICE_WORKER_MEMORY_BYTES";

/// The entry point of a job binary: `--sluice-worker SOCKET` serves tasks (the executor starts
/// it so); `describe` prints the job names as JSON; anything else prints how to submit it.
pub fn main(registry: Registry) -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--sluice-worker") if args.len() == 3 => match serve(Path::new(&args[2]), registry) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: sluice worker: {e}");
                ExitCode::FAILURE
            }
        },
        Some("describe") => {
            println!("{}", describe(&registry));
            ExitCode::SUCCESS
        }
        _ => {
            let prog = args.first().map(String::as_str).unwrap_or("JOB_BINARY");
            eprintln!(
                "{prog} is a Sluice job binary with jobs: {}\nrun it with: sluice submit JOB --binary {prog} --input ... --output ... --wait",
                registry.names().join(", ")
            );
            ExitCode::from(2)
        }
    }
}

/// What `JOB_BINARY describe` prints: the job names, and each job's defaults set in code.
pub fn describe(registry: &Registry) -> serde_json::Value {
    let defaults: serde_json::Map<String, serde_json::Value> = registry
        .names()
        .into_iter()
        .filter_map(|n| {
            let job = registry.get(&n)?;
            Some((n, serde_json::to_value(job.defaults()).ok()?))
        })
        .collect();
    serde_json::json!({ "jobs": registry.names(), "defaults": defaults })
}

/// Binds `socket`, says `ready` on stdout, and serves each connection on its own thread until
/// stdin closes (the executor went away) or the process is killed.
pub fn serve(socket: &Path, registry: Registry) -> std::io::Result<()> {
    if let Some(limit) = std::env::var(MEMORY_LIMIT_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        rlimit::setrlimit(rlimit::Resource::AS, limit, limit)?;
    }
    let listener = UnixListener::bind(socket)?;
    // No orphans: when the executor dies, our stdin (its pipe) closes and we exit.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    println!("ready");
    for conn in listener.incoming() {
        let conn = conn?;
        let registry = registry.clone();
        std::thread::spawn(move || {
            if let Err(e) = handle(conn, &registry) {
                eprintln!("sluice worker: connection ended: {e}");
            }
        });
    }
    Ok(())
}

fn handle(conn: UnixStream, registry: &Registry) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = BufWriter::new(conn);
    let mut buf = Vec::new();
    while let Some(req) = read_msg::<Request>(&mut r)? {
        let resp = match execute(req, registry, &mut buf) {
            Ok(r) => r,
            Err(f) => Response::Failed {
                message: f.message,
                kind: f.kind,
            },
        };
        write_msg(&mut w, &resp)?;
    }
    Ok(())
}

fn execute(req: Request, registry: &Registry, buf: &mut Vec<u8>) -> Result<Response, TaskFailure> {
    let lookup = |name: &str| {
        registry.get(name).ok_or_else(|| {
            TaskFailure::fatal(format!(
                "this job binary has no job '{name}'; it has: {}",
                registry.names().join(", ")
            ))
        })
    };
    match req {
        Request::Map {
            job,
            info,
            split,
            input_format,
            reducers,
            shuffle_root,
        } => {
            let job = lookup(&job)?;
            let store = ShuffleStore::new(shuffle_root);
            let ctx = info.context(Some(&split));
            let done = run_map(job.as_ref(), &store, &ctx, input_format, reducers, buf)?;
            Ok(Response::Map {
                lines: done.lines,
                shuffle_bytes: done.shuffle_bytes,
                counters: done.counters.into_map(),
                bad_records: done.bad_records,
            })
        }
        Request::Reduce {
            job,
            info,
            segments,
            output,
            format,
        } => {
            let job = lookup(&job)?;
            let done = run_reduce(
                job.as_ref(),
                &segments,
                &output,
                format,
                &info.context(None),
            )?;
            Ok(Response::Reduce {
                rows: done.rows,
                bytes: done.bytes,
                counters: done.counters.into_map(),
                files: done.files,
            })
        }
    }
}
