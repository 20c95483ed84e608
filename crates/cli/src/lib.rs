//! The `sluice` command as a library: the `sluice` binary's entry point, and [`job_main`],
//! which turns a job crate's `main` into a program that can describe its jobs, run them
//! embedded, submit itself to a cluster, and serve as a task worker.

mod commands;
mod embedded;
mod error;
mod gen;
mod progress;
mod top;
mod train;
mod validate;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sluice_udf::Registry;

use crate::error::CliError;

/// Sluice: a MapReduce-style engine for embarrassingly parallel batch work.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about)]
struct Cli {
    /// Log filter for stderr (e.g. info, debug, sluice_executor=debug); RUST_LOG wins if set.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Flags every job takes; those not given come from the job's defaults set in code.
#[derive(Args, Debug, Clone)]
pub struct JobArgs {
    /// Job name, e.g. wordcount (a job binary with one job needs none).
    pub job: Option<String>,
    /// Input files, directories or globs (repeatable).
    #[arg(long = "input", short = 'i')]
    pub inputs: Vec<String>,
    /// Output directory.
    #[arg(long, short = 'o')]
    pub output: Option<String>,
    /// Output format: parquet (default, zstd), tsv, csv (with a header line) or jsonl (one
    /// JSON object a line). Parquet row groups hold up to 1Mi rows unless
    /// `--param sluice.parquet.row_group_rows=N`.
    #[arg(long)]
    pub format: Option<String>,
    /// Input format: text (default), csv, csv-noheader, jsonl, parquet or arrow (IPC files).
    #[arg(long)]
    pub input_format: Option<String>,
    /// Target split size, e.g. 64MiB (default), 1MiB, 256KiB.
    #[arg(long)]
    pub split_size: Option<String>,
    /// Number of reduce tasks (default: 2 x total executor slots).
    #[arg(long)]
    pub reducers: Option<u32>,
    /// Replace an output directory that already holds a committed job.
    #[arg(long)]
    pub overwrite: bool,
    /// Memory budget of each task, e.g. 64MiB: map tasks past it cut their input into chunks
    /// and merge sorted runs spilled to disk (default: executor memory / slots).
    #[arg(long, value_name = "SIZE")]
    pub task_memory: Option<String>,
    /// Attempts each task gets before the job fails (default 4). Attempts lost with their
    /// executor do not count; a permanent error (bad input) is not retried.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: Option<u32>,
    /// Job parameter KEY=VALUE (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Write the output as COL=VALUE/part-… directories, one per value of this output column
    /// (left out of the files), as Spark's partitionBy and Hive do.
    #[arg(long, value_name = "COL")]
    pub partition_by: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a job on this machine: coordinator and executors in this process, no servers to start.
    Run {
        #[command(flatten)]
        job: JobArgs,
        /// Executors to start (default: the number of cores).
        #[arg(long)]
        executors: Option<u32>,
        /// Slots per executor.
        #[arg(long, default_value_t = 1)]
        slots: u32,
        /// Print the N most frequent rows of a count-shaped output (0: none).
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Run a coordinator.
    Coordinator {
        /// Address to listen on (port 0 picks one; the address is printed).
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
        /// Directory for job records.
        #[arg(long, default_value = "sluice-state")]
        state_dir: String,
        /// An executor whose heartbeats stop for this long is declared lost and its tasks
        /// rerun (e.g. `15s`, `500ms`).
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        executor_timeout: std::time::Duration,
    },
    /// Run an executor that takes tasks from a coordinator.
    Executor {
        /// Coordinator URL.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        coordinator: String,
        /// Directory for shuffle and scratch files.
        #[arg(long, default_value = "sluice-work")]
        work_dir: String,
        /// Tasks run at once (default: the number of cores).
        #[arg(long)]
        slots: Option<u32>,
        /// Address of this executor's shuffle service.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Memory (address-space) limit of each job-binary worker process, e.g. 2GiB.
        #[arg(long)]
        worker_memory: Option<String>,
        /// GPUs offered to tasks that ask for them (default: every GPU found at start).
        #[arg(long)]
        gpus: Option<u32>,
    },
    /// Submit a job to a coordinator.
    Submit {
        #[command(flatten)]
        job: JobArgs,
        /// Coordinator URL.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        coordinator: String,
        /// A job binary (built with sluice_worker::main) holding the job; it is uploaded.
        #[arg(long)]
        binary: Option<String>,
        /// Wait for the job, showing progress; exit non-zero if it fails.
        #[arg(long)]
        wait: bool,
        /// Print the final status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List jobs.
    Jobs {
        /// Coordinator URL.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        coordinator: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one job.
    Status {
        /// Job id.
        job_id: String,
        /// Coordinator URL.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        coordinator: String,
        /// Print JSON (with every task).
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job.
    Cancel {
        /// Job id.
        job_id: String,
        /// Coordinator URL.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        coordinator: String,
    },
    /// Write a deterministic text corpus (Zipf-distributed words, some Unicode) for trying jobs.
    /// Train a model on Parquet rows (every column a float feature but the label), one
    /// MapReduce round per epoch (sync mode: every row's gradient averaged, one step),
    /// checkpointed each epoch under OUTPUT/checkpoints/.
    Train(train::TrainCmd),
    /// Write a generated binary classification dataset (Parquet: f0..fN float32 features, a
    /// float32 0/1 label from a hidden linear rule plus noise).
    GenerateClassification {
        /// Output directory.
        dir: String,
        /// Rows in all.
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
        /// Features per row.
        #[arg(long, default_value_t = 20)]
        features: usize,
        /// Number of files.
        #[arg(long, default_value_t = 4)]
        files: u32,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Add an `id` column (the row number).
        #[arg(long)]
        id: bool,
    },
    GenerateText {
        /// Output directory.
        dir: String,
        /// Total size, e.g. 256MiB.
        #[arg(long, default_value = "32MiB")]
        size: String,
        /// Number of files.
        #[arg(long, default_value_t = 8)]
        files: u32,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn init_logs(level: Option<&str>, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.unwrap_or(default)));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Parses the command line; help and version print and end, errors are one line.
fn parse<T: Parser>() -> Result<T, ExitCode> {
    T::try_parse().map_err(|e| {
        use clap::error::ErrorKind;
        if matches!(
            e.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        ) {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // One line: the first line of clap's message names the bad flag and value.
        let msg = e.render().to_string();
        eprintln!(
            "{}",
            msg.lines().next().unwrap_or("error: invalid arguments")
        );
        ExitCode::from(2)
    })
}

/// Runs `work` on a fresh async runtime and turns its outcome into an exit code.
fn block_on(work: impl std::future::Future<Output = Result<(), CliError>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The `sluice` command.
pub fn sluice_main() -> ExitCode {
    let cli = match parse::<Cli>() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let daemon = matches!(cli.cmd, Cmd::Coordinator { .. } | Cmd::Executor { .. });
    init_logs(cli.log.as_deref(), if daemon { "info" } else { "error" });
    block_on(dispatch(cli.cmd))
}

/// A job binary's command line.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "A Sluice job binary: run its jobs here, or submit it to a cluster"
)]
struct JobBinaryCli {
    /// Log filter for stderr (e.g. info, debug); RUST_LOG wins if set.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    cmd: JobBinaryCmd,
}

#[derive(Subcommand, Debug)]
enum JobBinaryCmd {
    /// Run a job of this binary on this machine, with no servers to start.
    Run {
        #[command(flatten)]
        job: JobArgs,
        /// Executors to start (default: the number of cores).
        #[arg(long)]
        executors: Option<u32>,
        /// Slots per executor.
        #[arg(long, default_value_t = 1)]
        slots: u32,
        /// Print the N most frequent rows of a count-shaped output (0: none).
        #[arg(long, default_value_t = 0)]
        top: usize,
    },
    /// Upload this binary to a coordinator and submit one of its jobs.
    Submit {
        #[command(flatten)]
        job: JobArgs,
        /// Coordinator URL.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        coordinator: String,
        /// Wait for the job, showing progress; exit non-zero if it fails.
        #[arg(long)]
        wait: bool,
        /// Print the final status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the jobs of this binary and their defaults as JSON.
    Describe,
    /// Train a model this binary registers (`Registry::register_model`) or a built-in one:
    /// embedded, or on a cluster that runs the rounds in this binary's workers.
    Train(train::TrainCmd),
}

/// The entry point of a job binary: `run` its jobs embedded, `submit` itself to a cluster,
/// `describe` its jobs, or serve tasks as a worker (`--sluice-worker SOCKET`, how executors
/// start it).
///
/// ```no_run
/// use sluice_udf::{JobDef, Registry, SumCombiner};
/// use sluice_udf::wordcount::{WordCountMapper, WordCountReducer};
///
/// fn main() -> std::process::ExitCode {
///     let mut jobs = Registry::new();
///     jobs.register(
///         JobDef::new("my-wordcount", WordCountMapper, WordCountReducer)
///             .with_combiner(SumCombiner)
///             .input("corpus/")
///             .output("counts/"),
///     );
///     sluice_cli::job_main(jobs)
/// }
/// ```
pub fn job_main(registry: Registry) -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--sluice-worker") {
        return sluice_worker::main(registry);
    }
    let cli = match parse::<JobBinaryCli>() {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logs(cli.log.as_deref(), "error");
    match cli.cmd {
        JobBinaryCmd::Describe => {
            println!("{}", sluice_worker::describe(&registry));
            ExitCode::SUCCESS
        }
        JobBinaryCmd::Run {
            job,
            executors,
            slots,
            top,
        } => block_on(commands::run(job, executors, slots, top, registry)),
        JobBinaryCmd::Submit {
            job,
            coordinator,
            wait,
            json,
        } => block_on(async move {
            let exe = std::env::current_exe().map_err(|source| CliError::Io {
                op: "cannot find this program's own path",
                path: "/proc/self/exe".into(),
                source,
            })?;
            let exe = exe.to_string_lossy().into_owned();
            commands::submit(job, &coordinator, Some(&exe), wait, json).await
        }),
        JobBinaryCmd::Train(cmd) => block_on(async move {
            let exe = std::env::current_exe().map_err(|source| CliError::Io {
                op: "cannot find this program's own path",
                path: "/proc/self/exe".into(),
                source,
            })?;
            train::run(cmd, registry, Some(exe.to_string_lossy().into_owned())).await
        }),
    }
}

async fn dispatch(cmd: Cmd) -> Result<(), CliError> {
    match cmd {
        Cmd::Run {
            job,
            executors,
            slots,
            top,
        } => commands::run(job, executors, slots, top, Registry::builtin()).await,
        Cmd::Coordinator {
            listen,
            state_dir,
            executor_timeout,
        } => commands::coordinator(&listen, &state_dir, executor_timeout).await,
        Cmd::Executor {
            coordinator,
            work_dir,
            slots,
            listen,
            worker_memory,
            gpus,
        } => {
            commands::executor(
                &coordinator,
                &work_dir,
                slots,
                &listen,
                worker_memory.as_deref(),
                gpus,
            )
            .await
        }
        Cmd::Submit {
            job,
            coordinator,
            binary,
            wait,
            json,
        } => commands::submit(job, &coordinator, binary.as_deref(), wait, json).await,
        Cmd::Jobs { coordinator, json } => commands::jobs(&coordinator, json).await,
        Cmd::Status {
            job_id,
            coordinator,
            json,
        } => commands::status(&job_id, &coordinator, json).await,
        Cmd::Cancel {
            job_id,
            coordinator,
        } => commands::cancel(&job_id, &coordinator).await,
        Cmd::Train(cmd) => train::run(cmd, Registry::builtin(), None).await,
        Cmd::GenerateClassification {
            dir,
            rows,
            features,
            files,
            seed,
            id,
        } => {
            gen::generate_classification(
                std::path::Path::new(&dir),
                rows,
                features,
                files,
                seed,
                id,
            )?;
            println!("wrote {rows} rows of {features} features in {files} files to {dir}");
            Ok(())
        }
        Cmd::GenerateText {
            dir,
            size,
            files,
            seed,
        } => {
            let bytes = sluice_core::parse_byte_size(&size)?;
            let written = gen::generate_text(std::path::Path::new(&dir), bytes, files, seed)?;
            println!("wrote {written} bytes in {files} files to {dir}");
            Ok(())
        }
    }
}
