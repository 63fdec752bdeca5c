//! Aggregates that landed on a shard the map does not know (a child after a split or merge):
//! held, without being re-sent, until a map read can say whether the shard owns every record
//! in them, as a KCL consumer requires; re-sent when it does not, or when no read says in time.

use std::mem;
use std::sync::Arc;
use std::time::Instant;

use super::{Answer, StreamState};
use crate::config::OrderingMode;
use crate::engine::pending::{Packing, Pending};
use crate::engine::requests::EntryMeta;
use crate::engine::shared::Shared;
use crate::outcome::{AttemptError, Landing, codes};

/// A held landing is decided by this fraction of its records' shortest remaining lifetime, so a
/// re-send still has time.
const DECIDE_BY_DIVISOR: u32 = 2;

/// An aggregate written to a shard the map has never listed (a child after a split or merge).
/// A KCL consumer keeps it only if the shard owns every record in it, which needs that shard's
/// range: the records keep their landing and wait, without being re-sent, for a map read that
/// knows the shard.
#[derive(Debug)]
pub(super) struct HeldLanding<T = ()> {
    pub(super) landing: Arc<Landing>,
    pub(super) records: Vec<Pending<T>>,
    /// The shard the aggregate was predicted for (in ordering mode it stays busy meanwhile).
    pub(super) slot: Option<usize>,
    /// The aggregate's size as the service counts it.
    pub(super) size: usize,
    pub(super) sent_at: Instant,
    pub(super) landed_at: Instant,
    /// Past this, the landing is given up on and the records are re-sent alone: half of the
    /// shortest remaining lifetime, so the re-send still has time.
    pub(super) decide_by: Instant,
}

impl<T> HeldLanding<T> {
    /// Whether a map read that started at `read_started` reflects the shards that existed when
    /// the aggregate was written: a read sent after the answer arrived saw the write.
    pub(super) fn read_saw_the_write(&self, read_started: Option<Instant>) -> bool {
        read_started.is_some_and(|at| at >= self.landed_at)
    }

    pub(super) fn landed(&self) -> Landed<'_> {
        Landed {
            landing: &self.landing,
            slot: self.slot,
            sent_at: self.sent_at,
            landed_at: self.landed_at,
        }
    }
}

/// Where and when an entry was written, for judging its landing.
#[derive(Clone, Copy, Debug)]
pub(super) struct Landed<'a> {
    pub(super) landing: &'a Arc<Landing>,
    /// The shard it was predicted for.
    pub(super) slot: Option<usize>,
    pub(super) sent_at: Instant,
    pub(super) landed_at: Instant,
}

impl<T> StreamState<T> {
    /// An aggregate landed on a shard that does not own all of its records: a KCL consumer drops
    /// it there, so every record is re-sent.
    pub(super) fn resend_misplaced(
        &mut self,
        cx: &mut Shared<T>,
        landed: Landed<'_>,
        records: Vec<Pending<T>>,
        now: Instant,
    ) {
        let why = "which does not own all of their hash keys; all are re-sent";
        let retry = self.prepare_resend(cx, &landed, records, (codes::WRONG_SHARD, why), now);
        if retry.is_empty() {
            return;
        }
        if !self.maps.refresh.in_flight {
            // The map was re-read after this request left: it already knows where the
            // records belong, so they go to the head of their shards now.
            self.requeue_front(cx, retry, Packing::Aggregated, now);
            return;
        }
        if let (OrderingMode::PerShard, Some(slot)) = (cx.config.ordering, landed.slot) {
            // Ordering mode: the records go back to the head of their shard, which
            // sends nothing more until the new map says where everything belongs.
            self.shards[slot].awaiting_refresh = true;
            self.requeue_front(cx, retry, Packing::Aggregated, now);
            return;
        }
        for pending in retry {
            // Wait for the refreshed map (or the deadline) instead of landing wrong again.
            self.await_map(cx, pending);
        }
    }

    /// Records the landing as a failed attempt of each record, with the error `(code, why)`;
    /// fails those past their expiry and returns the others, due again soon.
    pub(super) fn prepare_resend(
        &mut self,
        cx: &mut Shared<T>,
        landed: &Landed<'_>,
        records: Vec<Pending<T>>,
        (code, why): (&str, &str),
        now: Instant,
    ) -> Vec<Pending<T>> {
        let error = AttemptError::shared(
            code,
            format!(
                "an aggregate of {} records landed on {}, {why}",
                records.len(),
                landed.landing.shard_id
            ),
        );
        self.stats.error(code, 1);
        self.interval(landed.slot).error(code);
        let mut retry = Vec::with_capacity(records.len());
        for mut pending in records {
            let (sent_at, landed_at) = (landed.sent_at, landed.landed_at);
            self.failed_attempt(
                cx,
                landed.slot,
                &mut pending,
                &error,
                Answer {
                    sent_at,
                    now: landed_at,
                },
            );
            if pending.expiration <= now {
                self.expire(cx, pending, now);
            } else {
                pending.due_for_retry(now, cx.config.record_max_buffered_time);
                retry.push(pending);
            }
        }
        self.stats.retries_per_record += retry.len() as u64;
        retry
    }

