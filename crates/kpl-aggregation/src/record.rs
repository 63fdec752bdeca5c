//! The two kinds of record: what an application produces, and what Kinesis stores.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use md5::{Digest, Md5};

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
///
/// An aggregate's MD5 trailer is computed when its data is first read, not when the aggregator
/// makes it: a producer can make aggregates under a lock and leave the hashing to whoever sends
/// them, and [`seal_all`](Self::seal_all) hashes the aggregates of a request several side by side.
/// Clones share the one computation.
#[derive(Clone)]
pub struct KinesisRecord {
    partition_key: String,
    explicit_hash_key: Option<HashKey>,
    data: Data,
}

/// A record's data: as given, or an aggregate whose trailer is still to be computed.
#[derive(Clone)]
enum Data {
    Ready(Bytes),
    Unsealed(Arc<Unsealed>),
}

/// An aggregate without its MD5 trailer yet. Whoever takes `body` computes the trailer and sets
/// `sealed`; anyone finding `body` gone waits for `sealed`.
struct Unsealed {
    body: Mutex<Option<Vec<u8>>>,
    sealed: OnceLock<Bytes>,
    /// The length with the trailer.
    len: usize,
}

impl Unsealed {
    fn take_body(&self) -> Option<Vec<u8>> {
        if self.sealed.get().is_some() {
            return None;
        }
        self.body
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn sealed(&self) -> &Bytes {
        if let Some(body) = self.take_body() {
            let digest = Md5::digest(&body[MAGIC_LEN..]).into();
            self.seal(body, digest);
        }
        self.sealed.wait()
    }

    fn seal(&self, mut body: Vec<u8>, digest: [u8; 16]) {
        body.extend_from_slice(&digest);
        // Only the taker of the body sets it.
        let _ = self.sealed.set(Bytes::from(body));
    }
}

const MAGIC_LEN: usize = crate::MAGIC.len();

impl KinesisRecord {
    /// A record with a partition key and data, and no explicit hash key.
    pub fn new(partition_key: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self {
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: Data::Ready(data.into()),
        }
    }

    /// An aggregate whose `body` (magic, tables and records) gets its MD5 trailer when first read.
    pub(crate) fn unsealed_aggregate(partition_key: String, body: Vec<u8>) -> Self {
        let len = body.len() + crate::wire::DIGEST_LEN;
        Self {
            partition_key,
            explicit_hash_key: None,
            data: Data::Unsealed(Arc::new(Unsealed {
                body: Mutex::new(Some(body)),
                sealed: OnceLock::new(),
                len,
            })),
        }
    }

