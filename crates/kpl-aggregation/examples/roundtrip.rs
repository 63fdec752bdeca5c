//! Aggregates user records the way the KPL does, de-aggregates them the way the KCL does, checks
//! that every record came back, and prints a summary.
//!
//! ```text
//! cargo run --release -p kpl-aggregation --example roundtrip             # 100,000 generated records
//! cargo run --release -p kpl-aggregation --example roundtrip -- 1000000  # or any count
//! printf 'user-1 hello\nuser-2 world\n' | cargo run -p kpl-aggregation --example roundtrip -- -
//! ```
//! With `-`, each stdin line is `PARTITION_KEY DATA` (split at the first space).

use std::io::BufRead;
use std::process::ExitCode;
use std::time::Instant;

use kpl_aggregation::{Aggregator, HashKeyRange, PartitionKey, UserRecord, deaggregate_for_shard};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("roundtrip: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let argument = std::env::args().nth(1);
    let records = match argument.as_deref() {
        Some("-") => read_stdin()?,
        Some(count) => generate(
            count
                .parse()
                .map_err(|_| format!("not a count: {count:?}"))?,
        ),
        None => generate(100_000),
    };

    #[allow(
        clippy::disallowed_methods,
        reason = "a demo reports its own wall time"
    )]
    let started = Instant::now();
    let mut aggregator = Aggregator::default();
    let mut kinesis_records = Vec::new();
    for record in &records {
        kinesis_records.extend(aggregator.push(record));
    }
    kinesis_records.extend(aggregator.finish());
    let encoded = started.elapsed();

    // A consumer reading a one-shard stream: every user record must come back, in order.
    let mut recovered = 0usize;
    let mut dropped = 0usize;
    for kinesis_record in &kinesis_records {
        let records_back = deaggregate_for_shard(kinesis_record, HashKeyRange::FULL);
        let kept = records_back.into_kept();
        for sub in &kept {
            let original = records
                .get(recovered)
                .ok_or("more records came back than went in")?;
            if sub.partition_key() != original.partition_key().as_str()
                || sub.data() != &original.data()[..]
            {
                return Err(format!("record {recovered} came back different"));
            }
            recovered += 1;
        }
        dropped += usize::from(kept.is_empty());
    }
    let total = started.elapsed();

    let bytes: usize = kinesis_records.iter().map(|r| r.billed_size()).sum();
    let user_bytes: usize = records
        .iter()
        .map(|r| r.data().len() + r.partition_key().len())
        .sum();
    println!("user records:        {}", records.len());
    println!("Kinesis records:     {}", kinesis_records.len());
    println!(
        "per Kinesis record:  {:.1} user records, {:.0} bytes",
        records.len() as f64 / kinesis_records.len().max(1) as f64,
        bytes as f64 / kinesis_records.len().max(1) as f64
    );
    println!("bytes billed:        {bytes} (user keys + data: {user_bytes})");
    println!("recovered:           {recovered} (aggregates dropped: {dropped})");
    println!(
        "time:                encode {:.1} ms, encode + decode + verify {:.1} ms",
        encoded.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3
    );
    if recovered == records.len() && dropped == 0 {
        println!("round trip:          OK");
        Ok(())
    } else {
        Err(format!(
            "only {recovered} of {} records came back",
            records.len()
        ))
    }
}

fn read_stdin() -> Result<Vec<UserRecord>, String> {
    let mut records = Vec::new();
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        let (key, data) = line.split_once(' ').unwrap_or((&line, ""));
        let key = PartitionKey::new(key).map_err(|e| format!("line {}: {e}", number + 1))?;
        records.push(UserRecord::new(key, data.to_owned()));
    }
    Ok(records)
}

/// Records of the standard benchmark shape: a 16-character key and 100 bytes of data.
fn generate(count: usize) -> Vec<UserRecord> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        // SplitMix64: enough to make varied keys and data without a dependency.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..count)
        .map(|_| {
            let key: String = (0..16)
                .map(|_| char::from(ALPHABET[(next() % ALPHABET.len() as u64) as usize]))
                .collect();
            let data: Vec<u8> = (0..100).map(|_| next() as u8).collect();
            let key = PartitionKey::new(key).expect("16 ASCII characters are a valid key");
            UserRecord::new(key, data)
        })
        .collect()
}
