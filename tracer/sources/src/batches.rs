//! The per-CPU batches' flush, planned: which CPUs' batches a poll sends, and up to when the
//! events are then complete. Kept apart from the loader so the rule is unit-tested on its own.

/// Which CPUs' batches a flush sends, the time before which every event is then in the ring
/// buffer, and whether any CPU's batch held records (sent or spared).
#[derive(Debug, PartialEq)]
pub struct FlushPlan {
    pub flush: Vec<u32>,
    pub arrived_ns: u64,
    pub batches_waited: bool,
}

/// Plans a flush that starts at `started_ns`, from each CPU's `COUNTER_PENDING` (the time of
/// its batch's first record, 0 when empty). A batch begun less than `spare_ns` ago is spared:
/// every event of its CPU before that first record has gone already, so the events are complete
/// up to the oldest spared batch's first record, or up to the flush's start when none is spared.
pub fn plan_flush(pending: impl Iterator<Item = (u32, u64)>, started_ns: u64, spare_ns: u64) -> FlushPlan {
    let mut plan = FlushPlan { flush: Vec::new(), arrived_ns: started_ns, batches_waited: false };
    for (cpu, since_ns) in pending.filter(|(_, since_ns)| *since_ns != 0) {
        plan.batches_waited = true;
        if started_ns.saturating_sub(since_ns) < spare_ns {
            plan.arrived_ns = plan.arrived_ns.min(since_ns);
        } else {
            plan.flush.push(cpu);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_spares_the_batches_begun_lately_and_counts_events_complete_up_to_them() {
        let ms = 1_000_000;
        let now = 1_000 * ms;
        // CPU 0 empty, CPU 1 begun 30 ms ago, CPU 2 begun 3 ms ago, CPU 3 begun 8 ms ago.
        let pending = [(0, 0), (1, now - 30 * ms), (2, now - 3 * ms), (3, now - 8 * ms)];
        let plan = plan_flush(pending.into_iter(), now, 10 * ms);
        assert_eq!(
            plan,
            FlushPlan { flush: vec![1], arrived_ns: now - 8 * ms, batches_waited: true },
            "the oldest spared batch bounds the events"
        );
        // Nothing spared (at exit): every waiting batch goes, complete up to the flush's start.
        assert_eq!(plan_flush(pending.into_iter(), now, 0), FlushPlan { flush: vec![1, 2, 3], arrived_ns: now, batches_waited: true });
        // Every CPU idle: nothing to send, and nothing on its way.
        assert_eq!(
            plan_flush([(0, 0), (1, 0)].into_iter(), now, 10 * ms),
            FlushPlan { flush: vec![], arrived_ns: now, batches_waited: false }
        );
    }
}
