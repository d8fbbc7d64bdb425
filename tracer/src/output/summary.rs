//! The periodic summary: a compact table an on-call engineer reads at 80 columns, or one JSON
//! object per interval with the same content.
use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::findings::{FindingKind, Picture};

/// The tracer's own health for the interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    pub seen: u64,
    /// Lost in the kernel because the ring buffer was full.
    pub lost: u64,
    /// Hook firings the kernel skipped because the same program was already running on that CPU
    /// (a softirq landing in the middle of it): events lost too, counted apart because no buffer
    /// size helps (`recursion_misses` of the tracer's programs).
    pub skipped: u64,
    /// Not sent because the kernel program could not read a socket, packet or task.
    pub unreadable: u64,
    pub decode_errors: u64,
    pub evicted: u64,
    pub joined_mid_life: u64,
    /// Output lines dropped because stdout was not being read.
    pub output_dropped: u64,
}

/// Which sources fed this summary, said in every header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceModes {
    pub hooks: String,
    /// "sock_diag (N netns, …)" or why it is off.
    pub snapshot: String,
    /// What the last round of socket dumps cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_round: Option<crate::snapshot::RoundCost>,
    /// Where TIME_WAIT counts come from.
    pub time_wait: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary<'a> {
    pub ts: String,
    pub interval_s: f64,
    #[serde(rename = "final", skip_serializing_if = "std::ops::Not::not")]
    pub last: bool,
    pub events: Health,
    pub modes: &'a SourceModes,
    pub states: &'a BTreeMap<&'static str, u64>,
    pub closes: &'a BTreeMap<&'static str, u64>,
    pub peers: &'a [crate::findings::PeerRow],
    pub findings: &'a [crate::findings::Finding],
}

impl<'a> Summary<'a> {
    pub fn new(ts: String, interval_s: f64, last: bool, events: Health, modes: &'a SourceModes, picture: &'a Picture) -> Self {
        Summary {
            ts,
            interval_s,
            last,
            events,
            modes,
            states: &picture.states,
            closes: &picture.closes,
            peers: &picture.peers,
            findings: &picture.findings,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("plain data always serializes")
    }

    pub fn human(&self, colour: bool) -> String {
        let paint = |code: &str, text: &str| if colour { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() };
        let mut out = String::new();
        let title = format!("── {} {}interval {:.1}s ", self.ts, if self.last { "final, " } else { "" }, self.interval_s);
        let _ = writeln!(out, "{}{}", paint("1", &title), "─".repeat(78usize.saturating_sub(title.chars().count())));
        let health = &self.events;
        let _ = writeln!(
            out,
            "events {} seen, {} lost, {} skipped, {} unreadable, {} undecodable, {} evicted | snapshot: {} | TIME_WAIT from {}",
            health.seen, health.lost, health.skipped, health.unreadable, health.decode_errors, health.evicted, self.modes.snapshot, self.modes.time_wait
        );
        if health.output_dropped > 0 {
            let _ = writeln!(out, "output: {} lines dropped (stdout was not read fast enough)", health.output_dropped);
        }
        let _ = writeln!(out, "states  {}", join_counts(self.states, "none"));
        let _ = writeln!(out, "closed  {}", join_counts(self.closes, "none this interval"));
        if !self.peers.is_empty() {
            let _ = writeln!(out, "top peers by trouble");
            let _ = writeln!(
                out,
                "  {:<22} {:<22} {:>5} {:>4} {:>4} {:>6} {:>5} {:>4} {:>5}",
                "LOCAL", "REMOTE", "ENDED", "RST←", "RST→", "SILENT", "SYN↻", "FAIL", "STUCK"
            );
            for peer in self.peers {
                let _ = writeln!(
                    out,
                    "  {:<22} {:<22} {:>5} {:>4} {:>4} {:>6} {:>5} {:>4} {:>5}",
                    peer.local,
                    peer.remote,
                    peer.ended,
                    peer.rst_from_peer,
                    peer.rst_to_peer,
                    peer.peer_silent,
                    peer.syn_retransmits,
                    peer.failed_connects,
                    peer.stuck
                );
            }
        }
        if self.findings.is_empty() {
            let _ = writeln!(out, "findings: none");
        } else {
            let _ = writeln!(out, "findings");
            for finding in self.findings.iter().take(20) {
                let colour_code = match finding.kind {
                    FindingKind::CloseWaitStuck | FindingKind::PeerSilent | FindingKind::PortReuseInTimeWait => "31",
                    _ => "33",
                };
                let _ = writeln!(
                    out,
                    "  {} {} → {}  now {} total {}",
                    paint(colour_code, finding.kind.name()),
                    finding.local,
                    finding.remote,
                    finding.count,
                    finding.total
                );
                let _ = writeln!(out, "      {}", finding.detail);
                if let Some(name) = &finding.netns_name {
                    let _ = writeln!(out, "      in netns {} ({name})", finding.netns);
                }
                if let Some(record) = &finding.record {
                    let _ = writeln!(out, "      flight record: {record}");
                }
            }
            if self.findings.len() > 20 {
                let _ = writeln!(out, "  (+{} more; --json shows all)", self.findings.len() - 20);
            }
        }
        out
    }
}

fn join_counts(counts: &BTreeMap<&'static str, u64>, empty: &str) -> String {
    if counts.is_empty() {
        return empty.to_string();
    }
    let mut counts: Vec<_> = counts.iter().collect();
    counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    counts.iter().map(|(name, n)| format!("{name} {n}")).collect::<Vec<_>>().join("  ")
}
