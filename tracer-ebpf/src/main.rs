//! The kernel half: programs on the TCP hooks that copy the facts of an event into one
//! [`WireEvent`] and send it to userspace, cheaply enough to leave on a busy server.
//!
//! Two ways in, one way out. `btf` holds the `tp_btf` programs (the kernel's own `struct sock`
//! read with direct loads); `classic` the tracepoint programs, the fallback where BTF tracing is
//! refused; `timewait` the optional fentry/fexit hooks. All of them end in [`emit`]: the
//! record is built in place in this CPU's [`Batch`] with plain stores and kept if the operator's
//! filter wants it, so one ring-buffer reservation carries up to [`BATCH_RECORDS`] events. Userspace flushes batches that wait (the
//! `flush_batch` program, run on each CPU through `BPF_PROG_TEST_RUN`).
//!
//! These programs must never decide anything, loop, or block: they gather and send. Every event
//! that cannot be sent is counted, never hidden.
#![no_std]
#![no_main]

mod btf;
mod classic;
mod timewait;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{map, raw_tracepoint},
    maps::{PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use tracer_common::{
    Batch, EventKind, KernelConfig, KernelFilter, KernelMiss, WireEvent, BATCH_RECORDS, COUNTER_PENDING, COUNTER_RESERVE_FAILED,
    COUNTER_SLOTS, FILTER_NETWORKS, FILTER_PORTS, FLAG_PROCESS_CONTEXT,
};

use tracer_common::{AF_INET, AF_INET6};
const PF_KTHREAD: u32 = 0x0020_0000;
/// `task_struct.flags`: the task is exiting (its files are being closed for it).
const PF_EXITING: u32 = 0x4;

/// Filled in by the loader before the programs are verified (frozen `.rodata`: the verifier
/// sees every offset in it as a constant).
#[no_mangle]
static CONFIG: KernelConfig = KernelConfig::NONE;

/// Resized by the loader (`--ring-buffer-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map]
static BATCHES: PerCpuArray<Batch> = PerCpuArray::with_max_entries(1, 0);

/// Words to turn a pointer into a plain number: before Linux 6.18 the verifier refuses arithmetic
/// between the context pointer and an unbounded value, but a pointer stored into a map (allowed
/// with CAP_PERFMON) reads back as a number. One word per CPU and per event kind: the kernel never
/// nests a program inside itself, so no other run can overwrite a word between store and load.
#[map]
static ADDRESS: PerCpuArray<u64> = PerCpuArray::with_max_entries(8, 0);

/// `pointer` as a number, through the word of event kind `kind`; 0 when the word is missing.
#[inline(always)]
fn address_of<T>(kind: u8, pointer: *const T) -> u64 {
    let Some(word) = ADDRESS.get_ptr_mut(u32::from(kind)) else { return 0 };
    // SAFETY: this CPU's word for this program, in a map we own.
    unsafe {
        core::ptr::write_volatile(word.cast::<*const T>(), pointer);
        core::ptr::read_volatile(word)
    }
}

/// The loader's configuration. Volatile: the loader rewrites it after compilation, so the
/// compiler must not fold it to the placeholder.
#[inline(always)]
fn config() -> &'static KernelConfig {
    // SAFETY: a static that is never written from the kernel side.
    unsafe { &*core::ptr::read_volatile(&&raw const CONFIG) }
}

#[inline(always)]
fn count(slot: u32, by: u64) {
    if let Some(counter) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot; programs on one CPU do not run in parallel.
        unsafe { *counter += by };
    }
}

#[inline(always)]
fn set_counter(slot: u32, value: u64) {
    if let Some(counter) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: as in `count`.
        unsafe { core::ptr::write_volatile(counter, value) };
    }
}

/// A rare path: counted in its own slot, and logged when the operator asked (`--kernel-log`; the
/// loader sets aya-log's level, and at the default, off, the verifier drops the logging code).
/// Returns the programs' 0 for the callers that give up on the event.
#[inline(always)]
fn missed(what: KernelMiss) -> u32 {
    count(what.slot(), 1);
    // aya-log 0.2 ignores the context argument; these helpers have none at hand.
    if what.event_sent() {
        aya_log_ebpf::info!(&(), "{}: the event is sent without its process", what.name());
    } else {
        aya_log_ebpf::warn!(&(), "{}: the event is not sent", what.name());
    }
    0
}

