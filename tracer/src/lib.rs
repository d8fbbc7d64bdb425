//! The userspace half of the TCP socket tracer, laid out along the data path:
//! [`kernel`] (load and attach the probes, read the ring buffer's facts and the socket snapshots) →
//! [`decode`] (wire record → [`decode::Event`]) → [`track`] (timestamp order, one connection per
//! socket, its verdict) → [`find`] (what an operator should act on) → [`output`] (event and
//! connection lines, summaries, metrics, flight records). [`app`] runs that path: the command
//! line, the event loop and the one [`app::pipeline`] the benchmarks share; [`filter`] is what the
//! operator asked to see, applied along the way.
//!
//! Each layer is a crate of its own under `tracer/`, so that none can import the one above it:
//! `tracer-model` (events, sockets, link changes, health counters, the tracer's cost, the clock: plain data),
//! `tracer-analysis` (decode, track, find, filter, the pipeline: pure logic over the model),
//! `tracer-sources` (everything that talks to the kernel) and `tracer-outputs` (everything the
//! tracer writes), which do not know each other; this crate is the binary that wires them (`app`),
//! and re-exports them under the paths the tests and xtask use.
pub mod app;

pub use tracer_analysis::{decode, filter, find, track};
pub use tracer_model::{FastMap, FastSet};
pub use tracer_outputs as output;
pub use tracer_sources as kernel;
