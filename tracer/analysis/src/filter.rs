//! What the operator asked to look at (`-L`, `-D`, `--addr`, `-4/-6`, `--netns`, `--pid`),
//! applied to connections before anything is aggregated.
use std::net::SocketAddr;

use ipnet::IpNet;

use tracer_common::{KernelFilter, KernelNetwork, AF_INET, AF_INET6, FILTER_NETWORKS, FILTER_PORTS};

use crate::{
    bounded::Bounded,
    decode::{Event, Process, SocketId},
};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub local_ports: Vec<u16>,
    pub remote_ports: Vec<u16>,
    pub networks: Vec<IpNet>,
    pub ipv4_only: bool,
    pub ipv6_only: bool,
    pub netns: Option<u32>,
    pub pid: Option<u32>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether a socket is in scope, by everything but `--pid` (snapshot and TIME_WAIT sockets have
    /// no owner to compare).
    pub fn matches_socket(&self, netns: u32, local: SocketAddr, remote: SocketAddr) -> bool {
        self.matches_ends(netns, local, remote)
    }

    /// Whether a connection between these ends is in scope.
    /// A port of 0 (not chosen yet) matches, so a connection is not lost before `connect` picks one.
    pub fn matches(&self, netns: u32, local: SocketAddr, remote: SocketAddr, process: Option<&Process>) -> bool {
        self.matches_ends(netns, local, remote) && self.pid.is_none_or(|pid| process.is_some_and(|process| process.tgid == pid))
    }

    fn matches_ends(&self, netns: u32, local: SocketAddr, remote: SocketAddr) -> bool {
        let port_in = |ports: &[u16], port: u16| ports.is_empty() || port == 0 || ports.contains(&port);
        // A listener on 0.0.0.0 or :: serves every address of its host, the filtered ones too
        // (and `::` serves IPv4 as well, unless IPV6_V6ONLY).
        let wildcard = local.ip().is_unspecified();
        self.netns.is_none_or(|wanted| wanted == netns)
            && port_in(&self.local_ports, local.port())
            && port_in(&self.remote_ports, remote.port())
            && (!self.ipv4_only || local.is_ipv4() || wildcard)
            && (!self.ipv6_only || local.is_ipv6())
            && (self.networks.is_empty()
                || wildcard
                || self.networks.iter().any(|network| network.contains(&local.ip()) || network.contains(&remote.ip())))
    }

    /// What the filter keeps, in words, for the operator to check at start: how the options
    /// combine is not obvious (`-L` with `-D` means both ends must match).
    pub fn describe(&self) -> Option<String> {
        let list = |ports: &[u16]| ports.iter().map(u16::to_string).collect::<Vec<_>>().join(" or ");
        let mut parts = Vec::new();
        match (self.local_ports.is_empty(), self.remote_ports.is_empty()) {
            (false, false) => parts.push(format!(
                "local port {} and remote port {} (both at once: a connection must match the two)",
                list(&self.local_ports),
                list(&self.remote_ports)
            )),
            (false, true) => parts.push(format!("local port {}", list(&self.local_ports))),
            (true, false) => parts.push(format!("remote port {}", list(&self.remote_ports))),
            (true, true) => {}
        }
        if !self.networks.is_empty() {
            let networks = self.networks.iter().map(IpNet::to_string).collect::<Vec<_>>().join(" or ");
            parts.push(format!("either end in {networks} (listeners on 0.0.0.0 or :: serve them too)"));
        }
        if self.ipv4_only {
            parts.push("IPv4 only".into());
        }
        if self.ipv6_only {
            parts.push("IPv6 only".into());
        }
        if let Some(netns) = self.netns {
            parts.push(format!("netns {netns}"));
        }
        if let Some(pid) = self.pid {
            parts.push(format!("pid {pid}"));
        }
        (!parts.is_empty()).then(|| parts.join("; and "))
    }
}

impl Filter {
    /// Whether a port the filter names is still unknown in this event (0: `connect` or the
    /// handshake has not chosen it yet), so the event cannot be judged alone.
    fn undecided(&self, event: &Event) -> bool {
        (!self.local_ports.is_empty() && event.local.port() == 0) || (!self.remote_ports.is_empty() && event.remote.port() == 0)
    }
}

