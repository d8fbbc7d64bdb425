//! The sentence an operator reads for each finding, from the interval's tally.
use super::{FindingKind, Owner, PeerKey, PortReuseExample, SynCause, Tally, DEATH, NS_PER_S};
use crate::track::Role;
use tracer_model::sockets::NamespaceSettings;

fn seconds(ns: u64) -> u64 {
    ns / NS_PER_S
}

/// The three most counted of `labels`, "label ×n".
fn labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a u64)>) -> String {
    let mut labels: Vec<(&String, &u64)> = labels.into_iter().collect();
    labels.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    labels.iter().take(3).map(|(label, n)| format!("{label} ×{n}")).collect::<Vec<_>>().join(", ")
}

fn owner_text(owner: &Option<Owner>) -> String {
    match owner {
        Some(owner) => format!("pid {} ({})", owner.pid, owner.comm),
        None => "the application (pid unknown)".into(),
    }
}

/// The middle value (0 for none).
fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// The human sentence for a finding; `None` when the tally holds nothing worth reporting.
pub(super) fn describe(kind: FindingKind, tally: &Tally, key: PeerKey, settings: &dyn Fn(u32) -> NamespaceSettings) -> Option<String> {
    let n = tally.count;
    Some(match kind {
        FindingKind::CloseWaitStuck if n > 0 => format!(
            "{n} socket(s) in CLOSE_WAIT, sending nothing, for up to {}s (median {}s): the peer closed, {} never called close()",
            seconds(tally.max_age_ns),
            seconds(median(&tally.ages_ns)),
            owner_text(&tally.owner)
        ),
        FindingKind::AcceptQueueFull if n > 0 => {
            let mut text = format!(
                "the accept queue is full ({n} connection(s) waiting, backlog {}): {} is not accepting them",
                tally.backlog,
                owner_text(&tally.owner)
            );
            if tally.dropped > 0 {
                text += &format!("; the kernel dropped {} connection attempt(s) in this namespace (ListenOverflows)", tally.dropped);
            }
            text
        }
        FindingKind::FinUnanswered if n + tally.expired > 0 => {
            let mut text = String::from("our FIN was acknowledged but the peer never sent its own");
            if n > 0 {
                text += &format!("; {n} socket(s) in FIN_WAIT2, receiving nothing, for up to {}s", seconds(tally.max_age_ns));
            }
            if tally.expired > 0 {
                text += &format!("; {} expired in FIN_WAIT2 this interval", tally.expired);
            }
            text
        }
        FindingKind::PeerSilent if n > 0 => format!("{n} connection(s) ended with no FIN or RST from the peer: {}", labels(&tally.labels)),
        FindingKind::PortReuseInTimeWait if n > 0 => format!(
            "{n} new connection(s) reused a 4-tuple still in TIME_WAIT (e.g. {}): something (NAT, L4 balancer) recycles ports faster than TIME_WAIT expires",
            tally.reuse_example.map_or("?".to_string(), |example| example.describe())
        ),
        FindingKind::LocalPortsExhausted if n > 0 => {
            let range = settings(key.netns);
            let held = match tally.closed_first {
                0 => "open connections to it hold them (none we closed first lingers)".to_string(),
                closed_first => format!(
                    "{closed_first} socket(s) to it that we closed first still hold ports of that range (TIME_WAIT, or FIN_WAIT2 \
                     awaiting the peer's FIN; see time_wait_buildup)"
                ),
            };
            format!(
                "{n} connect(s) failed before any SYN: no local port free for this destination (ephemeral range {}-{}, {} ports, \
                 exhausted; EADDRNOTAVAIL to {}); {held}",
                range.ephemeral_ports.0,
                range.ephemeral_ports.1,
                range.ephemeral_port_count(),
                owner_text(&tally.owner)
            )
        }
        FindingKind::TimeWaitBuildup if n > 0 => {
            let range = settings(key.netns);
            format!(
                "{n} sockets in TIME_WAIT = {:.0}% of the {} ephemeral ports ({}-{}); new connections on this path fail as it nears 100%",
                100.0 * n as f64 / range.ephemeral_port_count() as f64,
                range.ephemeral_port_count(),
                range.ephemeral_ports.0,
                range.ephemeral_ports.1
            )
        }
        FindingKind::SynRetransmit if n > 0 && tally.labels.contains_key("SYN-ACK") => {
            format!("{n} SYN-ACK retransmit(s): the client's final ACK did not arrive")
        }
        FindingKind::SynRetransmit if n > 0 => match (&tally.example, tally.syn_cause) {
            (Some(place), _) => format!("{n} SYN retransmit(s): this host dropped our SYNs in {place} (see dropped_here): the peer never saw them"),
            (None, Some(SynCause::BareAck)) => format!(
                "{n} SYN retransmit(s): the server answered our SYN with a bare ACK for an older connection on the same 4-tuple and we reset it (see port_reuse_in_time_wait)"
            ),
            (None, Some(SynCause::AcceptQueueFull)) => {
                format!("{n} SYN retransmit(s): our own listener's accept queue is full and its kernel drops SYNs (see accept_queue_full)")
            }
            (None, None) => format!("{n} SYN retransmit(s): the peer did not answer our SYN"),
        },
        FindingKind::ConnectFailed if tally.refused + tally.timed_out > 0 => {
            let how: Vec<String> = tally.labels.iter().map(|(how, count)| format!("{count} {how}")).collect();
            format!("{} connect(s) failed: {}", tally.refused + tally.timed_out, how.join("; "))
        }
        FindingKind::RstFromPath if n > 0 => format!(
            "{n} connection(s) with {} reset by the path, not the peer: {}",
            key.remote,
            tally.example.as_deref().unwrap_or("?")
        ),
        FindingKind::RstRefused if n > 0 => format!(
            "{n} RST(s) in the name of {} refused by our kernel (out of window, or not exact: answered with a challenge ACK): a blind injector or a confused middlebox",
            key.remote
        ),
        FindingKind::DroppedHere if n > 0 || tally.labels.keys().any(|label| label.starts_with(DEATH)) => dropped_here(tally, &key, n),
        FindingKind::IdleTimeout if n > 0 => tally.example.clone().unwrap_or_default(),
        FindingKind::RstFromPeer if n > 0 => format!("{n} RST(s) from the peer {} to us ({})", key.remote, key.local),
        FindingKind::RstToPeer if n > 0 => format!("{n} RST(s) from us ({}) to the peer {}: {}", key.local, key.remote, labels(&tally.labels)),
        _ => return None,
    })
}

