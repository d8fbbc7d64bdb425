//! `--events`: one line per kernel event, for watching a connection live, and one per link change.
use std::{
    fmt::{self, Write as _},
    net::SocketAddr,
};

use serde::Serialize;
use tracer_common::EventKind;

use tracer_analysis::decode::{Comm, Decoder, Event};
use tracer_model::{clock::Clock, links::LinkChange};

use crate::columns::{pad_after, pad_before, serialize_displayed, serialize_endpoint, write_endpoint, write_integer};

pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::StateChange => "state",
        EventKind::ResetSent => "rst_sent",
        EventKind::ResetReceived => "rst_received",
        EventKind::Retransmit => "retransmit",
        EventKind::SynAckRetransmit => "synack_retransmit",
        EventKind::TimeWaitEnter => "timewait_enter",
        EventKind::TimeWaitSyn => "timewait_syn",
        EventKind::Segment => "segment",
        EventKind::Drop => "dropped",
        EventKind::ResetArrived => "rst_arrived",
        EventKind::IcmpArrived => "icmp_arrived",
    }
}

#[derive(Serialize)]
struct EventJson<'a> {
    #[serde(serialize_with = "serialize_displayed")]
    ts: humantime::Rfc3339Timestamp,
    ts_ns: u64,
    kind: &'static str,
    netns: u32,
    #[serde(serialize_with = "serialize_displayed")]
    socket: SocketAddress,
    #[serde(serialize_with = "serialize_endpoint")]
    local: SocketAddr,
    #[serde(serialize_with = "serialize_endpoint")]
    remote: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code: Option<u32>,
    /// For `timewait_syn`: the `tcp_tw_status` the kernel returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    tw_status: Option<u32>,
    /// For `segment`: what its headers said (TTL, IPv4 ID, window, length, flags) and the hops
    /// its TTL implies.
    #[serde(skip_serializing_if = "Option::is_none")]
    segment: Option<tracer_analysis::decode::Segment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hops: Option<u8>,
    /// For `dropped`: the kernel's drop reason, and whether the packet was coming in.
    #[serde(skip_serializing_if = "Option::is_none")]
    drop_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    incoming: Option<bool>,
    /// For `icmp_arrived`: who sent it, its type, code and TTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp: Option<tracer_analysis::decode::IcmpError>,
    pid: Option<u32>,
    tgid: Option<u32>,
    comm: Option<Comm>,
}

/// A socket's kernel address, in hex.
struct SocketAddress(u64);

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

pub fn json(event: &Event, clock: &Clock, decoder: &Decoder) -> String {
    let mut line = Vec::with_capacity(320);
    write_json(&mut line, event, clock, decoder);
    String::from_utf8(line).expect("serde_json writes UTF-8")
}

/// Appends the event's JSON line to `out`, each field written in place (at every event of a
/// busy host, a string per field was most of what `--events` cost).
pub fn write_json(out: &mut Vec<u8>, event: &Event, clock: &Clock, decoder: &Decoder) {
    let record = EventJson {
        ts: clock.rfc3339(event.timestamp_ns),
        ts_ns: event.timestamp_ns,
        kind: kind_name(event.kind),
        netns: event.socket.netns,
        socket: SocketAddress(event.socket.address),
        local: event.local,
        remote: event.remote,
        old_state: event.old_state.map(|state| state.name()),
        state: event.state.map(|state| state.name()),
        reason: event.reset_reason.and_then(|code| decoder.reason_name(code)),
        reason_code: event.reset_reason,
        tw_status: event.tw_status,
        segment: event.segment,
        hops: event.segment.map(|segment| segment.hops()).or(event.icmp.map(|icmp| icmp.hops())),
        icmp: event.icmp,
        drop_reason: event.drop.map(|drop| decoder.drop_reasons().get(&drop.reason).map_or("?", String::as_str)),
        incoming: event.drop.map(|drop| drop.incoming),
        pid: event.process.map(|process| process.pid),
        tgid: event.process.map(|process| process.tgid),
        comm: event.process.map(|process| process.comm),
    };
    serde_json::to_writer(out, &record).expect("plain data always serializes");
}

/// Appends the event's line to `line`, written in place:
/// `2026-11-22T02:10:00.123456Z state  10.0.0.1:43210 → 10.0.0.2:80  SYN_SENT → ESTABLISHED  pid 42 curl`
pub fn write_human(line: &mut String, event: &Event, clock: &Clock, decoder: &Decoder) {
    let _ = write!(line, "{} ", clock.rfc3339(event.timestamp_ns));
    let kind = line.len();
    line.push_str(kind_name(event.kind));
    pad_after(line, kind, 17);
    line.push(' ');
    let local = line.len();
    write_endpoint(line, event.local);
    pad_before(line, local, 22);
    line.push_str(" → ");
    let remote = line.len();
    write_endpoint(line, event.remote);
    pad_after(line, remote, 22);
    line.push(' ');
    let states = line.len();
    match (event.kind, event.old_state, event.state) {
        (EventKind::StateChange, old, new) => line.extend([name_or_unknown(old), " → ", name_or_unknown(new)]),
        (_, _, Some(state)) => line.extend(["in ", state.name()]),
        (_, _, None) => {}
    }
    pad_after(line, states, 26);
    match (event.reset_reason, event.segment) {
        (Some(code), _) => line.extend(["  reason ", decoder.reason_name(code).unwrap_or("?")]),
        (None, Some(segment)) => {
            let _ = write!(
                line,
                "  {}ttl {} ({} hops) id {} win {} len {}",
                if segment.is_reset() { "RST " } else { "" },
                segment.ttl,
                segment.hops(),
                segment.ip_id,
                segment.window,
                segment.length
            );
        }
        (None, None) => {
            if let Some(drop) = event.drop {
                let reason = decoder.drop_reasons().get(&drop.reason).map_or("?", String::as_str);
                line.extend(["  ", reason, if drop.incoming { " coming in" } else { " going out" }]);
            }
        }
    }
    match event.process {
        Some(process) => {
            line.push_str("  pid ");
            write_integer(line, u64::from(process.tgid));
            line.push(' ');
            line.push_str(&process.comm.as_str());
        }
        None => line.push_str("  pid -"),
    }
    line.push_str("  netns ");
    write_integer(line, u64::from(event.socket.netns));
}

