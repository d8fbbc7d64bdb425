//! Loads the kernel programs with this kernel's layouts and attaches them, all or nothing, and
//! flushes the per-CPU batches they fill.
//!
//! Each TCP hook attaches as a BTF tracepoint (`tp_btf`: the kernel's own socket, direct loads)
//! where the kernel allows it, and as a classic tracepoint otherwise; the mode of every hook is
//! reported. The programs, links and maps live in one [`aya::Ebpf`]; dropping [`Probes`] (normal
//! exit, an error half-way through attaching, a signal) detaches everything, and nothing is
//! pinned, so even `kill -9` leaves nothing behind once the process is gone.
use std::{os::fd::AsFd, path::Path};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, RawTracePoint, RawTracePointRunOptions, TestRun, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use tracer_common::{
    EventKind, KernelConfig, KernelFilter, KernelMiss, KernelOffsets, ABSENT, COUNTER_PEER_REFERENCES_ADDED, COUNTER_PENDING,
    COUNTER_RESERVE_FAILED, PEER_REFERENCES,
};

use tracer_analysis::{decode::Decoder, track::losses};
use tracer_model::cost::CostReading;

pub use crate::modes::Modes;
use crate::{
    batches::{self, FlushPlan},
    btf_offsets, clock, cost,
    hooks::{self, Attach, HookMode, FLUSH_PROGRAM, HOOKS},
    kernel_log::{self, KernelLog, KernelLogLevel},
    tracefs::{self, Format},
};

/// The reader is woken once 1/WAKEUP_FRACTION of the ring buffer is filled.
const WAKEUP_FRACTION: u32 = 16;
/// ... and otherwise drains the ring buffer (and flushes the batches) this often,
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);
/// ... or this often after a poll that found no event and no batch waiting: most of what a
/// tracer on a quiet host costs is its polls.
pub const QUIET_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer.bpf.o"));

/// What to load, decided by the command line.
pub struct AttachOptions<'a> {
    pub ring_buffer_bytes: u32,
    pub tracefs_root: &'a Path,
    pub hook_mode: HookMode,
    /// Optional hooks the operator left off (`--skip-hook`).
    pub skip_hooks: &'a [&'static str],
    /// Collect records per CPU and send them in batches (summary mode). `--events` sends each
    /// record at once, so lines appear live and in order.
    pub batching: bool,
    /// Send every state change, a server socket's birth into SYN_RECV included (`--events`);
    /// otherwise that birth, and an orphan's FIN_WAIT2 it leaves at once, are learnt from the socket's
    /// next change (`KernelConfig::fold_transient_states`).
    pub every_state_change: bool,
    pub filter: KernelFilter,
    pub kernel_log: KernelLogLevel,
}

impl AttachOptions<'_> {
    /// Whether the operator left `hook` off; then the header says so.
    fn left_off(&self, hook: &hooks::Hook, modes: &mut Modes) -> bool {
        let off = self.skip_hooks.contains(&hook.name);
        if off {
            modes.hooks.push((hook.name.to_string(), "off"));
        }
        off
    }
}

/// What the kernel side lost or could not read, summed over CPUs and programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLoss {
    /// Events dropped because the ring buffer was full.
    pub ring_full: u64,
    /// Firings the kernel skipped because the same program was already running on that CPU (a
    /// softirq landing mid-run): `recursion_misses` of the tracer's programs.
    pub nested: u64,
    /// The programs' rare paths (a structure that could not be read, an unexpected family).
    pub misses: KernelMisses,
    /// Peer addresses whose handshake TTL the kernel's table no longer holds: each displaced
    /// by a newer one (the table is an LRU of [`tracer_common::PEER_REFERENCES`]).
    pub references_evicted: u64,
}

pub use tracer_model::health::KernelMisses;

pub struct Probes {
    // Keeps programs and links alive; dropped last.
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    cpus: Vec<u32>,
    kernel_log: Option<KernelLog>,
    pub modes: Modes,
}

