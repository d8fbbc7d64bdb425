//! `--timeline FILE.html` (and `/` on the `--metrics-addr` server): the last hours at a glance.
//! Every summary adds a point (sockets by state, closes by class, RSTs each way, SYN retransmits,
//! lost events) and markers (link changes, findings as they begin), and the page is rewritten
//! atomically: one self-contained HTML file, its data inline, drawn as SVG by its own script,
//! nothing fetched. Bounded: at most [`MAX_POINTS`] points within the window and
//! [`MAX_MARKERS`] markers, the oldest dropped first.
use std::{
    collections::{BTreeMap, VecDeque},
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::Serialize;

use crate::files;
use tracer_analysis::{
    find::{FindingKind, IdleThreshold, PeerKey, Picture},
    track::Observation,
};
use tracer_model::{clock::Clock, links::LinkChange, FastMap, FastSet};

/// The page's template: styles, markup and the script that draws it; `/*DATA*/` becomes the data.
const TEMPLATE: &str = include_str!("timeline.html");
/// Points kept at most (6 hours of 5 s intervals).
const MAX_POINTS: usize = 4320;
/// Markers kept at most.
const MAX_MARKERS: usize = 2000;

/// The page as last rendered, shared with the metrics server, which serves it at `/`.
pub type Page = Arc<Mutex<Bytes>>;

/// One interval: its counts belong to the span from `s` to `t`.
#[derive(Clone, Debug, Default, Serialize)]
struct Point {
    /// Wall-clock milliseconds since the epoch, at the start of the interval.
    s: i64,
    /// Wall-clock milliseconds since the epoch, at the end of the interval.
    t: i64,
    states: BTreeMap<&'static str, u64>,
    closes: BTreeMap<&'static str, u64>,
    rst_sent: u64,
    rst_received: u64,
    /// RSTs our kernel refused (out of window, or answered with a challenge ACK).
    rst_refused: u64,
    syn_retransmits: u64,
    /// Packets of traced connections this host's kernel dropped.
    dropped_here: u64,
    /// Events lost or skipped in the kernel during the interval.
    lost: u64,
}

#[derive(Clone, Debug, Serialize)]
struct Marker {
    t: i64,
    /// `link` or `finding`.
    kind: &'static str,
    label: String,
    detail: String,
}

#[derive(Serialize)]
struct Data<'a> {
    host: String,
    written: String,
    points: &'a VecDeque<Point>,
    markers: &'a VecDeque<Marker>,
}

pub struct Timeline {
    path: Option<PathBuf>,
    page: Page,
    window_ms: i64,
    points: VecDeque<Point>,
    markers: VecDeque<Marker>,
    /// This interval's counts so far.
    current: Point,
    /// Findings of the previous summary: a finding gets a marker when it begins, not every interval.
    ongoing: FastSet<(FindingKind, PeerKey)>,
    /// The idle-timeout estimate last marked per service: a new marker each time it moves.
    thresholds: FastMap<PeerKey, IdleThreshold>,
    lost_before: u64,
    host: String,
}

impl Timeline {
    pub fn new(path: Option<PathBuf>, page: Page, window: Duration) -> Timeline {
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
        Timeline {
            path,
            page,
            window_ms: window.as_millis() as i64,
            points: VecDeque::new(),
            markers: VecDeque::new(),
            current: Point::default(),
            ongoing: FastSet::default(),
            thresholds: FastMap::default(),
            lost_before: 0,
            host,
        }
    }

    /// Counts an observation the filters let through.
    pub fn observe(&mut self, observation: &Observation) {
        match observation {
            Observation::ResetSent { .. } => self.current.rst_sent += 1,
            Observation::ResetReceived { .. } => self.current.rst_received += 1,
            Observation::ResetRefused { .. } => self.current.rst_refused += 1,
            Observation::SynRetransmit { .. } | Observation::SynAckRetransmit { .. } => self.current.syn_retransmits += 1,
            Observation::Dropped { .. } => self.current.dropped_here += 1,
            // Connection ends are counted from the picture (closes by class); port reuse and
            // idle gaps show as findings, marked where they began.
            Observation::Ended(_) | Observation::PortReuse { .. } | Observation::IdleSurvived { .. } => {}
        }
    }

