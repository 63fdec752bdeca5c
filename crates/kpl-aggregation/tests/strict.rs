//! Every strict-mode error kind, each from a hand-made aggregate whose MD5 trailer is valid, so the
//! protobuf itself is what is judged; and what the lenient decoder (the KCL's rules) makes of each.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on unexpected results by design"
)]

use hex_literal::hex;
use kpl_aggregation::{DecodeErrorKind, HashKey, KinesisRecord, deaggregate, deaggregate_strict};
use md5::{Digest, Md5};

fn aggregate(protobuf: &[u8]) -> KinesisRecord {
    let digest: [u8; 16] = Md5::digest(protobuf).into();
    KinesisRecord::new(
        "a",
        [&kpl_aggregation::MAGIC[..], protobuf, &digest].concat(),
    )
}

/// What the KCL delivers for a malformed aggregate.
#[derive(Debug, PartialEq)]
enum Kcl {
    /// It is not an aggregate to the KCL: one plain record, the whole blob.
    PassesThrough,
    /// The user records it reads before it stops (the blob never passes through).
    Delivers(usize),
}

fn kinds(protobuf: &[u8]) -> (DecodeErrorKind, Kcl) {
    let record = aggregate(protobuf);
    let kind = deaggregate_strict(&record).unwrap_err().kind();
    let lenient = deaggregate(&record);
    let kcl = if lenient.len() == 1 && !lenient[0].is_aggregated() {
        assert_eq!(lenient[0].data(), record.data());
        Kcl::PassesThrough
    } else {
        assert!(lenient.iter().all(|r| r.is_aggregated()));
        Kcl::Delivers(lenient.len())
    };
    (kind, kcl)
}

#[test]
fn each_malformation_has_its_kind() {
    use DecodeErrorKind::*;
    let cases: [(&[u8], DecodeErrorKind, Kcl); 9] = [
        // Record 0's partition key index is out of range: the KCL throws before any record.
        (
            &hex!("0a016b 1a0508051a0178 1a0508001a0179"),
            IndexOutOfRange,
            Kcl::Delivers(0),
        ),
        // Record 0 names an explicit hash key of an empty table.
        (
            &hex!("0a016b 1a07080010001a0178 1a0508001a0179"),
            IndexOutOfRange,
            Kcl::Delivers(0),
        ),
        // proto2 required fields missing: the protobuf parser refuses the message.
        (
            &hex!("0a016b 1a020800 1a0508001a0179"),
            MissingRequiredField,
            Kcl::PassesThrough,
        ),
        (
            &hex!("0a016b 1a031a0178 1a0508001a0179"),
            MissingRequiredField,
            Kcl::PassesThrough,
        ),
        (
            &hex!("0a016b 1a0a08001a0178 2203 120176 1a0508001a0179"),
            MissingRequiredField,
            Kcl::PassesThrough,
        ),
        // A key that is not UTF-8 is decoded lossily: both records come out.
        (
            &hex!("0a01ff 1a0508001a0178 1a0508001a0179"),
            InvalidUtf8,
            Kcl::Delivers(2),
        ),
        // Record 0's explicit hash key "ab" is not a number: the KCL throws before any record.
        (
            &hex!("0a016b 12026162 1a07080010001a0178 1a0508001a0179"),
            InvalidExplicitHashKey,
            Kcl::Delivers(0),
        ),
        (&hex!("0a056b 1a0508001a0178"), Protobuf, Kcl::PassesThrough),
        (
            &hex!("0a016b 0b 1a0508001a0178"),
            Protobuf,
            Kcl::PassesThrough,
        ),
    ];
    for (protobuf, kind, kcl) in cases {
        assert_eq!(kinds(protobuf), (kind, kcl), "{protobuf:02x?}");
    }
}

#[test]
fn header_problems_have_their_kinds() {
    let kind = |data: &'static [u8]| {
        deaggregate_strict(&KinesisRecord::new("a", data))
            .unwrap_err()
            .kind()
    };
    assert_eq!(kind(b""), DecodeErrorKind::BadMagic);
    assert_eq!(kind(&hex!("f389")), DecodeErrorKind::Truncated);
    assert_eq!(kind(&hex!("f3899ac2")), DecodeErrorKind::Truncated);
    assert_eq!(
        kind(&hex!("f3899ac2 00000000000000000000000000000000")),
        DecodeErrorKind::Truncated
    );
    assert_eq!(kind(b"plain text"), DecodeErrorKind::BadMagic);
}

#[test]
fn what_protobuf_parsers_accept_is_accepted() {
    // Tables after records, unknown fields of every wire type, a tag with a key, and an unused
    // explicit hash key entry that is not a number: all valid for a proto2 parser.
    let protobuf = hex!(
        "1a0508001a0178 1a0f080110001a0179 2206 0a0174 120176"
        "2801 3908070605040302 01 4d01020304 52026869"
        "0a0161 0a0162 120137 12026162"
    );
    let records = deaggregate_strict(&aggregate(&protobuf)).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(
        (records[0].partition_key(), records[0].data()),
        ("a", &b"x"[..])
    );
    assert_eq!(
        (records[1].partition_key(), records[1].data()),
        ("b", &b"y"[..])
    );
    assert_eq!(records[1].explicit_hash_key(), Some(HashKey::new(7)));
}

#[test]
fn error_messages_say_what_is_wrong() {
    let record = aggregate(&hex!("0a016b 1a0508051a0178 1a0508001a0179"));
    let message = deaggregate_strict(&record).unwrap_err().to_string();
    assert_eq!(
        message,
        "aggregated record has a table index out of range: record 0 has partition_key_index 5 \
         but the table has 1 entries"
    );
}