impl Probes {
    /// Attaches the programs; returns them with their ring buffer and a decoder for this kernel.
    pub fn attach(options: AttachOptions<'_>) -> Result<(Probes, RingBuf<MapData>, Decoder)> {
        crate::privileges::check()?;
        if EBPF_OBJECT.is_empty() {
            bail!("this tracer binary was built without its eBPF programs; build it with `cargo xtask build`");
        }
        // A power of two of at least a page: the command line checked it.
        let ring_buffer_bytes = options.ring_buffer_bytes;
        tracefs::ensure_mounted(options.tracefs_root)?;
        let resolved = btf_offsets::resolve()?;
        if !resolved.missing.is_empty() {
            eprintln!("tracer: note: not in this kernel's BTF, so what needs it is off: {}", resolved.missing.join(", "));
        }
        let ticks = crate::clock::kernel_ticks();
        let hz = ticks.map(|ticks| ticks.hz);
        let mut config = KernelConfig {
            offsets: resolved.offsets,
            filter: options.filter,
            wakeup_bytes: u64::from(ring_buffer_bytes / WAKEUP_FRACTION),
            batching: u32::from(options.batching),
            reset_reason_arg: u32::from(resolved.reset_reason_in_args),
            drop_reason_arg: u32::from(!resolved.drop_reasons.is_empty()),
            drop_reasons_wanted: losses(&resolved.drop_reasons),
            // A connection that lived through a second or more of silence says so.
            idle_gap_jiffies: hz.unwrap_or(0),
            fold_transient_states: u32::from(!options.every_state_change),
            jiffies_base_ns: ticks.map_or(0, |ticks| ticks.jiffies_base_ns),
            packet_clock_tick_ns: match hz {
                Some(hz) if resolved.offsets.tcp_clock_cache != ABSENT => 1_000_000_000 / hz,
                _ => 0,
            },
            ..KernelConfig::NONE
        };
        let mut modes = Modes {
            hz,
            kernel_log: options.kernel_log,
            namespaces: resolved.namespaces_known(),
            process_context: resolved.process_context_known(),
            ..Modes::default()
        };
        let mut reason_names = Default::default();
        let mut available = Vec::new();
        for (hook, category, _) in hooks::tracepoints() {
            let name = hook.name;
            match Format::read(options.tracefs_root, category, name)? {
                Some(format) => {
                    config.hooks[hook.kind.index()] = format.layout(&format!("{category}:{name}"))?;
                    if hook.kind == EventKind::ResetSent {
                        reason_names = format.reason_names();
                        modes.reset_reasons = !reason_names.is_empty();
                    }
                    available.push(hook);
                }
                None if hook.required => bail!(
                    "tracepoint {category}:{name} does not exist on this kernel (it needs Linux ≥ 4.16); the tracer cannot follow TCP states"
                ),
                None => {}
            }
        }
        let btf = Btf::from_sys_fs().ok();
        let btf_offsets_known = btf_offsets_complete(&config.offsets);
        if options.hook_mode == HookMode::TpBtf && (btf.is_none() || !btf_offsets_known) {
            bail!("--hook-mode tp-btf: this kernel's BTF lacks what the BTF tracepoints read; use --hook-mode auto");
        }
        let cpus = aya::util::online_cpus().map_err(|(what, error)| anyhow::anyhow!("{what}: {error}"))?;
        let log_level = kernel_log::level_byte(options.kernel_log);
        let mut ebpf = load(&config, ring_buffer_bytes, &log_level, options.kernel_log)?;
        // Batches need a way to flush a CPU's records from userspace (Linux ≥ 5.10); without it
        // every record goes to the ring buffer at once.
        if options.batching && prepare_flush(&mut ebpf, cpus.first().copied()).is_err() {
            config.batching = 0;
            ebpf = load(&config, ring_buffer_bytes, &log_level, options.kernel_log)?;
        }
        modes.batched = config.batching != 0;
        let use_btf = options.hook_mode != HookMode::Tracepoint && btf_offsets_known;
        for (hook, category, btf_program) in hooks::tracepoints() {
            let name = hook.name;
            if options.left_off(hook, &mut modes) {
                continue;
            }
            if !available.iter().any(|available| available.kind == hook.kind) {
                modes.hooks.push((name.to_string(), "unavailable"));
                continue;
            }
            let attached_btf = match (&btf, use_btf) {
                (Some(btf), true) => match attach_btf(&mut ebpf, btf_program, name, btf) {
                    Ok(()) => true,
                    Err(error) if options.hook_mode == HookMode::TpBtf => {
                        return Err(error.context(format!("--hook-mode tp-btf: cannot attach the BTF tracepoint {name}")))
                    }
                    Err(error) => {
                        eprintln!(
                            "tracer: note: {name} uses the classic tracepoint; the kernel refused tp_btf: {}",
                            verifier_verdict(&error)
                        );
                        false
                    }
                },
                _ => false,
            };
            if attached_btf {
                modes.hooks.push((name.to_string(), "tp_btf"));
                continue;
            }
            let program: &mut TracePoint =
                ebpf.program_mut(name).with_context(|| format!("the eBPF object has no program {name}"))?.try_into()?;
            program.load().with_context(|| format!("the kernel verifier rejected the {name} program"))?;
            program.attach(category, name).with_context(|| format!("cannot attach to tracepoint {category}:{name}"))?;
            modes.hooks.push((name.to_string(), "tracepoint"));
        }
        // Optional and often refused (no BTF for the function, ftrace hooks blocked, Linux < 5.17
        // for the return value): then the snapshot fallback alone decides about TIME_WAIT.
        let mut timewait_hooks = 0;
        let timewait = HOOKS.iter().filter(|hook| matches!(hook.attach, Attach::Fentry | Attach::Fexit));
        for hook in timewait.clone() {
            if options.left_off(hook, &mut modes) {
                continue;
            }
            let attached = btf.as_ref().is_some_and(|btf| attach_tracing(&mut ebpf, hook.name, btf).is_ok());
            timewait_hooks += usize::from(attached);
            modes.hooks.push((hook.name.to_string(), if attached { hook.attach.mode() } else { "unavailable" }));
        }
        if timewait_hooks == timewait.count() {
            modes.exact_time_wait = resolved.time_wait_status;
        }
        // Optional, BTF only: the packets that tell who sent a reset, and this host's drops.
        for hook in HOOKS.iter() {
            let Attach::BtfOnly { btf_program, .. } = hook.attach else { continue };
            if options.left_off(hook, &mut modes) {
                continue;
            }
            if hook.kind == EventKind::Drop && config.drop_reason_arg == 0 {
                eprintln!("tracer: note: drop reasons are unavailable on this kernel (Linux ≥ 5.17): this host's drops are not seen");
                modes.hooks.push((hook.name.to_string(), "unavailable"));
                continue;
            }
            let attached = match (&btf, use_btf) {
                (Some(btf), true) => match attach_btf(&mut ebpf, btf_program, hook.name, btf) {
                    Ok(()) => true,
                    Err(error) => {
                        eprintln!("tracer: note: {} is unavailable; the kernel refused it: {}", hook.name, verifier_verdict(&error));
                        false
                    }
                },
                _ => false,
            };
            modes.hooks.push((hook.name.to_string(), if attached { "tp_btf" } else { "unavailable" }));
        }
        let events = RingBuf::try_from(ebpf.take_map("EVENTS").context("no EVENTS map")?)?;
        let counters = PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("no COUNTERS map")?)?;
        let kernel_log = KernelLog::start(&mut ebpf, options.kernel_log)?;
        let decoder = Decoder::new(reason_names).with_drop_reasons(resolved.drop_reasons);
        // Idle gaps need the socket's clocks at a retransmission: the tp_btf program reads them.
        if !modes.hooks.iter().any(|(hook, mode)| hook == "tcp_retransmit_skb" && *mode == "tp_btf") {
            modes.hz = None;
        }
        modes.packet_clock =
            config.packet_clock_tick_ns != 0 && modes.hooks.iter().any(|(hook, mode)| hook == "inet_sock_set_state" && *mode == "tp_btf");
        Ok((Probes { ebpf, counters, cpus, kernel_log, modes }, events, decoder))
    }

    /// Sends the CPUs' waiting batches to the ring buffer, but for those begun less than
    /// `spare_ns` ago: under load a batch fills and goes on its own sooner than that, where a
    /// flush costs a system call and an interrupt of that busy CPU. Returns the plan it carried out
    /// ([`batches::plan_flush`]: up to when every event is in the ring buffer, whether any batch
    /// held records); `None` when a batch could not go (one in use at that instant is left for
    /// the next call).
    pub fn flush(&self, spare_ns: u64) -> Option<FlushPlan> {
        let started = clock::monotonic_ns();
        if !self.modes.batched {
            return Some(batches::plan_flush(std::iter::empty(), started, spare_ns));
        }
        let pending = self.counters.get(&COUNTER_PENDING, 0).ok()?;
        let waiting = self.cpus.iter().map(|&cpu| (cpu, pending.get(cpu as usize).copied().unwrap_or(0)));
        let plan = batches::plan_flush(waiting, started, spare_ns);
        if plan.flush.is_empty() {
            return Some(plan);
        }
        let program: &RawTracePoint = self.ebpf.program(FLUSH_PROGRAM)?.try_into().ok()?;
        let mut complete = true;
        for &cpu in &plan.flush {
            let options = RawTracePointRunOptions { cpu: Some(cpu), ..RawTracePointRunOptions::new() };
            complete &= program.test_run(options).is_ok_and(|result| result.return_value == 0);
        }
        complete.then_some(plan)
    }

    /// The reader of the kernel programs' log records (`--kernel-log`), for the event loop.
    pub fn take_kernel_log(&mut self) -> Option<KernelLog> {
        self.kernel_log.take()
    }

    /// What the kernel side lost or could not read so far, and what the tracer has cost so far
    /// (its process's CPU, its programs' runs): one read of each program's counters serves both.
    pub fn loss_and_cost(&self) -> (KernelLoss, CostReading) {
        let programs: Vec<cost::ProgramCounters> = self
            .ebpf
            .programs()
            .filter_map(|(_, program)| program.fd().ok())
            .filter_map(|fd| cost::program_counters(fd.as_fd()).ok())
            .collect();
        let sum = |slot| self.counters.get(&slot, 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0);
        let misses = KernelMiss::ALL.into_iter().map(|what| (what, sum(what.slot()))).collect();
        let nested = programs.iter().map(|counters| counters.recursion_misses).sum();
        let references_evicted = sum(COUNTER_PEER_REFERENCES_ADDED).saturating_sub(u64::from(PEER_REFERENCES));
        (KernelLoss { ring_full: sum(COUNTER_RESERVE_FAILED), nested, misses, references_evicted }, cost::reading(&programs))
    }
}