    pub fn link(&mut self, change: &LinkChange, clock: &Clock) {
        let detail = format!(
            "{} {} in netns {} (operstate {}, {})",
            change.ifname,
            change.what.verb(),
            change.netns,
            change.operstate,
            if change.carrier { "carrier" } else { "no carrier" }
        );
        self.mark(millis(clock, change.at_ns), "link", format!("{} {}", change.ifname, change.what.name()), detail);
    }

    /// Closes the interval of length `interval` that ends at `now_ns`: a point, and a marker for
    /// each finding that was not in the previous summary, placed where its trouble began.
    pub fn summary(&mut self, now_ns: u64, interval: Duration, picture: &Picture, lost_so_far: u64, clock: &Clock) {
        let mut point = std::mem::take(&mut self.current);
        point.t = millis(clock, now_ns);
        point.s = point.t - interval.as_millis() as i64;
        point.states = picture.states.clone();
        point.closes = picture.closes.clone();
        point.lost = lost_so_far.saturating_sub(std::mem::replace(&mut self.lost_before, lost_so_far));
        let before = std::mem::take(&mut self.ongoing);
        for finding in &picture.findings {
            self.ongoing.insert((finding.kind, finding.key));
            if !before.contains(&(finding.kind, finding.key)) {
                let at = finding.began_ns.map_or(point.t, |began| millis(clock, began));
                self.mark(at, "finding", format!("{} {} → {}", finding.kind.name(), finding.local, finding.remote), finding.detail.clone());
            }
            if let Some(threshold) = finding.idle_threshold.filter(|threshold| self.thresholds.get(&finding.key) != Some(threshold)) {
                if self.thresholds.len() >= MAX_MARKERS {
                    self.thresholds.clear();
                }
                self.thresholds.insert(finding.key, threshold);
                let label = format!("idle timeout {}: {:.1}–{:.1} s", finding.remote, threshold.above_s, threshold.at_most_s);
                self.mark(point.t, "threshold", label, finding.detail.clone());
            }
        }
        let oldest = point.t - self.window_ms;
        self.points.push_back(point);
        while self.points.len() > MAX_POINTS || self.points.front().is_some_and(|p| p.t < oldest) {
            self.points.pop_front();
        }
        while self.markers.front().is_some_and(|m| m.t < oldest) {
            self.markers.pop_front();
        }
    }

    fn mark(&mut self, t: i64, kind: &'static str, label: String, detail: String) {
        if self.markers.len() >= MAX_MARKERS {
            self.markers.pop_front();
        }
        // Markers stay in time order: a finding is placed where it began, before later links.
        let at = self.markers.iter().rposition(|m| m.t <= t).map_or(0, |i| i + 1);
        self.markers.insert(at, Marker { t, kind, label, detail });
    }

    /// The page, with the data inline (`</` escaped, so no string can close the script).
    pub fn render(&self, clock: &Clock, now_ns: u64) -> String {
        let data = Data { host: self.host.clone(), written: clock.format(now_ns), points: &self.points, markers: &self.markers };
        let json = serde_json::to_string(&data).expect("plain data always serializes").replace("</", "<\\/");
        TEMPLATE.replace("/*DATA*/", &json)
    }

    /// Writes a page saying the first summary is on its way: a path that cannot be written is an
    /// error before anything is attached, and the file exists from the start.
    pub fn prepare(path: &Path) -> Result<()> {
        let waiting = "<!DOCTYPE html><meta charset=\"utf-8\"><title>tracer timeline</title><p>The tracer is running; the first summary is not out yet. Reload in a moment.</p>";
        write_atomically(path, waiting.as_bytes()).with_context(|| format!("cannot write --timeline {}", path.display()))
    }

    /// Renders the page for `/` and rewrites `--timeline`'s file: a new file renamed over the
    /// old one, so a browser reloading it never sees half a page.
    pub fn publish(&self, clock: &Clock, now_ns: u64) -> Result<()> {
        let html = self.render(clock, now_ns);
        if let Some(path) = &self.path {
            write_atomically(path, html.as_bytes()).with_context(|| format!("cannot write --timeline {}", path.display()))?;
        }
        *self.page.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Bytes::from(html);
        Ok(())
    }
}

