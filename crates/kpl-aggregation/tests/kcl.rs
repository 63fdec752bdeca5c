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
    HashKey, HashKeyRange, KinesisRecord, ShardDeaggregation, deaggregate, deaggregate_borrowed,
    deaggregate_for_shard, deaggregate_many_borrowed, deaggregate_strict,
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
fn an_explicit_hash_key_in_other_scripts_digits_is_read_as_java_reads_it() {
    let keys = [b"k".to_vec()];
    let hash_keys = [
        "\u{661}\u{662}\u{663}".as_bytes().to_vec(), // Arabic-Indic 123
        "\u{ff14}\u{ff12}".as_bytes().to_vec(),      // fullwidth 42
        "+\u{1d7d8}7".as_bytes().to_vec(),           // mathematical double-struck 0, then 7
        "\u{b2}".as_bytes().to_vec(),                // superscript two: not a decimal digit
    ];
    let record = aggregate(
        &keys,
        &hash_keys,
        &[
            part(0, Some(0), "x"),
            part(0, Some(1), "y"),
            part(0, Some(2), "z"),
            part(0, Some(3), "w"),
        ],
    );
    // The KCL delivers the records before the one whose key is not a number.
    assert_eq!(
        delivered(&deaggregate(&record)),
        owned(&[
            ("k", Some(123), "x"),
            ("k", Some(42), "y"),
            ("k", Some(7), "z")
        ])
    );
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
    // Java's `Character.digit(c, 10)`: any Unicode decimal digit (Unicode 15.0, as Java 21).
    let ascii: Option<String> = digits
        .chars()
        .map(|c| {
            let code = u32::from(c);
            UNICODE_DIGIT_RUNS
                .iter()
                .find(|&&(first, last)| (first..=last).contains(&code))
                .and_then(|&(first, _)| char::from_digit(code - first, 10))
        })
        .collect();
    let Some(digits) = ascii.filter(|digits| !digits.is_empty()) else {
        return BigInteger::NotANumber;
    };
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

/// First and last code point of every run of ten decimal digits (general category `Nd`) in
/// Unicode 15.0.
const UNICODE_DIGIT_RUNS: [(u32, u32); 68] = [
    (0x30, 0x39),
    (0x660, 0x669),
    (0x6F0, 0x6F9),
    (0x7C0, 0x7C9),
    (0x966, 0x96F),
    (0x9E6, 0x9EF),
    (0xA66, 0xA6F),
    (0xAE6, 0xAEF),
    (0xB66, 0xB6F),
    (0xBE6, 0xBEF),
    (0xC66, 0xC6F),
    (0xCE6, 0xCEF),
    (0xD66, 0xD6F),
    (0xDE6, 0xDEF),
    (0xE50, 0xE59),
    (0xED0, 0xED9),
    (0xF20, 0xF29),
    (0x1040, 0x1049),
    (0x1090, 0x1099),
    (0x17E0, 0x17E9),
    (0x1810, 0x1819),
    (0x1946, 0x194F),
    (0x19D0, 0x19D9),
    (0x1A80, 0x1A89),
    (0x1A90, 0x1A99),
    (0x1B50, 0x1B59),
    (0x1BB0, 0x1BB9),
    (0x1C40, 0x1C49),
    (0x1C50, 0x1C59),
    (0xA620, 0xA629),
    (0xA8D0, 0xA8D9),
    (0xA900, 0xA909),
    (0xA9D0, 0xA9D9),
    (0xA9F0, 0xA9F9),
    (0xAA50, 0xAA59),
    (0xABF0, 0xABF9),
    (0xFF10, 0xFF19),
    (0x104A0, 0x104A9),
    (0x10D30, 0x10D39),
    (0x11066, 0x1106F),
    (0x110F0, 0x110F9),
    (0x11136, 0x1113F),
    (0x111D0, 0x111D9),
    (0x112F0, 0x112F9),
    (0x11450, 0x11459),
    (0x114D0, 0x114D9),
    (0x11650, 0x11659),
    (0x116C0, 0x116C9),
    (0x11730, 0x11739),
    (0x118E0, 0x118E9),
    (0x11950, 0x11959),
    (0x11C50, 0x11C59),
    (0x11D50, 0x11D59),
    (0x11DA0, 0x11DA9),
    (0x11F50, 0x11F59),
    (0x16A60, 0x16A69),
    (0x16AC0, 0x16AC9),
    (0x16B50, 0x16B59),
    (0x1D7CE, 0x1D7D7),
    (0x1D7D8, 0x1D7E1),
    (0x1D7E2, 0x1D7EB),
    (0x1D7EC, 0x1D7F5),
    (0x1D7F6, 0x1D7FF),
    (0x1E140, 0x1E149),
    (0x1E2F0, 0x1E2F9),
    (0x1E4F0, 0x1E4F9),
    (0x1E950, 0x1E959),
    (0x1FBF0, 0x1FBF9),
];

/// `digits` (ASCII) written in the script whose zero is `zero`.
fn in_script(digits: &str, zero: u32) -> Vec<u8> {
    digits
        .bytes()
        .filter_map(|b| char::from_u32(zero + u32::from(b - b'0')))
        .collect::<String>()
        .into_bytes()
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
        (
            any::<u64>(),
            prop::sample::select(UNICODE_DIGIT_RUNS.to_vec())
        )
            .prop_map(|(v, (zero, _))| in_script(&v.to_string(), zero)),
        // Numbers that are not decimal digits: superscript two, Roman numeral twelve.
        Just("\u{b2}".as_bytes().to_vec()),
        Just("\u{216b}".as_bytes().to_vec()),
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
        assert_borrowed_reads_as_owned(&record);
    }

    #[test]
    fn the_borrowing_decoder_reads_any_bytes_as_the_owning_one(
        partition_key in "[a-z]{1,8}",
        data in vec(any::<u8>(), 0..64),
        aggregated in any::<bool>(),
    ) {
        // Plain bytes pass through; with the magic and a valid trailer, whatever protobuf the
        // bytes happen to be is read (or refused) the same way by both.
        let record = if aggregated {
            let mut body = kpl_aggregation::MAGIC.to_vec();
            body.extend_from_slice(&data);
            body.extend_from_slice(&Md5::digest(&data));
            KinesisRecord::new(partition_key.as_str(), body)
        } else {
            KinesisRecord::new(partition_key.as_str(), data)
        };
        assert_borrowed_reads_as_owned(&record);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn many_records_at_once_read_as_each_alone(
        batch in vec(
            (vec(table_key(), 1..3), vec(table_hash_key(), 0..2), parts(), 0u8..3),
            0..20,
        ),
    ) {
        // Aggregates of every length, plain records, and aggregates with a broken trailer,
        // more than eight of them, so the trailers are checked in several groups of lanes.
        let records: Vec<KinesisRecord> = batch
            .iter()
            .map(|(keys, hash_keys, parts, kind)| {
                let record = aggregate(keys, hash_keys, parts);
                match kind {
                    0 => record,
                    1 => KinesisRecord::new("plain", record.data()[4..].to_vec()),
                    _ => {
                        let mut broken = record.data().to_vec();
                        if let Some(last) = broken.last_mut() {
                            *last ^= 1;
                        }
                        KinesisRecord::new("broken", broken)
                    }
                }
            })
            .collect();
        let many = deaggregate_many_borrowed(&records);
        prop_assert_eq!(many.len(), records.len());
        for (record, read) in records.iter().zip(&many) {
            prop_assert_eq!(read, &deaggregate_borrowed(record));
        }
    }
}

/// `deaggregate_borrowed` reads every user record `deaggregate` reads, field for field.
fn assert_borrowed_reads_as_owned(record: &KinesisRecord) {
    let borrowed = deaggregate_borrowed(record);
    let owned = deaggregate(record);
    assert_eq!(borrowed.len(), owned.len());
    for (b, o) in borrowed.iter().zip(&owned) {
        assert_eq!(
            (b.partition_key(), b.explicit_hash_key(), b.data()),
            (o.partition_key(), o.explicit_hash_key(), o.data())
        );
        assert_eq!(
            (b.sub_sequence_number(), b.is_aggregated(), b.hash_key()),
            (o.sub_sequence_number(), o.is_aggregated(), o.hash_key())
        );
    }
}
