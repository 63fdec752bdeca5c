//! The lenient decoder against the KCL's de-aggregation, on well-formed aggregates (valid MD5,
//! parsable protobuf) whose contents the KCL reads in its own way: golden cases, and a property
//! test against a small model of the KCL's loop.
//!
//! The model follows the KCL's `UserRecord.deaggregate(records, startingHashKey, endingHashKey)`
//! as its source reads: for each `Record` in order, `pks.get((int) partitionKeyIndex)`, then, if
//! present, `ehks.get((int) explicitHashKeyIndex)` and `new BigInteger(explicitHashKey)`, else the
//! MD5 of the (lossily decoded) key's UTF-8 bytes; a hash key outside the range removes what this
//! aggregate added and stops; any exception stops, keeping what was added.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on unexpected results by design"
)]

use kpl_aggregation::{
    HashKey, HashKeyRange, KinesisRecord, ShardDeaggregation, deaggregate, deaggregate_for_shard,
    deaggregate_strict,
};
use md5::{Digest, Md5};
use proptest::collection::vec;
use proptest::prelude::*;

/// One `Record` of an aggregate, as written on the wire.
#[derive(Clone, Debug)]
struct Part {
    partition_key_index: u64,
    explicit_hash_key_index: Option<u64>,
    data: Vec<u8>,
}

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn field(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// An aggregate with a valid trailer: tables, then records.
fn aggregate(keys: &[Vec<u8>], hash_keys: &[Vec<u8>], parts: &[Part]) -> KinesisRecord {
    let mut protobuf = Vec::new();
    for key in keys {
        field(0x0a, key, &mut protobuf);
    }
    for hash_key in hash_keys {
        field(0x12, hash_key, &mut protobuf);
    }
    for part in parts {
        let mut record = vec![0x08];
        varint(part.partition_key_index, &mut record);
        if let Some(index) = part.explicit_hash_key_index {
            record.push(0x10);
            varint(index, &mut record);
        }
        field(0x1a, &part.data, &mut record);
        field(0x1a, &record, &mut protobuf);
    }
    let digest: [u8; 16] = Md5::digest(&protobuf).into();
    KinesisRecord::new(
        "outer",
        [&kpl_aggregation::MAGIC[..], &protobuf, &digest].concat(),
    )
}

fn part(key: u64, hash_key: Option<u64>, data: &str) -> Part {
    Part {
        partition_key_index: key,
        explicit_hash_key_index: hash_key,
        data: data.as_bytes().to_vec(),
    }
}

/// (partition key, explicit hash key, data) of each record.
fn delivered(
    records: &[kpl_aggregation::DeaggregatedRecord],
) -> Vec<(String, Option<u128>, String)> {
    records
        .iter()
        .map(|r| {
            (
                r.partition_key().to_owned(),
                r.explicit_hash_key().map(HashKey::get),
                String::from_utf8_lossy(r.data()).into_owned(),
            )
        })
        .collect()
}

fn owned(items: &[(&str, Option<u128>, &str)]) -> Vec<(String, Option<u128>, String)> {
    items
        .iter()
        .map(|&(k, h, d)| (k.to_owned(), h, d.to_owned()))
        .collect()
}

#[test]
fn a_signed_explicit_hash_key_is_read_as_java_reads_it() {
    let keys = [b"k".to_vec()];
    let hash_keys = [b"+7".to_vec(), b"-0".to_vec(), b"0007".to_vec()];
    let record = aggregate(
        &keys,
        &hash_keys,
        &[
            part(0, Some(0), "x"),
            part(0, Some(1), "y"),
            part(0, Some(2), "z"),
        ],
    );
    assert_eq!(
        delivered(&deaggregate(&record)),
        owned(&[
            ("k", Some(7), "x"),
            ("k", Some(0), "y"),
            ("k", Some(7), "z")
        ])
    );
    // The strict decoder still refuses a sign.
    assert!(deaggregate_strict(&record).is_err());
}

#[test]
fn a_partition_key_that_is_not_utf8_is_decoded_lossily_and_hashed_so() {
    let keys = [b"k\xffz".to_vec()];
    let record = aggregate(&keys, &[], &[part(0, None, "x")]);
    let records = deaggregate(&record);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].partition_key(), "k\u{fffd}z");
    assert_eq!(
        records[0].hash_key(),
        HashKey::from_partition_key("k\u{fffd}z")
    );
}

#[test]
fn an_index_is_cast_to_a_java_int() {
    let keys = [b"a".to_vec(), b"b".to_vec()];
    // 2^32 + 1 is 1 as an int; 2^31 is negative, so out of range.
    let record = aggregate(
        &keys,
        &[],
        &[part((1 << 32) + 1, None, "x"), part(1 << 31, None, "y")],
    );
    assert_eq!(delivered(&deaggregate(&record)), owned(&[("b", None, "x")]));
}

