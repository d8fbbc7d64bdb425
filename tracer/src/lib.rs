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
