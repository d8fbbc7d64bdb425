//! The periodic summary: a compact table an on-call engineer reads at 80 columns, or one JSON
//! object per interval with the same content.
use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use tracer_analysis::find::{Finding, FindingKind, Picture};
use tracer_model::cost::Cost;

use crate::run_findings::SinceStart;

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
    /// Not sent because the kernel program could not read a socket, packet or record, or met a
    /// socket of an unexpected family: the sum of `kernel_misses` whose event was not sent.
    pub unreadable: u64,
    /// The kernel programs' rare paths, each counted (`--kernel-log` shows them as they happen).
    pub kernel_misses: tracer_model::health::KernelMisses,
    pub decode_errors: u64,
    pub evicted: u64,
    pub joined_mid_life: u64,
    /// Connections found gone whose CLOSE event never came (their lines read unresolved).
    pub closes_unseen: u64,
    /// Output lines dropped because stdout was not being read.
    pub output_dropped: u64,
    /// Events and connections the flight recorder pushed out by its count cap before their
    /// window passed (`--record-max-events`): missing from the records written since.
    pub recorder_overflowed: u64,
    /// Events dropped because the reorder stage was full while a socket snapshot was taken (it
    /// holds every event meanwhile, up to its cap).
    pub held_dropped: u64,
    /// What the tracer cost over the interval (the summary's `cost`, beside these counters).
    #[serde(skip)]
    pub cost: Cost,
}

impl Health {
    /// The counters of events and lines that did not make it, by name (metrics `what`).
    pub fn counters(&self) -> [(&'static str, u64); 10] {
        [
            ("seen", self.seen),
            ("lost", self.lost),
            ("skipped", self.skipped),
            ("unreadable", self.unreadable),
            ("evicted", self.evicted),
            ("decode_errors", self.decode_errors),
            ("output_dropped", self.output_dropped),
            ("recorder_overflowed", self.recorder_overflowed),
            ("held_dropped", self.held_dropped),
            ("closes_unseen", self.closes_unseen),
        ]
    }
}

/// Which sources fed this summary, said in every header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceModes {
    pub hooks: String,
    /// "sock_diag (N netns, …)" or why it is off.
    pub snapshot: String,
    /// What the last round of socket dumps cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_round: Option<tracer_model::sockets::RoundCost>,
    /// Where TIME_WAIT counts come from.
    pub time_wait: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary<'a> {
    pub ts: String,
    pub interval_s: f64,
    #[serde(rename = "final", skip_serializing_if = "std::ops::Not::not")]
    pub last: bool,
    /// Counters since the tracer started.
    pub events: Health,
    /// Events seen in this interval.
    pub interval_events: u64,
    /// What the tracer cost over the interval: its process, and its kernel programs where the
    /// kernel counts them.
    pub cost: Cost,
    pub modes: &'a SourceModes,
    pub states: &'a BTreeMap<&'static str, u64>,
    /// The states counted over every socket; the others count tracked connections only.
    pub states_exact: &'a [&'static str],
    pub closes: &'a BTreeMap<&'static str, u64>,
    pub peers: &'a [tracer_analysis::find::PeerRow],
    /// The slowest handshakes of the interval (p50/p99 per peer).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub handshakes: &'a [tracer_analysis::find::HandshakeRow],
    /// Link changes of the interval.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub links: &'a [tracer_analysis::find::LinkRow],
    /// At most [`JSON_FINDINGS_PER_KIND`] of each kind, most serious first.
    pub findings: Vec<&'a Finding>,
    /// What was left out of `findings`, per kind.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rolled_up: Vec<RolledUp>,
    /// The final summary: every finding of the run, not only of its last interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings_since_start: Option<Vec<SinceStart>>,
}

/// Findings of one kind left out of a summary: how many, and the sum of their counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RolledUp {
    pub kind: FindingKind,
    pub findings: u64,
    pub count: u64,
}

