//! What the outstanding-bytes limit counts: the memory a record really takes while it is
//! outstanding, not only its payload.
//!
//! A record is charged, from acceptance to outcome:
//! - its partition key and data;
//! - their encoded copies, [`ENCODED_COPIES`] of them: the Kinesis record it goes out in (an
//!   aggregate, or the record alone) and the transport's wire form of that (base64 in JSON is
//!   4/3 of it), each with [`ENCODED_FRAMING_BYTES`] of framing. They exist only while the record
//!   is queued or in flight, but are reserved at acceptance, so that encoding a record never
//!   pushes the total past the limit;
//! - the engine's bookkeeping, [`ENGINE_BYTES_PER_RECORD`];
//! - from its first failed attempt on, [`HISTORY_BYTES`] more for its history of failed
//!   attempts (the first and the latest), which exists only for a record that is retried.
//!
//! The charge follows what the records take now; the limit is checked against the most they
//! can take, each record without a history counted as if it had one, so that the limit holds
//! even when every outstanding record comes to be retried.
//! - whatever the driver keeps per record, [`EngineConfig::record_overhead_bytes`](crate::EngineConfig::record_overhead_bytes)
//!   (the `kpl` producer's: the token the engine keeps with each record, and its place in the
//!   table of completions).
//!
//! With all of it counted, `max_outstanding_bytes` bounds the memory the producer holds for
//! records; what remains is a fixed overhead (the runtime, the connections, the transport's
//! client) that does not grow with the records.

/// The engine's own memory per outstanding record beyond its key and data: its entry (arrival,
/// deadlines, predicted hash key), its slot in the record window and room for the lists holding
/// it to grow.
pub const ENGINE_BYTES_PER_RECORD: usize = 256;

/// The most a record's history of failed attempts takes (the first and the latest attempts
/// and a count; see [`Failure::attempts`](crate::Failure::attempts)), charged from its first
/// failed attempt on.
pub const HISTORY_BYTES: usize = 288;

/// The most the distinct error texts (code and message, each capped) held for retried
/// records' histories take, with their bookkeeping, whatever the answers say: a fixed part of
/// the memory beyond the limit, shared by every record. An error whose text does not fit keeps
/// its code and loses its message.
pub const ERROR_TEXT_BUDGET: usize = 256 * 1024;

/// Encoded copies of a record's key and data reserved for while it is queued or in flight.
pub const ENCODED_COPIES: usize = 2;

/// Framing an aggregate adds per user record: the record's field tags and lengths, its key
/// index, and its share of the key table's tags.
pub const ENCODED_FRAMING_BYTES: usize = 16;

/// What a record whose partition key and data take `size` bytes is charged while outstanding,
/// when the driver keeps `driver_overhead` bytes per record of its own, before any failed
/// attempt (each retried record is charged [`HISTORY_BYTES`] more).
///
/// ```
/// use kpl_engine::memory::{record_charge, ENCODED_COPIES, ENCODED_FRAMING_BYTES, ENGINE_BYTES_PER_RECORD};
///
/// let charge = record_charge(116, 0);
/// assert_eq!(charge, 116 + ENCODED_COPIES * (116 + ENCODED_FRAMING_BYTES) + ENGINE_BYTES_PER_RECORD);
/// ```
pub fn record_charge(size: usize, driver_overhead: usize) -> usize {
    let encoded = size.saturating_add(ENCODED_FRAMING_BYTES);
    size.saturating_add(encoded.saturating_mul(ENCODED_COPIES))
        .saturating_add(ENGINE_BYTES_PER_RECORD)
        .saturating_add(driver_overhead)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn the_bookkeeping_charge_covers_the_engines_entry_window_slot_and_history() {
        let entry = crate::engine::PENDING_SIZE;
        let window_slot = size_of::<Option<Instant>>();
        assert!(
            entry + 4 * window_slot <= ENGINE_BYTES_PER_RECORD,
            "{entry} + 4 x {window_slot} > {ENGINE_BYTES_PER_RECORD}"
        );
        let history = crate::outcome::AttemptHistory::bytes_at_most();
        assert!(history <= HISTORY_BYTES, "{history} > {HISTORY_BYTES}");
    }

    #[test]
    fn a_charge_saturates_instead_of_overflowing() {
        assert_eq!(record_charge(usize::MAX, 0), usize::MAX);
        assert_eq!(record_charge(0, usize::MAX), usize::MAX);
    }
}
