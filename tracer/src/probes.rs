//! Loads the kernel programs with this kernel's layouts and attaches them, all or nothing.
//!
//! The programs, links and maps live in one [`aya::Ebpf`]; dropping [`Probes`] (normal exit,
//! an error half-way through attaching, a signal) detaches everything, and nothing is pinned,
//! so even `kill -9` leaves nothing behind once the process is gone.
use std::path::Path;

use anyhow::{bail, Context, Result};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use tracer_common::{EventKind, KernelConfig, COUNTER_RESERVE_FAILED};

use crate::{
    decode::Decoder,
    kernel_offsets,
    tracefs::{self, Format},
};

/// The reader is woken once 1/WAKEUP_FRACTION of the ring buffer is filled.
const WAKEUP_FRACTION: u32 = 16;
/// ... and otherwise drains the ring buffer this often, so events wait at most this long.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer.bpf.o"));

/// Which hooks and kernel facts this run has; printed so the operator knows what is covered.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Modes {
    /// `tcp:tcp_send_reset` and so on, each "tracepoint" or "unavailable".
    pub hooks: Vec<(String, &'static str)>,
    pub namespaces: bool,
    pub process_context: bool,
    /// Whether `tcp_send_reset` gives the kernel's reset reason (Linux ≥ 6.10).
    pub reset_reasons: bool,
    /// The fentry/fexit timewait hooks are attached: TIME_WAIT entries and SYNs hitting them
    /// are seen exactly, with the `tcp_tw_status` values to read them.
    pub exact_time_wait: Option<crate::kernel_offsets::TimeWaitStatus>,
}

impl Modes {
    pub fn describe(&self) -> String {
        let hooks: Vec<String> = self.hooks.iter().map(|(hook, mode)| format!("{hook}={mode}")).collect();
        let yes_no = |known: bool| if known { "yes" } else { "unknown" };
        format!(
            "hooks: {}; netns: {}; pid in softirq filtered: {}; reset reasons: {}",
            hooks.join(" "),
            yes_no(self.namespaces),
            yes_no(self.process_context),
            if self.reset_reasons { "yes" } else { "not on this kernel" },
        )
    }
}

pub struct Probes {
    // Keeps programs and links alive; dropped last.
    _ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    pub modes: Modes,
}

impl Probes {
    /// Attaches the programs; returns them with their ring buffer and a decoder for this kernel.
    pub fn attach(ring_buffer_bytes: u32, tracefs_root: &Path) -> Result<(Probes, RingBuf<MapData>, Decoder)> {
        crate::privileges::check()?;
        if EBPF_OBJECT.is_empty() {
            bail!("this tracer binary was built without its eBPF programs; build it with `cargo xtask build`");
        }
        tracefs::ensure_mounted(tracefs_root)?;
        let resolved = kernel_offsets::resolve()?;
        let mut config = KernelConfig {
            offsets: resolved.offsets,
            wakeup_bytes: u64::from(ring_buffer_bytes / WAKEUP_FRACTION),
            ..KernelConfig::NONE
        };
        let mut modes = Modes {
            namespaces: resolved.namespaces_known(),
            process_context: resolved.process_context_known(),
            ..Modes::default()
        };
        let mut reason_names = Default::default();
        let mut available = Vec::new();
        for kind in EventKind::TRACEPOINTS {
            let (category, name, required) = tracefs::tracepoint_of(kind).expect("a tracepoint kind");
            match Format::read(tracefs_root, category, name)? {
                Some(format) => {
                    config.hooks[kind.index()] = format.layout(&format!("{category}:{name}"))?;
                    if kind == EventKind::ResetSent {
                        reason_names = format.reason_names();
                        modes.reset_reasons = !reason_names.is_empty();
                    }
                    available.push(kind);
                    modes.hooks.push((name.to_string(), "tracepoint"));
                }
                None if required => bail!(
                    "tracepoint {category}:{name} does not exist on this kernel (it needs Linux ≥ 4.16); the tracer cannot follow TCP states"
                ),
                None => modes.hooks.push((name.to_string(), "unavailable")),
            }
        }
        if !ring_buffer_bytes.is_power_of_two() || ring_buffer_bytes < 4096 {
            bail!("--ring-buffer-size must be a power of two of at least 4096 bytes, not {ring_buffer_bytes}");
        }
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", ring_buffer_bytes)
            .load(EBPF_OBJECT)
            .context("the kernel refused the eBPF programs (is BPF disabled, or is this kernel older than 5.8?)")?;
        for kind in available {
            let (category, name, _) = tracefs::tracepoint_of(kind).expect("a tracepoint kind");
            let program: &mut TracePoint = ebpf
                .program_mut(name)
                .with_context(|| format!("the eBPF object has no program {name}"))?
                .try_into()?;
            program.load().with_context(|| format!("the kernel verifier rejected the {name} program"))?;
            program.attach(category, name).with_context(|| format!("cannot attach to tracepoint {category}:{name}"))?;
        }
        // Optional and often refused (no BTF for the function, ftrace hooks blocked, Linux < 5.17
        // for the return value): then the snapshot fallback alone decides about TIME_WAIT.
        let btf = aya::Btf::from_sys_fs().ok();
        let mut timewait_hooks = 0;
        for (name, mode) in [("tcp_time_wait", "fentry"), ("tcp_timewait_state_process", "fexit")] {
            let attached = btf.as_ref().is_some_and(|btf| attach_tracing(&mut ebpf, name, btf).is_ok());
            timewait_hooks += usize::from(attached);
            modes.hooks.push((name.to_string(), if attached { mode } else { "unavailable" }));
        }
        if timewait_hooks == 2 {
            modes.exact_time_wait = resolved.time_wait_status;
        }
        let events = RingBuf::try_from(ebpf.take_map("EVENTS").context("no EVENTS map")?)?;
        let counters = PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("no COUNTERS map")?)?;
        Ok((Probes { _ebpf: ebpf, counters, modes }, events, Decoder::new(reason_names)))
    }

    /// Events the kernel could not send because the ring buffer was full, summed over CPUs.
    pub fn lost(&self) -> u64 {
        self.counters
            .get(&COUNTER_RESERVE_FAILED, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}

/// Loads and attaches one fentry or fexit program by its kernel function's name.
fn attach_tracing(ebpf: &mut Ebpf, name: &str, btf: &aya::Btf) -> Result<()> {
    let program = ebpf.program_mut(name).with_context(|| format!("the eBPF object has no program {name}"))?;
    match program {
        aya::programs::Program::FEntry(program) => {
            program.load(name, btf)?;
            program.attach()?;
        }
        aya::programs::Program::FExit(program) => {
            program.load(name, btf)?;
            program.attach()?;
        }
        _ => bail!("{name} is not an fentry/fexit program"),
    }
    Ok(())
}