fn name_or_unknown(state: Option<tracer_analysis::decode::TcpState>) -> &'static str {
    state.map_or("?", |state| state.name())
}

#[derive(Serialize)]
struct LinkJson<'a> {
    ts: String,
    ts_ns: u64,
    kind: &'static str,
    netns: u32,
    ifindex: u32,
    ifname: &'a str,
    what: &'static str,
    operstate: &'static str,
    carrier: bool,
}

/// A link change as an event line: `kind` is `link`.
pub fn link_json(change: &LinkChange, clock: &Clock) -> String {
    let record = LinkJson {
        ts: clock.format(change.at_ns),
        ts_ns: change.at_ns,
        kind: "link",
        netns: change.netns,
        ifindex: change.ifindex,
        ifname: &change.ifname,
        what: change.what.name(),
        operstate: change.operstate,
        carrier: change.carrier,
    };
    serde_json::to_string(&record).expect("plain data always serializes")
}

/// `2026-11-22T02:10:00.123456Z link              veth0 down (operstate lowerlayerdown, no carrier)  netns 4026532`
pub fn link_human(change: &LinkChange, clock: &Clock) -> String {
    format!(
        "{} {:<17} {} {} (operstate {}, {})  netns {}",
        clock.format(change.at_ns),
        "link",
        change.ifname,
        change.what.name(),
        change.operstate,
        if change.carrier { "carrier" } else { "no carrier" },
        change.netns
    )
}

#[cfg(test)]
mod tests {
    use tracer_analysis::{decode::TcpState::*, track::fixtures::Script};

    use super::*;

    /// The line as `format!` wrote it before the line was written in place.
    fn formatted(event: &Event, clock: &Clock, decoder: &Decoder) -> String {
        let states = match (event.kind, event.old_state, event.state) {
            (EventKind::StateChange, old, new) => format!("{} → {}", name_or_unknown(old), name_or_unknown(new)),
            (_, _, Some(state)) => format!("in {state}"),
            (_, _, None) => String::new(),
        };
        let reason = match (event.reset_reason, event.segment) {
            (Some(code), _) => format!("  reason {}", decoder.reason_name(code).unwrap_or("?")),
            (None, Some(s)) => {
                format!(
                    "  {}ttl {} ({} hops) id {} win {} len {}",
                    if s.is_reset() { "RST " } else { "" },
                    s.ttl,
                    s.hops(),
                    s.ip_id,
                    s.window,
                    s.length
                )
            }
            (None, None) => String::new(),
        };
        let process = event.process.map_or("pid -".to_string(), |process| format!("pid {} {}", process.tgid, process.comm));
        format!(
            "{} {:<17} {:>22} → {:<22} {:<26}{}  {}  netns {}",
            clock.format(event.timestamp_ns),
            kind_name(event.kind),
            event.local.to_string(),
            event.remote.to_string(),
            states,
            reason,
            process,
            event.socket.netns
        )
    }

    #[test]
    fn event_lines_written_in_place_read_as_the_formatting_machinery_wrote_them() {
        let clock = Clock::now();
        let decoder = Decoder::new([(12, "TCP_ABORT_ON_LINGER".to_string())].into());
        let (v4, v6) =
            (Script::new(0xffff_8881_0000_1000, "10.0.0.1:40000", "10.0.0.2:80"), Script::new(2, "[fd00::1]:443", "[fd00::2]:51000"));
        let events = [
            v4.syscall(Close, SynSent, 1_000),
            v4.state(SynSent, Established, 2_000),
            v4.segment(57, false, 3_000),
            v4.segment(64, true, 4_000),
            v4.reset_sent(Established, Some(12), 5_000),
            v6.state(Established, CloseWait, 6_000),
            v6.reset_received(7_000),
        ];
        for event in &events {
            let mut line = String::new();
            write_human(&mut line, event, &clock, &decoder);
            assert_eq!(line, formatted(event, &clock, &decoder));
            let json: serde_json::Value = serde_json::from_str(&json(event, &clock, &decoder)).unwrap();
            assert_eq!(json["ts"], clock.format(event.timestamp_ns));
            assert_eq!(json["socket"], format!("{:#x}", event.socket.address));
            assert_eq!((&json["local"], &json["remote"]), (&event.local.to_string().into(), &event.remote.to_string().into()));
            assert_eq!(json["comm"], event.process.map_or(serde_json::Value::Null, |process| process.comm.to_string().into()));
        }
    }
}
