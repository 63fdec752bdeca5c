#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]

mod decode;
mod encode;
mod hash_key;
mod record;

pub use decode::{
    DeaggregatedRecord, DecodeError, DecodeErrorKind, DroppedAggregate, ShardDeaggregation,
    deaggregate, deaggregate_for_shard, deaggregate_strict,
};
pub use encode::{
    AGGREGATE_OVERHEAD, AggregateFull, Aggregator, MaxAggregateSize, MaxAggregateSizeError,
    OuterPartitionKey,
};
pub use hash_key::{
    HashKey, HashKeyParseError, HashKeyParseErrorReason, HashKeyRange, InvalidHashKeyRange,
    PartitionKey, PartitionKeyError,
};
pub use record::{KinesisRecord, UserRecord};

/// The four bytes every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Keeps the code in the workspace README compiling and passing.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct WorkspaceReadme;
