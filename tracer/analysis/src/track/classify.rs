//! The verdict on a connection that ended: its close class and the sentence that explains it,
//! from the facts the state machine gathered (who sent the first FIN, who reset, the kernel's
//! reset reason, retransmits, how long FIN_WAIT2 lasted).
use std::{borrow::Cow, net::SocketAddr};

use super::{provenance, CloseClass, CloseLost, Connection, Ending, Lingered, ResetSent, Role, RstFrom, Tracker, Unresolved};
use crate::decode::TcpState;

/// The kernel's reset reasons (`enum sk_rst_reason`, names read from tracefs at run time) that
/// decide a verdict, in one place: a reset for a keepalive timeout means the peer went silent...
const KEEPALIVE_TIMEOUT_REASON: &str = "TCP_KEEPALIVE_TIMEOUT";
/// ... and these mean our application aborted the connection (closed with unread data,
/// SO_LINGER 0, disconnect).
const APPLICATION_ABORT_REASONS: &[&str] =
    &["TCP_ABORT_ON_CLOSE", "TCP_ABORT_ON_LINGER", "TCP_ABORT_ON_DATA", "TCP_STATE", "TCP_DISCONNECT_WITH_DATA"];
/// Linux's ETIMEDOUT (x86-64, arm64): the socket error a keepalive or user timeout leaves.
const ETIMEDOUT: u16 = 110;
/// What an ICMP port unreachable leaves on a connecting socket, as a RST does.
const ECONNREFUSED: u16 = 111;
/// What `tcp_abort` leaves: a process destroyed the socket through sock_diag (SOCK_DESTROY).
const ECONNABORTED: u16 = 103;
/// The errors an ICMP destination unreachable leaves (x86-64, arm64 numbers), by the names a
/// reader knows them: what a connect gets at once, or a timeout whose retransmissions met them.
const ICMP_UNREACHABLE: [(u16, &str); 4] = [
    (113, "host unreachable (EHOSTUNREACH)"),
    (101, "network unreachable (ENETUNREACH)"),
    (112, "host down (EHOSTDOWN)"),
    (64, "host isolated (ENONET)"),
];

/// Whether a socket's error at its end is one an ICMP error leaves (unreachable, or a connect
/// refused by ICMP port unreachable, which a RST leaves too).
pub fn left_by_icmp(error: u16) -> bool {
    error == ECONNREFUSED || ICMP_UNREACHABLE.iter().any(|(code, _)| *code == error)
}

/// Whether the socket ended with ETIMEDOUT: a retransmission, keepalive or user timeout.
fn timed_out(connection: &Connection) -> bool {
    connection.totals.is_some_and(|totals| totals.error == ETIMEDOUT)
}

/// Who sent the ICMP error a connection met, where its packet was seen (`netif_receive_skb`
/// attached); else `otherwise`.
fn icmp_sender(connection: &Connection, otherwise: &str) -> String {
    match connection.icmp {
        Some(icmp) if icmp.sender == connection.remote.ip() => {
            format!("sent by the peer's host itself ({}, {} hop(s) away)", icmp.sender, icmp.hops())
        }
        Some(icmp) => format!("sent by {}, {} hop(s) away: a device on the path, not the peer", icmp.sender, icmp.hops()),
        None => otherwise.to_string(),
    }
}

/// The ICMP error a socket ended with, if its error is one.
fn icmp_unreachable(connection: &Connection) -> Option<&'static str> {
    let error = connection.totals?.error;
    ICMP_UNREACHABLE.iter().find(|(code, _)| *code == error).map(|(_, name)| *name)
}