fn millis(clock: &Clock, monotonic_ns: u64) -> i64 {
    clock.wall(monotonic_ns).duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let mut name = path.file_name().context("a file name")?.to_os_string();
    name.push(".tmp");
    let temporary = path.with_file_name(name);
    let _ = fs::remove_file(&temporary);
    let mut file = files::create_private(&temporary)?;
    file.write_all(contents)?;
    file.sync_data()?;
    fs::rename(&temporary, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_analysis::{
        find::{Finding, Picture},
        track::{fixtures, Role},
    };
    use tracer_model::links::LinkWhat;

    fn finding(kind: FindingKind, began_ns: u64) -> Finding {
        let key = PeerKey::new(Role::Server, 1, "10.0.0.1:8080".parse().unwrap(), "10.0.0.7:40000".parse().unwrap());
        let detail = "3 RST(s) received from the peer </script>".into();
        Finding { count: 3, total: 3, detail, began_ns: Some(began_ns), ..fixtures::finding(kind, key) }
    }

    #[test]
    fn the_idle_timeout_estimate_is_marked_when_it_appears_and_each_time_it_narrows() {
        let clock = Clock::now();
        let mut timeline = Timeline::new(None, Page::default(), Duration::from_secs(3600));
        let s = 1_000_000_000u64;
        let estimate = |above_s, at_most_s| {
            let finding =
                Finding { idle_threshold: Some(IdleThreshold { above_s, at_most_s }), ..finding(FindingKind::IdleTimeout, 5 * s) };
            Picture { findings: vec![finding], ..Picture::default() }
        };
        for (at, picture) in [(10, estimate(1.5, 13.0)), (20, estimate(1.5, 13.0)), (30, estimate(4.0, 6.2)), (40, Picture::default())] {
            timeline.summary(at * s, Duration::from_secs(10), &picture, 0, &clock);
        }
        let thresholds: Vec<&str> = timeline.markers.iter().filter(|m| m.kind == "threshold").map(|m| m.label.as_str()).collect();
        assert_eq!(thresholds, ["idle timeout 10.0.0.7:*: 1.5–13.0 s", "idle timeout 10.0.0.7:*: 4.0–6.2 s"]);
    }

    #[test]
    fn points_and_markers_are_bounded_in_time_order_and_a_finding_is_marked_once_where_it_began() {
        let clock = Clock::now();
        let mut timeline = Timeline::new(None, Page::default(), Duration::from_secs(3600));
        let s = 1_000_000_000u64;
        let change = LinkChange {
            at_ns: 100 * s,
            netns: 1,
            ifindex: 2,
            ifname: "eth1".into(),
            what: LinkWhat::Down,
            operstate: "down",
            carrier: false,
        };
        timeline.link(&change, &clock);
        let picture = Picture { findings: vec![finding(FindingKind::RstFromPeer, 102 * s)], ..Picture::default() };
        timeline.summary(110 * s, Duration::from_secs(10), &picture, 4, &clock);
        timeline.summary(120 * s, Duration::from_secs(10), &picture, 4, &clock);
        assert_eq!(timeline.markers.len(), 2, "the finding once, however many summaries hold it");
        let (link, reset) = (&timeline.markers[0], &timeline.markers[1]);
        assert_eq!((link.kind, link.label.as_str()), ("link", "eth1 down"));
        assert_eq!(reset.kind, "finding");
        assert_eq!(reset.t - link.t, 2000, "RSTs began 2 s after eth1 went down");
        assert_eq!((timeline.points[0].lost, timeline.points[1].lost), (4, 0), "lost per interval");
        for n in 0..(MAX_POINTS as u64 + 10) {
            timeline.summary(130 * s + n, Duration::from_nanos(1), &Picture::default(), 4, &clock);
        }
        assert_eq!(timeline.points.len(), MAX_POINTS);
        let html = timeline.render(&clock, 200 * s);
        assert!(
            html.contains("RST(s) received from the peer <\\/script>") && !html.contains("/*DATA*/"),
            "the data is inline and cannot close the script"
        );
        for fetching in [" src=", " href=", "fetch(", "XMLHttpRequest", "@import"] {
            assert!(!html.contains(fetching), "the page fetches nothing: {fetching}");
        }
    }
}
