//! Everything that talks to the kernel: the privileges to do it, the layouts read from tracefs
//! and BTF, the probes and their ring buffer, the kernel's clock, network namespaces, the
//! sock_diag snapshots and the links' state (rtnetlink).
pub mod batches;
pub mod btf_offsets;
pub mod clock;
mod cost;
pub mod hooks;
pub mod kernel_log;
pub mod links;
pub mod modes;
pub mod netns;
pub mod privileges;
pub mod probes;
pub mod sock_diag;
pub mod tracefs;
