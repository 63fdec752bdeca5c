//! A record checked and hashed before it reaches the engine's lock.

use kpl_aggregation::{HashKey, PartitionKey, UserRecord};

use crate::outcome::{Record, RejectReason, Rejected};
use crate::stream::Stream;

/// A record checked (partition key, explicit hash key) and hashed (the MD5 of its key, most of
/// the work of accepting it), with none of the engine's state: a driver can prepare records
/// before taking the lock that guards its engine, then hand them to
/// [`Engine::submit_prepared`](crate::Engine::submit_prepared).
#[derive(Debug)]
pub struct PreparedRecord {
    pub(super) stream: Stream,
    pub(super) record: UserRecord,
    pub(super) hash_key: HashKey,
    /// The explicit hash key as the caller wrote it, to hand the record back unchanged.
    explicit_hash_key_text: Option<String>,
}

impl PreparedRecord {
    /// Checks and hashes `record`, or refuses it with the reason and the record back.
    pub fn prepare(record: Record) -> Result<Self, Rejected> {
        let (stream, record, explicit_hash_key_text) = Self::check(record)?;
        Ok(Self {
            stream,
            hash_key: record.hash_key(),
            record,
            explicit_hash_key_text,
        })
    }

    /// [`prepare`](Self::prepare) for many records, in order: the MD5s of their partition
    /// keys are computed several side by side, which costs less per record.
    pub fn prepare_many(records: impl IntoIterator<Item = Record>) -> Vec<Result<Self, Rejected>> {
        let checked: Vec<_> = records.into_iter().map(Self::check).collect();
        let keys: Vec<&str> = checked
            .iter()
            .filter_map(|checked| checked.as_ref().ok())
            .filter(|(_, record, _)| record.explicit_hash_key().is_none())
            .map(|(_, record, _)| record.partition_key().as_str())
            .collect();
        let mut hashed = HashKey::from_partition_keys(&keys).into_iter();
        checked
            .into_iter()
            .map(|checked| {
                let (stream, record, explicit_hash_key_text) = checked?;
                let hash_key = match record.explicit_hash_key() {
                    Some(hash_key) => hash_key,
                    None => hashed.next().unwrap_or_else(|| record.hash_key()),
                };
                Ok(Self {
                    stream,
                    record,
                    hash_key,
                    explicit_hash_key_text,
                })
            })
            .collect()
    }

    /// Checks `record`'s keys: its stream, the record with its keys parsed, and its explicit
    /// hash key as the caller wrote it.
    fn check(record: Record) -> Result<(Stream, UserRecord, Option<String>), Rejected> {
        let explicit_hash_key = match record.explicit_hash_key().map(HashKey::parse_decimal) {
            None => None,
            Some(Ok(hash_key)) => Some(hash_key),
            Some(Err(error)) => {
                return Err(Rejected::new(RejectReason::ExplicitHashKey(error), record));
            }
        };
        let (stream, key, ehk_text, data) = record.into_parts();
        let key = match PartitionKey::new(key) {
            Ok(key) => key,
            Err(error) => {
                let chars = error.char_count();
                let mut record = Record::new(stream, error.into_key(), data);
                if let Some(text) = ehk_text {
                    record = record.with_explicit_hash_key(text);
                }
                return Err(Rejected::new(RejectReason::PartitionKey { chars }, record));
            }
        };
        let mut record = UserRecord::new(key, data);
        if let Some(hash_key) = explicit_hash_key {
            record = record.with_explicit_hash_key(hash_key);
        }
        Ok((stream, record, ehk_text))
    }

    /// The size the service counts: data plus partition key.
    pub fn size(&self) -> usize {
        self.record.data().len() + self.record.partition_key().len()
    }

    /// The stream it goes to.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The record as the caller handed it over.
    pub fn into_record(self) -> Record {
        let (key, _, data) = self.record.into_parts();
        let record = Record::new(self.stream, key.into_string(), data);
        match self.explicit_hash_key_text {
            Some(text) => record.with_explicit_hash_key(text),
            None => record,
        }
    }
}
