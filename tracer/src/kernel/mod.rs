//! Everything that talks to the kernel: the privileges to do it, the layouts read from tracefs
//! and BTF, the probes and their ring buffer, the kernel's clock, and the sock_diag snapshots.
pub(crate) mod btf_offsets;
pub(crate) mod clock;
pub mod hooks;
pub(crate) mod kernel_log;
pub(crate) mod privileges;
pub(crate) mod probes;
pub mod sock_diag;
pub(crate) mod tracefs;
