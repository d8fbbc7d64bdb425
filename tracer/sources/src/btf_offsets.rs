//! Finds, in the running kernel's BTF, where the few kernel structure members the programs read
//! live (socket → namespace, task → stack and flags, saved registers → stack pointer).
//!
//! Structures move between kernel versions and configurations, so these offsets are never
//! compiled in. A member that cannot be found turns the feature that needs it off, and the
//! tracer says so in its mode line instead of reporting wrong namespaces or pids.
use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, Result};
use btf_rs::{Btf, Type};
use tracer_common::{KernelOffsets, ABSENT};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

pub use tracer_model::sockets::TimeWaitStatus;

/// What the BTF lookup gave, with the names of what could not be found.
pub struct Resolved {
    pub offsets: KernelOffsets,
    pub missing: Vec<&'static str>,
    pub time_wait_status: Option<TimeWaitStatus>,
    /// The `tcp_send_reset` BTF tracepoint passes the reset reason (Linux ≥ 6.10).
    pub reset_reason_in_args: bool,
    /// The names of `enum skb_drop_reason` (without `SKB_DROP_REASON_`), by value; empty where the
    /// kernel has no drop reasons (the `kfree_skb` BTF tracepoint then passes none either).
    pub drop_reasons: BTreeMap<u32, String>,
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
    // Read whole, then parsed from memory: btf-rs seeks for every type, and on sysfs each seek
    // is a system call (126 000 of them, most of the start-up time, before this).
    let bytes = std::fs::read(VMLINUX_BTF).with_context(|| format!("cannot read {VMLINUX_BTF}"))?;
    let btf = Btf::from_bytes(&bytes).with_context(|| format!("cannot parse {VMLINUX_BTF}"))?;
    Ok(resolve_in(&btf))
}

/// The offsets in one kernel's BTF.
fn resolve_in(btf: &Btf) -> Resolved {
    let mut missing = Vec::new();
    let mut find = |name: &'static str, structure: &str, path: &str| {
        member_offset(btf, structure, path).unwrap_or_else(|| {
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
        skb_tcp_flags: ABSENT,
        skb_tcp_seq: ABSENT,
        skb_tcp_end_seq: ABSENT,
        tcp_data_segs_in: find("tcp_sock.data_segs_in", "tcp_sock", "data_segs_in"),
        tcp_rcv_tstamp: find("tcp_sock.rcv_tstamp", "tcp_sock", "rcv_tstamp"),
        tcp_lrcvtime: find("inet_connection_sock.icsk_ack.lrcvtime", "tcp_sock", "inet_conn.icsk_ack.lrcvtime"),
        tcp_lsndtime: find("tcp_sock.lsndtime", "tcp_sock", "lsndtime"),
        skb_protocol: find("sk_buff.protocol", "sk_buff", "protocol"),
        skb_sk: find("sk_buff.sk", "sk_buff", "sk"),
        skb_data: find("sk_buff.data", "sk_buff", "data"),
        thread_size: thread_size(),
        tcp_keepalive_time: find("tcp_sock.keepalive_time", "tcp_sock", "keepalive_time"),
        tcp_clock_cache: find("tcp_sock.tcp_clock_cache", "tcp_sock", "tcp_clock_cache"),
        tcp_mss_cache: find("tcp_sock.mss_cache", "tcp_sock", "mss_cache"),
        tcp_sacked_out: find("tcp_sock.sacked_out", "tcp_sock", "sacked_out"),
    };
    let mut offsets = offsets;
    // TCP_SKB_CB(skb) is `skb->cb` seen as a `struct tcp_skb_cb`.
    let cb = find("sk_buff.cb", "sk_buff", "cb");
    let mut in_cb = |name: &'static str, member: &str| match (cb, member_offset(btf, "tcp_skb_cb", member)) {
        (ABSENT, _) => ABSENT,
        (cb, Some(offset)) => cb + offset,
        (_, None) => {
            missing.push(name);
            ABSENT
        }
    };
    offsets.skb_tcp_flags = in_cb("tcp_skb_cb.tcp_flags", "tcp_flags");
    offsets.skb_tcp_seq = in_cb("tcp_skb_cb.seq", "seq");
    offsets.skb_tcp_end_seq = in_cb("tcp_skb_cb.end_seq", "end_seq");
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
    let tw_status = ["TCP_TW_SYN", "TCP_TW_ACK"].map(|name| enum_value(btf, "tcp_tw_status", name));
    let time_wait_status = match tw_status {
        [Some(syn), Some(ack)] => Some(TimeWaitStatus { syn, ack }),
        _ => {
            missing.push("enum tcp_tw_status");
            None
        }
    };
    let drop_reasons = if tracepoint_arguments(btf, "btf_trace_kfree_skb").is_some_and(|count| count >= 4) {
        enum_names(btf, "skb_drop_reason", "SKB_DROP_REASON_")
    } else {
        BTreeMap::new()
    };
    Resolved { offsets, missing, time_wait_status, reset_reason_in_args: reset_reason_in_args(btf), drop_reasons }
}