    /// Holds an aggregate that landed on a shard the map does not know until a map read can
    /// judge it, and makes sure one is on its way.
    pub(super) fn hold_landing(
        &mut self,
        cx: &mut Shared<T>,
        entry: EntryMeta<T>,
        landing: Arc<Landing>,
        sent_at: Instant,
        now: Instant,
    ) {
        let decide_by = entry
            .records
            .iter()
            .map(|p| now + p.expiration.saturating_duration_since(now) / DECIDE_BY_DIVISOR)
            .min()
            .unwrap_or(now);
        let stream = &mut *self;
        stream.stats.unknown_shard_landings += 1;
        stream.held_landings.push(HeldLanding {
            landing,
            records: entry.records,
            slot: entry.slot,
            size: entry.size,
            sent_at,
            landed_at: now,
            decide_by,
        });
        stream.arm_timer(cx, decide_by);
        self.ensure_map_read(cx, now);
    }

    /// After a map or history read: judges every held landing whose shard is now known. A
    /// landing on a shard that a map read made after the write does not list (closed again by
    /// a second reshard) waits for a listing of every shard; if even that does not know it, it
    /// is given up on. The others wait for a map read made after their write.
    pub(super) fn judge_held_landings(&mut self, cx: &mut Shared<T>, now: Instant) {
        let stream = &mut *self;
        if stream.held_landings.is_empty() {
            return;
        }
        let map_read = stream.maps.map_started_at;
        let history_read = stream.maps.history_read;
        let mut released = false;
        for mut held in mem::take(&mut stream.held_landings) {
            let stream = &mut *self;
            let range = stream
                .maps
                .map
                .as_ref()
                .and_then(|map| map.range_of(&held.landing.shard_id));
            if range.is_none() && !held.read_saw_the_write(history_read) {
                stream.held_landings.push(held);
                continue;
            }
            released |= self.release_busy_slot(cx.ordered(), held.slot);
            let records = mem::take(&mut held.records);
            let landed = held.landed();
            match range {
                Some(range) if records.iter().all(|p| range.contains(p.hash_key)) => {
                    let landing = landed.landing.clone();
                    let entry = EntryMeta {
                        slot: held.slot,
                        size: held.size,
                        records,
                    };
                    self.deliver(cx, entry, landing, held.sent_at, held.landed_at);
                }
                Some(_) => self.resend_misplaced(cx, landed, records, now),
                None => self.resend_alone(cx, landed, records, now),
            }
        }
        let stream = &*self;
        let (need_history, need_map) =
            stream
                .held_landings
                .iter()
                .fold((false, false), |(history, map), held| {
                    let seen = held.read_saw_the_write(map_read);
                    (history || seen, map || !seen)
                });
        // A failing listing is read again on its own backoff.
        if need_history && self.maps.history.next_at.is_none() {
            self.start_history_read(cx, now);
        }
        if need_map {
            self.ensure_map_read(cx, now);
        }
        if released {
            self.service_all_shards(cx, now);
        }
    }

    /// Gives up on held landings whose decision time has come: their records are re-sent alone.
    pub(super) fn give_up_overdue_landings(&mut self, cx: &mut Shared<T>, now: Instant) {
        let stream = &mut *self;
        if stream.held_landings.iter().all(|held| held.decide_by > now) {
            return;
        }
        let (overdue, waiting): (Vec<HeldLanding<T>>, Vec<HeldLanding<T>>) =
            mem::take(&mut stream.held_landings)
                .into_iter()
                .partition(|held| held.decide_by <= now);
        stream.held_landings = waiting;
        let mut released = false;
        for mut held in overdue {
            released |= self.release_busy_slot(cx.ordered(), held.slot);
            let records = mem::take(&mut held.records);
            self.resend_alone(cx, held.landed(), records, now);
        }
        if released {
            self.service_all_shards(cx, now);
        }
    }

    /// The safe side for a landing that cannot be judged: re-send every record alone (a plain
    /// record counts wherever it lands). The first copy may be readable too, so this is counted.
    pub(super) fn resend_alone(
        &mut self,
        cx: &mut Shared<T>,
        landed: Landed<'_>,
        records: Vec<Pending<T>>,
        now: Instant,
    ) {
        let why = "a shard no shard map read in time has listed; each record is re-sent alone, \
                   and a consumer may read the first copy too";
        let retry = self.prepare_resend(cx, &landed, records, (codes::UNJUDGED_LANDING, why), now);
        self.stats.unjudged_landings_resent += retry.len() as u64;
        if !retry.is_empty() {
            self.requeue_front(cx, retry, Packing::Alone, now);
        }
    }
}
