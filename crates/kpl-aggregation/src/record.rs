//! The two kinds of record: what an application produces, and what Kinesis stores.

use bytes::Bytes;

use crate::{HashKey, PartitionKey};

/// One record as the application produces it: a partition key, an optional explicit hash key and data.
///
/// Many user records are packed into one [`KinesisRecord`] by the [`Aggregator`](crate::Aggregator).
///
/// ```
/// use kpl_aggregation::{HashKey, PartitionKey, UserRecord};
///
/// let record = UserRecord::new(PartitionKey::new("user-42")?, "hello")
///     .with_explicit_hash_key(HashKey::new(7));
/// assert_eq!(record.hash_key(), HashKey::new(7));
/// assert_eq!(&record.data()[..], b"hello");
/// # Ok::<(), kpl_aggregation::PartitionKeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UserRecord {
    partition_key: PartitionKey,
    explicit_hash_key: Option<HashKey>,
    data: Bytes,
}

impl UserRecord {
    /// A record routed by the MD5 of its partition key.
    pub fn new(partition_key: PartitionKey, data: impl Into<Bytes>) -> Self {
        Self {
            partition_key,
            explicit_hash_key: None,
            data: data.into(),
        }
    }

    /// Routes the record by `hash_key` instead of by its partition key.
    #[must_use]
    pub fn with_explicit_hash_key(mut self, hash_key: HashKey) -> Self {
        self.explicit_hash_key = Some(hash_key);
        self
    }

    /// The partition key.
    pub fn partition_key(&self) -> &PartitionKey {
        &self.partition_key
    }

    /// The explicit hash key, if the record has one.
    pub fn explicit_hash_key(&self) -> Option<HashKey> {
        self.explicit_hash_key
    }

    /// The payload.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The hash key that decides the record's shard: the explicit one, or MD5 of the partition key.
    ///
    /// Computing MD5 costs about as much as encoding the record; callers that route many records
    /// should compute it once and keep it.
    pub fn hash_key(&self) -> HashKey {
        self.explicit_hash_key
            .unwrap_or_else(|| self.partition_key.hash_key())
    }

    /// Splits the record into its partition key, explicit hash key and data.
    pub fn into_parts(self) -> (PartitionKey, Option<HashKey>, Bytes) {
        (self.partition_key, self.explicit_hash_key, self.data)
    }
}

/// One record as Kinesis stores it: the unit of `PutRecords` entries and of `GetRecords` results.
///
/// The [`Aggregator`](crate::Aggregator) produces these with an explicit hash key always set (as the
/// KPL does). A consumer builds one from what `GetRecords` returned (which carries no explicit hash
/// key) and hands it to [`deaggregate`](crate::deaggregate).
///
/// The partition key is a plain `String` here, not a [`PartitionKey`]: records read from a stream are
/// taken as they come.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KinesisRecord {
    partition_key: String,
    explicit_hash_key: Option<HashKey>,
    data: Bytes,
}

impl KinesisRecord {
    /// A record with a partition key and data, and no explicit hash key.
    pub fn new(partition_key: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self {
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
        }
    }

    /// Sets the explicit hash key.
    #[must_use]
    pub fn with_explicit_hash_key(mut self, hash_key: HashKey) -> Self {
        self.explicit_hash_key = Some(hash_key);
        self
    }

    /// The partition key (`"a"` for an aggregate under the KPL's default policy).
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The explicit hash key that routes the record, if set.
    pub fn explicit_hash_key(&self) -> Option<HashKey> {
        self.explicit_hash_key
    }

    /// The record's data: a user record's payload, or an encoded aggregate.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// What Kinesis counts against the record and request size limits: data plus partition key bytes.
    pub fn billed_size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// Whether the data starts with the aggregation magic. Only a full decode says whether it is a
    /// valid aggregate; see [`deaggregate`](crate::deaggregate).
    pub fn has_aggregation_magic(&self) -> bool {
        self.data.starts_with(&crate::MAGIC)
    }

    /// Splits the record into partition key, explicit hash key and data.
    pub fn into_parts(self) -> (String, Option<HashKey>, Bytes) {
        (self.partition_key, self.explicit_hash_key, self.data)
    }
}