#[test]
fn a_bad_index_or_hash_key_stops_the_kcl_after_the_records_before_it() {
    let keys = [b"a".to_vec()];
    let hash_keys = [b"12".to_vec(), b"twelve".to_vec()];
    for bad in [
        part(5, None, "bad"),
        part(0, Some(9), "bad"),
        part(0, Some(1), "bad"),
    ] {
        let record = aggregate(
            &keys,
            &hash_keys,
            &[
                part(0, None, "x"),
                part(0, Some(0), "y"),
                bad,
                part(0, None, "z"),
            ],
        );
        let expected = owned(&[("a", None, "x"), ("a", Some(12), "y")]);
        assert_eq!(delivered(&deaggregate(&record)), expected);
        match deaggregate_for_shard(&record, HashKeyRange::FULL) {
            ShardDeaggregation::Kept(kept) => assert_eq!(delivered(&kept), expected),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_hash_key_outside_the_128_bit_space_drops_the_whole_aggregate() {
    let keys = [b"a".to_vec()];
    let too_large = b"340282366920938463463374607431768211456".to_vec(); // 2^128
    for hash_key in [b"-1".to_vec(), too_large] {
        let record = aggregate(
            &keys,
            std::slice::from_ref(&hash_key),
            &[part(0, None, "x"), part(0, Some(0), "y")],
        );
        assert!(deaggregate(&record).is_empty(), "{hash_key:?}");
        match deaggregate_for_shard(&record, HashKeyRange::FULL) {
            ShardDeaggregation::Dropped(dropped) => {
                assert_eq!(dropped.first_outside(), 1);
                assert_eq!(dropped.first_outside_hash_key(), None);
                assert_eq!(dropped.records().len(), 1, "the record read before it");
            }
            other => panic!("{other:?}"),
        }
    }
}

// --- The property test: random aggregates with every kind of oddity, against the model.

/// The KCL's result for a well-formed aggregate: delivered records, or `None` when dropped.
fn kcl_model(
    keys: &[Vec<u8>],
    hash_keys: &[Vec<u8>],
    parts: &[Part],
    range: (u128, u128),
) -> Option<Vec<(String, Option<u128>, String)>> {
    let java_get = |len: usize, index: u64| {
        let as_int = index as u32 as i32;
        (as_int >= 0 && (as_int as usize) < len).then_some(as_int as usize)
    };
    let mut out = Vec::new();
    for part in parts {
        let Some(key_index) = java_get(keys.len(), part.partition_key_index) else {
            break;
        };
        let key = String::from_utf8_lossy(&keys[key_index]).into_owned();
        let (explicit, effective) = match part.explicit_hash_key_index {
            None => {
                let digest: [u8; 16] = Md5::digest(key.as_bytes()).into();
                (None, Some(u128::from_be_bytes(digest)))
            }
            Some(index) => {
                let Some(index) = java_get(hash_keys.len(), index) else {
                    break;
                };
                match big_integer(&hash_keys[index]) {
                    BigInteger::NotANumber => break,
                    BigInteger::Fits(value) => (Some(value), Some(value)),
                    BigInteger::OutsideTheSpace => (None, None),
                }
            }
        };
        match effective {
            Some(hash) if range.0 <= hash && hash <= range.1 => out.push((
                key,
                explicit,
                String::from_utf8_lossy(&part.data).into_owned(),
            )),
            _ => return None,
        }
    }
    Some(out)
}

enum BigInteger {
    NotANumber,
    Fits(u128),
    OutsideTheSpace,
}

/// `new BigInteger(text)` compared with the 128-bit hash key space, by digit strings.
fn big_integer(text: &[u8]) -> BigInteger {
    let Ok(text) = std::str::from_utf8(text) else {
        return BigInteger::NotANumber;
    };
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return BigInteger::NotANumber;
    }
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return BigInteger::Fits(0);
    }
    if negative {
        return BigInteger::OutsideTheSpace;
    }
    let max = u128::MAX.to_string();
    if significant.len() > max.len()
        || (significant.len() == max.len() && significant > max.as_str())
    {
        return BigInteger::OutsideTheSpace;
    }
    BigInteger::Fits(significant.parse().unwrap())
}

fn table_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z]{1,4}".prop_map(String::into_bytes),
        vec(any::<u8>(), 1..6),
    ]
}

fn table_hash_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<u128>().prop_map(|v| v.to_string().into_bytes()),
        any::<u128>().prop_map(|v| format!("+{v}").into_bytes()),
        any::<u64>().prop_map(|v| format!("-{v}").into_bytes()),
        Just(b"340282366920938463463374607431768211456".to_vec()),
        Just(b"0000000000000000000000000000000000000000000012".to_vec()),
        Just(b"".to_vec()),
        Just(b"1 2".to_vec()),
        vec(any::<u8>(), 0..4),
    ]
}

fn index() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0u64..4,
        1 => Just(1u64 << 32),
        1 => Just((1u64 << 32) + 1),
        1 => Just(1u64 << 31),
        1 => any::<u64>(),
    ]
}

fn parts() -> impl Strategy<Value = Vec<Part>> {
    vec(
        (index(), prop::option::of(index()), vec(any::<u8>(), 0..4)).prop_map(
            |(key, hash_key, data)| Part {
                partition_key_index: key,
                explicit_hash_key_index: hash_key,
                data,
            },
        ),
        1..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_lenient_decoder_delivers_what_the_kcl_delivers(
        keys in vec(table_key(), 1..4),
        hash_keys in vec(table_hash_key(), 0..4),
        parts in parts(),
        bounds in prop_oneof![Just((0u128, u128::MAX)), (any::<u128>(), any::<u128>())],
    ) {
        let range = (bounds.0.min(bounds.1), bounds.0.max(bounds.1));
        let record = aggregate(&keys, &hash_keys, &parts);
        let shard = HashKeyRange::new(HashKey::new(range.0), HashKey::new(range.1)).unwrap();
        let expected = kcl_model(&keys, &hash_keys, &parts, range);
        match deaggregate_for_shard(&record, shard) {
            ShardDeaggregation::Kept(kept) => {
                prop_assert_eq!(Some(delivered(&kept)), expected);
                prop_assert!(kept.iter().enumerate().all(|(i, r)| r.sub_sequence_number() == i as u64));
            }
            ShardDeaggregation::Dropped(_) => prop_assert_eq!(expected, None),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
        let full = kcl_model(&keys, &hash_keys, &parts, (0, u128::MAX)).unwrap_or_default();
        prop_assert_eq!(delivered(&deaggregate(&record)), full);
    }
}
