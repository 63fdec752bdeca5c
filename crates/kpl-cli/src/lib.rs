//! The `kpl` command-line tool (the `kpl` binary of this package; `docs/cli.md` describes it).
//!
//! The library holds what the tool measures that other measuring programs share: the process's
//! CPU time and memory as `kpl bench` and the benchmark scoreboard report them.
//!
//! ```
//! use kpl_cli::usage::ProcessUsage;
//!
//! let before = ProcessUsage::now();
//! let work: u64 = (0..1_000u64).sum();
//! let after = ProcessUsage::now();
//! assert!(work > 0 && after.cpu() >= before.cpu());
//! ```
#![forbid(unsafe_code)]

pub mod usage;