/// Byte offset of a dotted member path inside `structure`, looking through anonymous
/// structs and unions the way C does.
fn member_offset(btf: &Btf, structure: &str, path: &str) -> Option<u16> {
    let mut current = btf.resolve_types_by_name(structure).ok()?.into_iter().find(|ty| matches!(ty, Type::Struct(_)))?;
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
    tracepoint_arguments(btf, "btf_trace_tcp_send_reset") == Some(4)
}

/// How many arguments a BTF tracepoint's prototype has (its context pointer included).
fn tracepoint_arguments(btf: &Btf, typedef: &str) -> Option<usize> {
    let typedef = btf.resolve_types_by_name(typedef).ok()?.into_iter().find(|ty| matches!(ty, Type::Typedef(_)))?;
    let Type::Typedef(typedef) = typedef else { return None };
    let Type::Ptr(pointer) = btf.resolve_chained_type(&typedef).ok()? else { return None };
    let Type::FuncProto(prototype) = btf.resolve_chained_type(&pointer).ok()? else { return None };
    Some(prototype.parameters.len())
}

/// The enumerators of `enum ty` whose names start with `prefix`, by value, without the prefix.
fn enum_names(btf: &Btf, ty: &str, prefix: &str) -> BTreeMap<u32, String> {
    let Ok(types) = btf.resolve_types_by_name(ty) else { return BTreeMap::new() };
    types
        .into_iter()
        .find_map(|ty| match ty {
            Type::Enum(enumeration) => Some(
                enumeration
                    .members
                    .iter()
                    .filter_map(|member| {
                        let name = btf.resolve_name(member).ok()?;
                        Some((member.val(), name.strip_prefix(prefix)?.to_string()))
                    })
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

/// The value of enumerator `name` in `enum ty`.
fn enum_value(btf: &Btf, ty: &str, name: &str) -> Option<u32> {
    btf.resolve_types_by_name(ty).ok()?.into_iter().find_map(|ty| match ty {
        Type::Enum(enumeration) => {
            enumeration.members.iter().find(|member| btf.resolve_name(*member).is_ok_and(|n| n == name)).map(|member| member.val())
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes raw BTF (the kernel's format: header, type section, string section), enough of it
    /// to record the shapes the lookups walk: nested and anonymous members, enums, prototypes.
    #[derive(Default)]
    struct Recorder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    const INT: u32 = 1;
    const PTR: u32 = 2;
    const STRUCT: u32 = 4;
    const UNION: u32 = 5;
    const ENUM: u32 = 6;
    const TYPEDEF: u32 = 8;
    const FUNC_PROTO: u32 = 13;

    impl Recorder {
        fn new() -> Recorder {
            Recorder { strings: vec![0], next_id: 1, ..Recorder::default() }
        }

        fn name(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let offset = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            offset
        }

        fn words(&mut self, words: &[u32]) {
            for word in words {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
        }

        /// A type header; returns the new type's id.
        fn header(&mut self, name: &str, kind: u32, vlen: usize, size_or_type: u32) -> u32 {
            let name = self.name(name);
            self.words(&[name, (kind << 24) | vlen as u32, size_or_type]);
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, bytes: u32) -> u32 {
            let id = self.header(name, INT, 0, bytes);
            self.words(&[bytes * 8]);
            id
        }

        fn pointer(&mut self, to: u32) -> u32 {
            self.header("", PTR, 0, to)
        }

        /// A struct or union of (name, type id, byte offset) members.
        fn aggregate(&mut self, kind: u32, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            let id = self.header(name, kind, members.len(), size);
            for (member, ty, offset) in members {
                let member = self.name(member);
                self.words(&[member, *ty, offset * 8]);
            }
            id
        }

        fn enumeration(&mut self, name: &str, values: &[(&str, u32)]) -> u32 {
            let id = self.header(name, ENUM, values.len(), 4);
            for (value, number) in values {
                let value = self.name(value);
                self.words(&[value, *number]);
            }
            id
        }

        fn prototype(&mut self, parameters: &[u32]) -> u32 {
            let id = self.header("", FUNC_PROTO, parameters.len(), 0);
            for parameter in parameters {
                self.words(&[0, *parameter]);
            }
            id
        }

        fn finish(self) -> Btf {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&0xeb9f_u16.to_le_bytes());
            bytes.extend_from_slice(&[1, 0]);
            for word in [24, 0, self.types.len() as u32, self.types.len() as u32, self.strings.len() as u32] {
                bytes.extend_from_slice(&word.to_le_bytes());
            }
            bytes.extend_from_slice(&self.types);
            bytes.extend_from_slice(&self.strings);
            Btf::from_bytes(&bytes).expect("valid BTF")
        }
    }

    /// The shapes of Linux 6.1 as far as the tracer reads them, with its offsets; `tcp_sock` and
    /// `pt_regs` left out.
    fn linux_6_1_subset() -> Btf {
        let mut btf = Recorder::new();
        let (u8_, u16_, u32_, u64_) = (btf.int("u8", 1), btf.int("u16", 2), btf.int("u32", 4), btf.int("u64", 8));
        let addr6 = btf.aggregate(STRUCT, "in6_addr", 16, &[("s6_addr32", u64_, 0), ("s6_addr32_hi", u64_, 8)]);
        let ns_common = btf.aggregate(STRUCT, "ns_common", 24, &[("inum", u32_, 16)]);
        let net = btf.aggregate(STRUCT, "net", 256, &[("ns", ns_common, 120)]);
        let net_pointer = btf.pointer(net);
        let possible_net = btf.aggregate(STRUCT, "", 8, &[("net", net_pointer, 0)]);
        let possible_net_typedef = btf.header("possible_net_t", TYPEDEF, 0, possible_net);
        // skc_daddr and skc_rcv_saddr sit in an anonymous struct inside an anonymous union.
        let addresses = btf.aggregate(STRUCT, "", 8, &[("skc_daddr", u32_, 0), ("skc_rcv_saddr", u32_, 4)]);
        let address_union = btf.aggregate(UNION, "", 8, &[("skc_addrpair", u64_, 0), ("", addresses, 0)]);
        let ports = btf.aggregate(STRUCT, "", 4, &[("skc_dport", u16_, 0), ("skc_num", u16_, 2)]);
        let port_union = btf.aggregate(UNION, "", 4, &[("skc_portpair", u32_, 0), ("", ports, 0)]);
        let sock_common = btf.aggregate(
            STRUCT,
            "sock_common",
            136,
            &[
                ("", address_union, 0),
                ("", port_union, 12),
                ("skc_family", u16_, 16),
                ("skc_state", u8_, 18),
                ("skc_net", possible_net_typedef, 48),
                ("skc_v6_daddr", addr6, 56),
                ("skc_v6_rcv_saddr", addr6, 72),
                ("skc_flags", u64_, 96),
            ],
        );
        btf.aggregate(STRUCT, "sock", 760, &[("__sk_common", sock_common, 0), ("sk_err", u32_, 284), ("sk_protocol", u16_, 514)]);
        btf.aggregate(STRUCT, "task_struct", 9792, &[("flags", u32_, 44), ("stack", u64_, 32), ("comm", addr6, 3008)]);
        btf.enumeration("tcp_tw_status", &[("TCP_TW_SUCCESS", 0), ("TCP_TW_RST", 1), ("TCP_TW_ACK", 2), ("TCP_TW_SYN", 3)]);
        // void (*)(void *, struct sock *, struct sk_buff *): no reset reason before 6.10.
        let void_pointer = btf.pointer(0);
        let prototype = btf.prototype(&[void_pointer, void_pointer, void_pointer]);
        let prototype_pointer = btf.pointer(prototype);
        btf.header("btf_trace_tcp_send_reset", TYPEDEF, 0, prototype_pointer);
        btf.finish()
    }

    #[test]
    fn members_are_found_through_typedefs_and_anonymous_unions_and_the_rest_is_named_missing() {
        let resolved = resolve_in(&linux_6_1_subset());
        let offsets = resolved.offsets;
        assert_eq!((offsets.sock_daddr, offsets.sock_rcv_saddr), (0, 4), "inside the anonymous struct of the anonymous union");
        assert_eq!((offsets.sock_dport, offsets.sock_num), (12, 14));
        assert_eq!((offsets.sock_family, offsets.sock_state, offsets.sock_flags), (16, 18, 96));
        assert_eq!((offsets.sock_net, offsets.net_inum), (48, 136), "skc_net.net through a typedef; net.ns.inum nested");
        assert_eq!((offsets.sock_v6_daddr, offsets.sock_v6_rcv_saddr), (56, 72));
        assert_eq!((offsets.sock_err, offsets.sock_protocol), (284, 514));
        assert_eq!((offsets.task_flags, offsets.task_stack, offsets.task_comm), (44, 32, 3008));
        assert_eq!(offsets.sock_common_len, 88, "up to the end of skc_v6_rcv_saddr");
        assert!(resolved.namespaces_known());
        assert!(!resolved.process_context_known(), "pt_regs.sp is not in this BTF");
        assert_eq!(offsets.regs_sp, ABSENT);
        for absent in ["pt_regs.sp", "tcp_sock.bytes_acked", "sk_buff.dev", "net_device.nd_net"] {
            assert!(resolved.missing.contains(&absent), "{absent} in {:?}", resolved.missing);
        }
        assert_eq!(resolved.time_wait_status, Some(TimeWaitStatus { syn: 3, ack: 2 }));
        assert!(!resolved.reset_reason_in_args, "three parameters: no reason");
    }

    #[test]
    fn a_fourth_tcp_send_reset_parameter_is_the_reset_reason() {
        let mut btf = Recorder::new();
        let void_pointer = btf.pointer(0);
        let reason = btf.enumeration("sk_rst_reason", &[("SK_RST_REASON_NOT_SPECIFIED", 0)]);
        let prototype = btf.prototype(&[void_pointer, void_pointer, void_pointer, reason]);
        let prototype_pointer = btf.pointer(prototype);
        btf.header("btf_trace_tcp_send_reset", TYPEDEF, 0, prototype_pointer);
        let resolved = resolve_in(&btf.finish());
        assert!(resolved.reset_reason_in_args);
        assert_eq!(resolved.time_wait_status, None);
        assert!(resolved.missing.contains(&"enum tcp_tw_status"));
        assert!(!resolved.namespaces_known());
    }
}
