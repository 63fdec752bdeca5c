//! The shard map of one stream: which open shard owns a hash key, and the ranges of every shard
//! seen, open or closed, for checking where records landed.

use std::collections::{BTreeMap, BTreeSet};

use kpl_aggregation::{HashKey, HashKeyRange};

use crate::transport::{ShardDescription, ShardId};

/// A stream's open shards, sorted by hash range, plus the ranges of shards seen before.
#[derive(Clone, Debug, Default)]
pub struct ShardMap {
    /// Open shards sorted by the start of their range; ranges do not overlap.
    open: Vec<(HashKeyRange, ShardId)>,
    /// The shards listed, and the shards open in the map before (parents just closed), so
    /// landings on a parent or a child can be checked after a reshard. Older closed shards are
    /// forgotten: a landing on one is judged after a read of the stream's history.
    known: BTreeMap<ShardId, HashKeyRange>,
    /// Whether the listing had overlapping open shards (one of each overlap was left out).
    had_overlaps: bool,
}

impl ShardMap {
    /// Builds a map from `ListShards` output. Closed shards are only remembered, with the
    /// shards `previous` had open; overlapping open ranges (a listing taken mid-reshard) keep
    /// the first shard of each overlap.
    pub fn from_shards(shards: &[ShardDescription], previous: Option<&Self>) -> Self {
        let mut known: BTreeMap<ShardId, HashKeyRange> = previous
            .map(|map| {
                map.open
                    .iter()
                    .map(|(range, id)| (id.clone(), *range))
                    .collect()
            })
            .unwrap_or_default();
        let mut open: Vec<(HashKeyRange, ShardId)> = Vec::new();
        for shard in shards {
            known.insert(shard.shard_id.clone(), shard.hash_key_range);
            if shard.open {
                open.push((shard.hash_key_range, shard.shard_id.clone()));
            }
        }
        open.sort_by_key(|(range, id)| (range.start(), id.clone()));
        let mut disjoint: Vec<(HashKeyRange, ShardId)> = Vec::with_capacity(open.len());
        let mut had_overlaps = false;
        for (range, id) in open {
            if disjoint
                .last()
                .is_some_and(|(last, _)| range.start() <= last.end())
            {
                had_overlaps = true;
                continue;
            }
            disjoint.push((range, id));
        }
        Self {
            open: disjoint,
            known,
            had_overlaps,
        }
    }

    /// Whether the open shards tile the whole hash key space exactly, as they always do in a
    /// consistent listing. A listing paged across a reshard may have gaps or overlaps.
    pub fn is_consistent(&self) -> bool {
        let mut next_start = Some(0u128);
        for (range, _) in &self.open {
            if Some(range.start().get()) != next_start {
                return false;
            }
            next_start = range.end().get().checked_add(1);
        }
        !self.had_overlaps && !self.open.is_empty() && next_start.is_none()
    }

    /// The open shard owning `hash_key`, as an index into [`open_shards`](Self::open_shards), in
    /// O(log n). `None` if no open shard covers it.
    pub fn lookup(&self, hash_key: HashKey) -> Option<usize> {
        let index = self
            .open
            .partition_point(|(range, _)| range.end() < hash_key);
        let (range, _) = self.open.get(index)?;
        range.contains(hash_key).then_some(index)
    }

    /// The open shards, sorted by range.
    pub fn open_shards(&self) -> &[(HashKeyRange, ShardId)] {
        &self.open
    }

    /// The range of any shard seen so far, open or closed.
    pub fn range_of(&self, shard_id: &ShardId) -> Option<HashKeyRange> {
        self.known.get(shard_id).copied()
    }

    /// Remembers the ranges of `shards` (a listing of closed shards too) without changing
    /// which shards are open.
    pub(crate) fn remember(&mut self, shards: &[ShardDescription]) {
        for shard in shards {
            self.known
                .insert(shard.shard_id.clone(), shard.hash_key_range);
        }
    }
}

/// Most `ListShards` pages one listing may take: 100 pages of 1,000 shards, far beyond any real
/// stream, so an endpoint that never stops paging cannot keep a read going for ever.
pub(crate) const MAX_LISTING_PAGES: usize = 100;
/// Most shards one listing may hold.
pub(crate) const MAX_LISTING_SHARDS: usize = 100_000;

/// The pages of one `ListShards` listing read so far.
#[derive(Debug, Default)]
pub(crate) struct ListingPages {
    shards: Vec<ShardDescription>,
    pages: usize,
    tokens: BTreeSet<String>,
}

/// What to do after a page.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NextPage {
    /// Ask for the page at this token.
    Read(String),
    /// The listing is complete.
    Done(Vec<ShardDescription>),
    /// The listing cannot be trusted: a token came back twice, or it exceeds the caps.
    Malformed(String),
}

impl ListingPages {
    /// Starts a new listing.
    pub(crate) fn clear(&mut self) {
        self.shards.clear();
        self.pages = 0;
        self.tokens.clear();
    }

