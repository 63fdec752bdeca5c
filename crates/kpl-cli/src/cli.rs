//! The command line: commands, their options, and the examples `--help` shows.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kpl",
    version,
    about = "Produce, tail, decode and bench Kinesis streams, on the embedded stream or a real one",
    after_help = "Examples:
  kpl bench --local
  seq 1000 | kpl produce --local --local-state ./kpl-state --stream demo
  kpl tail --local --local-state ./kpl-state --stream demo
  kpl produce --stream orders --region eu-west-1 --input-format json --key-field customer.id orders.jsonl
  kpl stream create --stream demo --shards 2 --endpoint http://127.0.0.1:4567 --region us-east-1

Exit status: 0 done, 1 records failed, 2 bad command line or input, 3 stream unreachable,
130 interrupted."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Send records read from files or stdin through the producer.
    #[command(after_help = "Examples:
  seq 100000 | kpl produce --local --stream demo
  kpl produce --local --local-state ./state --stream demo --shards 2 events.txt
  kpl produce --stream orders --region eu-west-1 --input-format json \\
      --key-field customer.id --data-field payload --failed-out retry.jsonl orders.jsonl
  kpl produce --stream raw --endpoint http://127.0.0.1:4567 --region us-east-1 \\
      --input-format binary --key sensor-7 frames.bin

A record whose line is bad (malformed JSON, a missing field, too large) stops the run with a
message naming the file, line and field, unless --skip-bad counts it and goes on. Ctrl-C stops
reading, sends what was read, waits --drain-timeout, and reports what was not sent.")]
    Produce(ProduceArgs),
    /// Read every shard of a stream and print its user records, de-aggregated as the KCL does.
    #[command(after_help = "Examples:
  kpl tail --local --local-state ./state --stream demo
  kpl tail --stream orders --region eu-west-1 --from at-timestamp 2026-11-30T12:00:00Z --format json
  kpl tail --stream orders --from latest --follow

Without --follow the command ends once every shard is read to its end (children after their
parents, as the KCL reads them). Aggregates a KCL consumer would drop (records outside the
shard's hash key range after a reshard) are counted and reported, not printed.")]
    Tail(TailArgs),
    /// De-aggregate one raw Kinesis record (a file, or stdin) and print its user records.
    #[command(after_help = "Examples:
  kpl decode record.bin
  echo 84mawgo... | kpl decode --base64 --format json -
  kpl decode --strict record.bin")]
    Decode(DecodeArgs),
    /// Produce a generated workload and report throughput, CPU time, latency and memory.
    #[command(after_help = "Examples:
  kpl bench --local
  kpl bench --local --records 1000000 --size 200 --shards 32 --threads 4
  kpl bench --stream bench --endpoint http://127.0.0.1:4567 --region us-east-1")]
    Bench(BenchArgs),
    /// Create, describe, split or delete a stream.
    #[command(
        subcommand,
        after_help = "Examples:
  kpl stream create --local --local-state ./state --stream demo --shards 2
  kpl stream describe --stream orders --region eu-west-1
  kpl stream split --stream demo --shard shardId-000000000000 --endpoint http://127.0.0.1:4567 --region us-east-1
  kpl stream delete --local --local-state ./state --stream demo"
    )]
    Stream(StreamCommand),
    /// Print the shell completions for bash, zsh, fish, elvish or PowerShell.
    #[command(after_help = "Examples:
  kpl completions bash > /etc/bash_completion.d/kpl
  kpl completions zsh > \"${fpath[1]}/_kpl\"
  kpl completions fish > ~/.config/fish/completions/kpl.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Where the stream is: the embedded one, or a server.
