//! Turns ring-buffer bytes into typed [`Event`]s. The buffer is never trusted: a short record,
//! another wire version or an unknown kind is counted in [`DecodeStats`] and skipped.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};
pub use tracer_model::event::{
    Comm, Dropped, Event, Handshake, IcmpError, IdleClocks, Process, Resent, Segment, SocketId, SocketTotals, TcpState,
};

use serde::Serialize;
use tracer_common::{
    EventKind, WireEvent, AF_INET, AF_INET6, FLAG_HAS_REASON, FLAG_HAS_SOCKET_STATS, FLAG_IDLE_CLOCKS, FLAG_KEEPALIVE_TIME, FLAG_PEER_FIN,
    FLAG_PEER_SACKED, FLAG_PROCESS_CONTEXT, FLAG_SEGMENT_SIZE, STATE_BY_EXITING_TASK, WIRE_VERSION,
};

/// Records that could not be decoded, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DecodeStats {
    pub decoded: u64,
    pub short: u64,
    pub wrong_version: u64,
    pub unknown_kind: u64,
}

impl DecodeStats {
    pub fn errors(&self) -> u64 {
        self.short + self.wrong_version + self.unknown_kind
    }
}

#[derive(Default)]
pub struct Decoder {
    reason_names: BTreeMap<u32, String>,
    drop_reasons: BTreeMap<u32, String>,
    pub stats: DecodeStats,
}

impl Decoder {
    /// `reason_names` comes from the running kernel's `tcp_send_reset` format.
    pub fn new(reason_names: BTreeMap<u32, String>) -> Self {
        Decoder { reason_names, drop_reasons: BTreeMap::new(), stats: DecodeStats::default() }
    }

    /// With the names of the kernel's drop reasons (`enum skb_drop_reason`, from its BTF).
    pub fn with_drop_reasons(self, drop_reasons: BTreeMap<u32, String>) -> Self {
        Decoder { drop_reasons, ..self }
    }

    pub fn drop_reasons(&self) -> &BTreeMap<u32, String> {
        &self.drop_reasons
    }

    /// A drop reason's name, or its number where this kernel's BTF had none.
    pub fn drop_reason_name(&self, reason: u32) -> String {
        drop_reason_name(&self.drop_reasons, reason)
    }

    pub fn reason_names(&self) -> &BTreeMap<u32, String> {
        &self.reason_names
    }

    pub fn reason_name(&self, reason: u32) -> Option<&str> {
        self.reason_names.get(&reason).map(String::as_str)
    }

    pub fn decode(&mut self, bytes: &[u8]) -> Option<Event> {
        if bytes.len() < WireEvent::SIZE {
            self.stats.short += 1;
            return None;
        }
        // SAFETY: length checked above; WireEvent is plain integers, valid for any bit pattern.
        let wire: WireEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        if wire.version != WIRE_VERSION {
            self.stats.wrong_version += 1;
            return None;
        }
        let Some(kind) = EventKind::from_u8(wire.kind) else {
            self.stats.unknown_kind += 1;
            return None;
        };
        self.stats.decoded += 1;
        let (local_ip, remote_ip) = addresses(wire.family, &wire.local_addr, &wire.remote_addr);
        Some(Event {
            kind,
            timestamp_ns: wire.timestamp_ns,
            socket: SocketId { netns: wire.netns, address: wire.socket },
            local: SocketAddr::new(local_ip, wire.local_port),
            remote: SocketAddr::new(remote_ip, wire.remote_port),
            old_state: match kind {
                EventKind::StateChange => TcpState::from_kernel(wire.old_state),
                _ => None,
            },
            // The packet records use the byte for what the packet said.
            state: match kind {
                EventKind::ResetArrived | EventKind::IcmpArrived => None,
                _ => TcpState::from_kernel(wire.new_state),
            },
            reset_reason: (kind == EventKind::ResetSent && wire.flags & FLAG_HAS_REASON != 0).then_some(wire.reason),
            tw_status: (kind == EventKind::TimeWaitSyn && wire.flags & FLAG_HAS_REASON != 0).then_some(wire.reason),
            process: (wire.flags & FLAG_PROCESS_CONTEXT != 0).then_some(Process {
                pid: wire.pid,
                tgid: wire.tgid,
                comm: Comm::from(wire.comm),
            }),
            by_exiting_process: kind == EventKind::StateChange
                && wire.flags & FLAG_PROCESS_CONTEXT != 0
                && wire.reason == STATE_BY_EXITING_TASK,
            totals: (wire.flags & FLAG_HAS_SOCKET_STATS != 0 && kind == EventKind::StateChange).then_some(SocketTotals {
                bytes_sent: wire.bytes_acked,
                bytes_received: wire.bytes_received,
                retransmits: wire.total_retrans,
                error: wire.error,
                peer_fin: wire.flags & FLAG_PEER_FIN != 0,
            }),
            idle: (wire.flags & FLAG_IDLE_CLOCKS != 0).then_some(IdleClocks {
                now: wire.bytes_acked as u32,
                last_received: (wire.bytes_received >> 32) as u32,
                last_sent: wire.bytes_received as u32,
            }),
            keepalive_jiffies: (kind == EventKind::ResetSent && wire.flags & FLAG_KEEPALIVE_TIME != 0).then_some(wire.total_retrans),
            drop: (kind == EventKind::Drop).then_some(Dropped { reason: wire.reason, incoming: wire.old_state == 1 }),
            icmp: (kind == EventKind::IcmpArrived).then(|| IcmpError {
                sender: match wire.family {
                    AF_INET6 => IpAddr::V6(Ipv6Addr::from(wire.comm)),
                    _ => IpAddr::V4(Ipv4Addr::new(wire.comm[0], wire.comm[1], wire.comm[2], wire.comm[3])),
                },
                icmp_type: wire.old_state,
                code: wire.new_state,
                ttl: wire.reason as u8,
            }),
            resent: (kind == EventKind::Retransmit && wire.flags & FLAG_SEGMENT_SIZE != 0).then_some(Resent {
                length: wire.reason,
                mss: wire.error,
                peer_sacked: wire.flags & FLAG_PEER_SACKED != 0,
            }),
            handshake: (kind == EventKind::ResetArrived && wire.new_state != 0).then_some(Handshake {
                ttl: wire.new_state,
                seen_ns: wire.bytes_acked,
                changed_ns: (wire.bytes_received != 0).then_some(wire.bytes_received),
            }),
            segment: matches!(kind, EventKind::Segment | EventKind::ResetArrived).then_some(Segment {
                ttl: wire.reason as u8,
                ip_id: wire.error,
                window: wire.total_retrans as u16,
                length: wire.tgid,
                flags: wire.old_state,
            }),
        })
    }
}