impl Tracker {
    pub(super) fn classify(&self, connection: &Connection, ending: Ending) -> Verdict {
        let from = ending.from;
        let retransmits = connection.retransmits_in_state;
        if ending.lingered.is_some() {
            return self.after_our_fin(connection, ending);
        }
        match ending.close_lost {
            _ if connection.reset_received || connection.reset_sent.is_some() => {}
            Some(CloseLost::Gone) => {
                return Verdict::of(
                    CloseClass::Unresolved,
                    format!(
                        "its socket was found gone, last seen in {from}, but its CLOSE event never came (lost or skipped: see the \
                         events line): how it ended is not known"
                    ),
                )
            }
            Some(CloseLost::InTimeWait) => {
                return Verdict {
                    time_wait: true,
                    ..Verdict::of(
                        CloseClass::Graceful,
                        "its socket was found in TIME_WAIT, its CLOSE event lost: both FINs were exchanged, ours first or both at once",
                    )
                }
            }
            None => {}
        }
        if connection.reset_received {
            return self.after_reset_received(connection, ending);
        }
        if let Some(reset) = connection.reset_sent {
            return self.after_reset_sent(connection, reset, from);
        }
        // An ICMP error closes a connect at once, in whatever context the socket was; a timeout
        // keeps the one its retransmissions met.
        // The socket's error says so, or the ICMP error's own packet, seen arriving: an
        // application that read the error (SO_ERROR clears it) before closing leaves none.
        let arrived = connection.icmp;
        let unreachable = icmp_unreachable(connection).or(arrived.filter(|icmp| !icmp.port_unreachable()).map(|icmp| icmp.name()));
        let refused_by_icmp =
            connection.totals.is_some_and(|totals| totals.error == ECONNREFUSED) || arrived.is_some_and(|icmp| icmp.port_unreachable());
        match from {
            TcpState::SynSent if unreachable.is_some() => Verdict::of(
                CloseClass::Unreachable,
                format!(
                    "our SYN was answered with ICMP {} ({} retransmits), {}",
                    unreachable.unwrap_or_default(),
                    connection.syn_retransmits,
                    icmp_sender(connection, "by a router on the path, or the peer's host: one would not deliver it")
                ),
            ),
            TcpState::SynSent if refused_by_icmp => Verdict::of(
                CloseClass::Refused,
                format!(
                    "connection refused by ICMP port unreachable, not by a RST, {}",
                    icmp_sender(connection, "from a firewall on the path, or the peer's host: one rejects with ICMP")
                ),
            ),
            // (Only after retransmissions: an error left from earlier, unread, does not end a close.)
            TcpState::Established | TcpState::CloseWait | TcpState::SynRecv | TcpState::FinWait1 | TcpState::LastAck
                if unreachable.is_some() && retransmits > 0 =>
            {
                Verdict::of(
                    CloseClass::Unreachable,
                    format!(
                        "timed out in {from}: our retransmissions were answered with ICMP {} ({retransmits} retransmits), {}",
                        unreachable.unwrap_or_default(),
                        icmp_sender(connection, "by a router on the path, or the peer's host: one would not deliver them")
                    ),
                )
            }
            // connect() takes its local port after it enters SYN_SENT (inet_hash_connect); a socket
            // that leaves SYN_SENT still without one found none free for this destination.
            TcpState::SynSent if connection.local.port() == 0 && connection.syn_retransmits == 0 => Verdict::of(
                CloseClass::NoLocalPort,
                "connect failed before any SYN: no local port free for this destination (the ephemeral range is exhausted, \
                 EADDRNOTAVAIL)",
            ),
            TcpState::SynSent if ending.by_application && connection.syn_retransmits == 0 => Verdict::of(
                CloseClass::Aborted,
                "connect abandoned by the application before any SYN retransmit (it may have read an ICMP error that arrived \
                 while connect() held the socket, which leaves none at its close)",
            ),
            TcpState::SynSent if ending.by_application => {
                Verdict::of(CloseClass::ConnectTimeout, format!("application gave up after {} SYN retransmits", connection.syn_retransmits))
            }
            TcpState::SynSent => {
                Verdict::of(CloseClass::ConnectTimeout, format!("no answer to our SYN ({} retransmits)", connection.syn_retransmits))
            }
            TcpState::FinWait2 => self.after_our_fin(connection, ending),
            // Both FINs were sent, or the peer's came first, but ours (or the data before it) was
            // never acknowledged: the retransmission timer gave up. Never graceful.
            TcpState::Closing | TcpState::TimeWait | TcpState::LastAck if timed_out(connection) => Verdict::of(
                CloseClass::PeerSilent,
                format!(
                    "timed out in {from}: the peer's FIN came but ours was never acknowledged ({retransmits} retransmits; the \
                     socket's error was ETIMEDOUT)"
                ),
            ),
            TcpState::Closing | TcpState::TimeWait => {
                Verdict { time_wait: true, ..Verdict::of(CloseClass::Graceful, "both sides closed at once") }
            }
            TcpState::LastAck | TcpState::FinWait1 if connection.data_unanswered_before_fin() => data_then_fin_unanswered(connection),
            TcpState::LastAck | TcpState::FinWait1 if retransmits >= 3 => {
                Verdict::of(CloseClass::PeerSilent, format!("our FIN was never acknowledged ({retransmits} retransmits in {from})"))
            }
            TcpState::LastAck => Verdict::of(CloseClass::Graceful, "the peer closed first"),
            TcpState::FinWait1 => Verdict::of(CloseClass::PeerSilent, "our FIN was never acknowledged"),
            // A timeout leaves its error on the socket (ETIMEDOUT, or the ICMP error the
            // retransmissions met) before the CLOSE; none here, and no reset event came: a RST
            // either way whose event was lost (counted).
            TcpState::Established | TcpState::CloseWait | TcpState::SynRecv
                if connection.totals.is_some_and(|totals| totals.error == 0) =>
            {
                Verdict::of(
                    CloseClass::Unresolved,
                    format!(
                        "closed in {from} with no FIN and no timeout error on the socket: a RST (ours or the peer's) whose event \
                         was lost"
                    ),
                )
            }
            // No system call closes these without a FIN or a RST; a CLOSE in process context is a
            // timer deferred to release_sock(), not the application's choice.
            TcpState::Established | TcpState::CloseWait | TcpState::SynRecv => Verdict::of(
                CloseClass::PeerSilent,
                format!("timed out in {from} with no FIN or RST from the peer ({retransmits} retransmits)"),
            ),
            _ => Verdict::of(CloseClass::Aborted, format!("closed by the application in {from} without FIN")),
        }
    }
}

