//! `kpl`: produce, tail, decode and bench Kinesis streams from a terminal.
//!
//! Every command works on the embedded stream (`--local`: an in-process simulated Kinesis, kept
//! in a directory between runs with `--local-state DIR`) or on a real or local server
//! (`--endpoint URL`, `--region`, or the AWS environment). See `docs/cli.md`.
#![forbid(unsafe_code)]

mod bench;
mod cli;
mod decode;
mod input;
mod produce;
mod progress;
mod stream;
mod tail;
mod target;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};

/// How a command ended, as its exit status says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Everything asked was done.
    Done = 0,
    /// Some records failed (the summary says which and why).
    Failed = 1,
    /// The command line or the input is wrong (the message names what and where).
    BadInput = 2,
    /// The stream cannot be reached: unknown stream, credentials refused, endpoint unreachable.
    Unreachable = 3,
    /// Interrupted (Ctrl-C) before everything was done.
    Interrupted = 130,
}

/// A command's failure before or instead of its work: what to tell, and the exit status.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) outcome: Outcome,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn bad_input(message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::BadInput,
            message: message.into(),
        }
    }

    pub(crate) fn unreachable(message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Unreachable,
            message: message.into(),
        }
    }
}

/// Writes `text` to stdout. A reader that went away (`kpl produce … | head -1`) is not worth a
/// panic after the work is done.
pub(crate) fn say(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The producer's warnings reach the person at the terminal (RUST_LOG is not read: the
    // command prints what matters, and warnings only).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_target(false)
        .without_time()
        .init();
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(*shell, &mut Cli::command(), "kpl", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let threads = match &cli.command {
        Command::Bench(bench) => bench.threads.max(1),
        _ => 2,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kpl: cannot start the runtime: {error}");
            return ExitCode::from(Outcome::Failed as u8);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Produce(args) => produce::run(args).await,
            Command::Tail(args) => tail::run(args).await,
            Command::Decode(args) => decode::run(args),
            Command::Bench(args) => bench::run(args).await,
            Command::Stream(command) => stream::run(command).await,
            Command::Completions { .. } => Ok(Outcome::Done),
        }
    });
    // Tasks still waiting on stdin or a socket must not hold the process.
    runtime.shutdown_background();
    match result {
        Ok(outcome) => ExitCode::from(outcome as u8),
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("kpl: {}", failure.message);
            }
            ExitCode::from(failure.outcome as u8)
        }
    }
}
