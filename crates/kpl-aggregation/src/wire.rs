//! Constants of the wire format, shared by the encoder and the decoder.

/// The four bytes every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Length of the MD5 trailer.
pub(crate) const DIGEST_LEN: usize = 16;

/// Bytes an aggregate carries besides its protobuf: the 4-byte magic and the 16-byte MD5 trailer.
pub const AGGREGATE_OVERHEAD: usize = MAGIC.len() + DIGEST_LEN;

/// Protobuf tags (field number << 3 | wire type) of the schema in `proto/messages.proto`.
/// Every one fits a single byte.
pub(crate) mod tag {
    /// `AggregatedRecord.partition_key_table`, length-delimited.
    pub(crate) const PARTITION_KEY_TABLE: u8 = 0x0A;
    /// `AggregatedRecord.explicit_hash_key_table`, length-delimited.
    pub(crate) const EXPLICIT_HASH_KEY_TABLE: u8 = 0x12;
    /// `AggregatedRecord.records`, length-delimited.
    pub(crate) const RECORDS: u8 = 0x1A;
    /// `Record.partition_key_index`, varint.
    pub(crate) const PARTITION_KEY_INDEX: u8 = 0x08;
    /// `Record.explicit_hash_key_index`, varint.
    pub(crate) const EXPLICIT_HASH_KEY_INDEX: u8 = 0x10;
    /// `Record.data`, length-delimited.
    pub(crate) const DATA: u8 = 0x1A;
    /// `Record.tags`, length-delimited.
    pub(crate) const TAGS: u8 = 0x22;
    /// `Tag.key`, length-delimited.
    pub(crate) const TAG_KEY: u8 = 0x0A;
    /// `Tag.value`, length-delimited.
    pub(crate) const TAG_VALUE: u8 = 0x12;
}
