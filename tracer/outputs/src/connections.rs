//! `--connections`: one line per connection when it ends — what bcc's tcplife prints (owner,
//! addresses, bytes, duration), plus the verdict the tracker reached: who sent the first FIN,
//! how it ended and why, resets with the kernel's reason, retransmits. The flow record operators
//! read when no capture was possible.
use std::{borrow::Cow, fmt::Write as _, net::SocketAddr};

use bytes::Bytes;

use serde::Serialize;

use tracer_analysis::{
    decode::{Segment, TcpState},
    track::{CloseClass, Connection, Ended, FirstFin, Role, RstFrom},
};
use tracer_model::clock::Clock;

use crate::columns::{pad_after, pad_before, serialize_endpoint, write_endpoint, write_integer, write_short_bytes, write_short_duration};

pub use crate::line_order::InOrder;

/// A connection line as each output takes it: stdout's (human or JSON), and --json-out's.
pub type Printed = (Bytes, Option<Bytes>);

/// Which ends `--connections` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    All,
    /// Every end but a graceful one.
    Troubled,
}

impl Selection {
    pub fn wants(self, ended: &Ended) -> bool {
        self == Selection::All || ended.class != CloseClass::Graceful
    }
}

/// One ended connection, as printed. Field names are stable (README: "Connection log").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConnectionLine {
    /// When it ended (UTC, RFC 3339).
    pub ts: String,
    pub netns: u32,
    /// The process that acted on the socket (connect, close, shutdown), when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    pub role: Role,
    #[serde(serialize_with = "serialize_endpoint")]
    pub local: SocketAddr,
    #[serde(serialize_with = "serialize_endpoint")]
    pub remote: SocketAddr,
    /// The close class ([`CloseClass::name`]: graceful, reset_by_peer, reset_by_path, …).
    pub close: &'static str,
    /// Why, in words (for silent ends: retransmission, keepalive or user timeout, FIN_WAIT2 expiry).
    pub detail: Cow<'static, str>,
    /// For `peer_silent`: `retransmissions` (our data went unanswered until the retransmission
    /// or user timeout), `keepalive`, `fin_unanswered` (our FIN was never acknowledged) or
    /// `fin_wait2_expiry` (acknowledged, but the peer's FIN never came).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silent_cause: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_fin: Option<FirstFin>,
    /// `sent` or `received`, when a RST ended it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rst: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rst_reason: Option<String>,
    /// For a RST received: `peer` (its TTL matches the peer's packets), `path` (a device on the
    /// path sent it in the peer's name) or `unknown` (no packet of the peer to compare with);
    /// absent where the RST itself was not seen (Linux without tp_btf, or a socket not established).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rst_from: Option<&'static str>,
    /// Who sent the ICMP unreachable error it met (a router on the path, or the peer's host),
    /// and how many routers away: where its packet was seen (`netif_receive_skb` attached).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_from: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_hops: Option<u8>,
    /// Routers the RST crossed, and the peer's own packets (from their TTLs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rst_hops: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_hops: Option<u8>,
    /// The RST's own headers next to the peer's first data segment's: TTL, IPv4 ID, window and
    /// length (evidence a reader can weigh: a forged RST often has another ID sequence, a zero
    /// window, or data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rst_segment: Option<Segment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_segment: Option<Segment>,
    /// For an end by silence or by a RST: how long the connection had been idle before the
    /// transmission that went unanswered (or before the RST), where the socket's clocks were read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_before_ms: Option<f64>,
    /// RSTs our kernel refused on this connection (out of window, or a challenge ACK).
    #[serde(skip_serializing_if = "is_zero")]
    pub refused_rsts: u32,
    /// Packets of the connection this host's kernel dropped: from the peer, to it, and why.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped_in: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped_out: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drop_reasons: Vec<String>,
    /// SYN sent or received → ESTABLISHED. Absent when the connection predates the tracer or
    /// never got there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_ms: Option<f64>,
    /// ESTABLISHED → the first FIN (or the end, without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub established_ms: Option<f64>,
    /// The first FIN → the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closing_ms: Option<f64>,
    /// Birth → end; absent when the tracer did not see the birth, or the end is only bounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Where a lookup, not an event, found how it ended (a timewait socket of ours that this
    /// kernel reports nothing of): the end lies at or before the lookup, and these are the spans
    /// to it, upper bounds in place of `closing_ms` and `duration_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closing_at_most_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_at_most_ms: Option<f64>,
    /// Our SYN sent again (the server did not answer).
    pub syn_retransmits: u32,
    /// Other segments retransmitted: the socket's own count at its end where the kernel program
    /// could read it (less the SYNs), else the retransmits the tracer saw.
    pub retransmits: u32,
    /// Bytes we sent that the peer acknowledged, and bytes received: absent where the kernel
    /// program could not read the socket at its end (classic tracepoints), never 0 for unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_received: Option<u64>,
    /// The socket's pending error at its end (ETIMEDOUT, ECONNRESET, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(count: &u32) -> bool {
    *count == 0
}