/// Findings per kind in a JSON summary: a reset storm from thousands of client ports must not
/// make one interval's line megabytes long.
pub const JSON_FINDINGS_PER_KIND: usize = 100;
/// Findings per kind in the human summary; the rest is one roll-up line.
const HUMAN_FINDINGS_PER_KIND: usize = 5;

/// Keeps the first `limit` findings of each kind; sums up the rest.
fn roll_up<'a>(findings: impl Iterator<Item = &'a Finding>, limit: usize) -> (Vec<&'a Finding>, Vec<RolledUp>) {
    let mut kept = Vec::new();
    let mut per_kind: BTreeMap<FindingKind, (usize, RolledUp)> = BTreeMap::new();
    for finding in findings {
        let (seen, rolled) = per_kind.entry(finding.kind).or_insert((0, RolledUp { kind: finding.kind, findings: 0, count: 0 }));
        *seen += 1;
        if *seen <= limit {
            kept.push(finding);
        } else {
            rolled.findings += 1;
            rolled.count += finding.count;
        }
    }
    (kept, per_kind.into_values().map(|(_, rolled)| rolled).filter(|rolled| rolled.findings > 0).collect())
}

impl<'a> Summary<'a> {
    pub fn new(
        ts: String,
        interval_s: f64,
        last: bool,
        (events, interval_events): (Health, u64),
        modes: &'a SourceModes,
        picture: &'a Picture,
    ) -> Self {
        let (findings, rolled_up) = roll_up(picture.findings.iter(), JSON_FINDINGS_PER_KIND);
        Summary {
            ts,
            interval_s,
            last,
            events,
            interval_events,
            cost: events.cost,
            modes,
            states: &picture.states,
            states_exact: &picture.states_exact,
            closes: &picture.closes,
            peers: &picture.peers,
            handshakes: &picture.handshakes,
            links: &picture.links,
            findings,
            rolled_up,
            findings_since_start: None,
        }
    }

    /// The final summary's account of the whole run.
    pub fn with_since_start(self, rows: Vec<SinceStart>) -> Self {
        Summary { findings_since_start: Some(rows), ..self }
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("plain data always serializes")
    }

    /// The process's share of a core (and per event), then its kernel programs'.
    fn cost_line(&self) -> String {
        let share = |ns: u64| format!("{:.1} % of a core", ns as f64 / (self.interval_s * 1e7));
        let mut line = format!("this process {}", share(self.cost.process_cpu_ns));
        if let Some(per_event) = self.cost.process_cpu_ns.checked_div(self.interval_events) {
            let _ = write!(line, " ({per_event} ns per event)");
        }
        match self.cost.kernel {
            Some(kernel) => match kernel.run_ns.checked_div(kernel.runs) {
                Some(per_run) => {
                    let _ = write!(line, "; its kernel programs {} ({} runs, {per_run} ns each)", share(kernel.run_ns), kernel.runs);
                }
                None => line.push_str("; its kernel programs did not run"),
            },
            None => line.push_str("; its kernel programs not counted (sysctl kernel.bpf_stats_enabled=1 counts every BPF program's runs)"),
        }
        line
    }