impl Tracker {
    /// A RST the kernel took ended it: refused in SYN_SENT, else reset, by the peer or the path
    /// as the RST's TTL says, or by either where it could not be checked.
    fn after_reset_received(&self, connection: &Connection, ending: Ending) -> Verdict {
        let from = ending.from;
        let judged = self.reset_origin(connection, ending.at_ns);
        if connection.reset_event_lost && judged.is_none() {
            return Verdict::of(
                CloseClass::Unresolved,
                format!(
                    "a RST ended it in {from} (the socket's error says so) but its event was lost, and the RST itself was not \
                     seen: the peer or a device in the path"
                ),
            );
        }
        if from == TcpState::SynSent {
            let (origin, against) = judged.unzip();
            let detail = match origin {
                Some(origin @ RstFrom::Path { .. }) => {
                    format!("connection refused: RST in reply to our SYN, by the path, not the peer: {}", provenance::describe(origin))
                }
                Some(origin) => format!("connection refused: RST in reply to our SYN; {}", provenance::describe(origin)),
                None => "connection refused: RST in reply to our SYN (its packet was not seen: who sent it is unchecked)".to_string(),
            };
            let detail = with_reference(detail, against.flatten());
            // A reject rule of this host answered for the peer: said first, the RST's origin after.
            let (detail, dropped_in) = match connection.refused_in {
                Some(netns) => {
                    let place = self.netns_label(netns);
                    let detail = format!(
                        "refused by this host's firewall in {place}: our SYN was dropped there (NETFILTER_DROP) and a RST sent back in \
                         the peer's name, not by the peer ({detail})"
                    );
                    (detail, Some(place))
                }
                None => (detail, None),
            };
            return Verdict { rst_from: origin, dropped_in, ..Verdict::of(CloseClass::Refused, detail) }.noting_lost_reset(connection);
        }
        // A full socket still in FIN_WAIT2 (the ACK of our FIN came while our application held
        // it) reads as the timewait socket's reset does: when, after our FIN.
        let place = match connection.first_fin_ns.filter(|_| from == TcpState::FinWait2) {
            Some(fin_ns) => {
                format!(
                    "in {from}, {:.1} s after our FIN (acknowledged; its FIN never came)",
                    ending.at_ns.saturating_sub(fin_ns) as f64 / 1e9
                )
            }
            None => format!("in {from}"),
        };
        reset_verdict(judged, &place).noting_lost_reset(connection)
    }