fn millis(from_ns: Option<u64>, to_ns: Option<u64>) -> Option<f64> {
    let (from, to) = (from_ns?, to_ns?);
    Some(((to.saturating_sub(from)) as f64 / 1e3).round() / 1e3)
}

/// The kernel counts the SYN and the FIN in `bytes_acked` as one byte each once the peer
/// acknowledges them: our SYN (a client's, acknowledged when it got established) and our FIN
/// (acknowledged when the socket ended from FIN_WAIT2, CLOSING or LAST_ACK other than by a reset
/// or a timeout).
fn sequence_bytes_acked(ended: &Ended) -> u64 {
    let connection = &ended.connection;
    let syn = connection.role == Role::Client && connection.established_ns.is_some();
    let fin = connection.ending.is_some_and(|ending| match ending.from {
        TcpState::FinWait2 => true,
        TcpState::Closing | TcpState::LastAck => !connection.reset_received && ended.class != CloseClass::PeerSilent,
        _ => false,
    });
    u64::from(syn) + u64::from(fin)
}

/// Names the errno values a socket ends with; others by number.
fn errno_name(errno: u16) -> String {
    let name = match i32::from(errno) {
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNRESET => "ECONNRESET",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EPIPE => "EPIPE",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EPROTO => "EPROTO",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::ENONET => "ENONET",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

impl ConnectionLine {
    pub fn new(
        ended: &Ended,
        clock: &Clock,
        reason_name: impl Fn(u32) -> Option<String>,
        drop_reason: impl Fn(u32) -> String,
    ) -> ConnectionLine {
        let connection: &Connection = &ended.connection;
        let end_ns = connection.end_ns();
        let totals = connection.totals;
        let rst = match (connection.reset_sent, connection.reset_received) {
            (Some(_), _) => Some("sent"),
            (None, true) => Some("received"),
            (None, false) => None,
        };
        let rst_reason = connection.reset_sent.and_then(|reset| reset.reason).and_then(reason_name);
        // (A silence this host's drops explain keeps its cause: what timed out.)
        let silent =
            ended.class == CloseClass::PeerSilent || (ended.class == CloseClass::DroppedHere && connection.established_ns.is_some());
        let silent_cause = silent.then(|| match connection.ending.map(|ending| ending.from) {
            _ if ended.fin_wait2_expired => "fin_wait2_expiry",
            // A silent peer's connection that we reset: the keepalive timer gave up (with its
            // reason from 6.10; before, known by the socket's ETIMEDOUT).
            _ if ended.keepalive || connection.reset_sent.is_some() => "keepalive",
            Some(TcpState::FinWait1 | TcpState::LastAck | TcpState::Closing) if !connection.data_unanswered_before_fin() => {
                "fin_unanswered"
            }
            _ => "retransmissions",
        });
        let (rst_from, rst_hops, peer_hops) = match ended.rst_from {
            Some(RstFrom::Peer { hops }) => (Some("peer"), Some(hops), Some(hops)),
            Some(RstFrom::Path { hops, peer_hops, .. }) => (Some("path"), Some(hops), Some(peer_hops)),
            Some(RstFrom::NoReference { hops }) => (Some("unknown"), Some(hops), None),
            None => (None, None, None),
        };
        // Where its CLOSE event was lost, `end_ns` is the lookup that found it gone: only a
        // bound, so the spans that end there are absent.
        // Where a lookup found how a lingering socket ended, the same: it bounds the end.
        let by_lookup = connection.ending.is_some_and(|ending| ending.resolved_by_lookup);
        let known_end_ns = Some(end_ns).filter(|_| !by_lookup && connection.ending.is_none_or(|ending| ending.close_lost.is_none()));
        let bound_ns = Some(end_ns).filter(|_| by_lookup);
        ConnectionLine {
            icmp_from: connection.icmp.map(|icmp| icmp.sender),
            icmp_hops: connection.icmp.map(|icmp| icmp.hops()),
            rst_from,
            rst_hops,
            peer_hops,
            rst_segment: connection.reset_segment.filter(|_| connection.reset_taken),
            peer_segment: connection.peer_reference.filter(|_| connection.reset_taken),
            idle_before_ms: connection.idle_before_ns.filter(|_| ended.class.died()).map(|ns| (ns as f64 / 1e3).round() / 1e3),
            refused_rsts: connection.refused_resets,
            dropped_in: connection.drops.incoming,
            dropped_out: connection.drops.outgoing,
            drop_reasons: connection.drops.reasons.iter().map(|(reason, count)| format!("{} ×{count}", drop_reason(*reason))).collect(),
            ts: clock.format(end_ns),
            netns: connection.socket.netns,
            pid: connection.process.map(|process| process.tgid),
            comm: connection.process.map(|process| process.comm.to_string()),
            role: connection.role,
            local: connection.local,
            remote: connection.remote,
            close: ended.class.name(),
            detail: ended.detail.clone(),
            silent_cause,
            first_fin: connection.first_fin,
            rst,
            rst_reason,
            handshake_ms: millis(connection.opened_ns, connection.established_ns),
            established_ms: connection
                .established_ns
                .and_then(|established| millis(Some(established), connection.first_fin_ns.or(known_end_ns))),
            closing_ms: millis(connection.first_fin_ns, known_end_ns),
            duration_ms: millis(connection.opened_ns, known_end_ns),
            closing_at_most_ms: millis(connection.first_fin_ns, bound_ns),
            duration_at_most_ms: millis(connection.opened_ns, bound_ns),
            syn_retransmits: connection.syn_retransmits,
            retransmits: totals.map_or(connection.retransmits, |totals| totals.retransmits.saturating_sub(connection.syn_retransmits)),
            bytes_sent: totals.map(|totals| totals.bytes_sent.saturating_sub(sequence_bytes_acked(ended))),
            bytes_received: totals.map(|totals| totals.bytes_received.saturating_sub(u64::from(totals.peer_fin))),
            error: totals.filter(|totals| totals.error != 0).map(|totals| errno_name(totals.error)),
        }
    }

    pub fn json(&self) -> String {
        // Sized for a whole line at once: growing from serde_json's default reallocates twice.
        let mut line = Vec::with_capacity(640);
        serde_json::to_writer(&mut line, self).expect("plain data always serializes");
        String::from_utf8(line).expect("serde_json writes UTF-8")
    }

    /// One line, its fixed columns within 120 for IPv4 endpoints: time, role, endpoints, close
    /// class, first FIN, phase durations (handshake/established/closing), bytes sent/received,
    /// retransmits (↻); then the owner, SYN retransmits, the RST's direction and reason, the
    /// silent cause and the error, when there are any.
    pub fn human(&self) -> String {
        // Written into one buffer: at thousands of lines a second, each intermediate string is
        // an allocation the reader thread pays for.
        let mut line = String::with_capacity(192);
        // RFC 3339 in UTC, to the millisecond, like the events and summaries.
        match self.ts.get(..23) {
            Some(millis) => line.extend([millis, "Z"]),
            None => line.push_str(&self.ts),
        }
        let role = match self.role {
            Role::Client => "client",
            Role::Server | Role::Listener => "server",
        };
        let fin = match self.first_fin {
            Some(FirstFin::Us) => "us",
            Some(FirstFin::Peer) => "peer",
            Some(FirstFin::Both) => "both",
            None => "-",
        };
        line.extend([" ", role, " "]);
        let local = line.len();
        write_endpoint(&mut line, self.local);
        pad_before(&mut line, local, 21);
        line.push_str(" → ");
        let remote = line.len();
        write_endpoint(&mut line, self.remote);
        pad_after(&mut line, remote, 21);
        line.push(' ');
        let close = line.len();
        line.push_str(self.close);
        pad_after(&mut line, close, 15);
        line.push_str(" fin:");
        let first_fin = line.len();
        line.push_str(fin);
        pad_after(&mut line, first_fin, 4);
        line.push(' ');
        let phases = line.len();
        for (index, ms) in [self.handshake_ms, self.established_ms, self.closing_ms].into_iter().enumerate() {
            if index > 0 {
                line.push('/');
            }
            match ms {
                Some(ms) => write_short_duration(&mut line, ms),
                None => line.push('-'),
            }
        }
        pad_after(&mut line, phases, 15);
        line.push(' ');
        let bytes = line.len();
        match (self.bytes_sent, self.bytes_received) {
            (Some(sent), Some(received)) => {
                write_short_bytes(&mut line, sent);
                line.push('/');
                write_short_bytes(&mut line, received);
            }
            _ => line.push('-'),
        }
        pad_before(&mut line, bytes, 9);
        line.push_str(" ↻");
        write_integer(&mut line, u64::from(self.retransmits));
        if self.syn_retransmits > 0 {
            let _ = write!(line, " syn↻{}", self.syn_retransmits);
        }
        if let (Some(pid), Some(comm)) = (self.pid, &self.comm) {
            let _ = write!(line, " {pid}/{comm}");
        }
        if let Some(rst) = self.rst {
            let _ = write!(line, " rst {rst}");
            if let Some(reason) = &self.rst_reason {
                let _ = write!(line, " {reason}");
            }
            match (self.rst_from, self.rst_hops, self.peer_hops) {
                (Some(from), Some(hops), Some(peer)) => {
                    let _ = write!(line, " from {from} ({hops} hops; peer {peer})");
                }
                (Some(from), Some(hops), None) => {
                    let _ = write!(line, " from {from} ({hops} hops)");
                }
                _ => {}
            }
        }
        if self.dropped_in + self.dropped_out > 0 {
            let _ = write!(line, " dropped-here {}/{} {}", self.dropped_in, self.dropped_out, self.drop_reasons.join(","));
        }
        if self.refused_rsts > 0 {
            let _ = write!(line, " refused-rst {}", self.refused_rsts);
        }
        if let Some(cause) = self.silent_cause {
            let _ = write!(line, " {cause}");
        }
        if let Some(error) = &self.error {
            let _ = write!(line, " {error}");
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> ConnectionLine {
        ConnectionLine {
            ts: "2026-11-23T05:54:24.300123Z".into(),
            netns: 4026531840,
            pid: Some(4242),
            comm: Some("nginx".into()),
            role: Role::Server,
            local: "100.200.130.140:65535".parse().unwrap(),
            remote: "100.200.130.141:65535".parse().unwrap(),
            close: "reset_by_peer",
            detail: "reset by the peer in ESTABLISHED".into(),
            silent_cause: None,
            first_fin: None,
            rst: Some("received"),
            rst_reason: None,
            icmp_from: None,
            icmp_hops: None,
            rst_from: Some("path"),
            rst_hops: Some(0),
            peer_hops: Some(1),
            rst_segment: None,
            peer_segment: None,
            idle_before_ms: None,
            refused_rsts: 0,
            dropped_in: 0,
            dropped_out: 0,
            drop_reasons: Vec::new(),
            handshake_ms: Some(0.25),
            established_ms: Some(183_000.0),
            closing_ms: None,
            duration_ms: Some(183_000.25),
            closing_at_most_ms: None,
            duration_at_most_ms: None,
            syn_retransmits: 0,
            retransmits: 12,
            bytes_sent: Some(1_234_567),
            bytes_received: Some(512),
            error: Some("ECONNRESET".into()),
        }
    }

    #[test]
    fn the_human_line_has_an_rfc3339_time_and_fits_132_columns_with_every_column_filled() {
        let human = line().human();
        assert_eq!(
            human,
            "2026-11-23T05:54:24.300Z server 100.200.130.140:65535 → 100.200.130.141:65535 reset_by_peer   fin:-    0.2ms/3m3s/-     1.2M/512 ↻12 4242/nginx rst received from path (0 hops; peer 1) ECONNRESET"
        );
        // The fixed columns fit 132 with the widest IPv4 endpoints; owner, reset and error follow.
        let without_owner_and_reset = human.split(" 4242/").next().unwrap();
        assert!(without_owner_and_reset.chars().count() <= 132, "{without_owner_and_reset}");
        let unknown = ConnectionLine { handshake_ms: None, established_ms: None, closing_ms: None, bytes_sent: None, ..line() };
        assert!(unknown.human().contains(" fin:-    -/-/-                   - ↻12 "), "{}", unknown.human());
    }

    /// The server closes first; the client's FIN reaches the timewait socket within a
    /// millisecond, which this kernel reports nothing of; the lookup a second later finds it in
    /// TIME_WAIT. The line claims no duration to that lookup: only bounds.
    #[test]
    fn an_end_a_lookup_found_is_only_bounded_never_dated_to_the_lookup() {
        use tracer_analysis::track::{fixtures, Observation, Tracker, TrackerConfig};
        const MS: u64 = 1_000_000;
        let s = fixtures::server();
        let mut tracker = Tracker::new(TrackerConfig { probes: true, ..TrackerConfig::default() }, fixtures::reasons());
        let mut out = Vec::new();
        for event in [
            s.state(TcpState::Listen, TcpState::SynRecv, 1000 * MS),
            s.state(TcpState::SynRecv, TcpState::Established, 1001 * MS),
            s.syscall(TcpState::Established, TcpState::FinWait1, 1002 * MS),
            s.state(TcpState::FinWait1, TcpState::FinWait2, 1003 * MS),
            s.closed(TcpState::FinWait2, false, 1003 * MS),
        ] {
            tracker.observe(&event, &mut out);
        }
        let tuple = tracer_analysis::track::Tuple { netns: fixtures::NETNS, local: s.local, remote: s.remote };
        tracker.probed(&tuple, 2000 * MS, Some(TcpState::TimeWait), &mut out);
        tracker.settle(u64::MAX, &mut out);
        let ended = out.iter().find_map(|o| if let Observation::Ended(ended) = o { Some(ended) } else { None }).expect("it ended");
        let line = ConnectionLine::new(ended, &Clock::now(), |_| None, |reason| reason.to_string());
        assert_eq!(line.close, "graceful");
        assert_eq!((line.duration_ms, line.closing_ms), (None, None), "no span claimed to the lookup");
        assert_eq!((line.duration_at_most_ms, line.closing_at_most_ms), (Some(1000.0), Some(998.0)));
        assert_eq!(line.handshake_ms, Some(1.0));
    }

    #[test]
    fn json_fields_are_the_documented_ones_and_unknowns_are_absent() {
        let json: serde_json::Value =
            serde_json::from_str(&ConnectionLine { bytes_sent: None, bytes_received: None, ..line() }.json()).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "close",
                "comm",
                "detail",
                "duration_ms",
                "error",
                "established_ms",
                "handshake_ms",
                "local",
                "netns",
                "peer_hops",
                "pid",
                "remote",
                "retransmits",
                "role",
                "rst",
                "rst_from",
                "rst_hops",
                "syn_retransmits",
                "ts"
            ]
        );
    }
}
