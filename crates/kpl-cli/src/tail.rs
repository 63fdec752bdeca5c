//! `kpl tail`: every shard of a stream read as a KCL consumer reads it (children after their
//! parents, aggregates de-aggregated, aggregates the KCL would drop counted), user records
//! printed as text or JSON.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use kpl::ShardId;
use kpl_aggregation::{
    DeaggregatedRecord, KinesisRecord, ShardDeaggregation, deaggregate_for_shard,
};
use kpl_sim::ShardInfo;

use crate::cli::{From, OutputFormat, TailArgs};
use crate::target::{Cursor, Start, StoredEntry, Target};
use crate::{Failure, Outcome};

/// How long `--follow` waits before asking a caught-up shard again (Kinesis allows five reads
/// a second per shard).
const POLL: Duration = Duration::from_millis(1_000);

/// Reads in a row that return nothing while the shard is still behind, before giving up on
/// catching up (sparse shards return empty pages while the iterator moves on).
const EMPTY_READS: u32 = 1_000;

pub(crate) async fn run(args: TailArgs) -> Result<Outcome, Failure> {
    let start = match (args.from, args.at) {
        (From::AtTimestamp, Some(at)) => Start::At(at),
        (From::AtTimestamp, None) => {
            return Err(Failure::bad_input(
                "--from at-timestamp needs a timestamp: --from at-timestamp 2026-11-30T12:00:00Z",
            ));
        }
        (_, Some(_)) => {
            return Err(Failure::bad_input(
                "a timestamp goes with --from at-timestamp",
            ));
        }
        (From::TrimHorizon, None) => Start::TrimHorizon,
        (From::Latest, None) => Start::Latest,
    };
    let target = Target::open(&args.target).await?;
    let stream = args.target.stream.as_str();
    let mut shards = target.shards(stream).await?;
    if let Some(only) = &args.shard {
        let ids: Vec<String> = shards.iter().map(|s| s.id.as_str().to_owned()).collect();
        shards.retain(|shard| shard.id.as_str() == only);
        if shards.is_empty() {
            return Err(Failure::bad_input(format!(
                "stream {stream} has no shard {only}; it has {}",
                ids.join(", ")
            )));
        }
    }
    let mut tail = Tail {
        printer: Printer::new(args.format),
        counts: Counts::default(),
        max_records: args.max_records,
        gave_up: Vec::new(),
    };
    let mut readers: Vec<Reader> = shards
        .into_iter()
        .map(|shard| Reader::new(shard, start))
        .collect();
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut interrupted = false;
    loop {
        // Ctrl-C is heard during the reads too (a server that stopped answering is retried).
        tokio::select! {
            read = tail.round(&target, stream, &mut readers, args.follow) => read?,
            _ = &mut interrupt => { interrupted = true; break; }
        }
        if tail.full() || !args.follow && readers.iter().all(|r| r.done) {
            break;
        }
        if args.follow {
            tokio::select! {
                _ = &mut interrupt => { interrupted = true; break; }
                () = tokio::time::sleep(POLL) => {}
            }
            if args.shard.is_none() {
                // New shards (a reshard's children) start at their beginning.
                for shard in target.shards(stream).await? {
                    if !readers.iter().any(|r| r.shard.id == shard.id) {
                        readers.push(Reader::new(shard, Start::TrimHorizon));
                    }
                }
            }
        }
    }
    tail.printer.flush()?;
    eprintln!("{}", tail.counts.summary(readers.len()));
    for shard in &tail.gave_up {
        eprintln!(
            "kpl: shard {shard} was not read to its end: {EMPTY_READS} reads in a row returned \
             nothing while it was still behind"
        );
    }
    Ok(if interrupted {
        Outcome::Interrupted
    } else if tail.gave_up.is_empty() {
        Outcome::Done
    } else {
        Outcome::Failed
    })
}

/// A shard being read.
struct Reader {
    shard: ShardInfo,
    start: Start,
    cursor: Option<Cursor>,
    done: bool,
}

impl Reader {
    fn new(shard: ShardInfo, start: Start) -> Self {
        Self {
            shard,
            start,
            cursor: None,
            done: false,
        }
    }
}

/// What was read.
#[derive(Debug, Default)]
struct Counts {
    kinesis_records: u64,
    user_records: u64,
    dropped_aggregates: u64,
    dropped_user_records: u64,
}

