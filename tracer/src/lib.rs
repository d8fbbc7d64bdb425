//! The userspace half of the TCP socket tracer, laid out along the data path:
//! [`probes`] (load and attach, with layouts from [`tracefs`] and [`kernel_offsets`]) →
//! [`decode`] (wire record → [`decode::Event`]) → [`output`].
pub mod cli;
pub mod clock;
pub mod decode;
pub mod filter;
pub mod findings;
pub mod kernel_offsets;
pub mod output;
pub mod privileges;
pub mod probes;
pub mod reorder;
pub mod run;
pub mod snapshot;
pub mod tracefs;
pub mod tracker;

/// Hash tables keyed by sockets and addresses, on the hot path of every event: foldhash is several
/// times faster than SipHash and still seeded per process, so peers cannot aim for collisions.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
