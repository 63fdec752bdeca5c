#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]

mod decode;
mod encode;
mod hash_key;
mod md5_lanes;
mod record;
mod wire;

pub use decode::{
    BorrowedRecord, DeaggregatedRecord, DecodeError, DecodeErrorKind, DroppedAggregate,
    ShardDeaggregation, deaggregate, deaggregate_borrowed, deaggregate_for_shard,
    deaggregate_many_borrowed, deaggregate_strict,
};
pub use encode::{
    AggregateFull, Aggregator, MaxAggregateSize, MaxAggregateSizeError, OuterPartitionKey,
};
pub use hash_key::{
    HashKey, HashKeyParseError, HashKeyParseErrorReason, HashKeyRange, InvalidHashKeyRange,
    PartitionKey, PartitionKeyError,
};
pub use record::{KinesisRecord, UserRecord};
pub use wire::{AGGREGATE_OVERHEAD, MAGIC};
