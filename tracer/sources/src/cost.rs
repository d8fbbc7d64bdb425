//! Reads what the tracer has cost so far (see `tracer_model::cost`): the process's CPU clock,
//! and each loaded program's run count, run time and skipped firings from the kernel's program
//! info (`BPF_OBJ_GET_INFO_BY_FD`: aya does not expose them).
use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use tracer_model::cost::CostReading;

/// What the kernel counts of one loaded program.
pub(crate) struct ProgramCounters {
    pub run_count: u64,
    pub run_time_ns: u64,
    /// Firings skipped because the program was already running on that CPU (Linux ≥ 5.12).
    pub recursion_misses: u64,
}

pub(crate) fn program_counters(program: BorrowedFd<'_>) -> io::Result<ProgramCounters> {
    use aya_obj::generated::{bpf_attr, bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, bpf_prog_info};
    // SAFETY: both are plain C structs for which all-zero is valid; the kernel writes at most
    // `info_len` bytes of `info`, which outlives the call.
    unsafe {
        let mut info: bpf_prog_info = std::mem::zeroed();
        let mut attr: bpf_attr = std::mem::zeroed();
        attr.info.bpf_fd = program.as_raw_fd() as u32;
        attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
        attr.info.info = (&raw mut info) as u64;
        let result = libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD as libc::c_long, &raw mut attr, std::mem::size_of::<bpf_attr>());
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ProgramCounters { run_count: info.run_cnt, run_time_ns: info.run_time_ns, recursion_misses: info.recursion_misses })
    }
}

/// The totals now, with the counters of `programs` (the tracer's own).
pub(crate) fn reading(programs: &[ProgramCounters]) -> CostReading {
    CostReading {
        process_cpu_ns: process_cpu_ns(),
        kernel_runs: programs.iter().map(|counters| counters.run_count).sum(),
        kernel_run_ns: programs.iter().map(|counters| counters.run_time_ns).sum(),
        kernel_counted: kernel_counts_runs(),
    }
}

/// Every thread's CPU time, user and system (`CLOCK_PROCESS_CPUTIME_ID`).
fn process_cpu_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the struct it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } != 0 {
        return 0;
    }
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Whether the kernel counts programs' runs now: `kernel.bpf_stats_enabled`, off by default,
/// because counting costs every BPF program on the host two clock reads a run.
fn kernel_counts_runs() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|value| value.trim() == "1")
}