    /// We reset it: our application, our stack, or the keepalive timer, as the kernel's reason
    /// (or before 6.10 the socket's error) says.
    fn after_reset_sent(&self, connection: &Connection, reset: ResetSent, from: TcpState) -> Verdict {
        let reason = reset.reason.and_then(|code| self.reason_name(code));
        // The socket's error at its close, where the hooks could read the socket (tp_btf).
        let error = connection.totals.map(|totals| totals.error);
        match reason {
            // Before any reason: the application did not ask for this one.
            _ if error == Some(ECONNABORTED) => Verdict::of(
                CloseClass::Aborted,
                "destroyed on this host: a process killed the socket (SOCK_DESTROY, as `ss -K` or a CNI's socket cleanup \
                 does; the socket's error is ECONNABORTED) and our kernel sent RST",
            ),
            Some(KEEPALIVE_TIMEOUT_REASON) => Verdict {
                keepalive: true,
                ..Verdict::of(CloseClass::PeerSilent, "keepalive timeout: the peer stopped answering (we sent RST)")
            },
            Some(reason) if APPLICATION_ABORT_REASONS.contains(&reason) => {
                Verdict::of(CloseClass::Aborted, format!("our application aborted it with RST ({reason})"))
            }
            // Kernels before 6.10 give no reason. The keepalive timer (or TCP_USER_TIMEOUT)
            // that resets a connection whose peer stopped answering leaves ETIMEDOUT behind,
            // which no abort does; it may run in the application's context (deferred to
            // release_sock), so this comes before the process check.
            None if error == Some(ETIMEDOUT) => Verdict {
                keepalive: true,
                ..Verdict::of(
                    CloseClass::PeerSilent,
                    "keepalive or user timeout: the peer stopped answering (we sent RST; the socket's error was ETIMEDOUT)",
                )
            },
            None if reset.by_application => Verdict::of(CloseClass::Aborted, "our application aborted it with RST"),
            None if error.is_none() => Verdict::of(
                CloseClass::Unresolved,
                format!(
                    "we reset it in {from}; this kernel gives neither the reset's reason nor, with these hooks, the socket's \
                     error: a keepalive timeout (the peer silent) or a reset of our stack"
                ),
            ),
            reason => Verdict::of(
                CloseClass::ResetByUs,
                format!("we reset it in {from} ({})", reason.unwrap_or("reason not given by this kernel; no timeout error")),
            ),
        }
    }
}

impl Tracker {
    /// Our FIN was acknowledged and the timewait socket took over in FIN_WAIT2: its end, from
    /// what [`Lingered`] established, never from how long anything took to look.
    fn after_our_fin(&self, connection: &Connection, ending: Ending) -> Verdict {
        let fin_ns = connection.first_fin_ns.unwrap_or(ending.at_ns);
        let since_fin = |at_ns: u64| format!("{:.1} s", at_ns.saturating_sub(fin_ns) as f64 / 1e9);
        let window = |last_ns: Option<u64>, gone_ns: u64| match last_ns {
            Some(last_ns) => format!("between {} and {} after our FIN", since_fin(last_ns), since_fin(gone_ns)),
            None => format!("within {} of our FIN", since_fin(gone_ns)),
        };
        match ending.lingered {
            Some(Lingered::PeerFin) => Verdict { time_wait: true, ..Verdict::of(CloseClass::Graceful, "we closed first") },
            Some(Lingered::Expired) => Verdict {
                fin_wait2_expired: true,
                ..Verdict::of(CloseClass::PeerSilent, "our FIN was acknowledged but the peer never sent its FIN (until tcp_fin_timeout expired)")
            },
            Some(Lingered::PeerReset { last_ns, gone_ns }) => reset_verdict(
                self.reset_origin(connection, gone_ns),
                &format!("{} (acknowledged; its FIN never came)", window(last_ns, gone_ns)),
            ),
            Some(Lingered::OurReset { reason }) => Verdict::of(
                CloseClass::ResetByUs,
                format!(
                    "we reset it after our close: the peer sent data or a SYN ({})",
                    reason.and_then(|code| self.reason_name(code)).unwrap_or("reason not given by this kernel")
                ),
            ),
            Some(Lingered::Unresolved(Unresolved::ResetEitherWay { last_ns, gone_ns })) => Verdict::of(
                CloseClass::Unresolved,
                format!(
                    "our FIN was acknowledged; a RST ended it {} (the peer's, or ours to its late data: this kernel does not report resets from timewait sockets)",
                    window(last_ns, gone_ns)
                ),
            ),
            Some(Lingered::Unresolved(Unresolved::ExpiryOrReset { last_ns, gone_ns })) => Verdict::of(
                CloseClass::Unresolved,
                format!(
                    "our FIN was acknowledged; last seen in FIN_WAIT2 {}, gone {} after our FIN: tcp_fin_timeout or a RST",
                    last_ns.map_or("never".to_string(), |last_ns| format!("{} after our FIN", since_fin(last_ns))),
                    since_fin(gone_ns)
                ),
            ),
            Some(Lingered::Unresolved(Unresolved::StillInFinWait2 { last_ns, stopped_ns })) => Verdict::of(
                CloseClass::Unresolved,
                format!(
                    "our FIN was acknowledged; the tracer stopped {} after it, while the timewait socket waited in FIN_WAIT2 for the peer's FIN{}",
                    since_fin(stopped_ns),
                    last_ns.map_or(String::new(), |last_ns| format!(" (last seen there {} after our FIN)", since_fin(last_ns)))
                ),
            ),
            Some(Lingered::Unresolved(Unresolved::NotFollowed)) | None => Verdict::of(
                CloseClass::Unresolved,
                "our FIN was acknowledged; the kernel's timewait socket took over in FIN_WAIT2 and could not be followed (snapshots off or its namespace unreachable)",
            ),
        }
    }
}

