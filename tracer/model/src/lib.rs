//! The model both halves of the userspace tracer share: what the kernel reports (events,
//! sockets, link changes) as plain data, with no I/O and no kernel interface. The sources fill it,
//! the analysis reads it; keeping it in its own crate keeps the analysis from reaching back into
//! aya, netlink or tokio.
pub mod clock;
pub mod cost;
pub mod event;
pub mod health;
pub mod links;
pub mod sockets;

/// Hash tables keyed by sockets and addresses, on the hot path of every event: foldhash is several
/// times faster than SipHash and still seeded per process, so peers cannot aim for collisions.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A span in nanoseconds as seconds rounded to a tenth, as people read it (negative stays negative).
pub fn tenths_of_seconds(ns: i128) -> f64 {
    (ns as f64 / 1e8).round() / 10.0
}
