//! The kernel hooks, listed once: what each is called, what it reports, how it attaches, and
//! whether the tracer can run without it. The loader attaches from this table; the tests, the
//! benchmark and xtask read it to know the tracer's programs by name.
use tracer_common::EventKind;

/// How a hook attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// A tracepoint `category:name`: as a BTF tracepoint (program `btf_program`) where the kernel
    /// allows it, as a classic one (program `name`) otherwise.
    Tracepoint {
        category: &'static str,
        btf_program: &'static str,
    },
    /// A tracepoint `category:name` as a BTF tracepoint only (program `btf_program`): its
    /// classic record lacks what the program reads, so without tp_btf it is unavailable.
    BtfOnly {
        category: &'static str,
        btf_program: &'static str,
    },
    /// fentry / fexit on the kernel function `name` (program `name`).
    Fentry,
    Fexit,
}

impl Attach {
    /// The mode name shown in the mode line, metrics and JSON.
    pub fn mode(self) -> &'static str {
        match self {
            Attach::Tracepoint { .. } => "tracepoint",
            Attach::BtfOnly { .. } => "tp_btf",
            Attach::Fentry => "fentry",
            Attach::Fexit => "fexit",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    pub name: &'static str,
    pub kind: EventKind,
    pub attach: Attach,
    /// The tracer refuses to start without it; the others are reported `unavailable`.
    pub required: bool,
}

const fn tracepoint(category: &'static str, name: &'static str, btf_program: &'static str, kind: EventKind, required: bool) -> Hook {
    Hook { name, kind, attach: Attach::Tracepoint { category, btf_program }, required }
}

pub const HOOKS: [Hook; 10] = [
    tracepoint("sock", "inet_sock_set_state", "btf_set_state", EventKind::StateChange, true),
    tracepoint("tcp", "tcp_send_reset", "btf_send_reset", EventKind::ResetSent, false),
    tracepoint("tcp", "tcp_receive_reset", "btf_recv_reset", EventKind::ResetReceived, false),
    tracepoint("tcp", "tcp_retransmit_skb", "btf_retransmit", EventKind::Retransmit, false),
    tracepoint("tcp", "tcp_retransmit_synack", "btf_synack_retx", EventKind::SynAckRetransmit, false),
    // TIME_WAIT exactly: when a socket enters it, and what a SYN hitting it gets. Both or neither.
    Hook { name: "tcp_time_wait", kind: EventKind::TimeWaitEnter, attach: Attach::Fentry, required: false },
    Hook { name: "tcp_timewait_state_process", kind: EventKind::TimeWaitSyn, attach: Attach::Fexit, required: false },
    // Received RSTs and the peer's first segments, with their TTL: who sent a reset.
    Hook {
        name: "tcp_probe",
        kind: EventKind::Segment,
        attach: Attach::BtfOnly { category: "tcp", btf_program: "btf_tcp_probe" },
        required: false,
    },
    // TCP packets this host dropped, with the kernel's reason.
    Hook {
        name: "kfree_skb",
        kind: EventKind::Drop,
        attach: Attach::BtfOnly { category: "skb", btf_program: "btf_kfree_skb" },
        required: false,
    },
    // Every RST as it arrives (those no established socket's `tcp_probe` sees among them),
    // judged against the TTL of its sender's last handshake, and ICMP unreachable errors with
    // their sender. It fires for every packet this host receives.
    Hook {
        name: "netif_receive_skb",
        kind: EventKind::ResetArrived,
        attach: Attach::BtfOnly { category: "net", btf_program: "btf_rx_reset" },
        required: false,
    },
];

/// The program userspace runs on a CPU to send that CPU's waiting batch (not a hook).
pub const FLUSH_PROGRAM: &str = "flush_batch";

/// The tracepoint hooks, with their category.
pub fn tracepoints() -> impl Iterator<Item = (&'static Hook, &'static str, &'static str)> {
    HOOKS.iter().filter_map(|hook| match hook.attach {
        Attach::Tracepoint { category, btf_program } => Some((hook, category, btf_program)),
        Attach::BtfOnly { .. } | Attach::Fentry | Attach::Fexit => None,
    })
}

/// Every program of the object, with whether a run of it is a firing of a hook (the flush
/// program runs when userspace asks).
pub fn programs() -> impl Iterator<Item = (&'static str, bool)> {
    HOOKS
        .iter()
        .flat_map(|hook| match hook.attach {
            Attach::Tracepoint { btf_program, .. } => [Some(hook.name), Some(btf_program)],
            Attach::BtfOnly { btf_program, .. } => [Some(btf_program), None],
            Attach::Fentry | Attach::Fexit => [Some(hook.name), None],
        })
        .flatten()
        .map(|name| (name, true))
        .chain([(FLUSH_PROGRAM, false)])
}

/// Which of [`programs`] a name that `bpftool prog show` printed is: the full name (from BTF), or
/// the kernel's first 15 characters of it.
pub fn program_named(shown: &str) -> Option<(&'static str, bool)> {
    programs().find(|(name, _)| *name == shown || (shown.len() == 15 && name.starts_with(shown)))
}

/// The "attached" line read back: the one parser of what `probes::Modes::describe` writes, for the VM
/// harness and the tests (which must not each split the human line their own way).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    /// Each hook with its mode, in the order announced.
    pub hooks: Vec<(String, String)>,
    pub batched: bool,
}

