//! Golden vectors: bytes computed by hand from the schema (kpl-reference.md §2.3) or produced by the
//! independent Python implementation (`testdata/`, see `testdata/PROVENANCE.md`), never by this
//! crate's own encoder.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on unexpected results by design"
)]

use hex_literal::hex;
use kpl_aggregation::{
    Aggregator, DecodeErrorKind, HashKey, KinesisRecord, MaxAggregateSize, OuterPartitionKey,
    PartitionKey, UserRecord, deaggregate, deaggregate_strict,
};

/// The worked example: PK table ["pk-1", "pk-2"], records (0, "hello"), (1, "world"), (0, "!").
const WORKED_PROTOBUF: [u8; 41] =
    hex!("0a04706b2d31 0a04706b2d32 1a0908001a0568656c6c6f 1a0908011a05776f726c64 1a0508001a0121");
const WORKED_MD5: [u8; 16] = hex!("cc321b093976ba6b62a1eb62a8816c74");
const PK1_HASH_KEY: u128 = 273_922_656_776_327_812_788_301_823_748_127_981_641;

fn worked_record() -> Vec<u8> {
    [&hex!("f3899ac2")[..], &WORKED_PROTOBUF, &WORKED_MD5].concat()
}

fn user(key: &str, data: &'static str) -> UserRecord {
    UserRecord::new(PartitionKey::new(key).unwrap(), data)
}

#[test]
fn encoder_reproduces_the_worked_example_byte_for_byte() {
    let mut aggregator = Aggregator::default();
    for record in [
        user("pk-1", "hello"),
        user("pk-2", "world"),
        user("pk-1", "!"),
    ] {
        aggregator.try_push(&record).unwrap();
    }
    assert_eq!(aggregator.size(), 61);
    let record = aggregator.finish().unwrap();
    assert_eq!(record.data().as_ref(), worked_record().as_slice());
    assert_eq!(record.partition_key(), "a");
    assert_eq!(record.explicit_hash_key(), Some(HashKey::new(PK1_HASH_KEY)));
    assert_eq!(
        record.explicit_hash_key().unwrap().to_string(),
        "273922656776327812788301823748127981641"
    );
}

#[test]
fn decoder_reads_the_worked_example() {
    let record = KinesisRecord::new("a", worked_record());
    let records = deaggregate_strict(&record).unwrap();
    let seen: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.partition_key(),
                r.data(),
                r.sub_sequence_number(),
                r.explicit_hash_key(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("pk-1", &b"hello"[..], 0, None),
            ("pk-2", &b"world"[..], 1, None),
            ("pk-1", &b"!"[..], 2, None),
        ]
    );
    assert!(records.iter().all(|r| r.is_aggregated()));
    assert_eq!(records[0].hash_key(), HashKey::new(PK1_HASH_KEY));
}

#[test]
fn index_zero_is_always_on_the_wire() {
    // proto2 `required`: a proto3-style encoder would omit `08 00` and the KCL would reject the blob.
    let mut aggregator = Aggregator::default();
    aggregator.try_push(&user("k", "x")).unwrap();
    aggregator.try_push(&user("k", "y")).unwrap();
    let record = aggregator.finish().unwrap();
    let protobuf = &record.data()[4..record.data().len() - 16];
    assert_eq!(protobuf, hex!("0a016b 1a0508001a0178 1a0508001a0179"));
}

#[test]
fn a_single_record_is_sent_raw_with_its_own_keys() {
    let mut aggregator = Aggregator::default();
    aggregator.try_push(&user("pk-1", "hello")).unwrap();
    assert_eq!(aggregator.size(), 5);
    let record = aggregator.finish().unwrap();
    assert_eq!(record.data().as_ref(), b"hello");
    assert_eq!(record.partition_key(), "pk-1");
    assert_eq!(record.explicit_hash_key(), Some(HashKey::new(PK1_HASH_KEY)));
    assert!(
        aggregator.finish().is_none(),
        "finish resets the aggregator"
    );
}

