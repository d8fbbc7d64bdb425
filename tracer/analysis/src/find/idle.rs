//! The idle timeout of a device in the path, estimated from how long connections to one peer
//! had been idle when they died, against how long others had been idle and lived on.
//!
//! NAT gateways, firewalls and load balancers forget a flow that stays idle past their timeout;
//! the next packet either side sends is dropped (or reset), and the connection dies without a
//! FIN. Deaths cluster above that timeout, survivors stay below it: the estimate is the interval
//! between the two. With too little evidence, or evidence that contradicts itself, there is none.
use std::collections::VecDeque;

use super::{FindingKind, Findings, IdleThreshold, PeerKey};

/// Gaps kept per peer, each kind (the latest).
const SAMPLES: usize = 64;
/// At least this many deaths and survivors before an estimate is made.
const ENOUGH: usize = 3;
/// The share of either side that may contradict the estimate (a death after a short idle that
/// had another cause, a survivor kept alive by traffic the tracer did not see).
const NOISE: f64 = 0.2;

/// The idle gaps seen for one peer.
#[derive(Clone, Debug, Default)]
pub struct IdleEvidence {
    deaths: VecDeque<u64>,
    lived: VecDeque<u64>,
    /// Deaths since the last summary, and how many of those were resets.
    pub new_deaths: u64,
    pub new_resets: u64,
}

impl IdleEvidence {
    pub fn died(&mut self, gap_ns: u64, reset: bool) {
        push(&mut self.deaths, gap_ns);
        self.new_deaths += 1;
        self.new_resets += u64::from(reset);
    }

    pub fn lived(&mut self, gap_ns: u64) {
        push(&mut self.lived, gap_ns);
    }

    pub fn estimate(&self) -> Option<Estimate> {
        estimate(self.deaths.iter().copied().collect(), self.lived.iter().copied().collect())
    }
}

fn push(samples: &mut VecDeque<u64>, gap_ns: u64) {
    if samples.len() >= SAMPLES {
        samples.pop_front();
    }
    samples.push_back(gap_ns);
}

/// The idle timeout lies between `above_ns` (the longest gap connections lived through) and
/// `below_ns` (the shortest gap they died after), with the counts that support it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    pub above_ns: u64,
    pub below_ns: u64,
    pub deaths: usize,
    pub deaths_at_or_past: usize,
    pub lived: usize,
    pub lived_at_or_under: usize,
}

/// The interval, or nothing: too few of either, or more than [`NOISE`] of either side on the
/// wrong side of it.
fn estimate(mut deaths: Vec<u64>, mut lived: Vec<u64>) -> Option<Estimate> {
    if deaths.len() < ENOUGH || lived.len() < ENOUGH {
        return None;
    }
    deaths.sort_unstable();
    lived.sort_unstable();
    let tolerated = |count: usize| (count as f64 * NOISE).floor() as usize;
    // The longest gap survivors stay under, ignoring the tolerated outliers; the shortest death
    // past it; then the longest survivor short of that death.
    let robust_above = lived[lived.len() - 1 - tolerated(lived.len())];
    let below_ns = *deaths.iter().find(|gap| **gap > robust_above)?;
    let above_ns = *lived.iter().rev().find(|gap| **gap < below_ns)?;
    let deaths_at_or_past = deaths.iter().filter(|gap| **gap >= below_ns).count();
    let lived_at_or_under = lived.iter().filter(|gap| **gap <= above_ns).count();
    if deaths_at_or_past < ENOUGH
        || deaths.len() - deaths_at_or_past > tolerated(deaths.len())
        || lived.len() - lived_at_or_under > tolerated(lived.len())
    {
        return None;
    }
    Some(Estimate { above_ns, below_ns, deaths: deaths.len(), deaths_at_or_past, lived: lived.len(), lived_at_or_under })
}

/// "connections to 10.0.2.2:8080 idle ≥ 13 s died (6 of 6); idle ≤ 4 s lived (6 of 6): …"
pub fn describe(peer: &str, estimate: &Estimate, resets: bool) -> String {
    let seconds = |ns: u64| {
        let s = ns as f64 / 1e9;
        if s < 10.0 {
            format!("{s:.1}")
        } else {
            format!("{s:.0}")
        }
    };
    let (above, below) = (seconds(estimate.above_ns), seconds(estimate.below_ns));
    format!(
        "connections to {peer} idle ≥ {below} s died {} ({} of {}); idle ≤ {above} s lived ({} of {}): a device in the path forgets idle connections after {above}–{below} s; keepalive below {above} s keeps them",
        if resets { "or were reset" } else { "silently" },
        estimate.deaths_at_or_past,
        estimate.deaths,
        estimate.lived_at_or_under,
        estimate.lived
    )
}

