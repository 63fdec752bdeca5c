//! `kpl decode`: one raw Kinesis record de-aggregated, for debugging what a producer wrote.

use std::io::Read;

use bytes::Bytes;
use kpl_aggregation::{KinesisRecord, deaggregate, deaggregate_strict};

use crate::cli::DecodeArgs;
use crate::tail::Printer;
use crate::{Failure, Outcome};

pub(crate) fn run(args: DecodeArgs) -> Result<Outcome, Failure> {
    let (source, mut bytes) = match args.file.as_deref() {
        Some(path) if path.as_os_str() != "-" => (
            path.display().to_string(),
            std::fs::read(path)
                .map_err(|error| Failure::bad_input(format!("{}: {error}", path.display())))?,
        ),
        _ => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|error| Failure::bad_input(format!("stdin: {error}")))?;
            ("stdin".to_owned(), bytes)
        }
    };
    if args.base64 {
        let text: Vec<u8> = bytes
            .iter()
            .copied()
            .filter(|byte| !byte.is_ascii_whitespace())
            .collect();
        bytes = base64_simd::STANDARD
            .decode_to_vec(&text)
            .map_err(|error| Failure::bad_input(format!("{source}: not base64: {error}")))?;
    }
    let record = KinesisRecord::new(args.partition_key.clone(), Bytes::from(bytes));
    let records = if args.strict {
        deaggregate_strict(&record).map_err(|error| {
            Failure::bad_input(format!(
                "{source}: not a valid aggregate ({:?}): {error}",
                error.kind()
            ))
        })?
    } else {
        deaggregate(&record)
    };
    let mut printer = Printer::new(args.format);
    for user_record in &records {
        printer.print(user_record, None)?;
    }
    printer.flush()?;
    let aggregated = records.first().is_some_and(|r| r.is_aggregated());
    eprintln!(
        "{} user record(s); {}",
        records.len(),
        if aggregated {
            "an aggregate"
        } else {
            "not an aggregate: passed through whole, as the KCL does"
        }
    );
    Ok(Outcome::Done)
}
