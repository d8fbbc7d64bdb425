//! What this run attached and what the kernel gives it: the header line the operator reads
//! (`tracer: attached; hooks: …`), which the summaries, the metrics and the tests read back.
use crate::{btf_offsets, kernel_log::KernelLogLevel};

/// Which hooks and kernel facts this run has; printed so the operator knows what is covered.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Modes {
    /// `inet_sock_set_state` and so on, each "tp_btf", "tracepoint", "fentry"/"fexit" or "unavailable".
    pub hooks: Vec<(String, &'static str)>,
    pub namespaces: bool,
    pub process_context: bool,
    /// Whether `tcp_send_reset` gives the kernel's reset reason (Linux ≥ 6.10).
    pub reset_reasons: bool,
    /// Records travel in per-CPU batches (one ring-buffer reservation for many events).
    pub batched: bool,
    /// The fentry/fexit timewait hooks are attached: TIME_WAIT entries and SYNs hitting them
    /// are seen exactly, with the `tcp_tw_status` values to read them.
    pub exact_time_wait: Option<btf_offsets::TimeWaitStatus>,
    /// The kernel's tick rate, which the socket clocks count in (`None`: idle gaps unknown).
    pub hz: Option<u32>,
    /// A state change in softirq takes its time from the socket's packet clock (the time TCP
    /// took for the packet that caused it) instead of reading the clock again.
    pub packet_clock: bool,
    /// `--kernel-log`: which of the programs' log records are printed.
    pub kernel_log: KernelLogLevel,
}

impl Modes {
    pub fn describe(&self) -> String {
        let hooks: Vec<String> = self.hooks.iter().map(|(hook, mode)| format!("{hook}={mode}")).collect();
        let yes_no = |known: bool| if known { "yes" } else { "unknown" };
        format!(
            "hooks: {}; batches: {}; netns: {}; pid in softirq filtered: {}; reset reasons: {}; idle gaps: {}; softirq times: {}; kernel log: {}",
            hooks.join(" "),
            if self.batched { "per-CPU" } else { "off" },
            yes_no(self.namespaces),
            yes_no(self.process_context),
            if self.reset_reasons { "yes" } else { "not on this kernel" },
            self.hz.map_or("unknown (needs tp_btf and /proc/timer_list)".to_string(), |hz| format!("yes ({hz} Hz)")),
            if self.packet_clock { "the packet's" } else { "the clock's" },
            self.kernel_log.name(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks;

    #[test]
    fn the_attached_line_reads_back_as_it_was_written() {
        let modes = Modes {
            hooks: vec![
                ("inet_sock_set_state".into(), "tp_btf"),
                ("tcp_time_wait".into(), "unavailable"),
                ("tcp_probe".into(), "tp_btf"),
                ("kfree_skb".into(), "off"),
                ("netif_receive_skb".into(), "on-demand"),
            ],
            batched: true,
            ..Modes::default()
        };
        let line = format!("tracer: attached; {}\nsomething else", modes.describe());
        let announced = hooks::Announced::parse(&line).expect("a hooks list");
        assert_eq!(announced.hooks.len(), 5);
        assert_eq!(
            (announced.mode("inet_sock_set_state"), announced.mode("tcp_time_wait"), announced.mode("nope")),
            (Some("tp_btf"), Some("unavailable"), None)
        );
        assert_eq!((announced.attached(), announced.waiting(), announced.batched), (2, 1, true));
        let unbatched = Modes { batched: false, ..modes };
        assert!(!hooks::Announced::parse(&unbatched.describe()).unwrap().batched);
        assert_eq!(hooks::Announced::parse("tracer: error: no hooks"), None);
    }
}
