//! What the tracer costs the host it watches, said as it runs: its own process's CPU and, where
//! the kernel counts them (`kernel.bpf_stats_enabled`), its programs' runs and their time. A
//! tool left running on a busy server has to say what it takes; these are the figures its
//! benchmarks hold it to.
use serde::Serialize;

/// Running totals since the tracer started, read at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CostReading {
    /// CPU time of every thread of the process, user and system.
    pub process_cpu_ns: u64,
    /// Runs of the tracer's kernel programs, and their time: the kernel counts both only while
    /// its BPF statistics are on.
    pub kernel_runs: u64,
    pub kernel_run_ns: u64,
    /// Whether the kernel's BPF statistics were on at this reading.
    pub kernel_counted: bool,
}

/// The cost over one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cost {
    pub process_cpu_ns: u64,
    /// `None` unless the kernel counted the programs' runs from the interval's start to its end.
    pub kernel: Option<KernelCost>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelCost {
    pub runs: u64,
    pub run_ns: u64,
}

impl Cost {
    pub fn between(before: &CostReading, after: &CostReading) -> Cost {
        Cost {
            process_cpu_ns: after.process_cpu_ns.saturating_sub(before.process_cpu_ns),
            kernel: (before.kernel_counted && after.kernel_counted).then(|| KernelCost {
                runs: after.kernel_runs.saturating_sub(before.kernel_runs),
                run_ns: after.kernel_run_ns.saturating_sub(before.kernel_run_ns),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_costs_the_difference_and_the_kernel_side_only_when_counted_throughout() {
        let before = CostReading { process_cpu_ns: 1_000_000, kernel_runs: 10, kernel_run_ns: 2_000, kernel_counted: true };
        let after = CostReading { process_cpu_ns: 3_500_000, kernel_runs: 1_010, kernel_run_ns: 202_000, kernel_counted: true };
        assert_eq!(
            Cost::between(&before, &after),
            Cost { process_cpu_ns: 2_500_000, kernel: Some(KernelCost { runs: 1_000, run_ns: 200_000 }) }
        );
        // Statistics switched on (or off) during the interval: its counts cover part of it only.
        for (on_before, on_after) in [(false, true), (true, false), (false, false)] {
            let cost =
                Cost::between(&CostReading { kernel_counted: on_before, ..before }, &CostReading { kernel_counted: on_after, ..after });
            assert_eq!(cost, Cost { process_cpu_ns: 2_500_000, kernel: None });
        }
    }
}