/// Whether the event goes to userspace: a socket of a family a TCP hook should see (else counted
/// as a miss) that the operator's filter wants. Family 0 is a record whose layout does not say.
#[inline(always)]
fn keep(event: &WireEvent) -> bool {
    if event.family != 0 && event.family != AF_INET && event.family != AF_INET6 {
        missed(KernelMiss::Family);
        return false;
    }
    wanted(event, &config().filter)
}

/// Whether the operator's filter keeps this event. Anything the kernel cannot judge (a port not
/// chosen yet, an unknown family) is kept; userspace applies the whole filter again.
#[inline(always)]
fn wanted(event: &WireEvent, filter: &KernelFilter) -> bool {
    if filter.netns != 0 && event.netns != filter.netns {
        return false;
    }
    if filter.family != 0 && event.family != 0 && event.family != filter.family {
        return false;
    }
    port_wanted(event.local_port, &filter.local_ports, filter.local_port_count)
        && port_wanted(event.remote_port, &filter.remote_ports, filter.remote_port_count)
        && address_wanted(event, filter)
}

#[inline(always)]
fn port_wanted(port: u16, ports: &[u16; FILTER_PORTS], count: u8) -> bool {
    if count == 0 || port == 0 {
        return true;
    }
    for (index, wanted) in ports.iter().enumerate() {
        if index < count as usize && *wanted == port {
            return true;
        }
    }
    false
}

#[inline(always)]
fn address_wanted(event: &WireEvent, filter: &KernelFilter) -> bool {
    if filter.network_count == 0 || event.family == 0 {
        return true;
    }
    let words = |bytes: &[u8; 16]| {
        // SAFETY: 16 bytes read as two unaligned words.
        unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<[u64; 2]>()) }
    };
    let (local, remote) = (words(&event.local_addr), words(&event.remote_addr));
    for (index, network) in filter.networks.iter().enumerate() {
        if index >= FILTER_NETWORKS || index >= filter.network_count as usize || network.family != u32::from(event.family) {
            continue;
        }
        let inside =
            |address: [u64; 2]| address[0] & network.mask[0] == network.network[0] && address[1] & network.mask[1] == network.network[1];
        if inside(local) || inside(remote) {
            return true;
        }
    }
    false
}

/// Whether a state change into `new_state` is folded into the socket's next one (see
/// `KernelConfig::fold_transient_states`).
#[inline(always)]
fn folded(new_state: i32) -> bool {
    config().fold_transient_states != 0 && new_state == i32::from(tracer_common::tcp_state::SYN_RECV)
}

/// Whether `event`, just built in slot `len` of a batch, replaces the record before it: an
/// orphan's CLOSE from FIN_WAIT2 at the very time it entered FIN_WAIT2 (the same packet's clock:
/// it handed over to its timewait socket at once). The CLOSE says it left FIN_WAIT2.
///
/// # Safety
/// `batch` is this CPU's batch, marked busy by the caller.
#[inline(always)]
unsafe fn replaces_previous(batch: *const Batch, len: usize, event: &WireEvent) -> bool {
    use tracer_common::tcp_state::{CLOSE, FIN_WAIT2};
    if config().fold_transient_states == 0
        || event.kind != EventKind::StateChange as u8
        || event.old_state != FIN_WAIT2
        || event.new_state != CLOSE
        || len == 0
        || len > BATCH_RECORDS
    {
        return false;
    }
    // SAFETY: the caller's contract.
    let Some(previous) = (unsafe { &(*batch).records }).get(len - 1) else { return false };
    previous.kind == EventKind::StateChange as u8
        && previous.new_state == FIN_WAIT2
        && previous.socket == event.socket
        && previous.timestamp_ns == event.timestamp_ns
}