impl Findings {
    pub(super) fn idle_evidence(&mut self, key: PeerKey) -> Option<&mut IdleEvidence> {
        if self.idle.len() >= self.config.max_peers && !self.idle.contains_key(&key) {
            self.evicted += 1;
            return None;
        }
        Some(self.idle.entry(key).or_default())
    }

    /// Peers whose deaths this interval fall past an idle gap their survivors stay under.
    pub(super) fn find_idle_timeouts(&mut self) {
        let mut found = Vec::new();
        for (key, evidence) in &mut self.idle {
            let (deaths, resets) = (std::mem::take(&mut evidence.new_deaths), std::mem::take(&mut evidence.new_resets));
            if deaths == 0 {
                continue;
            }
            if let Some(estimate) = evidence.estimate() {
                found.push((*key, deaths, describe(&key.remote.to_string(), &estimate, resets > 0), estimate));
            }
        }
        for (key, deaths, detail, estimate) in found {
            if let Some(tally) = self.tally(FindingKind::IdleTimeout, key) {
                tally.count += deaths;
                tally.example = Some(detail);
                tally.idle_threshold = Some(IdleThreshold::of(&estimate));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn seconds(values: &[f64]) -> Vec<u64> {
        values.iter().map(|s| (s * 1e9) as u64).collect()
    }

    #[test]
    fn deaths_above_and_survivors_below_give_the_interval_between_them() {
        let found = estimate(seconds(&[13.0, 14.0, 20.0, 15.0, 30.0, 13.5]), seconds(&[1.0, 2.0, 4.0, 3.0, 2.5, 1.5])).unwrap();
        assert_eq!((found.above_ns, found.below_ns), (4 * S, 13 * S));
        assert_eq!((found.deaths_at_or_past, found.deaths, found.lived_at_or_under, found.lived), (6, 6, 6, 6));
        let said = describe("10.0.2.2:8080", &found, false);
        assert!(said.contains("idle ≥ 13 s died silently (6 of 6); idle ≤ 4.0 s lived (6 of 6)"), "{said}");
        assert!(said.contains("after 4.0–13 s; keepalive below 4.0 s"), "{said}");
    }

    #[test]
    fn a_few_outliers_on_either_side_are_tolerated_and_the_interval_still_holds_the_truth() {
        // The device forgets after 10 s. One death after 2 s had another cause; one survivor at
        // 40 s was kept alive by traffic the tracer did not see.
        let deaths = seconds(&[2.0, 11.0, 12.0, 15.0, 20.0, 25.0, 11.5, 14.0, 30.0, 18.0]);
        let lived = seconds(&[1.0, 3.0, 5.0, 8.0, 9.0, 40.0, 2.0, 6.0, 7.0, 4.0]);
        let found = estimate(deaths, lived).unwrap();
        assert!(found.above_ns <= 10 * S && found.below_ns >= 10 * S, "{found:?}");
    }

    #[test]
    fn too_little_or_contradicting_evidence_says_nothing() {
        assert_eq!(estimate(seconds(&[13.0, 14.0]), seconds(&[1.0, 2.0, 3.0])), None, "two deaths are not enough");
        assert_eq!(estimate(seconds(&[13.0, 14.0, 15.0]), seconds(&[1.0, 2.0])), None, "nor two survivors");
        // Deaths at every gap, survivors at every gap: not idleness.
        let mixed = seconds(&[1.0, 5.0, 9.0, 13.0, 17.0]);
        assert_eq!(estimate(mixed.clone(), mixed), None);
        // Survivors above most deaths: no device forgets at one timeout here.
        assert_eq!(estimate(seconds(&[5.0, 6.0, 7.0, 8.0]), seconds(&[10.0, 20.0, 30.0, 1.0])), None);
    }

    #[test]
    fn evidence_is_bounded_and_counts_what_is_new() {
        let mut evidence = IdleEvidence::default();
        for i in 0..200 {
            evidence.lived(i * S);
        }
        evidence.died(300 * S, true);
        assert_eq!((evidence.lived.len(), evidence.new_deaths, evidence.new_resets), (SAMPLES, 1, 1));
    }
}