/// Our FIN went unanswered, but the peer had stopped acknowledging our data before it: the
/// data's silence, told with how long before our FIN it began.
fn data_then_fin_unanswered(connection: &Connection) -> Verdict {
    let fin_ns = connection.first_fin_ns.unwrap_or_default();
    let before = fin_ns.saturating_sub(connection.first_retransmit_ns.unwrap_or(fin_ns));
    Verdict::of(
        CloseClass::PeerSilent,
        format!(
            "our data went unacknowledged from {:.1} s before our FIN, then our FIN too ({} retransmits): the peer fell silent \
             before we closed",
            before as f64 / 1e9,
            connection.retransmits
        ),
    )
}

/// A RST in the peer's name ended the connection `place` ("in ESTABLISHED"): the class names
/// the peer or the path only where the RST's TTL was checked against the peer's own packets.
fn reset_verdict(judged: Option<(RstFrom, Option<String>)>, place: &str) -> Verdict {
    let (origin, against) = judged.unzip();
    let (class, detail) = match origin {
        Some(origin @ RstFrom::Path { .. }) => {
            (CloseClass::ResetByPath, format!("reset {place} by the path, not the peer: {}", provenance::describe(origin)))
        }
        Some(origin @ RstFrom::Peer { .. }) => {
            (CloseClass::ResetByPeer, format!("reset by the peer {place}: {}", provenance::describe(origin)))
        }
        Some(origin @ RstFrom::NoReference { .. }) => (
            CloseClass::ResetUnverified,
            format!("reset {place} by a RST in the peer's name whose sender is unchecked: {}", provenance::describe(origin)),
        ),
        None => (
            CloseClass::ResetUnverified,
            format!(
                "reset {place} by a RST in the peer's name whose sender is unchecked: its packet was not seen (that needs the \
                 tp_btf hooks netif_receive_skb or tcp_probe)"
            ),
        ),
    };
    Verdict { rst_from: origin, ..Verdict::of(class, with_reference(detail, against.flatten())) }
}

/// `detail`, then what the RST was compared with, where it was.
fn with_reference(detail: String, against: Option<String>) -> String {
    match against {
        Some(against) => format!("{detail} ({against})"),
        None => detail,
    }
}

pub(super) struct Verdict {
    pub class: CloseClass,
    pub detail: Cow<'static, str>,
    pub time_wait: bool,
    pub fin_wait2_expired: bool,
    pub rst_from: Option<RstFrom>,
    /// The keepalive timer ended it: the peer did not answer its probes.
    pub keepalive: bool,
    /// Where on this host its packets were dropped ([`super::Ended::dropped_in`]).
    pub dropped_in: Option<String>,
}

impl Verdict {
    fn of(class: CloseClass, detail: impl Into<Cow<'static, str>>) -> Verdict {
        Verdict {
            class,
            detail: detail.into(),
            time_wait: false,
            fin_wait2_expired: false,
            rst_from: None,
            keepalive: false,
            dropped_in: None,
        }
    }

    /// Says where the RST's taking is known from when its event was lost.
    fn noting_lost_reset(mut self, connection: &Connection) -> Verdict {
        if connection.reset_event_lost {
            self.detail = format!("{} (its reset event was lost; the socket's error says the kernel took this RST)", self.detail).into();
        }
        self
    }
}

/// For sockets whose birth we did not see: the side whose port is ephemeral is the client.
pub fn guess_role(ephemeral_ports: (u16, u16), local: SocketAddr, remote: SocketAddr) -> Role {
    let ephemeral = |port: u16| (ephemeral_ports.0..=ephemeral_ports.1).contains(&port);
    if ephemeral(local.port()) && !ephemeral(remote.port()) {
        Role::Client
    } else {
        Role::Server
    }
}