/// How long a socket's first event waits for the event that names its ports. A connection in
/// scope names them within its first round trip, or with its first SYN retransmission (1 s); one
/// out of scope never does, as the kernel filters the rest of its events out.
const UNDECIDED_NS: u64 = 3_000_000_000;

/// Most sockets waiting for their ports at once; past it the oldest is let through undecided.
const MAX_UNDECIDED: usize = 4096;

/// Keeps the operator's port filters whole: a connection is in or out for its whole life. The
/// event that opens a client socket (CLOSE → SYN_SENT) comes before `connect` picks its port, and
/// the kernel lets it through for that reason; it waits here for the socket's next event, which
/// carries the port and decides for both. One that never comes was out of scope.
pub struct Admission {
    waiting: Bounded<SocketId, Event>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission { waiting: Bounded::new(|held| held.timestamp_ns) }
    }
}

impl Admission {
    /// Passes `event` (and the event it decides for) to `admit` when it is in scope or cannot be
    /// judged by port; holds or drops it otherwise. Events in timestamp order.
    pub fn admit(&mut self, filter: &Filter, event: &Event, mut admit: impl FnMut(&Event)) {
        if filter.local_ports.is_empty() && filter.remote_ports.is_empty() {
            return admit(event);
        }
        if let Some(first) = self.waiting.remove(&event.socket) {
            if filter.undecided(event) {
                // Still no port (a connect that failed before choosing one): out of scope.
                return;
            }
            if filter.matches_ends(event.socket.netns, event.local, event.remote) {
                admit(&first);
                admit(event);
            }
            return;
        }
        if !filter.undecided(event) {
            return admit(event); // judged by the consumers, with the rest of the filter
        }
        if let Some((_, oldest)) = self.waiting.make_room(&event.socket, MAX_UNDECIDED) {
            admit(&oldest);
        }
        self.waiting.insert(event.socket, *event);
    }

    /// Forgets the sockets that waited longer than [`UNDECIDED_NS`] before `now_ns`: out of scope.
    pub fn expire(&mut self, now_ns: u64) {
        self.waiting.retain(|_, held| held.timestamp_ns.saturating_add(UNDECIDED_NS) > now_ns);
    }
}

impl Filter {
    /// The part of the filter the kernel programs apply, so excluded traffic costs a branch and
    /// no record. A list longer than the kernel holds is left to userspace (no kernel test on it).
    pub fn kernel(&self) -> KernelFilter {
        let mut kernel = KernelFilter::NONE;
        kernel.netns = self.netns.unwrap_or(0);
        kernel.family = match (self.ipv4_only, self.ipv6_only) {
            (true, false) => AF_INET,
            (false, true) => AF_INET6,
            _ => 0,
        };
        let ports = |wanted: &[u16], into: &mut [u16; FILTER_PORTS]| {
            if wanted.len() > FILTER_PORTS || wanted.contains(&0) {
                return 0;
            }
            into[..wanted.len()].copy_from_slice(wanted);
            wanted.len() as u8
        };
        kernel.local_port_count = ports(&self.local_ports, &mut kernel.local_ports);
        kernel.remote_port_count = ports(&self.remote_ports, &mut kernel.remote_ports);
        if self.networks.len() <= FILTER_NETWORKS {
            for (slot, network) in kernel.networks.iter_mut().zip(&self.networks) {
                *slot = kernel_network(network);
            }
            kernel.network_count = self.networks.len() as u8;
        }
        kernel
    }
}

