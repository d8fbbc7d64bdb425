//! Findings over the whole run. A summary covers one interval; an operator who stops the tracer
//! wants what the whole run found, and one who asked for `--connections` (whose stdout holds
//! connection lines, not summaries) must still hear of a finding when it arises. This keeps the
//! latest of each (kind, peer) since the start, bounded, and says which arose or grew.
use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use tracer_analysis::find::{Finding, FindingKind, PeerKey};

/// (kind, peer) pairs remembered since the start, at most; beyond, new ones are counted only.
const MAX_REMEMBERED: usize = 4096;

/// One (kind, peer) as the run found it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SinceStart {
    /// Its latest finding: `total` is the count since start, `detail` the latest sentence.
    #[serde(flatten)]
    pub finding: Finding,
    /// The summaries (UTC) it first and last appeared in.
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Default)]
pub struct RunFindings {
    seen: BTreeMap<(FindingKind, PeerKey), SinceStart>,
    /// Findings not remembered because the table was full (the health line's `evicted`).
    pub evicted: u64,
}

impl RunFindings {
    /// Takes an interval's findings, made at `ts`; returns those that arose or grew: new, or with
    /// a `total` past what the run had seen (a stuck socket flagged again is not news).
    fn update<'a>(&mut self, findings: &'a [Finding], ts: &str) -> Vec<&'a Finding> {
        let mut news = Vec::new();
        for finding in findings {
            let key = (finding.kind, finding.key);
            if let Some(known) = self.seen.get_mut(&key) {
                if finding.total > known.finding.total {
                    news.push(finding);
                }
                known.finding = finding.clone();
                known.last_seen = ts.to_string();
                continue;
            }
            news.push(finding);
            if self.seen.len() >= MAX_REMEMBERED {
                self.evicted += 1;
            } else {
                self.seen.insert(key, SinceStart { finding: finding.clone(), first_seen: ts.to_string(), last_seen: ts.to_string() });
            }
        }
        news
    }

    /// [`RunFindings::update`], and where stdout holds connection lines (`announce`), each finding
    /// that arose as a line of its own there.
    pub fn take(&mut self, findings: &[Finding], ts: &str, announce: Option<&mut crate::Sink>) {
        let news = self.update(findings, ts);
        if let Some(sink) = announce {
            for finding in news {
                sink.line(bytes::Bytes::from(finding_line(ts, finding, sink.json)));
            }
        }
    }

    /// Every (kind, peer) the run found, most serious kind first, the largest totals first.
    pub fn since_start(&self) -> Vec<SinceStart> {
        let mut rows: Vec<SinceStart> = self.seen.values().cloned().collect();
        rows.sort_by(|a, b| a.finding.kind.cmp(&b.finding.kind).then(b.finding.total.cmp(&a.finding.total)));
        rows
    }
}

/// A finding as its own line, for `--connections` (human or JSON).
#[derive(Serialize)]
struct FindingLine<'a> {
    ts: &'a str,
    finding: &'a Finding,
}

fn finding_line(ts: &str, finding: &Finding, json: bool) -> String {
    if json {
        return serde_json::to_string(&FindingLine { ts, finding }).expect("plain data always serializes");
    }
    let counts = if finding.kind.is_state() { "now" } else { "this interval" };
    let mut line = format!(
        "{ts} finding {}  local {}  remote {}  ({} {counts}, {} since start): {}",
        finding.kind.name(),
        finding.local,
        finding.remote,
        finding.count,
        finding.total,
        finding.detail
    );
    if let Some(name) = &finding.netns_name {
        let _ = write!(line, " [netns {name}]");
    }
    line
}

/// The final summary's section: what the whole run found.
pub(crate) fn human_section(rows: &[SinceStart], out: &mut String) {
    if rows.is_empty() {
        out.push_str("since start: no findings\n");
        return;
    }
    out.push_str("findings since start\n");
    for row in rows {
        let finding = &row.finding;
        let _ = writeln!(
            out,
            "  {}  local {}  remote {}  ({} since start; first {}, last {})\n      {}",
            finding.kind.name(),
            finding.local,
            finding.remote,
            finding.total,
            row.first_seen,
            row.last_seen,
            finding.detail
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_analysis::track::{fixtures, Role};

    fn finding(kind: FindingKind, count: u64, total: u64) -> Finding {
        let key = PeerKey::new(Role::Client, 1, "10.0.0.1:40000".parse().unwrap(), "10.0.0.2:80".parse().unwrap());
        Finding { count, total, detail: format!("{count} of them"), ..fixtures::finding(kind, key) }
    }

    #[test]
    fn a_finding_is_news_when_it_arises_or_grows_and_the_run_keeps_its_latest() {
        let mut run = RunFindings::default();
        let first = [finding(FindingKind::SynRetransmit, 2, 2), finding(FindingKind::CloseWaitStuck, 1, 1)];
        assert_eq!(run.update(&first, "t1").len(), 2, "both arose");
        // The stuck socket is still there (same total); the SYNs went on.
        let second = [finding(FindingKind::SynRetransmit, 3, 5), finding(FindingKind::CloseWaitStuck, 1, 1)];
        let news = run.update(&second, "t2");
        assert_eq!(news.iter().map(|f| f.kind).collect::<Vec<_>>(), [FindingKind::SynRetransmit]);
        // A quiet interval: nothing new, and the run still holds both.
        assert!(run.update(&[], "t3").is_empty());
        let rows = run.since_start();
        assert_eq!(
            rows.iter().map(|r| (r.finding.kind, r.finding.total)).collect::<Vec<_>>(),
            [(FindingKind::CloseWaitStuck, 1), (FindingKind::SynRetransmit, 5)]
        );
        assert_eq!((rows[1].first_seen.as_str(), rows[1].last_seen.as_str()), ("t1", "t2"));
        let mut human = String::new();
        human_section(&rows, &mut human);
        assert!(human.contains("syn_retransmit  local 10.0.0.1:*  remote 10.0.0.2:80  (5 since start; first t1, last t2)"), "{human}");
        let json: serde_json::Value = serde_json::to_value(&rows[1]).unwrap();
        assert_eq!(
            (json["kind"].as_str(), json["total"].as_u64(), json["first_seen"].as_str()),
            (Some("syn_retransmit"), Some(5), Some("t1"))
        );
    }

    #[test]
    fn a_finding_line_reads_alone() {
        let line = finding_line("2026-12-07T00:00:00Z", &finding(FindingKind::SynRetransmit, 2, 7), false);
        assert_eq!(
            line,
            "2026-12-07T00:00:00Z finding syn_retransmit  local 10.0.0.1:*  remote 10.0.0.2:80  (2 this interval, 7 since start): 2 of them"
        );
        let json: serde_json::Value = serde_json::from_str(&finding_line("t", &finding(FindingKind::SynRetransmit, 2, 7), true)).unwrap();
        assert_eq!((json["ts"].as_str(), json["finding"]["kind"].as_str()), (Some("t"), Some("syn_retransmit")));
    }
}