impl Counts {
    fn summary(&self, shards: usize) -> String {
        let mut text = format!(
            "read {} user records from {} Kinesis records in {shards} shards",
            self.user_records, self.kinesis_records
        );
        if self.dropped_aggregates > 0 {
            text.push_str(&format!(
                "; {} aggregates ({} user records) not printed: a KCL consumer drops them \
                 (user records outside their shard's hash key range)",
                self.dropped_aggregates, self.dropped_user_records
            ));
        }
        text
    }
}

struct Tail {
    printer: Printer,
    counts: Counts,
    max_records: Option<u64>,
    /// Shards given up on before their end.
    gave_up: Vec<ShardId>,
}

impl Tail {
    /// Reads each shard whose turn it is: a child once the parents this run reads are done, as
    /// the KCL reads them.
    async fn round(
        &mut self,
        target: &Target,
        stream: &str,
        readers: &mut [Reader],
        follow: bool,
    ) -> Result<(), Failure> {
        let finished: HashSet<ShardId> = readers
            .iter()
            .filter(|r| r.done)
            .map(|r| r.shard.id.clone())
            .collect();
        let known: HashSet<ShardId> = readers.iter().map(|r| r.shard.id.clone()).collect();
        for reader in readers.iter_mut().filter(|r| !r.done) {
            if reader
                .shard
                .parents
                .iter()
                .any(|parent| known.contains(parent) && !finished.contains(parent))
            {
                continue;
            }
            self.read_shard(target, stream, reader, follow).await?;
            if follow {
                // Whoever follows reads each record as it comes, not when a buffer fills.
                self.printer.flush()?;
            }
            if self.full() {
                break;
            }
        }
        Ok(())
    }

    fn full(&self) -> bool {
        self.max_records
            .is_some_and(|max| self.counts.user_records >= max)
    }

    /// Reads `reader`'s shard until it is caught up (or, following, once).
    async fn read_shard(
        &mut self,
        target: &Target,
        stream: &str,
        reader: &mut Reader,
        follow: bool,
    ) -> Result<(), Failure> {
        let mut cursor = match reader.cursor.take() {
            Some(cursor) => cursor,
            None => {
                target
                    .cursor(stream, &reader.shard.id, reader.start)
                    .await?
            }
        };
        let mut empty_reads = 0;
        loop {
            let batch = target.read(stream, &reader.shard, &mut cursor).await?;
            empty_reads = if batch.records.is_empty() {
                empty_reads + 1
            } else {
                0
            };
            for entry in &batch.records {
                self.print_entry(&reader.shard, entry)?;
                if self.full() {
                    break;
                }
            }
            if batch.ended {
                reader.done = true;
                break;
            }
            if empty_reads >= EMPTY_READS && !batch.caught_up {
                self.gave_up.push(reader.shard.id.clone());
                reader.done = true;
                break;
            }
            if self.full() || follow || batch.caught_up {
                reader.done = !follow;
                break;
            }
            // A server allows five reads a second per shard.
            let pause = target.read_pause();
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        reader.cursor = Some(cursor);
        Ok(())
    }

    fn print_entry(&mut self, shard: &ShardInfo, entry: &StoredEntry) -> Result<(), Failure> {
        self.counts.kinesis_records += 1;
        let mut record = KinesisRecord::new(entry.partition_key.clone(), entry.data.clone());
        if let Some(hash_key) = entry.explicit_hash_key {
            record = record.with_explicit_hash_key(hash_key);
        }
        match deaggregate_for_shard(&record, shard.range) {
            ShardDeaggregation::Dropped(dropped) => {
                self.counts.dropped_aggregates += 1;
                self.counts.dropped_user_records += dropped.records().len() as u64;
            }
            kept => {
                for user_record in kept.into_kept() {
                    if self.full() {
                        break;
                    }
                    self.counts.user_records += 1;
                    let place = Place {
                        shard_id: shard.id.as_str(),
                        sequence_number: &entry.sequence_number,
                        arrived: Some(entry.arrived),
                    };
                    self.printer.print(&user_record, Some(&place))?;
                }
            }
        }
        Ok(())
    }
}

/// Where a user record was read.
pub(crate) struct Place<'a> {
    pub(crate) shard_id: &'a str,
    pub(crate) sequence_number: &'a str,
    pub(crate) arrived: Option<std::time::SystemTime>,
}

/// Prints user records to stdout.
pub(crate) struct Printer {
    format: OutputFormat,
    out: std::io::BufWriter<std::io::Stdout>,
    /// Whether stdout is a terminal: record data is then shown with its control bytes escaped,
    /// so that a stream's contents cannot drive the terminal (titles, clipboard writes).
    terminal: bool,
}