/// Fills in who caused the event when it ran in a user task's own context.
#[inline(always)]
fn add_process(event: &mut WireEvent) {
    let pid_tgid = bpf_get_current_pid_tgid();
    event.tgid = (pid_tgid >> 32) as u32;
    event.pid = pid_tgid as u32;
    event.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    event.flags |= FLAG_PROCESS_CONTEXT;
}

/// True when `stack_address` (an address on the stack the hook ran on) lies in the task's own
/// kernel stack and the task is not a kernel thread: then the current pid is the one that caused
/// the event. Softirq and hardirq run on per-CPU stacks and ksoftirqd is a kernel thread; both
/// leave the pid unknown rather than wrong.
#[inline(always)]
fn own_context(stack_address: u64, task_stack: u64, task_flags: u32) -> bool {
    task_flags & PF_KTHREAD == 0 && stack_address.wrapping_sub(task_stack) < u64::from(config().offsets.thread_size)
}

/// Builds a record in place and sends it. `build` fills the record (see [`clear`]) and says
/// whether the operator wants it. With batching, the record is built directly in the next slot of
/// this CPU's batch (no copy) and kept only if wanted; otherwise, or when this program interrupted
/// another one mid-append on this CPU, it is built on the stack and goes straight to the ring.
/// `build` is called from one place only, so the compiler inlines it.
#[inline(always)]
fn emit(build: impl FnOnce(&mut WireEvent) -> bool) {
    let mut spare = core::mem::MaybeUninit::<WireEvent>::uninit();
    let (event, batch) = claim(spare.as_mut_ptr());
    // SAFETY: `event` is this CPU's claimed batch slot or `spare`; `build` overwrites it whole.
    // (`cargo xtask bench --kernel-parts` measures the programs' whole work with nothing sent.)
    let kept = build(unsafe { &mut *event }) && !cfg!(cost_cut = "unsent");
    // SAFETY: as returned by `claim`.
    unsafe { release(event, batch, kept) };
}

/// The next free slot of this CPU's batch, marked busy, with the batch; or `spare` and null.
#[inline(always)]
fn claim(spare: *mut WireEvent) -> (*mut WireEvent, *mut Batch) {
    if config().batching != 0 {
        if let Some(batch) = BATCHES.get_ptr_mut(0) {
            // SAFETY: this CPU's batch. Programs on one CPU run one at a time unless one interrupts
            // another; `busy` sends the interrupting one around the batch.
            unsafe {
                if core::ptr::read_volatile(&(*batch).busy) == 0 {
                    core::ptr::write_volatile(&mut (*batch).busy, 1);
                    let mut len = core::ptr::read_volatile(&(*batch).len) as usize;
                    if len >= BATCH_RECORDS {
                        // Never true (a full batch is flushed at once); it keeps the index provably in bounds.
                        len = 0;
                    }
                    return (&raw mut (*batch).records[len], batch);
                }
            }
        }
    }
    (spare, core::ptr::null_mut())
}

/// Keeps the record built in a claimed slot (flushing a batch that became full) or drops it, and
/// frees the batch; a record built in `spare` goes to the ring buffer.
///
/// # Safety
/// `event` and `batch` as returned by [`claim`].
#[inline(always)]
unsafe fn release(event: *mut WireEvent, batch: *mut Batch, keep: bool) {
    if batch.is_null() {
        // SAFETY: the caller's contract: `event` is the record it built in `spare`.
        if keep && EVENTS.output::<WireEvent>(unsafe { &*event }, wakeup_flags()).is_err() {
            count(COUNTER_RESERVE_FAILED, 1);
        }
        return;
    }
    // SAFETY: the caller's contract: `batch` is this CPU's batch, which it marked busy.
    unsafe {
        let claimed = core::ptr::read_volatile(&(*batch).len) as usize;
        if keep && replaces_previous(batch, claimed, &*event) {
            // Read back through memory: otherwise the compiler addresses the previous slot as a
            // negative offset from this one, which the verifiers of 5.10 and 6.1 refuse.
            let previous = core::ptr::read_volatile(&claimed.wrapping_sub(1));
            if let Some(previous) = (*batch).records.get_mut(previous) {
                copy_record(event, previous);
            }
        } else if keep {
            let mut len = claimed + 1;
            if len >= BATCH_RECORDS {
                flush(batch, BATCH_RECORDS);
                len = 0;
            }
            core::ptr::write_volatile(&mut (*batch).len, len as u32);
            // Userspace only needs to know since when a batch waits: told at its first record
            // (its time, never 0), cleared when it goes.
            if len == 1 {
                set_counter(COUNTER_PENDING, (*event).timestamp_ns.max(1));
            } else if len == 0 {
                set_counter(COUNTER_PENDING, 0);
            }
        }
        core::ptr::write_volatile(&mut (*batch).busy, 0);
    }
}

