//! Property tests of the encoder and decoder.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on unexpected results by design"
)]

mod common;

use common::{assert_same_records, user_record};
use kpl_aggregation::{
    Aggregator, DecodeErrorKind, HashKey, HashKeyRange, KinesisRecord, MaxAggregateSize,
    OuterPartitionKey, ShardDeaggregation, UserRecord, deaggregate, deaggregate_for_shard,
    deaggregate_strict,
};
use proptest::collection::vec;
use proptest::prelude::*;

const UNLIMITED: usize = MaxAggregateSize::MAX;

fn aggregate_one(records: &[UserRecord]) -> KinesisRecord {
    let mut aggregator = Aggregator::new(
        MaxAggregateSize::new(UNLIMITED).unwrap(),
        OuterPartitionKey::Constant,
    );
    for record in records {
        aggregator.try_push(record).unwrap();
    }
    aggregator.finish().unwrap()
}

/// Aggregates in order under `limit` with `Aggregator::push`, which starts a new aggregate whenever
/// a record does not fit.
fn aggregate_all(records: &[UserRecord], limit: MaxAggregateSize) -> Vec<KinesisRecord> {
    let mut aggregator = Aggregator::new(limit, OuterPartitionKey::Constant);
    let mut out = Vec::new();
    for record in records {
        out.extend(aggregator.push(record));
    }
    out.extend(aggregator.finish());
    out
}

