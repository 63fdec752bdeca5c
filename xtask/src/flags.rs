//! The tasks and their flags, parsed into types before anything runs.

use crate::fuzz::FUZZ_TARGETS;
use crate::util::Result;

/// What `cargo xtask` was asked to do.
#[derive(Debug, PartialEq)]
pub(crate) enum Task {
    /// Everything CI checks, in order.
    Ci,
    /// Installs what the tests need into `.tools/`.
    Setup,
    /// The criterion benchmarks (given these filter arguments), then the scoreboard; `quick`:
    /// the scoreboard alone, once.
    Bench {
        quick: bool,
        check: bool,
        criterion: Vec<String>,
    },
    /// cargo-fuzz on these targets for `secs` each.
    Fuzz {
        targets: Vec<&'static str>,
        secs: u64,
    },
    /// The simulation sweep over `seeds` seeds from `first`, or for `minutes`.
    Soak {
        seeds: u64,
        first: u64,
        minutes: Option<u64>,
    },
    /// The goodput table, for these workloads; with `http`, in real time over HTTP.
    Goodput { http: bool, args: Vec<String> },
    /// The producer's memory with a stalled endpoint, then a stuck shard for `minutes`.
    Memory { minutes: u64 },
    /// The end-to-end suites, `repeat` times.
    E2e { repeat: u32 },
    /// The checks of what users get: metadata, packages, the README's way of depending.
    Package,
    /// The version bump and changelog cut of a release.
    ReleasePrepare { version: String, date: String },
    /// The changelog's section for a release.
    ReleaseNotes { version: String },
}

pub(crate) const USAGE: &str = "usage: cargo xtask <ci | setup | bench [--quick] [--check] [criterion args] | \
    fuzz [TARGET] [--secs N] | soak [--seeds N] [--first N] [--minutes N] | e2e [--repeat N] | \
    memory [--minutes N] | goodput [--http] [WORKLOAD | RECORDS...] | package | \
    release-prepare VERSION --date YYYY-MM-DD | release-notes VERSION>";

impl Task {
    /// The task `args` (without the program's name) ask for.
    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let (task, rest) = args.split_first().ok_or(USAGE)?;
        match task.as_str() {
            "ci" => none(rest).map(|()| Self::Ci),
            "setup" => none(rest).map(|()| Self::Setup),
            "bench" => Ok(Self::Bench {
                quick: rest.iter().any(|arg| arg == "--quick"),
                check: rest.iter().any(|arg| arg == "--check"),
                criterion: rest
                    .iter()
                    .filter(|arg| *arg != "--quick" && *arg != "--check")
                    .cloned()
                    .collect(),
            }),
            "fuzz" => fuzz(rest),
            "soak" => soak(rest),
            "goodput" => Ok(Self::Goodput {
                http: rest.iter().any(|arg| arg == "--http"),
                args: rest
                    .iter()
                    .filter(|arg| *arg != "--http")
                    .cloned()
                    .collect(),
            }),
            "memory" => match rest {
                [] => Ok(Self::Memory { minutes: 10 }),
                [flag, n] if flag == "--minutes" => Ok(Self::Memory {
                    minutes: number(flag, n)?,
                }),
                _ => Err("usage: cargo xtask memory [--minutes N]".to_owned()),
            },
            "e2e" => match rest {
                [] => Ok(Self::E2e { repeat: 1 }),
                [flag, count] if flag == "--repeat" => count
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .map(|repeat| Self::E2e { repeat })
                    .ok_or_else(|| format!("--repeat takes a positive number, not {count}")),
                other => Err(format!("unknown e2e options {other:?}")),
            },
            "package" => none(rest).map(|()| Self::Package),
            "release-prepare" => match rest {
                [version, flag, date] if flag == "--date" => Ok(Self::ReleasePrepare {
                    version: version.clone(),
                    date: date.clone(),
                }),
                _ => Err("usage: cargo xtask release-prepare VERSION --date YYYY-MM-DD".to_owned()),
            },
            "release-notes" => match rest {
                [version] => Ok(Self::ReleaseNotes {
                    version: version.clone(),
                }),
                _ => Err("usage: cargo xtask release-notes VERSION".to_owned()),
            },
            _ => Err(USAGE.to_owned()),
        }
    }
}

fn none(rest: &[String]) -> Result {
    match rest {
        [] => Ok(()),
        other => Err(format!("unexpected arguments {other:?}")),
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| format!("{flag} takes a number, not {value}"))
}

fn fuzz(rest: &[String]) -> Result<Task> {
    let mut secs = 60u64;
    let mut targets = Vec::new();
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--secs" => secs = number(arg, rest.next().ok_or("--secs takes a number of seconds")?)?,
            name => match FUZZ_TARGETS.iter().find(|target| **target == name) {
                Some(target) => targets.push(*target),
                None => {
                    return Err(format!(
                        "unknown fuzz argument {name:?}; targets: {FUZZ_TARGETS:?}"
                    ));
                }
            },
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.to_vec();
    }
    Ok(Task::Fuzz { targets, secs })
}

fn soak(rest: &[String]) -> Result<Task> {
    let (mut seeds, mut first, mut minutes) = (100_000u64, 1_000_000u64, None);
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{arg} takes a number"))?;
        let value = number(arg, value)?;
        match arg.as_str() {
            "--seeds" => seeds = value,
            "--first" => first = value,
            "--minutes" => minutes = Some(value),
            other => return Err(format!("unknown soak option {other}")),
        }
    }
    Ok(Task::Soak {
        seeds,
        first,
        minutes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Task> {
        let args: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
        Task::parse(&args)
    }

    #[test]
    fn each_task_takes_its_flags_and_refuses_others() {
        assert_eq!(parse("ci"), Ok(Task::Ci));
        assert_eq!(
            parse("bench --quick engine --check"),
            Ok(Task::Bench {
                quick: true,
                check: true,
                criterion: vec!["engine".to_owned()]
            })
        );
        assert_eq!(parse("e2e --repeat 3"), Ok(Task::E2e { repeat: 3 }));
        assert!(parse("e2e --repeat 0").is_err());
        assert_eq!(parse("memory"), Ok(Task::Memory { minutes: 10 }));
        assert_eq!(
            parse("goodput --http 200000"),
            Ok(Task::Goodput {
                http: true,
                args: vec!["200000".to_owned()]
            })
        );
        assert_eq!(
            parse("soak --seeds 5 --minutes 2"),
            Ok(Task::Soak {
                seeds: 5,
                first: 1_000_000,
                minutes: Some(2)
            })
        );
        assert!(parse("soak --seeds many").is_err());
        assert_eq!(
            parse("fuzz decode --secs 9"),
            Ok(Task::Fuzz {
                targets: vec!["decode"],
                secs: 9
            })
        );
        assert!(parse("fuzz nothing").is_err());
        assert_eq!(
            parse("release-prepare 0.2.0 --date 2026-12-08"),
            Ok(Task::ReleasePrepare {
                version: "0.2.0".to_owned(),
                date: "2026-12-08".to_owned()
            })
        );
        assert!(parse("release-prepare 0.2.0").is_err());
        assert_eq!(
            parse("release-notes 0.2.0"),
            Ok(Task::ReleaseNotes {
                version: "0.2.0".to_owned()
            })
        );
        assert!(parse("ci --now").is_err());
        assert!(parse("").is_err());
        assert!(parse("deploy").is_err());
    }
}