/// A drop reason's name in `names`, or its number.
pub fn drop_reason_name(names: &BTreeMap<u32, String>, reason: u32) -> String {
    names.get(&reason).cloned().unwrap_or_else(|| format!("reason {reason}"))
}

/// Builds the two addresses; without a family (Linux < 6.1 resets) IPv4 arrives v4-mapped.
fn addresses(family: u8, local: &[u8; 16], remote: &[u8; 16]) -> (IpAddr, IpAddr) {
    let v4 = |bytes: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]));
    let v6 = |bytes: &[u8; 16]| IpAddr::V6(Ipv6Addr::from(*bytes));
    match family {
        AF_INET => (v4(local), v4(remote)),
        AF_INET6 => (v6(local), v6(remote)),
        _ => {
            let unmapped = |bytes: &[u8; 16]| match Ipv6Addr::from(*bytes).to_ipv4_mapped() {
                Some(ip) => IpAddr::V4(ip),
                None if bytes[4..].iter().all(|byte| *byte == 0) => v4(bytes),
                None => v6(bytes),
            };
            (unmapped(local), unmapped(remote))
        }
    }
}

/// Builds wire records for tests (here and in the tracker's) without a kernel.
#[cfg(test)]
pub mod wire {
    use super::*;

    pub fn record(kind: EventKind, old: u8, new: u8) -> WireEvent {
        WireEvent {
            version: WIRE_VERSION,
            kind: kind as u8,
            family: AF_INET,
            flags: 0,
            old_state: old,
            new_state: new,
            local_port: 43210,
            remote_port: 80,
            error: 0,
            reason: 0,
            timestamp_ns: 1_000,
            socket: 0xffff_8880_1234_5678,
            netns: 4026531840,
            tgid: 0,
            pid: 0,
            total_retrans: 0,
            bytes_acked: 0,
            bytes_received: 0,
            local_addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            comm: [0; 16],
        }
    }

