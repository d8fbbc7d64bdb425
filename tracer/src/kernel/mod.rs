//! Everything that talks to the kernel: the privileges to do it, the layouts read from tracefs
//! and BTF, the probes and their ring buffer, the kernel's clock, and the sock_diag snapshots.
pub mod btf_offsets;
pub mod clock;
pub mod hooks;
pub mod kernel_log;
pub mod privileges;
pub mod probes;
pub mod sock_diag;
pub mod tracefs;