#[derive(Clone, Debug, Args)]
pub(crate) struct TargetArgs {
    /// The stream's name.
    #[arg(long, short = 's')]
    pub(crate) stream: String,
    /// The embedded stream: a simulated Kinesis in this process, created on demand.
    #[arg(long, conflicts_with_all = ["endpoint", "region"])]
    pub(crate) local: bool,
    /// Keep the embedded streams in this directory between runs.
    #[arg(long, value_name = "DIR", requires = "local")]
    pub(crate) local_state: Option<PathBuf>,
    /// A Kinesis endpoint URL (a local server such as kinesalite, a VPC endpoint).
    #[arg(long, value_name = "URL")]
    pub(crate) endpoint: Option<String>,
    /// The AWS region; without it the AWS environment and profile decide.
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// A KPL .properties file for the producer (credentials, proxy, limits...).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

/// How input lines become records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum InputFormat {
    /// One record per line; the line is the data.
    Text,
    /// One JSON object per line; key, hash key and data from fields.
    Json,
    /// Records one after the other, each a 4-byte big-endian length and that many bytes.
    Binary,
}

#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// Files to read, in order; none or `-` reads stdin.
    #[arg(value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,
    /// How the input is framed.
    #[arg(long, value_enum, default_value_t = InputFormat::Text)]
    pub(crate) input_format: InputFormat,
    /// The partition key of every record (default: a random key per record).
    #[arg(long, conflicts_with = "key_field")]
    pub(crate) key: Option<String>,
    /// JSON: the field holding the partition key (a dotted path, such as customer.id).
    #[arg(long, value_name = "PATH")]
    pub(crate) key_field: Option<String>,
    /// JSON: the field holding an explicit hash key (a decimal number below 2^128).
    #[arg(long, value_name = "PATH")]
    pub(crate) hash_key_field: Option<String>,
    /// JSON: the field holding the data (a string is sent as its text, anything else as JSON);
    /// default: the whole line.
    #[arg(long, value_name = "PATH")]
    pub(crate) data_field: Option<String>,
    /// Count bad lines and go on instead of stopping at the first.
    #[arg(long)]
    pub(crate) skip_bad: bool,
    /// Write the records that failed here, in the input format, with their errors in
    /// FILE.errors (one line each: where it was read, the error code, the message).
    #[arg(long, value_name = "FILE")]
    pub(crate) failed_out: Option<PathBuf>,
    /// Shards of a stream created on demand (`--local`), 1 to 100,000.
    #[arg(long, default_value_t = 4, value_parser = shard_count())]
    pub(crate) shards: u32,
    /// How long Ctrl-C or the end of input waits for the records still in flight.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) drain_timeout: Duration,
    /// How often progress is printed when stderr is not a terminal (0 for never).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub(crate) progress_interval: Duration,
}

/// Where `tail` starts in each shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum From {
    /// The oldest record kept.
    TrimHorizon,
    /// Only records written from now on.
    Latest,
    /// Records written at or after `--at` (or the value after `at-timestamp`).
    AtTimestamp,
}