    /// Computes the MD5 trailers of every aggregate among `records` not yet sealed, several side
    /// by side (cheaper than one at a time when [`data`](Self::data) is first read).
    ///
    /// ```
    /// use kpl_aggregation::{Aggregator, KinesisRecord, PartitionKey, UserRecord, deaggregate_strict};
    ///
    /// let mut aggregates = Vec::new();
    /// for shard in 0..3 {
    ///     let mut aggregator = Aggregator::default();
    ///     for i in 0..2 {
    ///         let key = PartitionKey::new(format!("{shard}-{i}"))?;
    ///         aggregator.push(&UserRecord::new(key, "data"));
    ///     }
    ///     aggregates.extend(aggregator.finish());
    /// }
    /// KinesisRecord::seal_all(&aggregates);
    /// for aggregate in &aggregates {
    ///     assert_eq!(deaggregate_strict(aggregate).map(|records| records.len()), Ok(2));
    /// }
    /// # Ok::<(), kpl_aggregation::PartitionKeyError>(())
    /// ```
    pub fn seal_all(records: &[Self]) {
        let taken: Vec<(&Unsealed, Vec<u8>)> = records
            .iter()
            .filter_map(|record| match &record.data {
                Data::Unsealed(unsealed) => Some((&**unsealed, unsealed.take_body()?)),
                Data::Ready(_) => None,
            })
            .collect();
        let bodies: Vec<&[u8]> = taken.iter().map(|(_, body)| &body[MAGIC_LEN..]).collect();
        let digests = crate::md5_lanes::md5_many(&bodies);
        for ((unsealed, body), digest) in taken.into_iter().zip(digests) {
            unsealed.seal(body, digest);
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
        match &self.data {
            Data::Ready(data) => data,
            Data::Unsealed(unsealed) => unsealed.sealed(),
        }
    }

    /// The length of [`data`](Self::data), known without computing an aggregate's trailer.
    pub fn data_len(&self) -> usize {
        match &self.data {
            Data::Ready(data) => data.len(),
            Data::Unsealed(unsealed) => unsealed.len,
        }
    }

    /// What Kinesis counts against the record and request size limits: data plus partition key bytes.
    pub fn billed_size(&self) -> usize {
        self.data_len() + self.partition_key.len()
    }

    /// Whether the data starts with the aggregation magic. Only a full decode says whether it is a
    /// valid aggregate; see [`deaggregate`](crate::deaggregate).
    pub fn has_aggregation_magic(&self) -> bool {
        match &self.data {
            Data::Ready(data) => data.starts_with(&crate::MAGIC),
            Data::Unsealed(_) => true,
        }
    }

    /// Splits the record into partition key, explicit hash key and data.
    pub fn into_parts(self) -> (String, Option<HashKey>, Bytes) {
        let data = self.data().clone();
        (self.partition_key, self.explicit_hash_key, data)
    }
}

impl PartialEq for KinesisRecord {
    fn eq(&self, other: &Self) -> bool {
        self.partition_key == other.partition_key
            && self.explicit_hash_key == other.explicit_hash_key
            && self.data() == other.data()
    }
}

impl Eq for KinesisRecord {}

impl fmt::Debug for KinesisRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KinesisRecord")
            .field("partition_key", &self.partition_key)
            .field("explicit_hash_key", &self.explicit_hash_key)
            .field("data", self.data())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::{Aggregator, PartitionKey, UserRecord, deaggregate_strict};

    use super::*;

    fn aggregate(tag: u8) -> KinesisRecord {
        let mut aggregator = Aggregator::default();
        for i in 0..3u8 {
            let key = PartitionKey::new(format!("{tag}-{i}")).unwrap_or_else(|e| panic!("{e}"));
            aggregator.push(&UserRecord::new(key, vec![tag; 10 + usize::from(i)]));
        }
        aggregator
            .finish()
            .unwrap_or_else(|| panic!("three records"))
    }

    #[test]
    fn an_aggregate_read_sealed_together_or_alone_or_by_racing_threads_is_the_same() {
        let alone: Vec<Bytes> = (0..12).map(|tag| aggregate(tag).data().clone()).collect();
        for (tag, bytes) in (0..12).zip(&alone) {
            assert_eq!(bytes.len(), aggregate(tag).data_len());
        }
        let together: Vec<KinesisRecord> = (0..12).map(aggregate).collect();
        let billed = |r: &KinesisRecord| r.data_len() + r.partition_key().len();
        assert!(together.iter().all(|r| r.billed_size() == billed(r)));
        let clones = together.clone();
        std::thread::scope(|scope| {
            scope.spawn(|| KinesisRecord::seal_all(&together));
            scope.spawn(|| KinesisRecord::seal_all(&clones[6..]));
            for record in &clones {
                scope.spawn(move || record.data().len());
            }
        });
        for ((record, clone), bytes) in together.iter().zip(&clones).zip(&alone) {
            assert_eq!(record.data(), bytes);
            assert_eq!(clone.data(), bytes);
            assert_eq!(deaggregate_strict(record).map(|users| users.len()), Ok(3));
        }
        // Sealing again changes nothing.
        KinesisRecord::seal_all(&together);
        assert_eq!(together[0].data(), &alone[0]);
    }
}