    pub fn human(&self, colour: bool) -> String {
        let paint = |code: &str, text: &str| if colour { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() };
        let mut out = String::new();
        let title = format!("── {} {}interval {:.1}s ", self.ts, if self.last { "final, " } else { "" }, self.interval_s);
        let _ = writeln!(out, "{}{}", paint("1", &title), "─".repeat(78usize.saturating_sub(title.chars().count())));
        let health = &self.events;
        let _ = writeln!(
            out,
            "events  {} this interval, {} since start; since start {} lost, {} skipped, {} unreadable, {} undecodable, {} evicted\nsources snapshot: {} | TIME_WAIT from {}",
            self.interval_events,
            health.seen,
            health.lost,
            health.skipped,
            health.unreadable,
            health.decode_errors,
            health.evicted,
            self.modes.snapshot,
            self.modes.time_wait
        );
        let _ = writeln!(out, "cost    {}", self.cost_line());
        if health.output_dropped > 0 {
            let _ = writeln!(out, "output: {} lines dropped (stdout was not read fast enough)", health.output_dropped);
        }
        if health.kernel_misses.any() {
            let misses: Vec<String> =
                health.kernel_misses.iter().filter(|(_, n)| *n > 0).map(|(what, n)| format!("{} {n}", what.name())).collect();
            let _ = writeln!(out, "kernel: {} (--kernel-log warn shows each)", misses.join(", "));
        }
        if health.closes_unseen > 0 {
            let _ = writeln!(
                out,
                "closes: {} connections found gone whose CLOSE event never came (lost or skipped): ended unresolved unless a RST said how",
                health.closes_unseen
            );
        }
        if health.held_dropped > 0 {
            let _ = writeln!(
                out,
                "reorder: {} events dropped while socket snapshots ran (the held events reached their cap; the snapshots are slow: see the sources line)",
                health.held_dropped
            );
        }
        if health.recorder_overflowed > 0 {
            let _ = writeln!(
                out,
                "flight recorder: {} events pushed out before their window (raise --record-max-events)",
                health.recorder_overflowed
            );
        }
        if !self.links.is_empty() {
            let changes: Vec<String> = self
                .links
                .iter()
                .map(|link| {
                    let at = link.ts.split('T').nth(1).unwrap_or(&link.ts).trim_end_matches('Z');
                    let down = link.down_for_s.map_or(String::new(), |seconds| format!(" after {seconds:.1} s down"));
                    format!("{} {} at {at}{down}", link.ifname, link.what.name())
                })
                .collect();
            let _ = writeln!(out, "links   {}", changes.join("; "));
        }
        let (exact, tracked): (BTreeMap<&str, u64>, BTreeMap<&str, u64>) =
            self.states.iter().map(|(state, n)| (*state, *n)).partition(|(state, _)| self.states_exact.contains(state));
        if !self.states_exact.is_empty() {
            let every: BTreeMap<&str, u64> =
                self.states_exact.iter().map(|state| (*state, exact.get(state).copied().unwrap_or(0))).collect();
            let _ = writeln!(out, "sockets {} (all sockets, from sock_diag)", join_counts(&every, "none"));
        }
        let _ = writeln!(out, "tracked {} (open connections the tracer saw change state)", join_counts(&tracked, "none"));
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
        if !self.handshakes.is_empty() {
            let _ = writeln!(out, "slowest handshakes (SYN → ESTABLISHED)");
            let _ = writeln!(out, "  {:<22} {:<22} {:>5} {:>9} {:>9}", "LOCAL", "REMOTE", "CONNS", "p50 ms", "p99 ms");
            for row in self.handshakes {
                let _ =
                    writeln!(out, "  {:<22} {:<22} {:>5} {:>9.2} {:>9.2}", row.local, row.remote, row.connections, row.p50_ms, row.p99_ms);
            }
        }
        if self.findings.is_empty() {
            let _ = writeln!(out, "findings: none");
        } else {
            let _ = writeln!(out, "findings");
            let (shown, mut rolled_up) = roll_up(self.findings.iter().copied(), HUMAN_FINDINGS_PER_KIND);
            // Those left out of the JSON too count in the roll-up line.
            for beyond in &self.rolled_up {
                match rolled_up.iter_mut().find(|rolled| rolled.kind == beyond.kind) {
                    Some(rolled) => {
                        rolled.findings += beyond.findings;
                        rolled.count += beyond.count;
                    }
                    None => rolled_up.push(*beyond),
                }
            }
            for finding in shown {
                let colour_code = match finding.kind {
                    FindingKind::CloseWaitStuck | FindingKind::PeerSilent | FindingKind::PortReuseInTimeWait => "31",
                    _ => "33",
                };
                // Local and remote named, not an arrow: an arrow read as the direction of a reset.
                let counts = if finding.kind.is_state() {
                    format!("{} now, {} since start", finding.count, finding.total)
                } else {
                    format!("{} this interval, {} since start", finding.count, finding.total)
                };
                let _ = writeln!(
                    out,
                    "  {}  local {}  remote {}  ({counts})",
                    paint(colour_code, finding.kind.name()),
                    finding.local,
                    finding.remote,
                );
                let _ = writeln!(out, "      {}", finding.detail);
                if let Some(name) = &finding.netns_name {
                    let _ = writeln!(out, "      in netns {} ({name})", finding.netns);
                }
                if let Some(record) = &finding.record {
                    let _ = writeln!(out, "      flight record: {record}");
                }
            }
            for rolled in &rolled_up {
                let _ = writeln!(out, "  + {} more {} ({} in all)", rolled.findings, rolled.kind.name(), rolled.count);
            }
        }
        if let Some(rows) = &self.findings_since_start {
            crate::run_findings::human_section(rows, &mut out);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_analysis::{
        find::{LinkRow, PeerKey},
        track::{fixtures, Role},
    };
    use tracer_model::{cost::KernelCost, links::LinkWhat};

    fn finding(kind: FindingKind, port: u16, count: u64) -> Finding {
        let key = PeerKey::new(Role::Server, 1, format!("10.0.0.1:{port}").parse().unwrap(), "10.0.0.2:80".parse().unwrap());
        Finding {
            remote: "10.0.0.2:80".into(),
            count,
            total: count,
            detail: format!("{count} RST(s) sent"),
            ..fixtures::finding(kind, key)
        }
    }

    #[test]
    fn a_storm_of_one_kind_is_rolled_up_and_other_kinds_still_show() {
        let mut findings: Vec<Finding> = (0..150).map(|port| finding(FindingKind::RstToPeer, 40000 + port, 2)).collect();
        findings.push(finding(FindingKind::CloseWaitStuck, 8080, 1));
        let picture = Picture { findings, ..Picture::default() };
        let modes = SourceModes::default();
        let summary = Summary::new("2026-11-23T00:00:00Z".into(), 10.0, false, (Health::default(), 0), &modes, &picture);

        let json: serde_json::Value = serde_json::from_str(&summary.json()).unwrap();
        let kinds: Vec<&str> = json["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds.iter().filter(|kind| **kind == "rst_to_peer").count(), JSON_FINDINGS_PER_KIND);
        assert!(kinds.contains(&"close_wait_stuck"));
        assert_eq!(json["rolled_up"], serde_json::json!([{"kind": "rst_to_peer", "findings": 50, "count": 100}]));

        let human = summary.human(false);
        assert_eq!(human.lines().filter(|line| line.trim_start().starts_with("rst_to_peer")).count(), 5, "{human}");
        assert!(human.contains("  + 145 more rst_to_peer (290 in all)"), "{human}");
        assert!(human.contains("close_wait_stuck  local 10.0.0.1:8080"), "{human}");
    }

    #[test]
    fn the_human_summary_shows_every_table_and_only_the_health_lines_that_matter() {
        let mut picture = Picture {
            states: [("ESTABLISHED", 3), ("CLOSE_WAIT", 1)].into_iter().collect(),
            states_exact: vec!["CLOSE_WAIT", "LISTEN"],
            closes: [("graceful", 7), ("reset_by_peer", 2)].into_iter().collect(),
            peers: vec![tracer_analysis::find::PeerRow {
                local: "10.0.0.1:8080".into(),
                remote: "10.0.0.2:*".into(),
                ended: 9,
                rst_from_peer: 2,
                stuck: 1,
                ..Default::default()
            }],
            handshakes: vec![tracer_analysis::find::HandshakeRow {
                local: "10.0.0.1:*".into(),
                remote: "10.0.0.3:443".into(),
                netns: 1,
                connections: 4,
                p50_ms: 0.25,
                p99_ms: 12.5,
            }],
            findings: vec![finding(FindingKind::CloseWaitStuck, 8080, 1)],
            links: vec![
                LinkRow {
                    ts: "2026-11-23T00:00:01.500000Z".into(),
                    netns: 1,
                    ifname: "veth0".into(),
                    what: LinkWhat::Down,
                    down_for_s: None,
                },
                LinkRow {
                    ts: "2026-11-23T00:00:06.500000Z".into(),
                    netns: 1,
                    ifname: "veth0".into(),
                    what: LinkWhat::Up,
                    down_for_s: Some(5.0),
                },
            ],
        };
        picture.findings[0].netns_name = Some("blue".into());
        picture.findings[0].record = Some("/var/lib/tracer/r1.jsonl".into());
        let modes = SourceModes {
            hooks: String::new(),
            snapshot: "sock_diag (1 netns, 1 dumped in 0 ms)".into(),
            snapshot_round: None,
            time_wait: "sock_diag",
        };
        let kernel_misses = [(tracer_common::KernelMiss::Task, 3)].into_iter().collect();
        let cost = Cost { process_cpu_ns: 150_000_000, kernel: Some(KernelCost { runs: 1_000_000, run_ns: 198_000_000 }) };
        let health = Health { seen: 40, kernel_misses, recorder_overflowed: 5, cost, ..Health::default() };
        let summary = Summary::new("2026-11-23T00:00:00Z".into(), 10.0, true, (health, 12), &modes, &picture);
        let expected = "\
── 2026-11-23T00:00:00Z final, interval 10.0s ────────────────────────────────
events  12 this interval, 40 since start; since start 0 lost, 0 skipped, 0 unreadable, 0 undecodable, 0 evicted
sources snapshot: sock_diag (1 netns, 1 dumped in 0 ms) | TIME_WAIT from sock_diag
cost    this process 1.5 % of a core (12500000 ns per event); its kernel programs 2.0 % of a core (1000000 runs, 198 ns each)
kernel: task_unreadable 3 (--kernel-log warn shows each)
flight recorder: 5 events pushed out before their window (raise --record-max-events)
links   veth0 down at 00:00:01.500000; veth0 up at 00:00:06.500000 after 5.0 s down
sockets CLOSE_WAIT 1  LISTEN 0 (all sockets, from sock_diag)
tracked ESTABLISHED 3 (open connections the tracer saw change state)
closed  graceful 7  reset_by_peer 2
top peers by trouble
  LOCAL                  REMOTE                 ENDED RST← RST→ SILENT  SYN↻ FAIL STUCK
  10.0.0.1:8080          10.0.0.2:*                 9    2    0      0     0    0     1
slowest handshakes (SYN → ESTABLISHED)
  LOCAL                  REMOTE                 CONNS    p50 ms    p99 ms
  10.0.0.1:*             10.0.0.3:443               4      0.25     12.50
findings
  close_wait_stuck  local 10.0.0.1:8080  remote 10.0.0.2:80  (1 now, 1 since start)
      1 RST(s) sent
      in netns 1 (blue)
      flight record: /var/lib/tracer/r1.jsonl
";
        assert_eq!(summary.human(false), expected);
        let quiet =
            Summary::new("2026-11-23T00:00:10Z".into(), 10.0, false, (Health::default(), 0), &modes, &Picture::default()).human(false);
        assert!(!quiet.contains("kernel:") && !quiet.contains("flight recorder") && quiet.contains("findings: none"), "{quiet}");
        assert!(quiet.contains("cost    this process 0.0 % of a core; its kernel programs not counted"), "{quiet}");
        let json: serde_json::Value = serde_json::from_str(&summary.json()).unwrap();
        assert_eq!(json["events"]["kernel_misses"]["task_unreadable"], 3);
        assert_eq!(json["events"]["recorder_overflowed"], 5);
        assert_eq!(json["cost"], serde_json::json!({"process_cpu_ns": 150_000_000, "kernel": {"runs": 1_000_000, "run_ns": 198_000_000}}));
        assert_eq!(json["final"], true);
        assert_eq!(
            json["links"][1],
            serde_json::json!({"ts": "2026-11-23T00:00:06.500000Z", "netns": 1, "ifname": "veth0", "what": "up", "down_for_s": 5.0})
        );
    }
}