/// Copies a record word by word (a plain copy would compile to a `memcpy` call).
///
/// # Safety
/// Both point to records of this CPU's batch.
#[inline(always)]
unsafe fn copy_record(from: *const WireEvent, to: *mut WireEvent) {
    let (from, to) = (from.cast::<u64>(), to.cast::<u64>());
    for index in 0..WireEvent::SIZE / 8 {
        // SAFETY: within both records, which are whole numbers of aligned words.
        unsafe { core::ptr::write_volatile(to.add(index), core::ptr::read_volatile(from.add(index))) };
    }
}

/// Overwrites a record with a fresh one of `kind` about `socket`, every other fact zero. Word
/// stores the compiler cannot turn into a `memset` call (a BPF-to-BPF call, several times dearer).
#[inline(always)]
fn clear(event: &mut WireEvent, kind: tracer_common::EventKind, socket: u64) {
    let words = (event as *mut WireEvent).cast::<u64>();
    for index in 0..WireEvent::SIZE / 8 {
        // SAFETY: within the record, which is a whole number of aligned words.
        unsafe { core::ptr::write_volatile(words.add(index), 0) };
    }
    event.version = tracer_common::WIRE_VERSION;
    event.kind = kind as u8;
    event.socket = socket;
}

/// Sends the first `len` records of a batch as one ring-buffer record.
///
/// # Safety
/// `batch` is this CPU's batch, marked busy by the caller.
#[inline(always)]
unsafe fn flush(batch: *mut Batch, len: usize) {
    if len == 0 || len > BATCH_RECORDS {
        return;
    }
    // SAFETY: the caller's contract: this CPU's batch, busy, `len` records of it written.
    let records = unsafe { &(&(*batch).records)[..len] };
    if EVENTS.output::<[WireEvent]>(records, wakeup_flags()).is_err() {
        count(COUNTER_RESERVE_FAILED, len as u64);
    }
}

/// Wake the reader only once enough has piled up; it polls on a short timer for the rest.
#[inline(always)]
fn wakeup_flags() -> u64 {
    let enough = EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= config().wakeup_bytes;
    (if enough { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP }) as u64
}

/// Never attached: userspace runs it on a CPU (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_RUN_ON_CPU`)
/// to send the records waiting in that CPU's batch. Returns 1 when the batch was busy (the run
/// interrupted an append; userspace tries again), 0 otherwise.
#[raw_tracepoint(tracepoint = "flush_batch")]
pub fn flush_batch(_ctx: RawTracePointContext) -> i32 {
    let Some(batch) = BATCHES.get_ptr_mut(0) else { return 0 };
    // SAFETY: as in `claim`.
    unsafe {
        if core::ptr::read_volatile(&(*batch).busy) != 0 {
            return 1;
        }
        core::ptr::write_volatile(&mut (*batch).busy, 1);
        flush(batch, core::ptr::read_volatile(&(*batch).len) as usize);
        core::ptr::write_volatile(&mut (*batch).len, 0);
        set_counter(COUNTER_PENDING, 0);
        core::ptr::write_volatile(&mut (*batch).busy, 0);
    }
    0
}

/// Copies an IPv4 address into the first four bytes of a 16-byte field, in one store.
#[inline(always)]
fn put_ipv4(dst: &mut [u8; 16], address: u32) {
    // SAFETY: the address fields of a `WireEvent` sit at 8-byte aligned offsets of an 8-byte
    // aligned record (a byte copy would compile to four stores).
    unsafe { core::ptr::write(dst.as_mut_ptr().cast::<u32>(), address) };
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
