//! The verdict on a connection that ended: its close class and the sentence that explains it,
//! from the facts the state machine gathered (who sent the first FIN, who reset, the kernel's
//! reset reason, retransmits, how long FIN_WAIT2 lasted).
use std::{borrow::Cow, net::SocketAddr};

use super::{CloseClass, Connection, Ending, Lingered, Role, Tracker};
use crate::decode::TcpState;

/// The kernel's reset reasons (`enum sk_rst_reason`, names read from tracefs at run time) that
/// decide a verdict, in one place: a reset for a keepalive timeout means the peer went silent...
pub const KEEPALIVE_TIMEOUT_REASON: &str = "TCP_KEEPALIVE_TIMEOUT";
/// ... and these mean our application aborted the connection (closed with unread data,
/// SO_LINGER 0, disconnect).
const APPLICATION_ABORT_REASONS: &[&str] =
    &["TCP_ABORT_ON_CLOSE", "TCP_ABORT_ON_LINGER", "TCP_ABORT_ON_DATA", "TCP_STATE", "TCP_DISCONNECT_WITH_DATA"];

impl Tracker {
    pub(super) fn classify(&self, connection: &Connection, ending: Ending) -> Verdict {
        let from = ending.from;
        let retransmits = connection.retransmits_in_state;
        if connection.reset_received {
            if from == TcpState::SynSent {
                return Verdict::of(CloseClass::Refused, "connection refused: RST in reply to our SYN");
            }
            return Verdict::of(CloseClass::ResetByPeer, format!("reset by the peer in {from}"));
        }
        if let Some(reset) = connection.reset_sent {
            let reason = reset.reason.and_then(|code| self.reason_name(code));
            return match reason {
                Some(KEEPALIVE_TIMEOUT_REASON) => {
                    Verdict::of(CloseClass::PeerSilent, "keepalive timeout: the peer stopped answering (we sent RST)")
                }
                Some(reason) if APPLICATION_ABORT_REASONS.contains(&reason) => {
                    Verdict::of(CloseClass::Aborted, format!("our application aborted it with RST ({reason})"))
                }
                None if reset.by_application => Verdict::of(CloseClass::Aborted, "our application aborted it with RST"),
                reason => Verdict::of(
                    CloseClass::ResetByUs,
                    format!("we reset it in {from} ({})", reason.unwrap_or("reason not given by this kernel")),
                ),
            };
        }
        match from {
            TcpState::SynSent if ending.by_application && connection.syn_retransmits == 0 => {
                Verdict::of(CloseClass::Aborted, "connect abandoned by the application")
            }
            TcpState::SynSent if ending.by_application => {
                Verdict::of(CloseClass::ConnectTimeout, format!("application gave up after {} SYN retransmits", connection.syn_retransmits))
            }
            TcpState::SynSent => {
                Verdict::of(CloseClass::ConnectTimeout, format!("no answer to our SYN ({} retransmits)", connection.syn_retransmits))
            }
            TcpState::FinWait2
                if ending.lingered == Some(Lingered::Expired)
                    || (ending.lingered.is_none() && !self.config.leaves_time_wait(connection, from)) =>
            {
                let waited = ending.at_ns.saturating_sub(connection.previous_state_since_ns);
                let waited = match ending.lingered {
                    Some(Lingered::Expired) => "until tcp_fin_timeout expired".to_string(),
                    _ => format!("FIN_WAIT2 expired after {}s", waited / 1_000_000_000),
                };
                Verdict {
                    fin_wait2_expired: true,
                    ..Verdict::of(CloseClass::PeerSilent, format!("our FIN was acknowledged but the peer never sent its FIN ({waited})"))
                }
            }
            TcpState::FinWait2 => Verdict { time_wait: true, ..Verdict::of(CloseClass::Graceful, "we closed first") },
            TcpState::Closing | TcpState::TimeWait => {
                Verdict { time_wait: true, ..Verdict::of(CloseClass::Graceful, "both sides closed at once") }
            }
            TcpState::LastAck | TcpState::FinWait1 if retransmits >= 3 => {
                Verdict::of(CloseClass::PeerSilent, format!("our FIN was never acknowledged ({retransmits} retransmits in {from})"))
            }
            TcpState::LastAck => Verdict::of(CloseClass::Graceful, "the peer closed first"),
            TcpState::FinWait1 => Verdict::of(CloseClass::PeerSilent, "our FIN was never acknowledged"),
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

pub(super) struct Verdict {
    pub class: CloseClass,
    pub detail: Cow<'static, str>,
    pub time_wait: bool,
    pub fin_wait2_expired: bool,
}

impl Verdict {
    fn of(class: CloseClass, detail: impl Into<Cow<'static, str>>) -> Verdict {
        Verdict { class, detail: detail.into(), time_wait: false, fin_wait2_expired: false }
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
