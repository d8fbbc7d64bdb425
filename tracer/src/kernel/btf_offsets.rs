//! Finds, in the running kernel's BTF, where the few kernel structure members the programs read
//! live (socket → namespace, task → stack and flags, saved registers → stack pointer).
//!
//! Structures move between kernel versions and configurations, so these offsets are never
//! compiled in. A member that cannot be found turns the feature that needs it off, and the
//! tracer says so in its mode line instead of reporting wrong namespaces or pids.
use std::path::Path;

use anyhow::{Context, Result};
use btf_rs::{Btf, Type};
use tracer_common::{KernelOffsets, ABSENT};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The `tcp_tw_status` values that answer a SYN hitting a timewait socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TimeWaitStatus {
    /// The SYN was accepted: a new connection replaces the timewait socket.
    pub syn: u32,
    /// The SYN was answered with a bare ACK: the connection attempt stalls.
    pub ack: u32,
}

/// What the BTF lookup gave, with the names of what could not be found.
pub struct Resolved {
    pub offsets: KernelOffsets,
    pub missing: Vec<&'static str>,
    pub time_wait_status: Option<TimeWaitStatus>,
    /// The `tcp_send_reset` BTF tracepoint passes the reset reason (Linux ≥ 6.10).
    pub reset_reason_in_args: bool,
}

impl Resolved {
    pub fn namespaces_known(&self) -> bool {
        self.offsets.sock_net != ABSENT && self.offsets.net_inum != ABSENT
    }

    pub fn process_context_known(&self) -> bool {
        [self.offsets.regs_sp, self.offsets.task_stack, self.offsets.task_flags].iter().all(|offset| *offset != ABSENT)
    }
}

pub fn resolve() -> Result<Resolved> {
    if !Path::new(VMLINUX_BTF).exists() {
        anyhow::bail!("{VMLINUX_BTF} is missing: this kernel was built without BTF (CONFIG_DEBUG_INFO_BTF), which the tracer needs");
    }
    let btf = Btf::from_file(VMLINUX_BTF).with_context(|| format!("cannot parse {VMLINUX_BTF}"))?;
    let mut missing = Vec::new();
    let mut find = |name: &'static str, structure: &str, path: &str| {
        member_offset(&btf, structure, path).unwrap_or_else(|| {
            missing.push(name);
            ABSENT
        })
    };
    let offsets = KernelOffsets {
        sock_net: find("sock_common.skc_net", "sock_common", "skc_net.net"),
        net_inum: find("net.ns.inum", "net", "ns.inum"),
        skb_dev: find("sk_buff.dev", "sk_buff", "dev"),
        device_net: find("net_device.nd_net", "net_device", "nd_net.net"),
        task_stack: find("task_struct.stack", "task_struct", "stack"),
        task_flags: find("task_struct.flags", "task_struct", "flags"),
        regs_sp: find("pt_regs.sp", "pt_regs", "sp"),
        sock_daddr: find("sock_common.skc_daddr", "sock_common", "skc_daddr"),
        sock_rcv_saddr: find("sock_common.skc_rcv_saddr", "sock_common", "skc_rcv_saddr"),
        sock_dport: find("sock_common.skc_dport", "sock_common", "skc_dport"),
        sock_num: find("sock_common.skc_num", "sock_common", "skc_num"),
        sock_family: find("sock_common.skc_family", "sock_common", "skc_family"),
        sock_v6_daddr: find("sock_common.skc_v6_daddr", "sock_common", "skc_v6_daddr"),
        sock_v6_rcv_saddr: find("sock_common.skc_v6_rcv_saddr", "sock_common", "skc_v6_rcv_saddr"),
        sock_state: find("sock_common.skc_state", "sock_common", "skc_state"),
        sock_common_len: 0,
        sock_err: find("sock.sk_err", "sock", "sk_err"),
        sock_protocol: find("sock.sk_protocol", "sock", "sk_protocol"),
        sock_flags: find("sock_common.skc_flags", "sock_common", "skc_flags"),
        tcp_bytes_acked: find("tcp_sock.bytes_acked", "tcp_sock", "bytes_acked"),
        tcp_bytes_received: find("tcp_sock.bytes_received", "tcp_sock", "bytes_received"),
        tcp_total_retrans: find("tcp_sock.total_retrans", "tcp_sock", "total_retrans"),
        tcp_inet_sport: find("inet_sock.inet_sport", "tcp_sock", "inet_conn.icsk_inet.inet_sport"),
        skb_head: find("sk_buff.head", "sk_buff", "head"),
        skb_network_header: find("sk_buff.network_header", "sk_buff", "network_header"),
        skb_transport_header: find("sk_buff.transport_header", "sk_buff", "transport_header"),
        task_comm: find("task_struct.comm", "task_struct", "comm"),
        _pad0: 0,
        thread_size: thread_size(),
        _pad1: 0,
    };
    let mut offsets = offsets;
    let ends = [
        (offsets.sock_daddr, 4),
        (offsets.sock_rcv_saddr, 4),
        (offsets.sock_dport, 2),
        (offsets.sock_num, 2),
        (offsets.sock_family, 2),
        (offsets.sock_v6_daddr, 16),
        (offsets.sock_v6_rcv_saddr, 16),
    ];
    offsets.sock_common_len = ends.iter().filter(|(offset, _)| *offset != ABSENT).map(|(offset, size)| offset + size).max().unwrap_or(0);
    let tw_status = ["TCP_TW_SYN", "TCP_TW_ACK"].map(|name| enum_value(&btf, "tcp_tw_status", name));
    let time_wait_status = match tw_status {
        [Some(syn), Some(ack)] => Some(TimeWaitStatus { syn, ack }),
        _ => {
            missing.push("enum tcp_tw_status");
            None
        }
    };
    Ok(Resolved { offsets, missing, time_wait_status, reset_reason_in_args: reset_reason_in_args(&btf) })
}