impl Printer {
    pub(crate) fn new(format: OutputFormat) -> Self {
        let stdout = std::io::stdout();
        Self {
            format,
            terminal: std::io::IsTerminal::is_terminal(&stdout),
            out: std::io::BufWriter::new(stdout),
        }
    }

    /// One user record: its data on a line, or a JSON object (data as text when it is UTF-8,
    /// else as `data_base64`).
    pub(crate) fn print(
        &mut self,
        record: &DeaggregatedRecord,
        place: Option<&Place<'_>>,
    ) -> Result<(), Failure> {
        let written = match self.format {
            OutputFormat::Text if self.terminal => self
                .out
                .write_all(&escape_controls(record.data()))
                .and_then(|()| self.out.write_all(b"\n")),
            OutputFormat::Text => self
                .out
                .write_all(record.data())
                .and_then(|()| self.out.write_all(b"\n")),
            OutputFormat::Json => {
                let mut object = serde_json::Map::new();
                let mut put = |key: &str, value: serde_json::Value| {
                    object.insert(key.to_owned(), value);
                };
                put("partition_key", record.partition_key().into());
                if let Some(hash_key) = record.explicit_hash_key() {
                    put("explicit_hash_key", hash_key.get().to_string().into());
                }
                put("hash_key", record.hash_key().get().to_string().into());
                if let Some(place) = place {
                    put("shard_id", place.shard_id.into());
                    put("sequence_number", place.sequence_number.into());
                }
                put("sub_sequence_number", record.sub_sequence_number().into());
                put("aggregated", record.is_aggregated().into());
                if let Some(arrived) = place.and_then(|place| place.arrived) {
                    put(
                        "arrived",
                        humantime::format_rfc3339_millis(arrived).to_string().into(),
                    );
                }
                match std::str::from_utf8(record.data()) {
                    Ok(text) => put("data", text.into()),
                    Err(_) => put(
                        "data_base64",
                        base64_simd::STANDARD.encode_to_string(record.data()).into(),
                    ),
                }
                serde_json::to_writer(&mut self.out, &object)
                    .map_err(std::io::Error::from)
                    .and_then(|()| self.out.write_all(b"\n"))
            }
        };
        written.map_err(stdout_failure)
    }

    pub(crate) fn flush(&mut self) -> Result<(), Failure> {
        self.out.flush().map_err(stdout_failure)
    }
}

/// Stdout could not be written. A reader that went away (`kpl tail | head`) ends the command
/// quietly, as other tools end.
fn stdout_failure(error: std::io::Error) -> Failure {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Failure {
            outcome: Outcome::Done,
            message: String::new(),
        }
    } else {
        Failure {
            outcome: Outcome::Failed,
            message: format!("writing to stdout: {error}"),
        }
    }
}

/// `data` with its control bytes (C0 but for tab, DEL, and C1 in UTF-8 text) written as
/// `\xNN` (`\u{NN}` for C1), for a terminal: a record holding escape sequences is shown, not
/// obeyed.
fn escape_controls(data: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let c1 = |pair: &[u8]| pair[0] == 0xc2 && (0x80..=0x9f).contains(&pair[1]);
    let is_control = |byte: u8| (byte < 0x20 && byte != b'\t') || byte == 0x7f;
    let clean = !data.iter().any(|&byte| is_control(byte)) && !data.windows(2).any(c1);
    if clean {
        return std::borrow::Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut rest = data;
    while let Some((&byte, tail)) = rest.split_first() {
        if is_control(byte) {
            out.extend_from_slice(format!("\\x{byte:02x}").as_bytes());
            rest = tail;
        } else if rest.len() >= 2 && c1(rest) {
            out.extend_from_slice(format!("\\u{{{:02x}}}", rest[1]).as_bytes());
            rest = &rest[2..];
        } else {
            out.push(byte);
            rest = tail;
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_are_shown_escaped_and_text_is_left_alone() {
        assert_eq!(
            &*escape_controls(b"plain\ttext \xc3\xa9"),
            b"plain\ttext \xc3\xa9"
        );
        assert_eq!(
            &*escape_controls(b"a\x1b]52;c;aGk=\x07b\x7f"),
            b"a\\x1b]52;c;aGk=\\x07b\\x7f"
        );
        // C1 CSI (U+009B) in UTF-8.
        assert_eq!(&*escape_controls(b"x\xc2\x9by"), b"x\\u{9b}y");
    }
}
