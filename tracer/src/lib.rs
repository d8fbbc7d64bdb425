//! The userspace half of the TCP socket tracer, laid out along the data path:
//! [`kernel`] (load and attach the probes, read the ring buffer's facts and the socket snapshots) →
//! [`decode`] (wire record → [`decode::Event`]) → [`track`] (timestamp order, one connection per
//! socket, its verdict) → [`find`] (what an operator should act on) → [`output`] (event and
//! connection lines, summaries, metrics, flight records). [`app`] runs that path: the command
//! line, the event loop and the one [`app::pipeline`] the benchmarks share; [`filter`] is what the
//! operator asked to see, applied along the way.
//!
//! The model (`tracer-model`: events, sockets, link changes as plain data) and the analysis
//! (`tracer-analysis`: decode, track, find, filter and the pipeline, pure logic) are crates of
//! their own below this one, so neither can reach back into aya, netlink, tokio or the outputs;
//! they are re-exported here under their old paths.
pub mod app;
pub mod kernel;
pub mod output;

pub use tracer_analysis::{decode, filter, find, track};
pub use tracer_model::{FastMap, FastSet};