/// The line of a verifier log that says why it refused (the last one before its statistics).
fn verifier_verdict(error: &anyhow::Error) -> String {
    let text = format!("{error:#}");
    let statistics = ["verification time", "stack depth", "processed ", "mark_read"];
    text.lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty() && !statistics.iter().any(|prefix| line.starts_with(prefix)))
        .unwrap_or("no reason given")
        .to_string()
}

/// Whether BTF gave every offset the `tp_btf` programs load.
fn btf_offsets_complete(offsets: &KernelOffsets) -> bool {
    [
        offsets.sock_net,
        offsets.net_inum,
        offsets.sock_daddr,
        offsets.sock_rcv_saddr,
        offsets.sock_dport,
        offsets.sock_num,
        offsets.sock_family,
        offsets.sock_v6_daddr,
        offsets.sock_v6_rcv_saddr,
        offsets.sock_state,
        offsets.sock_err,
        offsets.sock_protocol,
        offsets.sock_flags,
        offsets.tcp_bytes_acked,
        offsets.tcp_bytes_received,
        offsets.tcp_total_retrans,
        offsets.tcp_inet_sport,
        offsets.skb_head,
        offsets.skb_network_header,
        offsets.skb_transport_header,
        offsets.skb_dev,
        offsets.device_net,
        offsets.task_flags,
        offsets.task_stack,
        offsets.task_comm,
    ]
    .iter()
    .all(|offset| *offset != ABSENT)
}

