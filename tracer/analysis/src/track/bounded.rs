//! How the tracker keeps a table bounded: when it is full and a new key comes, the stalest of a
//! sample of its entries goes (a full scan would cost the whole table on every insert).
use std::hash::Hash;

use crate::FastMap;

/// Entries looked at to find the stalest.
const SAMPLE: usize = 64;

/// Makes room for `key` in `table`, which holds at most `max` entries: when the table is full and
/// `key` is not in it, removes the entry `age` ranks oldest among [`SAMPLE`] of them. Returns
/// whether it removed one (for the caller to count).
pub(super) fn make_room<K: Copy + Eq + Hash, V>(table: &mut FastMap<K, V>, key: &K, max: usize, age: impl Fn(&V) -> u64) -> bool {
    if table.len() < max || table.contains_key(key) {
        return false;
    }
    let oldest = table.iter().take(SAMPLE).min_by_key(|(_, value)| age(value)).map(|(key, _)| *key);
    oldest.is_some_and(|oldest| table.remove(&oldest).is_some())
}
