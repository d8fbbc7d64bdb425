//! The kernel programs' own counts of what went wrong, carried to the summary, JSON and metrics
//! beside the events: the health of the measurement itself.
use tracer_common::KernelMiss;

/// The kernel programs' rare paths so far, by [`KernelMiss`] (in JSON, by name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelMisses([u64; KernelMiss::ALL.len()]);

impl KernelMisses {
    pub fn iter(&self) -> impl Iterator<Item = (KernelMiss, u64)> + '_ {
        KernelMiss::ALL.into_iter().zip(self.0)
    }

    /// Events the kernel programs could not send.
    pub fn not_sent(&self) -> u64 {
        self.iter().filter(|(what, _)| !what.event_sent()).map(|(_, count)| count).sum()
    }

    pub fn any(&self) -> bool {
        self.0.iter().any(|count| *count > 0)
    }
}

impl FromIterator<(KernelMiss, u64)> for KernelMisses {
    fn from_iter<I: IntoIterator<Item = (KernelMiss, u64)>>(counts: I) -> KernelMisses {
        let mut misses = KernelMisses::default();
        for (what, count) in counts {
            if let Some(index) = KernelMiss::ALL.iter().position(|known| *known == what) {
                misses.0[index] += count;
            }
        }
        misses
    }
}

impl serde::Serialize for KernelMisses {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter().map(|(what, count)| (what.name(), count)))
    }
}