/// Byte offset of a dotted member path inside `structure`, looking through anonymous
/// structs and unions the way C does.
fn member_offset(btf: &Btf, structure: &str, path: &str) -> Option<u16> {
    let mut current = btf
        .resolve_types_by_name(structure)
        .ok()?
        .into_iter()
        .find(|ty| matches!(ty, Type::Struct(_)))?;
    let mut bits = 0u32;
    for name in path.split('.') {
        let (offset, member_type) = find_member(btf, &current, name)?;
        bits += offset;
        current = member_type;
    }
    (bits % 8 == 0).then(|| u16::try_from(bits / 8).ok()).flatten()
}

/// (bit offset, resolved type) of `name` in a struct or union, descending into anonymous members.
fn find_member(btf: &Btf, ty: &Type, name: &str) -> Option<(u32, Type)> {
    let (Type::Struct(members) | Type::Union(members)) = ty else { return None };
    for member in &members.members {
        let member_name = btf.resolve_name(member).unwrap_or_default();
        let member_type = strip_qualifiers(btf, btf.resolve_chained_type(member).ok()?)?;
        if member_name == name {
            return Some((member.bit_offset(), member_type));
        }
        if member_name.is_empty() {
            if let Some((offset, found)) = find_member(btf, &member_type, name) {
                return Some((member.bit_offset() + offset, found));
            }
        }
    }
    None
}

/// `btf_trace_tcp_send_reset` is `void (*)(void *, sk, skb[, reason])`: the reason, when the
/// kernel passes one, is the program's third argument (the leading `void *` is not passed).
fn reset_reason_in_args(btf: &Btf) -> bool {
    reset_send_arguments(btf) == Some(4)
}

fn reset_send_arguments(btf: &Btf) -> Option<usize> {
    let typedef = btf.resolve_types_by_name("btf_trace_tcp_send_reset").ok()?.into_iter().find(|ty| matches!(ty, Type::Typedef(_)))?;
    let Type::Typedef(typedef) = typedef else { return None };
    let Type::Ptr(pointer) = btf.resolve_chained_type(&typedef).ok()? else { return None };
    let Type::FuncProto(prototype) = btf.resolve_chained_type(&pointer).ok()? else { return None };
    Some(prototype.parameters.len())
}

/// The value of enumerator `name` in `enum ty`.
fn enum_value(btf: &Btf, ty: &str, name: &str) -> Option<u32> {
    btf.resolve_types_by_name(ty).ok()?.into_iter().find_map(|ty| match ty {
        Type::Enum(enumeration) => enumeration
            .members
            .iter()
            .find(|member| btf.resolve_name(*member).is_ok_and(|n| n == name))
            .map(|member| member.val()),
        _ => None,
    })
}

fn strip_qualifiers(btf: &Btf, mut ty: Type) -> Option<Type> {
    for _ in 0..16 {
        ty = match &ty {
            Type::Typedef(inner) => btf.resolve_chained_type(inner).ok()?,
            Type::Const(inner) | Type::Volatile(inner) | Type::Restrict(inner) => btf.resolve_chained_type(inner).ok()?,
            Type::TypeTag(inner) => btf.resolve_chained_type(inner).ok()?,
            _ => return Some(ty),
        };
    }
    None
}

/// THREAD_SIZE: 16 KiB on x86-64 and arm64, doubled when KASAN is on.
fn thread_size() -> u32 {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let config = std::fs::read_to_string(format!("/boot/config-{}", release.trim())).unwrap_or_default();
    if config.lines().any(|line| line == "CONFIG_KASAN=y") {
        32 * 1024
    } else {
        16 * 1024
    }
}