impl Announced {
    /// `None` when `text` holds no hooks list.
    pub fn parse(text: &str) -> Option<Announced> {
        let (hooks, rest) = text.split("hooks: ").nth(1)?.split_once(';')?;
        let hooks = hooks
            .split_whitespace()
            .map(|pair| pair.split_once('=').map(|(hook, mode)| (hook.to_string(), mode.to_string())))
            .collect::<Option<Vec<_>>>()?;
        let batched = rest.lines().next().unwrap_or_default().split(';').any(|part| part.trim() == "batches: per-CPU");
        Some(Announced { hooks, batched })
    }

    pub fn mode(&self, hook: &str) -> Option<&str> {
        self.hooks.iter().find(|(name, _)| name == hook).map(|(_, mode)| mode.as_str())
    }

    /// Hooks attached (in any mode).
    pub fn attached(&self) -> usize {
        self.hooks.iter().filter(|(_, mode)| !matches!(mode.as_str(), "unavailable" | "off" | "on-demand")).count()
    }

    /// Hooks whose program is loaded but not attached yet (`on-demand`).
    pub fn waiting(&self) -> usize {
        self.hooks.iter().filter(|(_, mode)| mode == "on-demand").count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_kind_has_one_hook_and_every_program_one_name() {
        // `netif_receive_skb`'s program sends two kinds: RSTs and ICMP errors as they arrive.
        let kinds: Vec<EventKind> = (0..=u8::MAX).filter_map(EventKind::from_u8).filter(|kind| *kind != EventKind::IcmpArrived).collect();
        assert_eq!(kinds.len(), HOOKS.len());
        for kind in kinds {
            assert_eq!(HOOKS.iter().filter(|hook| hook.kind == kind).count(), 1, "{kind:?}");
        }
        let names: Vec<&str> = programs().map(|(name, _)| name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(names.len(), 16);
    }

    #[test]
    fn bpftool_names_cut_at_15_characters_are_recognised() {
        assert_eq!(program_named("tcp_timewait_st"), Some(("tcp_timewait_state_process", true)));
        assert_eq!(program_named("flush_batch"), Some((FLUSH_PROGRAM, false)));
        assert_eq!(program_named("inet_sock_set_s"), Some(("inet_sock_set_state", true)));
        assert_eq!(program_named("some_other_prog"), None);
    }
}

/// `--hook-mode`: how the TCP hooks attach.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookMode {
    Auto,
    TpBtf,
    Tracepoint,
}