    pub fn bytes(record: &WireEvent) -> Vec<u8> {
        // SAFETY: WireEvent is repr(C) plain integers with explicit padding fields.
        unsafe { std::slice::from_raw_parts((record as *const WireEvent).cast::<u8>(), WireEvent::SIZE) }.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::{wire::*, *};

    #[test]
    fn a_state_change_decodes_with_addresses_states_and_no_pid_from_softirq() {
        let mut decoder = Decoder::default();
        let event = decoder.decode(&bytes(&record(EventKind::StateChange, 2, 1))).unwrap();
        assert_eq!(event.local, "10.0.0.1:43210".parse().unwrap());
        assert_eq!(event.remote, "10.0.0.2:80".parse().unwrap());
        assert_eq!((event.old_state, event.state), (Some(TcpState::SynSent), Some(TcpState::Established)));
        assert_eq!(event.socket, SocketId { netns: 4026531840, address: 0xffff_8880_1234_5678 });
        assert_eq!((event.process, event.reset_reason), (None, None));
        assert_eq!(decoder.stats.decoded, 1);
    }

    #[test]
    fn process_context_carries_pid_and_comm() {
        let mut record = record(EventKind::StateChange, 7, 2);
        record.flags = FLAG_PROCESS_CONTEXT;
        (record.pid, record.tgid) = (4242, 4240);
        record.comm[..4].copy_from_slice(b"curl");
        let event = Decoder::default().decode(&bytes(&record)).unwrap();
        let process = event.process.unwrap();
        assert_eq!((process.pid, process.tgid, process.comm.to_string()), (4242, 4240, "curl".to_string()));
    }

    #[test]
    fn reset_reason_is_named_from_the_kernel_table() {
        let mut record = record(EventKind::ResetSent, 0, 1);
        record.flags = FLAG_HAS_REASON;
        record.reason = 12;
        let mut decoder = Decoder::new([(12, "TCP_ABORT_ON_LINGER".to_string())].into());
        let event = decoder.decode(&bytes(&record)).unwrap();
        assert_eq!(event.reset_reason, Some(12));
        assert_eq!(decoder.reason_name(12), Some("TCP_ABORT_ON_LINGER"));
        assert_eq!(event.old_state, None);
    }

    #[test]
    fn ipv6_and_v4_mapped_without_family_decode_to_the_right_family() {
        let mut record = record(EventKind::StateChange, 2, 1);
        record.family = AF_INET6;
        record.local_addr = Ipv6Addr::LOCALHOST.octets();
        let event = Decoder::default().decode(&bytes(&record)).unwrap();
        assert_eq!(event.local.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));

        record.family = 0;
        record.local_addr = Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped().octets();
        let event = Decoder::default().decode(&bytes(&record)).unwrap();
        assert_eq!(event.local.ip(), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    }

    #[test]
    fn short_foreign_and_unknown_records_are_counted_and_skipped() {
        let mut decoder = Decoder::default();
        let good = bytes(&record(EventKind::StateChange, 2, 1));
        assert!(decoder.decode(&good[..WireEvent::SIZE - 1]).is_none());
        assert!(decoder.decode(&[]).is_none());
        let mut other_version = record(EventKind::StateChange, 2, 1);
        other_version.version = WIRE_VERSION + 1;
        assert!(decoder.decode(&bytes(&other_version)).is_none());
        let mut unknown = record(EventKind::StateChange, 2, 1);
        unknown.kind = 99;
        assert!(decoder.decode(&bytes(&unknown)).is_none());
        assert_eq!(decoder.stats, DecodeStats { decoded: 0, short: 2, wrong_version: 1, unknown_kind: 1 });
        assert_eq!(decoder.stats.errors(), 4);
    }

    #[test]
    fn unknown_state_numbers_become_none_not_a_wrong_state() {
        let event = Decoder::default().decode(&bytes(&record(EventKind::StateChange, 0, 200))).unwrap();
        assert_eq!((event.old_state, event.state), (None, None));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_bytes_decode_or_are_counted_never_panic(records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..64)) {
                let mut decoder = Decoder::new([(1, "NO_SOCKET".to_string())].into());
                let mut decoded = 0u64;
                for record in &records {
                    if let Some(event) = decoder.decode(record) {
                        decoded += 1;
                        let _ = event.reset_reason.and_then(|code| decoder.reason_name(code));
                    }
                }
                prop_assert_eq!(decoder.stats.decoded, decoded);
                prop_assert_eq!(decoder.stats.decoded + decoder.stats.errors(), records.len() as u64);
            }

            #[test]
            fn any_well_formed_record_decodes_whatever_its_fields(kind in 1u8..=7, family in any::<u8>(), old in any::<u8>(), new in any::<u8>(), flags in any::<u8>(), addresses in any::<[u8; 32]>()) {
                let mut record = record(EventKind::StateChange, old, new);
                (record.kind, record.family, record.flags) = (kind, family, flags);
                record.local_addr.copy_from_slice(&addresses[..16]);
                record.remote_addr.copy_from_slice(&addresses[16..]);
                let event = Decoder::default().decode(&bytes(&record));
                prop_assert!(event.is_some());
                prop_assert_eq!(event.unwrap().kind as u8, kind);
            }
        }
    }
}
