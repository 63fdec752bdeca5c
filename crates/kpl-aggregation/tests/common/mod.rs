//! Strategies and helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use kpl_aggregation::{DeaggregatedRecord, HashKey, PartitionKey, UserRecord};
use proptest::collection::vec;
use proptest::prelude::*;

/// Partition keys: a tiny alphabet (so tables deduplicate), any printable Unicode, or near the limit.
pub fn partition_key() -> impl Strategy<Value = PartitionKey> {
    prop_oneof![
        3 => "[a-c]{1,2}",
        3 => "\\PC{1,24}",
        1 => "[a-z0-9]{250,256}",
    ]
    .prop_map(|key| PartitionKey::new(key).expect("strategies only make valid keys"))
}

/// Explicit hash keys: mostly absent, sometimes from a small pool (deduplication), sometimes any.
pub fn explicit_hash_key() -> impl Strategy<Value = Option<HashKey>> {
    prop_oneof![
        4 => Just(None),
        1 => (0u128..4).prop_map(|v| Some(HashKey::new(v))),
        1 => any::<u128>().prop_map(|v| Some(HashKey::new(v))),
    ]
}

pub fn user_record() -> impl Strategy<Value = UserRecord> {
    (
        partition_key(),
        explicit_hash_key(),
        vec(any::<u8>(), 0..300),
    )
        .prop_map(|(key, hash_key, data)| {
            let record = UserRecord::new(key, Bytes::from(data));
            match hash_key {
                Some(hash_key) => record.with_explicit_hash_key(hash_key),
                None => record,
            }
        })
}

/// Asserts that de-aggregated records are exactly `expected`, in order, with field presence kept.
pub fn assert_same_records(actual: &[DeaggregatedRecord], expected: &[UserRecord]) {
    assert_eq!(actual.len(), expected.len(), "record count");
    for (position, (got, want)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(
            got.partition_key(),
            want.partition_key().as_str(),
            "key of {position}"
        );
        assert_eq!(
            got.explicit_hash_key(),
            want.explicit_hash_key(),
            "EHK of {position}"
        );
        assert_eq!(got.data(), &want.data()[..], "data of {position}");
        assert_eq!(got.hash_key(), want.hash_key(), "hash key of {position}");
    }
}
