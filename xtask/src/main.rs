//! Project automation, run as `cargo xtask <command>` (see `.cargo/config.toml`): a module per
//! task (`ci`, `bench`, `e2e`, `fuzz`, `release`), their flags parsed in `flags`, shared steps in `util`.
//!
//! - `ci`: everything CI checks, in order; `.ci/run` and GitHub Actions call exactly this.
//! - `setup`: installs what the tests need (the Python interop oracle) into `.tools/` (git-ignored).
//! - `bench [--quick] [--check] [criterion args]`: runs the criterion benchmarks and prints the
//!   ratios the targets are stated in, then the end-to-end scoreboard (a producer process pushing
//!   1 M records over HTTP to a verifying stub process, against the wire-ready limit measured in
//!   the same run, then with 10 and 50 ms per call); `--quick` runs the scoreboard alone, once;
//!   `--check` fails when a ratio misses its target by more than 3 %.
//! - `fuzz [TARGET] [--secs N]`: runs cargo-fuzz on each (or one) fuzz target for N seconds.
//! - `soak [--seeds N] [--first N] [--minutes N]`: runs the engine simulation sweep over many more
//!   seeds than CI; with `--minutes`, for that long, half of it over HTTP with injected faults.
//! - `goodput`: the goodput table of `docs/benchmarks.md` (workload × enforcement × `RateLimit`,
//!   in the simulator's virtual time); `goodput --http`: the producer through `kpl-aws` against
//!   the simulated service behind HTTP, in real time (`benches/src/bin/kpl-goodput-http.rs`).
//! - `memory`: the memory promise's table (peak live heap by record size and endpoint, see
//!   `benches/tests/memory_promise.rs`), the producer's memory at the default limits with a
//!   stalled endpoint, then with one stuck shard for `--minutes N` (10 by default; resident
//!   memory within 5 % from minute 2 on).
//! - `e2e [--repeat N]`: starts the local Kinesis servers and runs only the end-to-end tests, N
//!   times in a row.
//! - `package`: the checks of what users get (metadata, minimum Rust, workflows, `cargo publish
//!   --dry-run`, the README's git dependencies and `cargo install --git`), as `ci` makes them.
//! - `release-prepare VERSION --date YYYY-MM-DD`, `release-notes VERSION`: the release
//!   workflow's version bump and changelog cut, and the release's notes (docs/releasing.md).

mod bench;
mod ci;
mod e2e;
mod flags;
mod fuzz;
mod release;
mod util;

use std::process::ExitCode;

use flags::Task;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = Task::parse(&args).and_then(|task| match task {
        Task::Ci => ci::ci(),
        Task::Setup => ci::setup().map(drop),
        Task::Bench {
            quick,
            check,
            criterion,
        } => bench::bench(quick, check, &criterion),
        Task::Fuzz { targets, secs } => fuzz::fuzz(&targets, secs),
        Task::Soak {
            seeds,
            first,
            minutes,
        } => fuzz::soak(seeds, first, minutes),
        Task::Goodput { http, args } => bench::goodput(http, &args),
        Task::Memory { minutes } => bench::memory(minutes),
        Task::E2e { repeat } => e2e::e2e(repeat),
        Task::Package => release::package_checks(),
        Task::ReleasePrepare { version, date } => release::prepare(&version, &date),
        Task::ReleaseNotes { version } => release::notes(&version),
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}