/// A network as the kernel compares it: address and mask as two words over 16 bytes, IPv4 in the
/// first four (the wire record's layout).
fn kernel_network(network: &IpNet) -> KernelNetwork {
    let (family, address, mask) = match network.trunc() {
        IpNet::V4(net) => {
            let mut address = [0u8; 16];
            let mut mask = [0u8; 16];
            address[..4].copy_from_slice(&net.network().octets());
            mask[..4].copy_from_slice(&net.netmask().octets());
            (u32::from(AF_INET), address, mask)
        }
        IpNet::V6(net) => (u32::from(AF_INET6), net.network().octets(), net.netmask().octets()),
    };
    let words = |bytes: [u8; 16]| {
        [u64::from_ne_bytes(bytes[..8].try_into().expect("8 bytes")), u64::from_ne_bytes(bytes[8..].try_into().expect("8 bytes"))]
    };
    KernelNetwork { network: words(address), mask: words(mask), family, _pad: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_kernel_gets_what_it_can_hold_and_leaves_the_rest_to_userspace() {
        let filter = Filter {
            local_ports: vec![443, 8443],
            remote_ports: (1..=9).collect(),
            networks: vec!["10.1.2.3/16".parse().unwrap(), "fd00::/8".parse().unwrap()],
            ipv6_only: true,
            netns: Some(4026531840),
            ..Filter::default()
        };
        let kernel = filter.kernel();
        assert_eq!((kernel.netns, kernel.family), (4026531840, AF_INET6));
        assert_eq!((kernel.local_port_count, &kernel.local_ports[..2]), (2, &[443, 8443][..]));
        assert_eq!(kernel.remote_port_count, 0, "nine ports do not fit: userspace alone filters them");
        assert_eq!(kernel.network_count, 2);
        let v4 = kernel.networks[0];
        let bytes = |words: [u64; 2]| [words[0].to_ne_bytes(), words[1].to_ne_bytes()].concat();
        assert_eq!(v4.family, u32::from(AF_INET));
        assert_eq!(&bytes(v4.network)[..5], &[10, 1, 0, 0, 0], "the host bits are cleared, IPv4 in the first four bytes");
        assert_eq!(&bytes(v4.mask)[..5], &[255, 255, 0, 0, 0]);
        let v6 = kernel.networks[1];
        assert_eq!((v6.family, bytes(v6.network)[0], bytes(v6.mask)[0], bytes(v6.mask)[1]), (u32::from(AF_INET6), 0xfd, 0xff, 0));
        assert_eq!(Filter::default().kernel(), KernelFilter::NONE, "no filter: the kernel keeps everything");
    }

    #[test]
    fn ports_addresses_family_and_namespace_all_have_to_match() {
        let filter = Filter {
            local_ports: vec![443],
            networks: vec!["10.1.0.0/16".parse().unwrap()],
            ipv4_only: true,
            netns: Some(7),
            ..Filter::default()
        };
        assert!(filter.matches(7, addr("10.9.0.1:443"), addr("10.1.2.3:50000"), None));
        assert!(!filter.matches(8, addr("10.9.0.1:443"), addr("10.1.2.3:50000"), None), "other netns");
        assert!(!filter.matches(7, addr("10.9.0.1:80"), addr("10.1.2.3:50000"), None), "other port");
        assert!(!filter.matches(7, addr("10.9.0.1:443"), addr("10.2.2.3:50000"), None), "outside the CIDR");
        assert!(!filter.matches(7, addr("[fd00::1]:443"), addr("[fd00::2]:1"), None), "IPv6");
        assert!(filter.matches(7, addr("10.9.0.1:0"), addr("10.1.2.3:50000"), None), "port not chosen yet");
    }

    #[test]
    fn pid_filter_needs_a_known_owner() {
        let filter = Filter { pid: Some(42), ..Filter::default() };
        let owner = crate::track::fixtures::process();
        assert!(!filter.matches(1, addr("10.0.0.1:1"), addr("10.0.0.2:2"), None));
        assert!(!filter.matches(1, addr("10.0.0.1:1"), addr("10.0.0.2:2"), Some(&owner)));
        let filter = Filter { pid: Some(owner.tgid), ..Filter::default() };
        assert!(filter.matches(1, addr("10.0.0.1:1"), addr("10.0.0.2:2"), Some(&owner)));
    }

    #[test]
    fn a_local_port_filter_keeps_or_drops_an_outgoing_connection_whole() {
        use crate::{decode::TcpState::*, track::fixtures::Script};
        let filter = Filter { local_ports: vec![443], ..Filter::default() };
        let admitted = |events: &[Event], now_ns: u64| {
            let mut admission = Admission::default();
            let mut out = Vec::new();
            for event in events {
                admission.admit(&filter, event, |event| out.push((event.old_state, event.state)));
                admission.expire(now_ns);
            }
            (out, admission.waiting.len())
        };
        // The kernel lets the portless CLOSE → SYN_SENT through, then filters the socket out.
        let outgoing = Script::new(1, "10.0.0.1:0", "10.0.0.2:80");
        let (out, waiting) = admitted(&[outgoing.syscall(Close, SynSent, 1)], 1);
        assert_eq!((out.len(), waiting), (0, 1), "held, not tracked");
        let (out, waiting) = admitted(&[outgoing.syscall(Close, SynSent, 1)], 1 + UNDECIDED_NS);
        assert_eq!((out.len(), waiting), (0, 0), "its port never came: out of scope, forgotten");
        // Its next event names an ephemeral port: out, with its first event.
        let named = Script::new(1, "10.0.0.1:40000", "10.0.0.2:80");
        let (out, _) = admitted(&[outgoing.syscall(Close, SynSent, 1), named.state(SynSent, Established, 2)], 2);
        assert!(out.is_empty());
        // Bound to 443 before connect (rare, but in scope): both events, in order.
        let bound = Script::new(2, "10.0.0.1:443", "10.0.0.2:80");
        let (out, _) = admitted(&[outgoing_as(&bound).syscall(Close, SynSent, 1), bound.state(SynSent, Established, 2)], 2);
        assert_eq!(out, [(Some(Close), Some(SynSent)), (Some(SynSent), Some(Established))]);
        // A server socket on 443 has its port from the start.
        let served = Script::new(3, "10.0.0.2:443", "10.0.0.1:40000");
        let (out, waiting) = admitted(&[served.state(Listen, SynRecv, 1)], 1);
        assert_eq!((out.len(), waiting), (1, 0));
    }

    #[test]
    fn past_its_bound_the_oldest_undecided_socket_is_let_through_undecided() {
        use crate::{decode::TcpState::*, track::fixtures::Script};
        let filter = Filter { local_ports: vec![443], ..Filter::default() };
        let mut admission = Admission::default();
        let mut out = Vec::new();
        for n in 0..=MAX_UNDECIDED as u64 + 1 {
            let outgoing = Script::new(n + 1, "10.0.0.1:0", "10.0.0.2:80");
            admission.admit(&filter, &outgoing.syscall(Close, SynSent, 1_000 + n), |event| out.push(event.socket.address));
        }
        assert_eq!(out, [1, 2], "the two oldest, in order");
        assert_eq!(admission.waiting.len(), MAX_UNDECIDED);
    }

    /// The same socket before `connect` chose its local port.
    fn outgoing_as(script: &crate::track::fixtures::Script) -> crate::track::fixtures::Script {
        let mut local = script.local;
        local.set_port(0);
        crate::track::fixtures::Script { socket: script.socket, local, remote: script.remote }
    }

    #[test]
    fn a_wildcard_listener_serves_the_filtered_addresses_and_the_filter_says_what_it_keeps() {
        let filter = Filter { networks: vec!["10.77.0.0/16".parse().unwrap()], ..Filter::default() };
        assert!(filter.matches_socket(1, addr("0.0.0.0:8080"), addr("0.0.0.0:0")), "a listener on 0.0.0.0");
        assert!(filter.matches_socket(1, addr("[::]:8080"), addr("[::]:0")), "a listener on ::");
        assert!(filter.matches_socket(1, addr("10.77.1.2:8080"), addr("10.9.0.1:40000")));
        assert!(!filter.matches_socket(1, addr("10.9.0.2:8080"), addr("10.9.0.1:40000")), "a connection outside");
        let ipv4 = Filter { ipv4_only: true, ..Filter::default() };
        assert!(ipv4.matches_socket(1, addr("[::]:8080"), addr("[::]:0")), "`::` serves IPv4 too");
        assert!(!ipv4.matches_socket(1, addr("[fd00::2]:8080"), addr("[fd00::1]:1")));

        let both = Filter { local_ports: vec![443], remote_ports: vec![5432, 6379], ..filter };
        assert_eq!(
            both.describe().unwrap(),
            "local port 443 and remote port 5432 or 6379 (both at once: a connection must match the two); and either end in \
             10.77.0.0/16 (listeners on 0.0.0.0 or :: serve them too)"
        );
        assert_eq!(Filter::default().describe(), None);
    }
}
