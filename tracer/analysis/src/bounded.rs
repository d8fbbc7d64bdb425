//! How the tracker and the findings keep a table bounded at a constant cost: when it is full
//! and a new key comes, the oldest entry goes. The candidates are the oldest eighth of the
//! table, found in one pass and kept in age order until they are used up, so an eviction costs
//! a few steps however long the table stays full. (Taking the stalest of the first 64 entries
//! the table's iterator gave, as before, cost 6.5 µs per insert once a table of 131 072 stayed
//! full: the evictions emptied the front of the table, and each sample scanned further into it.)
use std::{
    collections::VecDeque,
    hash::Hash,
    ops::{Deref, DerefMut},
};

use crate::FastMap;

/// The share of a full table taken as eviction candidates at a time (one in this many).
const CANDIDATE_SHARE: usize = 8;

/// A hash table that can make room for a new key by evicting its oldest entry, by the age its
/// values carry. Reads and writes go to the table itself; the candidates are checked against it
/// when they are used, so entries removed or renewed meanwhile are skipped, never evicted wrongly.
/// (An entry inserted after the candidates were taken with an age older than theirs, as a socket
/// snapshot's may be, waits for the next pass.) Each skipped candidate stands for a removal or a
/// renewal, and a pass comes only after an eighth of the table was used: the cost per insert stays
/// constant on average, however the table is used.
pub(crate) struct Bounded<K, V> {
    table: FastMap<K, V>,
    /// How old an entry is (an event time: smaller is older).
    age: fn(&V) -> u64,
    /// The oldest entries when the last candidates were taken, oldest first, with the age each
    /// had then.
    candidates: VecDeque<(u64, K)>,
}

impl<K: Copy + Eq + Hash, V> Bounded<K, V> {
    pub(crate) fn new(age: fn(&V) -> u64) -> Self {
        Bounded { table: FastMap::default(), age, candidates: VecDeque::new() }
    }

    /// Makes room for `key` in a table of at most `max` entries: when the table is full and `key`
    /// is not in it, removes and returns its oldest entry (for the caller to count or finish).
    pub(crate) fn make_room(&mut self, key: &K, max: usize) -> Option<(K, V)> {
        if self.table.len() < max || self.table.contains_key(key) {
            return None;
        }
        loop {
            let Some((age, candidate)) = self.candidates.pop_front() else {
                self.find_candidates();
                if self.candidates.is_empty() {
                    return None; // an empty table (`max` is 0)
                }
                continue;
            };
            // A candidate removed since, or renewed (its age changed), is not the oldest now.
            if self.table.get(&candidate).is_some_and(|value| (self.age)(value) == age) {
                return self.table.remove_entry(&candidate);
            }
        }
    }

    /// The oldest eighth of the table (at least one entry), in age order: two passes over it.
    fn find_candidates(&mut self) {
        let mut ages: Vec<u64> = self.table.values().map(self.age).collect();
        if ages.is_empty() {
            return;
        }
        let nth = ages.len() / CANDIDATE_SHARE;
        let (_, &mut threshold, _) = ages.select_nth_unstable(nth);
        let mut candidates: Vec<(u64, K)> =
            self.table.iter().map(|(key, value)| ((self.age)(value), *key)).filter(|(age, _)| *age <= threshold).collect();
        candidates.sort_unstable_by_key(|(age, _)| *age);
        self.candidates = candidates.into();
    }
}

impl<K, V> Deref for Bounded<K, V> {
    type Target = FastMap<K, V>;

    fn deref(&self) -> &FastMap<K, V> {
        &self.table
    }
}

impl<K, V> DerefMut for Bounded<K, V> {
    fn deref_mut(&mut self) -> &mut FastMap<K, V> {
        &mut self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Bounded<u32, u64> {
        Bounded::new(|at| *at)
    }

    #[test]
    fn a_full_table_evicts_its_oldest_entries_in_age_order() {
        let mut table = table();
        for key in 0..64_u32 {
            table.insert(key, 1_000 - u64::from(key)); // key 63 is the oldest
        }
        let mut evicted = Vec::new();
        for key in 100..110 {
            evicted.extend(table.make_room(&key, 64).map(|(key, _)| key));
            table.insert(key, 2_000);
        }
        assert_eq!(evicted, vec![63, 62, 61, 60, 59, 58, 57, 56, 55, 54]);
        assert_eq!(table.len(), 64);
    }

    #[test]
    fn room_is_made_only_when_full_and_for_a_new_key() {
        let mut table = table();
        table.insert(1, 10);
        table.insert(2, 20);
        assert_eq!(table.make_room(&3, 3), None, "not full");
        assert_eq!(table.make_room(&1, 2), None, "the key is there: its insert replaces it");
        assert_eq!(table.make_room(&3, 2), Some((1, 10)));
    }

    #[test]
    fn entries_removed_or_renewed_after_the_candidates_were_chosen_are_not_evicted() {
        let mut table = table();
        for key in 0..16_u32 {
            table.insert(key, u64::from(key));
        }
        assert_eq!(table.make_room(&100, 16), Some((0, 0))); // candidates: 0 and 1
        table.insert(100, 100);
        table.insert(1, 500); // renewed: now the newest
        assert_eq!(table.make_room(&101, 16), Some((2, 2)), "1 was renewed, so 2 is the oldest");
        table.insert(101, 101);
        table.remove(&3);
        table.insert(3, 3); // removed, then back with its old age: a candidate again
        assert_eq!(table.make_room(&102, 16), Some((3, 3)));
    }

    #[test]
    fn a_table_kept_full_by_a_stream_of_new_keys_always_drops_the_oldest() {
        let mut table = table();
        let max = 1_000;
        for at in 0..50_000_u64 {
            let key = (at * 2_654_435_761 % 1_000_003) as u32; // distinct, in no order
            if let Some((_, evicted_at)) = table.make_room(&key, max) {
                assert_eq!(evicted_at, at - max as u64, "the oldest entry goes");
            }
            table.insert(key, at);
            assert!(table.len() <= max);
        }
    }
}