    /// Adds a page; says whether to read on, and the whole listing once it is complete.
    pub(crate) fn add(
        &mut self,
        shards: Vec<ShardDescription>,
        next_token: Option<String>,
    ) -> NextPage {
        self.pages += 1;
        self.shards.extend(shards);
        let malformed = if self.shards.len() > MAX_LISTING_SHARDS {
            Some(format!("more than {MAX_LISTING_SHARDS} shards"))
        } else if next_token.is_some() && self.pages >= MAX_LISTING_PAGES {
            Some(format!("more than {MAX_LISTING_PAGES} pages"))
        } else if next_token
            .as_ref()
            .is_some_and(|token| !self.tokens.insert(token.clone()))
        {
            Some("a NextToken came back a second time".to_owned())
        } else {
            None
        };
        if let Some(why) = malformed {
            self.clear();
            return NextPage::Malformed(why);
        }
        match next_token {
            Some(token) => NextPage::Read(token),
            None => {
                let shards = std::mem::take(&mut self.shards);
                self.clear();
                NextPage::Done(shards)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, start: u128, end: u128, open: bool) -> ShardDescription {
        ShardDescription {
            shard_id: ShardId::from(id),
            hash_key_range: HashKeyRange::new(HashKey::new(start), HashKey::new(end)).unwrap(),
            open,
        }
    }

    #[test]
    fn lookup_finds_the_owner_at_every_boundary() {
        let map = ShardMap::from_shards(
            &[
                shard("s2", 200, u128::MAX, true),
                shard("s0", 0, 99, true),
                shard("s1", 100, 199, true),
                shard("old", 0, u128::MAX, false),
            ],
            None,
        );
        let owner = |key: u128| {
            map.lookup(HashKey::new(key))
                .map(|i| map.open_shards()[i].1.as_str().to_owned())
        };
        assert_eq!(owner(0).as_deref(), Some("s0"));
        assert_eq!(owner(99).as_deref(), Some("s0"));
        assert_eq!(owner(100).as_deref(), Some("s1"));
        assert_eq!(owner(199).as_deref(), Some("s1"));
        assert_eq!(owner(200).as_deref(), Some("s2"));
        assert_eq!(owner(u128::MAX).as_deref(), Some("s2"));
        assert!(map.open_shards().iter().all(|(_, id)| id.as_str() != "old"));
        assert_eq!(
            map.range_of(&ShardId::from("old")),
            Some(HashKeyRange::FULL)
        );
    }

    #[test]
    fn gaps_answer_none_and_old_ranges_are_remembered() {
        let first = ShardMap::from_shards(&[shard("a", 0, 10, true)], None);
        assert_eq!(first.lookup(HashKey::new(11)), None);
        let second = ShardMap::from_shards(
            &[shard("b", 0, 5, true), shard("c", 6, 10, true)],
            Some(&first),
        );
        assert!(second.range_of(&ShardId::from("a")).is_some());
        assert_eq!(second.open_shards().len(), 2);
        assert!(!second.is_consistent(), "11.. is not covered");
    }

    #[test]
    fn a_listing_that_repeats_a_token_or_never_ends_is_malformed() {
        let mut pages = ListingPages::default();
        assert_eq!(
            pages.add(vec![shard("a", 0, 10, true)], Some("t1".into())),
            NextPage::Read("t1".into())
        );
        assert!(matches!(
            pages.add(vec![], Some("t1".into())),
            NextPage::Malformed(why) if why.contains("second time")
        ));
        // After a malformed listing the next one starts afresh.
        assert_eq!(
            pages.add(vec![shard("a", 0, u128::MAX, true)], None),
            NextPage::Done(vec![shard("a", 0, u128::MAX, true)])
        );
        let mut endless = ListingPages::default();
        let outcomes: Vec<NextPage> = (0..MAX_LISTING_PAGES)
            .map(|n| endless.add(vec![], Some(format!("t{n}"))))
            .collect();
        assert!(
            outcomes[..MAX_LISTING_PAGES - 1]
                .iter()
                .all(|o| matches!(o, NextPage::Read(_)))
        );
        assert!(matches!(
            &outcomes[MAX_LISTING_PAGES - 1],
            NextPage::Malformed(why) if why.contains("pages")
        ));
        let mut huge = ListingPages::default();
        let many = vec![shard("x", 0, 1, true); MAX_LISTING_SHARDS + 1];
        assert!(matches!(huge.add(many, None), NextPage::Malformed(_)));
    }

    #[test]
    fn consistency_needs_exact_tiling_without_overlaps() {
        let full = ShardMap::from_shards(
            &[shard("a", 0, 10, true), shard("b", 11, u128::MAX, true)],
            None,
        );
        assert!(full.is_consistent());
        let overlap = ShardMap::from_shards(
            &[
                shard("a", 0, 10, true),
                shard("b", 11, u128::MAX, true),
                shard("c", 5, 20, true),
            ],
            None,
        );
        assert!(!overlap.is_consistent());
        assert!(!ShardMap::from_shards(&[], None).is_consistent());
    }
}
