//! The classic tracepoint programs: the fallback where `tp_btf` is refused (no BTF tracing, an
//! old kernel, a verifier that rejects a direct load). Every field is read from the trace record
//! at an offset the loader found in tracefs, so one object serves every record layout.
//!
//! Dearer than `btf` (the kernel builds the record, and the program copies it and chases the
//! namespace and task with probe reads), but the same facts go out the same way.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf, generated::bpf_get_current_task},
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext,
};
use tracer_common::{
    EventKind, HookLayout, KernelMiss, KernelOffsets, WireEvent, ABSENT, AF_INET, AF_INET6, FLAG_HAS_REASON, IPPROTO_TCP, RECORD_MAX,
    STATE_BY_EXITING_TASK,
};

use crate::{add_process, clear, config, emit, folded, keep, missed, own_context, PF_EXITING};

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    record_event(&ctx, EventKind::StateChange)
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    record_event(&ctx, EventKind::ResetSent)
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    record_event(&ctx, EventKind::ResetReceived)
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    record_event(&ctx, EventKind::Retransmit)
}

#[tracepoint]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    record_event(&ctx, EventKind::SynAckRetransmit)
}

/// The first bytes of a tracepoint record, copied in one read (a probe read per field costs
/// as much as the whole copy).
pub(crate) struct Record(pub(crate) [u8; RECORD_MAX]);

impl Record {
    /// A value at `offset`, or `None` when the layout lacks it.
    #[inline(always)]
    pub(crate) fn field<T>(&self, offset: u16) -> Option<T> {
        let offset = offset as usize;
        if offset + core::mem::size_of::<T>() > RECORD_MAX {
            return None; // also ABSENT
        }
        // SAFETY: bounds checked above; the record is plain bytes.
        Some(unsafe { core::ptr::read_unaligned(self.0.as_ptr().add(offset).cast::<T>()) })
    }
}

/// Reads kernel memory at `base + offset`; `None` for a null base or an absent offset.
#[inline(always)]
pub(crate) fn kernel<T>(base: u64, offset: u16) -> Option<T> {
    if base == 0 || offset == ABSENT {
        return None;
    }
    // SAFETY: a probe read fails cleanly on any address.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.ok()
}

#[inline(always)]
fn record_event(ctx: &TracePointContext, kind: EventKind) -> u32 {
    let layout: &HookLayout = &config().hooks[kind.index()];
    let mut record = Record([0; RECORD_MAX]);
    let length = layout.record_len as usize;
    // SAFETY: the context is the trace record, at least `record_len` bytes long (from tracefs).
    if length > RECORD_MAX || unsafe { bpf_probe_read_kernel_buf(ctx.as_ptr().cast(), &mut record.0[..length]) }.is_err() {
        return missed(KernelMiss::Record);
    }
    if let Some(protocol) = record.field::<u16>(layout.protocol) {
        if protocol != u16::from(IPPROTO_TCP) {
            return 0;
        }
    }
    let new_state = record.field::<i32>(layout.new_state).unwrap_or(0);
    if kind == EventKind::StateChange && folded(new_state) {
        return 0;
    }
    let offsets = &config().offsets;
    emit(|event| {
        clear(event, kind, record.field(layout.socket).unwrap_or(0));
        event.old_state = record.field::<i32>(layout.old_state).unwrap_or(0) as u8;
        event.new_state = new_state as u8;
        event.local_port = record.field(layout.local_port).unwrap_or(0);
        event.remote_port = record.field(layout.remote_port).unwrap_or(0);
        read_addresses(&record, layout, event);
        if let Some(reason) = record.field::<u32>(layout.reason) {
            event.reason = reason;
            event.flags |= FLAG_HAS_REASON;
        }
        event.netns = namespace_of(&record, layout, offsets, event.socket);
        if !keep(event) {
            return false;
        }
        // SAFETY: a helper without arguments.
        event.timestamp_ns = unsafe { bpf_ktime_get_ns() };
        if let Some(task_flags) = process_context(&record, offsets) {
            add_process(event);
            if event.kind == EventKind::StateChange as u8 && task_flags & PF_EXITING != 0 {
                event.reason = STATE_BY_EXITING_TASK;
            }
        }
        true
    });
    0
}

#[inline(always)]
fn read_addresses(record: &Record, layout: &HookLayout, event: &mut WireEvent) {
    if layout.local_sockaddr != ABSENT {
        // struct sockaddr_in / sockaddr_in6: family, big-endian port, then the address.
        let family = record.field::<u16>(layout.local_sockaddr).unwrap_or(0);
        event.family = family as u8;
        event.local_port = u16::from_be(record.field(layout.local_sockaddr + 2).unwrap_or(0));
        event.remote_port = u16::from_be(record.field(layout.remote_sockaddr + 2).unwrap_or(0));
        if family as u8 == AF_INET6 {
            event.local_addr = record.field(layout.local_sockaddr + 8).unwrap_or([0; 16]);
            event.remote_addr = record.field(layout.remote_sockaddr + 8).unwrap_or([0; 16]);
        } else {
            copy4(&mut event.local_addr, record.field(layout.local_sockaddr + 4));
            copy4(&mut event.remote_addr, record.field(layout.remote_sockaddr + 4));
        }
        return;
    }
    let family = record.field::<u16>(layout.family).unwrap_or(0);
    event.family = family as u8;
    if family as u8 == AF_INET || layout.local_addr6 == ABSENT {
        copy4(&mut event.local_addr, record.field(layout.local_addr4));
        copy4(&mut event.remote_addr, record.field(layout.remote_addr4));
    } else {
        // Without a family field (Linux < 6.1 resets) IPv4 arrives v4-mapped here; userspace infers.
        event.local_addr = record.field(layout.local_addr6).unwrap_or([0; 16]);
        event.remote_addr = record.field(layout.remote_addr6).unwrap_or([0; 16]);
    }
}

#[inline(always)]
pub(crate) fn copy4(dst: &mut [u8; 16], src: Option<[u8; 4]>) {
    if let Some(src) = src {
        dst[..4].copy_from_slice(&src);
    }
}

/// The network namespace inode, through the socket or, for resets sent without one, the
/// receiving device. 0 when neither can be read.
#[inline(always)]
fn namespace_of(record: &Record, layout: &HookLayout, offsets: &KernelOffsets, socket: u64) -> u32 {
    let net = if socket != 0 {
        kernel::<u64>(socket, offsets.sock_net)
    } else {
        let skb = record.field::<u64>(layout.skb).unwrap_or(0);
        let device = kernel::<u64>(skb, offsets.skb_dev).unwrap_or(0);
        kernel::<u64>(device, offsets.device_net)
    };
    kernel::<u32>(net.unwrap_or(0), offsets.net_inum).unwrap_or(0)
}

/// The current task's flags where the tracepoint's caller ran on its own stack in a user task;
/// `None` in any other context. (For tracepoint programs the first word of the record is the
/// caller's `struct pt_regs *`.)
#[inline(always)]
fn process_context(record: &Record, offsets: &KernelOffsets) -> Option<u32> {
    let regs = record.field::<u64>(0).unwrap_or(0);
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let (Some(sp), Some(stack), Some(flags)) =
        (kernel::<u64>(regs, offsets.regs_sp), kernel::<u64>(task, offsets.task_stack), kernel::<u32>(task, offsets.task_flags))
    else {
        missed(KernelMiss::Task);
        return None;
    };
    own_context(sp, stack, flags).then_some(flags)
}
