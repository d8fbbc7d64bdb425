//! The userspace half of the TCP socket tracer, laid out along the data path:
//! [`kernel`] (load and attach the probes, read the ring buffer's facts and the socket snapshots) →
//! [`decode`] (wire record → [`decode::Event`]) → [`track`] (timestamp order, one connection per
//! socket, its verdict) → [`find`] (what an operator should act on) → [`output`] (event and
//! connection lines, summaries, metrics, flight records). [`app`] runs that path: the command
//! line, the event loop and the one [`app::pipeline`] the benchmarks share; [`filter`] is what the
//! operator asked to see, applied along the way.
pub mod app;
pub mod decode;
pub mod filter;
pub mod find;
pub mod kernel;
pub mod output;
pub mod track;

/// Hash tables keyed by sockets and addresses, on the hot path of every event: foldhash is several
/// times faster than SipHash and still seeded per process, so peers cannot aim for collisions.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
