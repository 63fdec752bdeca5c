//! Fuzz bodies for `kpl-aggregation` and the producer's `.properties` loader.
//!
//! Each body takes arbitrary bytes and panics only on a bug. cargo-fuzz runs them through the
//! one-line targets in `fuzz_targets/` (`cargo xtask fuzz`), and the stable test suite replays every
//! file of the committed corpus (`corpus/<target>/`) through the same functions
//! (`tests/corpus_replay.rs`), so the corpus is exercised on every CI run.

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use kpl_aggregation::{
    Aggregator, HashKey, HashKeyRange, KinesisRecord, MaxAggregateSize, OuterPartitionKey,
    PartitionKey, ShardDeaggregation, UserRecord, deaggregate, deaggregate_for_shard,
    deaggregate_strict,
};

/// The smallest `Record` entry on the wire (`1a 04 08 00 1a 00`): a bound on how many records any
/// input can yield, which is what keeps decoding allocations proportional to the input.
const MIN_RECORD_ENTRY: usize = 6;

/// Decodes arbitrary bytes as a Kinesis record's data, in every mode, and checks the KCL rules.
pub fn decode(data: &[u8]) {
    let record = KinesisRecord::new("a", Bytes::copy_from_slice(data));
    let lenient = deaggregate(&record);
    match deaggregate_strict(&record) {
        Ok(records) => {
            assert_eq!(
                lenient, records,
                "lenient and strict agree on a valid aggregate"
            );
            assert!(records.len() <= data.len() / MIN_RECORD_ENTRY);
            for (position, sub) in records.iter().enumerate() {
                assert!(sub.is_aggregated());
                assert_eq!(sub.sub_sequence_number(), position as u64);
                assert!(sub.data().len() < data.len());
            }
            reencode_and_compare(&records);
        }
        Err(_) => {
            // What the KCL makes of it: the whole blob as one plain record (not an aggregate to
            // it), or the user records it read before it stopped, in order.
            let passed_through = lenient.len() == 1 && !lenient[0].is_aggregated();
            if passed_through {
                assert_eq!(lenient[0].data(), data);
            } else {
                assert!(lenient.len() <= data.len() / MIN_RECORD_ENTRY);
                for (position, sub) in lenient.iter().enumerate() {
                    assert!(sub.is_aggregated());
                    assert_eq!(sub.sub_sequence_number(), position as u64);
                }
            }
        }
    }
    match deaggregate_for_shard(&record, HashKeyRange::FULL) {
        ShardDeaggregation::Kept(kept) => assert_eq!(kept, lenient),
        // Only a hash key outside the 128-bit space lies outside the full range, and then the
        // KCL delivers nothing of the aggregate.
        ShardDeaggregation::Dropped(dropped) => {
            assert!(lenient.is_empty());
            assert_eq!(dropped.first_outside_hash_key(), None);
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Decoded records that are valid user records must survive a re-encode unchanged.
fn reencode_and_compare(records: &[kpl_aggregation::DeaggregatedRecord]) {
    let Some(user_records) = records
        .iter()
        .map(|sub| {
            let key = PartitionKey::new(sub.partition_key()).ok()?;
            let record = UserRecord::new(key, sub.data_bytes());
            Some(match sub.explicit_hash_key() {
                Some(hash_key) => record.with_explicit_hash_key(hash_key),
                None => record,
            })
        })
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    if user_records.len() < 2 {
        return;
    }
    let mut aggregator = Aggregator::new(
        MaxAggregateSize::new(MaxAggregateSize::MAX).expect("the maximum is valid"),
        OuterPartitionKey::Constant,
    );
    for record in &user_records {
        aggregator.try_push(record).expect("no limit is reached");
    }
    let again = aggregator.finish().expect("records were added");
    assert_eq!(deaggregate_strict(&again).as_deref(), Ok(records));
}

/// Builds user records and a size limit from arbitrary bytes, aggregates them, and checks sizes,
/// limits and the round trip.
pub fn roundtrip(data: &[u8]) {
    let _ = try_roundtrip(&mut Unstructured::new(data));
}

fn try_roundtrip(input: &mut Unstructured<'_>) -> Result<()> {
    let limit = MaxAggregateSize::new(input.int_in_range(MaxAggregateSize::MIN..=8_192)?)
        .expect("in range");
    let outer = if input.arbitrary()? {
        OuterPartitionKey::FirstUserRecord
    } else {
        OuterPartitionKey::Constant
    };
    let count = input.int_in_range(0..=64)?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let key: String = input.arbitrary()?;
        let Ok(key) = PartitionKey::new(key) else {
            continue;
        };
        let data: Vec<u8> = input.arbitrary()?;
        let mut record = UserRecord::new(key, data);
        if input.ratio(1, 4)? {
            record = record.with_explicit_hash_key(HashKey::new(input.arbitrary()?));
        }
        records.push(record);
    }

    let mut aggregator = Aggregator::new(limit, outer);
    let mut groups: Vec<(KinesisRecord, Vec<UserRecord>)> = Vec::new();
    let mut current = Vec::new();
    for record in &records {
        let predicted = aggregator.size_with(record);
        if aggregator.try_push(record).is_err() {
            assert!(predicted > limit.get());
            let finished = aggregator.finish().expect("a full aggregator is not empty");
            groups.push((finished, std::mem::take(&mut current)));
            aggregator
                .try_push(record)
                .expect("an empty aggregator accepts any record");
            assert_eq!(aggregator.size(), record.data().len());
        } else {
            assert_eq!(aggregator.size(), predicted);
        }
        current.push(record.clone());
    }
    if let Some(finished) = aggregator.finish() {
        groups.push((finished, current));
    }

    for (kinesis_record, group) in &groups {
        assert_eq!(
            kinesis_record.explicit_hash_key(),
            Some(group[0].hash_key())
        );
        if group.len() == 1 {
            assert_eq!(kinesis_record.data(), group[0].data());
            continue;
        }
        assert!(kinesis_record.data().len() <= limit.get());
        let decoded = deaggregate_strict(kinesis_record).expect("our own aggregate decodes");
        assert_eq!(decoded.len(), group.len());
        for (sub, original) in decoded.iter().zip(group) {
            assert_eq!(sub.partition_key(), original.partition_key().as_str());
            assert_eq!(sub.explicit_hash_key(), original.explicit_hash_key());
            assert_eq!(sub.data(), &original.data()[..]);
        }
    }
    Ok(())
}

/// Loads arbitrary text as a KPL `.properties` file. It must come back as a configuration or a
/// typed error naming the key, never panic, and take time linear in the input (libFuzzer's
/// timeout catches a slow input).
pub fn properties(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match kpl::Config::from_kpl_properties(&text) {
        Ok(config) => {
            // What loaded is valid, or says which key is not.
            if let Err(error) = config.validate() {
                assert!(error.key().is_some(), "{error}");
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
}