#[test]
fn explicit_hash_keys_go_to_their_table_and_route_the_aggregate() {
    let mut aggregator = Aggregator::default();
    aggregator
        .try_push(&user("pk-1", "hello").with_explicit_hash_key(HashKey::new(12345)))
        .unwrap();
    aggregator.try_push(&user("pk-2", "world")).unwrap();
    let record = aggregator.finish().unwrap();
    let protobuf = hex!(
        "0a04706b2d31 0a04706b2d32 120531323334 35 1a0b080010001a0568656c6c6f 1a0908011a05776f726c64"
    );
    assert_eq!(&record.data()[4..record.data().len() - 16], protobuf);
    assert_eq!(record.explicit_hash_key(), Some(HashKey::new(12345)));

    let records = deaggregate_strict(&record).unwrap();
    assert_eq!(records[0].explicit_hash_key(), Some(HashKey::new(12345)));
    assert_eq!(
        records[1].explicit_hash_key(),
        None,
        "field presence is honoured"
    );
    assert_eq!(records[1].hash_key(), HashKey::from_partition_key("pk-2"));
}

#[test]
fn outer_partition_key_policy() {
    let mut aggregator = Aggregator::new(
        MaxAggregateSize::DEFAULT,
        OuterPartitionKey::FirstUserRecord,
    );
    aggregator.try_push(&user("pk-1", "hello")).unwrap();
    aggregator.try_push(&user("pk-2", "world")).unwrap();
    let record = aggregator.finish().unwrap();
    assert_eq!(record.partition_key(), "pk-1");
    assert_eq!(record.explicit_hash_key(), Some(HashKey::new(PK1_HASH_KEY)));
}

#[test]
fn tampered_worked_example_passes_through_or_errors() {
    let good = worked_record();
    let cases: [(usize, DecodeErrorKind); 3] = [
        (0, DecodeErrorKind::BadMagic),
        (10, DecodeErrorKind::ChecksumMismatch),
        (good.len() - 1, DecodeErrorKind::ChecksumMismatch),
    ];
    for (position, kind) in cases {
        let mut bytes = good.clone();
        bytes[position] ^= 0x01;
        let record = KinesisRecord::new("a", bytes.clone());
        assert_eq!(deaggregate_strict(&record).unwrap_err().kind(), kind);
        let passed = deaggregate(&record);
        assert_eq!(passed.len(), 1);
        assert!(!passed[0].is_aggregated());
        assert_eq!(passed[0].data(), bytes.as_slice());
    }
}

/// Produced by the Python `aws-kinesis-agg` 1.2.3 `RecordAggregator` (AWS's independent
/// implementation) from ("pk-1", "hello"), ("pk-2", "world", EHK "12345"), ("pk-1", "!").
const PYTHON_AGG_WITH_EHK: [u8; 70] = hex!(
    "f3899ac2 0a04706b2d31 0a04706b2d32 120531323334 35 1a0908001a0568656c6c6f"
    "1a0b080110001a05776f726c64 1a0508001a0121 a295f5e43fb26c8162345bfacc09fb74"
);

#[test]
fn matches_the_python_reference_encoder_with_an_explicit_hash_key() {
    let mut aggregator = Aggregator::default();
    aggregator.try_push(&user("pk-1", "hello")).unwrap();
    aggregator
        .try_push(&user("pk-2", "world").with_explicit_hash_key(HashKey::new(12345)))
        .unwrap();
    aggregator.try_push(&user("pk-1", "!")).unwrap();
    let record = aggregator.finish().unwrap();
    assert_eq!(record.data().as_ref(), PYTHON_AGG_WITH_EHK);

    let decoded = deaggregate_strict(&KinesisRecord::new("a", &PYTHON_AGG_WITH_EHK[..])).unwrap();
    let keys: Vec<_> = decoded.iter().map(|r| r.explicit_hash_key()).collect();
    assert_eq!(keys, [None, Some(HashKey::new(12345)), None]);
}