fn load(config: &KernelConfig, ring_buffer_bytes: u32, log_level: &u8, kernel_log: KernelLogLevel) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    loader.override_global("CONFIG", config, true).map_max_entries("EVENTS", ring_buffer_bytes);
    kernel_log::configure(&mut loader, log_level, kernel_log);
    loader.load(EBPF_OBJECT).context("the kernel refused the eBPF programs (is BPF disabled, or is this kernel older than 5.8?)")
}

/// Loads the flush program and runs it once on this CPU, which fails where the kernel cannot
/// run it on a chosen CPU.
fn prepare_flush(ebpf: &mut Ebpf, cpu: Option<u32>) -> Result<()> {
    let program: &mut RawTracePoint = ebpf.program_mut(FLUSH_PROGRAM).context("no flush program")?.try_into()?;
    program.load()?;
    let options = RawTracePointRunOptions { cpu, ..RawTracePointRunOptions::new() };
    program.test_run(options)?;
    Ok(())
}

/// Loads one BTF tracepoint program (the verifier's check) and attaches it.
fn attach_btf(ebpf: &mut Ebpf, program_name: &str, tracepoint: &str, btf: &Btf) -> Result<()> {
    let program: &mut BtfTracePoint = ebpf.program_mut(program_name).with_context(|| format!("no program {program_name}"))?.try_into()?;
    program.load(tracepoint, btf).map_err(|error| anyhow::anyhow!("{error:#}"))?;
    program.attach()?;
    Ok(())
}

/// Loads and attaches one fentry or fexit program by its kernel function's name.
fn attach_tracing(ebpf: &mut Ebpf, name: &str, btf: &Btf) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A program renamed on one side would leave its hook unattached, or attached only in its
    /// classic form, with nothing said: the table and the object must name the same programs.
    #[test]
    #[cfg_attr(not(embedded_ebpf), ignore = "no kernel object embedded: `cargo xtask build-ebpf` first")]
    fn the_hook_table_names_exactly_the_programs_of_the_embedded_object() {
        let object = aya_obj::Object::parse(EBPF_OBJECT).expect("the embedded kernel object parses");
        let built: BTreeSet<&str> = object.programs.keys().map(String::as_str).collect();
        let listed: BTreeSet<&str> = hooks::programs().map(|(name, _)| name).collect();
        assert_eq!(built, listed);
    }
}