/// `dropped_here`: the drops by reason, then what they killed (connections that died of a
/// silence this host's drops explain), and how.
fn dropped_here(tally: &Tally, key: &PeerKey, n: u64) -> String {
    let (deaths, reasons): (Vec<_>, Vec<_>) = tally.labels.iter().partition(|(label, _)| label.starts_with(DEATH));
    let died: u64 = deaths.iter().map(|(_, count)| **count).sum();
    let deaths: Vec<String> = deaths.iter().map(|(label, count)| format!("{count} by {}", label.trim_start_matches(DEATH))).collect();
    let dropped = if n > 0 {
        format!("this host's kernel dropped {n} packet(s) between {} and {}: {}", key.local, key.remote, labels(reasons))
    } else {
        format!(
            "this host dropped packets between {} and {} elsewhere (see the dropped_here finding of the namespace that did)",
            key.local, key.remote
        )
    };
    match deaths.is_empty() {
        true => dropped,
        false => format!("{dropped}; {died} connection(s) died of it: {}", deaths.join(", ")),
    }
}

impl PortReuseExample {
    fn describe(&self) -> String {
        let tuple = &self.tuple;
        let into = self.time_wait_age_ns.map_or(" in".to_string(), |age| format!(" {:.1}s into", age as f64 / NS_PER_S as f64));
        match (self.role, self.accepted) {
            (_, true) => format!("{} ↔ {} was{into} TIME_WAIT; the SYN was accepted", tuple.local, tuple.remote),
            (Role::Client, false) => format!(
                "our SYN {} → {} was answered with a bare ACK: the server still holds the 4-tuple; we reset it and retransmit the SYN",
                tuple.local, tuple.remote
            ),
            (_, false) => format!(
                "a SYN from {} hit {} ↔ {}{into} TIME_WAIT and was answered with a bare ACK: the client must reset and retransmit its SYN",
                tuple.remote, tuple.local, tuple.remote
            ),
        }
    }
}