proptest! {
    #[test]
    fn decode_inverts_encode(records in vec(user_record(), 2..60)) {
        let aggregate = aggregate_one(&records);
        prop_assert_eq!(aggregate.partition_key(), "a");
        prop_assert_eq!(aggregate.explicit_hash_key(), Some(records[0].hash_key()));
        let decoded = deaggregate_strict(&aggregate).unwrap();
        assert_same_records(&decoded, &records);
        for (position, record) in decoded.iter().enumerate() {
            prop_assert_eq!(record.sub_sequence_number(), position as u64);
            prop_assert!(record.is_aggregated());
        }
        prop_assert_eq!(deaggregate(&aggregate), decoded);
    }

    #[test]
    fn a_lone_record_passes_through_raw(record in user_record()) {
        let kinesis_record = aggregate_one(std::slice::from_ref(&record));
        prop_assert_eq!(kinesis_record.data(), record.data());
        prop_assert_eq!(kinesis_record.partition_key(), record.partition_key().as_str());
        prop_assert_eq!(kinesis_record.explicit_hash_key(), Some(record.hash_key()));
    }

    #[test]
    fn predicted_size_is_the_encoded_size_after_every_add(records in vec(user_record(), 1..40)) {
        let mut aggregator = Aggregator::new(MaxAggregateSize::new(UNLIMITED).unwrap(), OuterPartitionKey::Constant);
        for record in &records {
            let predicted = aggregator.size_with(record);
            aggregator.try_push(record).unwrap();
            prop_assert_eq!(aggregator.size(), predicted);
            let emitted = aggregator.clone().finish().unwrap();
            prop_assert_eq!(emitted.data().len(), predicted);
        }
    }

    #[test]
    fn aggregates_never_exceed_the_limit_and_keep_every_record(
        records in vec(user_record(), 1..80),
        limit in MaxAggregateSize::MIN..4_000usize,
    ) {
        let limit = MaxAggregateSize::new(limit).unwrap();
        let aggregates = aggregate_all(&records, limit);
        let mut recovered = Vec::new();
        for aggregate in &aggregates {
            let user_records = deaggregate(aggregate);
            if user_records.len() > 1 {
                prop_assert!(aggregate.data().len() <= limit.get(), "{} > {}", aggregate.data().len(), limit.get());
            }
            if aggregate.data().len() > limit.get() {
                prop_assert_eq!(user_records.len(), 1, "only a lone record may exceed the limit");
            }
            recovered.extend(user_records.into_iter().map(|r| (r.partition_key().to_owned(), r.data().to_vec())));
        }
        let expected: Vec<_> = records.iter().map(|r| (r.partition_key().as_str().to_owned(), r.data().to_vec())).collect();
        prop_assert_eq!(recovered, expected);
    }

    #[test]
    fn a_full_aggregator_is_left_unchanged(records in vec(user_record(), 2..30)) {
        let mut aggregator = Aggregator::new(MaxAggregateSize::new(MaxAggregateSize::MIN).unwrap(), OuterPartitionKey::Constant);
        let mut accepted = Vec::new();
        for record in &records {
            let before = aggregator.size();
            match aggregator.try_push(record) {
                Ok(()) => accepted.push(record.clone()),
                Err(full) => {
                    prop_assert_eq!(aggregator.size(), before);
                    prop_assert!(full.size_with_record() > full.limit());
                    prop_assert_eq!(full.size_with_record(), aggregator.size_with(record));
                }
            }
        }
        let emitted = aggregator.finish().unwrap();
        let decoded = deaggregate(&emitted);
        prop_assert_eq!(decoded.len(), accepted.len());
    }

    #[test]
    fn every_flipped_bit_is_detected(
        records in vec(user_record(), 2..10),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let aggregate = aggregate_one(&records);
        let mut bytes = aggregate.data().to_vec();
        let at = position.index(bytes.len());
        bytes[at] ^= 1 << bit;
        let tampered = KinesisRecord::new("a", bytes.clone());
        let error = deaggregate_strict(&tampered).unwrap_err();
        let expected = if at < 4 { DecodeErrorKind::BadMagic } else { DecodeErrorKind::ChecksumMismatch };
        prop_assert_eq!(error.kind(), expected);
        let passed = deaggregate(&tampered);
        prop_assert_eq!(passed.len(), 1);
        prop_assert!(!passed[0].is_aggregated());
        prop_assert_eq!(passed[0].data(), &bytes[..]);
    }

    #[test]
    fn every_truncation_is_detected(records in vec(user_record(), 2..10), cut in any::<prop::sample::Index>()) {
        let aggregate = aggregate_one(&records);
        let bytes = aggregate.data().slice(..cut.index(aggregate.data().len()));
        let truncated = KinesisRecord::new("a", bytes.clone());
        prop_assert!(deaggregate_strict(&truncated).is_err());
        let passed = deaggregate(&truncated);
        prop_assert_eq!(passed.len(), 1);
        prop_assert!(!passed[0].is_aggregated());
        prop_assert_eq!(passed[0].data(), &bytes[..]);
    }

    #[test]
    fn plain_records_pass_through(key in "\\PC{1,10}", data in vec(any::<u8>(), 0..100)) {
        let record = KinesisRecord::new(key.clone(), data.clone());
        let passed = deaggregate(&record);
        prop_assert_eq!(passed.len(), 1);
        prop_assert_eq!(passed[0].partition_key(), key.as_str());
        prop_assert_eq!(passed[0].data(), &data[..]);
        prop_assert_eq!(passed[0].sub_sequence_number(), 0);
    }

    #[test]
    fn shard_filter_drops_exactly_the_aggregates_with_a_stray_record(
        records in vec(user_record(), 2..20),
        a in any::<u128>(),
        b in any::<u128>(),
    ) {
        let range = HashKeyRange::new(HashKey::new(a.min(b)), HashKey::new(a.max(b))).unwrap();
        let aggregate = aggregate_one(&records);
        let all_inside = records.iter().all(|r| range.contains(r.hash_key()));
        match deaggregate_for_shard(&aggregate, range) {
            ShardDeaggregation::Kept(kept) => {
                prop_assert!(all_inside);
                assert_same_records(&kept, &records);
            }
            ShardDeaggregation::Dropped(dropped) => {
                prop_assert!(!all_inside);
                let first = records.iter().position(|r| !range.contains(r.hash_key())).unwrap();
                prop_assert_eq!(dropped.first_outside(), first as u64);
                prop_assert_eq!(dropped.first_outside_hash_key(), Some(records[first].hash_key()));
                assert_same_records(dropped.records(), &records);
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}

#[test]
fn shard_filter_keeps_a_plain_record_whatever_its_key() {
    let range = HashKeyRange::new(HashKey::new(0), HashKey::new(0)).unwrap();
    let record = KinesisRecord::new("anything", "payload");
    let kept = deaggregate_for_shard(&record, range).into_kept();
    assert_eq!(kept.len(), 1);
}
