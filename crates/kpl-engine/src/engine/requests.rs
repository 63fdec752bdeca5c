//! Requests the engine made: the outbox the driver polls, and what each request in flight
//! carries, so its answer can be matched to its records.

use std::collections::{BTreeMap, VecDeque};
use std::mem;
use std::time::Instant;

use super::pending::Pending;
use crate::transport::{PutRecordsRequest, Request};

/// Identifies a request the engine asked to send, so its answer can be handed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(u64);

/// The user records of one `PutRecords` entry and the shard they were predicted for.
#[derive(Debug)]
pub(super) struct EntryMeta<T = ()> {
    pub(super) slot: Option<usize>,
    /// The entry's size as the service counts it (its Kinesis record's data and key).
    pub(super) size: usize,
    pub(super) records: Vec<Pending<T>>,
}

#[derive(Debug)]
pub(super) enum InFlightKind<T = ()> {
    PutRecords(Vec<EntryMeta<T>>),
    ListShards,
    /// A page of the listing of every shard (see `MapRefresh::history`).
    ShardHistory,
    DescribeStreamSummary,
}

#[derive(Debug)]
pub(super) struct InFlight<T = ()> {
    pub(super) stream: usize,
    /// `None` while the request waits in the outbox.
    pub(super) sent_at: Option<Instant>,
    pub(super) kind: InFlightKind<T>,
}

#[derive(Debug)]
pub(super) struct Requests<T = ()> {
    outbox: VecDeque<(RequestId, Request)>,
    in_flight: BTreeMap<RequestId, InFlight<T>>,
    next: u64,
}

impl<T> Default for Requests<T> {
    fn default() -> Self {
        Self {
            outbox: VecDeque::new(),
            in_flight: BTreeMap::new(),
            next: 0,
        }
    }
}

impl<T> Requests<T> {
    /// Queues a request of stream `stream` for the driver.
    pub(super) fn enqueue(&mut self, stream: usize, kind: InFlightKind<T>, request: Request) {
        let id = RequestId(self.next);
        self.next += 1;
        let in_flight = InFlight {
            stream,
            sent_at: None,
            kind,
        };
        self.in_flight.insert(id, in_flight);
        self.outbox.push_back((id, request));
    }

    /// The next request in the outbox, taken out (it stays in flight).
    pub(super) fn pop_outbox(&mut self) -> Option<(RequestId, Request)> {
        self.outbox.pop_front()
    }

    /// The request leaves: its answer's wait starts `now`.
    pub(super) fn mark_sent(&mut self, id: RequestId, now: Instant) {
        if let Some(in_flight) = self.in_flight.get_mut(&id) {
            in_flight.sent_at = Some(now);
        }
    }

    /// Takes a request's record of what it carries, when its answer comes (or it is dropped).
    pub(super) fn complete(&mut self, id: RequestId) -> Option<InFlight<T>> {
        self.in_flight.remove(&id)
    }

    pub(super) fn has_outbox(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Forgets every request; returns each one's record of what it carried (the caller finds
    /// the records in those of `PutRecords`).
    pub(super) fn abandon(&mut self) -> impl Iterator<Item = InFlight<T>> {
        self.outbox.clear();
        mem::take(&mut self.in_flight).into_values()
    }

    /// Takes out of a `PutRecords` request about to leave every entry that holds a record
    /// past its expiration at `now` (its encoded aggregate carries that record). Returns the
    /// request's stream and the entries taken, if any.
    pub(super) fn take_expired_entries(
        &mut self,
        id: RequestId,
        put: &mut PutRecordsRequest,
        now: Instant,
    ) -> Option<(usize, Vec<EntryMeta<T>>)> {
        let in_flight = self.in_flight.get_mut(&id)?;
        let InFlightKind::PutRecords(metas) = &mut in_flight.kind else {
            return None;
        };
        let holds_expired = |meta: &EntryMeta<T>| meta.records.iter().any(|p| p.expiration <= now);
        if !metas.iter().any(holds_expired) {
            return None;
        }
        let mut taken = Vec::new();
        let mut kept_metas = Vec::with_capacity(metas.len());
        let mut kept_entries = Vec::with_capacity(metas.len());
        for (meta, entry) in mem::take(metas)
            .into_iter()
            .zip(mem::take(&mut put.entries))
        {
            if holds_expired(&meta) {
                taken.push(meta);
            } else {
                kept_metas.push(meta);
                kept_entries.push(entry);
            }
        }
        *metas = kept_metas;
        put.entries = kept_entries;
        Some((in_flight.stream, taken))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kpl_aggregation::KinesisRecord;

    use super::*;
    use crate::engine::pending::tests::pending;
    use crate::stream::Stream;
    use crate::time::{Clock, SystemClock};

    #[test]
    fn entries_holding_an_expired_record_leave_the_request_with_their_records() {
        let now = SystemClock.now();
        let stream = Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let mut requests = Requests::default();
        let metas = vec![
            EntryMeta {
                slot: Some(0),
                size: 1,
                records: vec![pending(0, now, Duration::from_secs(30))],
            },
            EntryMeta {
                slot: Some(1),
                size: 1,
                records: vec![
                    pending(1, now, Duration::from_secs(60)),
                    pending(2, now, Duration::from_secs(1)),
                ],
            },
        ];
        let entries = vec![
            KinesisRecord::new("a", vec![0]),
            KinesisRecord::new("b", vec![1]),
        ];
        requests.enqueue(
            3,
            InFlightKind::PutRecords(metas),
            Request::PutRecords(PutRecordsRequest::new(stream, entries)),
        );
        let Some((id, Request::PutRecords(mut put))) = requests.pop_outbox() else {
            panic!("the request")
        };
        assert!(requests.take_expired_entries(id, &mut put, now).is_none());
        let later = now + Duration::from_secs(2);
        let Some((stream_index, taken)) = requests.take_expired_entries(id, &mut put, later) else {
            panic!("record 2 expired")
        };
        assert_eq!(stream_index, 3);
        let taken_ids: Vec<u64> = taken[0].records.iter().map(|p| p.id).collect();
        assert_eq!(taken_ids, [1, 2], "its whole entry leaves");
        assert_eq!(put.entries.len(), 1);
        assert_eq!(put.entries[0].partition_key(), "a");
        requests.mark_sent(id, later);
        let in_flight = requests.complete(id).unwrap_or_else(|| panic!("in flight"));
        assert_eq!(in_flight.sent_at, Some(later));
        let InFlightKind::PutRecords(kept) = in_flight.kind else {
            panic!("a PutRecords")
        };
        assert_eq!(kept.len(), 1);
        assert!(requests.complete(id).is_none(), "answered once");
    }
}