/// How `tail` and `decode` print user records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// The data, one record per line.
    Text,
    /// One JSON object per record: keys, shard, sequence numbers, data as text or base64.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// Where to start in each shard.
    #[arg(long, value_enum, default_value_t = From::TrimHorizon)]
    pub(crate) from: From,
    /// With `--from at-timestamp`: RFC 3339 (2026-11-30T12:00:00Z) or seconds since the epoch.
    #[arg(value_name = "TIMESTAMP", value_parser = parse_timestamp)]
    pub(crate) at: Option<std::time::SystemTime>,
    /// Read only this shard (and not its children).
    #[arg(long, value_name = "ID")]
    pub(crate) shard: Option<String>,
    /// How records are printed.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) format: OutputFormat,
    /// Keep reading new records (and new shards) until Ctrl-C.
    #[arg(long)]
    pub(crate) follow: bool,
    /// Stop after this many user records.
    #[arg(long, value_name = "N")]
    pub(crate) max_records: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct DecodeArgs {
    /// The raw record's bytes; `-` or nothing reads stdin.
    #[arg(value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// The input is base64 text (as consoles and JSON show record data).
    #[arg(long)]
    pub(crate) base64: bool,
    /// The outer record's partition key (for a record that is not an aggregate).
    #[arg(long, default_value = "-")]
    pub(crate) partition_key: String,
    /// Fail with the typed decode error where the KCL would pass a malformed aggregate through
    /// whole.
    #[arg(long)]
    pub(crate) strict: bool,
    /// How records are printed.
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    pub(crate) format: OutputFormat,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Records to send.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) records: u64,
    /// Bytes of data per record.
    #[arg(long, default_value_t = 100)]
    pub(crate) size: usize,
    /// Shards of the embedded stream (each takes 1 MiB and 1,000 Kinesis records a second, as
    /// the service's do), 1 to 100,000.
    #[arg(long, default_value_t = 64, value_parser = shard_count())]
    pub(crate) shards: u32,
    /// Sending tasks, and threads of the runtime.
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// The embedded stream (the default without --stream).
    #[arg(long, conflicts_with_all = ["stream", "endpoint", "region"])]
    pub(crate) local: bool,
    /// A stream to send to instead of the embedded one.
    #[arg(long, short = 's')]
    pub(crate) stream: Option<String>,
    /// A Kinesis endpoint URL, with --stream.
    #[arg(long, value_name = "URL", requires = "stream")]
    pub(crate) endpoint: Option<String>,
    /// The AWS region, with --stream.
    #[arg(long, requires = "stream")]
    pub(crate) region: Option<String>,
    /// A KPL .properties file for the producer.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StreamCommand {
    /// Create a stream and wait until it is active.
    Create {
        #[command(flatten)]
        target: TargetArgs,
        /// Its shards, 1 to 100,000.
        #[arg(long, default_value_t = 4, value_parser = shard_count())]
        shards: u32,
    },
    /// Show a stream's status and shards (with their lineage and hash key ranges).
    Describe {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Split an open shard in two (at the middle of its hash key range unless --at says).
    Split {
        #[command(flatten)]
        target: TargetArgs,
        /// The shard to split.
        #[arg(long, value_name = "ID")]
        shard: String,
        /// The first hash key of the upper child.
        #[arg(long, value_name = "HASH_KEY")]
        at: Option<String>,
    },
    /// Delete a stream and its records.
    Delete {
        #[command(flatten)]
        target: TargetArgs,
    },
}

/// `250ms`, `30s`, `2m`...
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("{text:?}: {error}"))
}

/// RFC 3339, or seconds since the epoch.
fn parse_timestamp(text: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds.max(0.0))
            .ok()
            .and_then(|since| std::time::UNIX_EPOCH.checked_add(since))
            .ok_or_else(|| format!("{text:?}: not a time"));
    }
    humantime::parse_rfc3339_weak(text)
        .map_err(|error| format!("{text:?}: {error} (give RFC 3339 or seconds since the epoch)"))
}

/// The most shards a stream here may have: a shard map reads at most 100,000 (and the
/// service's own limit per account is lower).
const MAX_SHARDS: i64 = 100_000;

/// `--shards`: 1 to [`MAX_SHARDS`], so a typo cannot make millions of simulated shards.
fn shard_count() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=MAX_SHARDS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn timestamps_are_read_as_rfc3339_or_epoch_seconds() {
        let at = parse_timestamp("2026-11-30T12:00:00Z").unwrap();
        assert_eq!(
            at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            1_796_040_000
        );
        assert_eq!(
            parse_timestamp("1796040000").unwrap(),
            parse_timestamp("2026-11-30T12:00:00Z").unwrap()
        );
        assert!(
            parse_timestamp("yesterday")
                .unwrap_err()
                .contains("RFC 3339")
        );
        for huge in ["inf", "1e20", "1e19"] {
            assert!(
                parse_timestamp(huge).unwrap_err().contains("not a time"),
                "{huge}"
            );
        }
    }
}
