//! The command line: what the operator can ask for, with the defaults an on-call engineer wants.
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use ipnet::IpNet;

pub use crate::kernel::hooks::HookMode;
use tracer_common::{WireEvent, BATCH_RECORDS};

use crate::{filter::Filter, kernel::kernel_log::KernelLogLevel};

/// Follow every TCP connection from SYN to its end and tell which side dropped it.
///
/// Every --interval the tracer prints the socket states, how connections ended (graceful,
/// reset_by_peer, reset_by_path, reset_unverified, reset_by_us, peer_silent, dropped_here,
/// refused, connect_timeout, unreachable, no_local_port, aborted, unresolved), the peers in
/// most trouble and the findings: close_wait_stuck, accept_queue_full, peer_silent,
/// port_reuse_in_time_wait, local_ports_exhausted, time_wait_buildup, fin_unanswered,
/// syn_retransmit, connect_failed, rst_from_path, rst_refused, dropped_here, idle_timeout,
/// rst_from_peer, rst_to_peer.
///
/// Needs root (or CAP_BPF + CAP_PERFMON; CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_PTRACE and
/// CAP_DAC_READ_SEARCH for socket snapshots), Linux ≥ 5.8 with BTF. Stops on SIGINT/SIGTERM or
/// after --duration with a final summary, detaching every probe.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "tracer",
    version,
    about,
    long_about,
    after_long_help = "EXAMPLES:\n    tracer                              summaries every 10 s\n    tracer --events -D 5432             every event on connections to port 5432\n    tracer --json --interval 5 -L 443   JSON summaries for our port 443\n    tracer --connections=troubled       a line per connection that did not end gracefully\n    tracer --metrics-addr 9464 --record-dir /var/lib/tracer\n\nEXIT STATUS:\n    0 after SIGINT, SIGTERM or --duration; 1 on a runtime error (not root, missing\n    tracepoint or BTF, kernel refused the programs); 2 on a bad command line."
)]
pub struct Cli {
    /// Print every event as it happens instead of periodic summaries.
    #[arg(long, conflicts_with_all = SUMMARY_ONLY)]
    pub events: bool,

    /// One line per connection when it ends (durations, bytes, who closed and why) instead of
    /// the periodic summaries on stdout, which still reach --json-out and --metrics-addr; the
    /// final summary closes the output. `all`, or `troubled`: every end but a graceful one.
    #[arg(long, value_name = "WHICH", value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "all")]
    pub connections: Option<crate::output::connections::Selection>,

    /// One JSON object per line instead of the human format.
    #[arg(long)]
    pub json: bool,

    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = seconds_between(0.1, YEAR))]
    pub duration: Option<Duration>,

    /// Kernel → userspace ring buffer size in bytes (a power of two; 112 bytes per event, 16 MiB
    /// holds about 0.4 s of both cores of a 2-core box churning flat out; at least 16 KiB).
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20, value_parser = parse_ring_buffer_size)]
    pub ring_buffer_size: u32,

    /// Seconds between summaries.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds_between(0.1, DAY))]
    pub interval: Duration,

    /// A socket in CLOSE_WAIT or FIN_WAIT2 longer than this is reported as stuck.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = seconds_between(0.1, YEAR))]
    pub stuck_after: Duration,

    /// TIME_WAIT sockets per peer that count as a buildup [default: half the namespace's
    /// ephemeral port range, from net.ipv4.ip_local_port_range].
    #[arg(long, value_name = "COUNT", value_parser = count_between::<u64>(1, 1 << 32))]
    pub time_wait_threshold: Option<u64>,

    /// RSTs between us and one peer within 10 s that make a storm, and a finding
    /// (rst_from_peer, rst_to_peer). Fewer are still counted in the peer table, the connection
    /// log and the metrics: a health check that closes with RST is not a storm.
    #[arg(long, value_name = "COUNT", default_value_t = 10, value_parser = count_between::<u64>(1, 1 << 32))]
    pub rst_threshold: u64,

    /// Only connections with this local port (repeatable, or comma-separated). With -D too, a
    /// connection must match both; the tracer says what it keeps when it starts.
    #[arg(short = 'L', long = "local-port", value_name = "PORT", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    pub local_ports: Vec<u16>,

    /// Only connections with this remote port (repeatable, or comma-separated); with -L, both.
    #[arg(short = 'D', long = "remote-port", value_name = "PORT", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    pub remote_ports: Vec<u16>,

    /// Only connections with either end inside this network, e.g. 10.0.0.0/8 or fd00::/8, or
    /// one address (repeatable).
    #[arg(long = "addr", value_name = "CIDR", value_parser = parse_network)]
    pub networks: Vec<IpNet>,

    /// Only IPv4.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6_only")]
    pub ipv4_only: bool,

    /// Only IPv6.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6_only: bool,

    /// Only this network namespace: an inode number or a path (/run/netns/NAME, /proc/PID/ns/net).
    #[arg(long, value_name = "INODE|PATH")]
    pub netns: Option<String>,

    /// Only connections owned by this process (known once it acts on the socket: connect,
    /// close, shutdown). State counts and TIME_WAIT ignore it.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Do not take sock_diag snapshots (TIME_WAIT is then estimated from tracepoints).
    #[arg(long)]
    pub no_snapshot: bool,

    /// Serve Prometheus metrics on this address (PORT or :PORT binds 127.0.0.1; give an IP to
    /// bind elsewhere). Summary mode only.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Also append the JSON lines (summaries; with --events, events) to this file, created
    /// 0600, rotated by size. Symbolic links are refused.
    #[arg(long, value_name = "PATH")]
    pub json_out: Option<std::path::PathBuf>,

    /// Write a timeline page here after every summary (one self-contained HTML file: sockets by
    /// state, closes, resets, SYN retransmits and lost events over time, link changes and
    /// findings as markers). --metrics-addr serves the same page at `/`.
    #[arg(long, value_name = "FILE.html")]
    pub timeline: Option<std::path::PathBuf>,

    /// How far back the timeline goes.
    #[arg(long, value_name = "SECS", default_value = "21600", value_parser = seconds_between(1.0, 30.0 * DAY))]
    pub timeline_window: Duration,

    /// Size at which --json-out rotates to PATH.1 … PATH.N.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, value_parser = count_between::<u64>(4096, 1 << 40))]
    pub json_out_max_bytes: u64,

    /// Rotated --json-out files kept.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = count_between::<u32>(1, 1000))]
    pub json_out_keep: u32,

    /// Flight recorder: when a finding fires, write that peer's recent events to a file here
    /// (one per finding, 0600); the summary names it.
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<std::path::PathBuf>,

    /// Seconds of events the flight recorder keeps.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = seconds_between(0.1, DAY))]
    pub record_window: Duration,

    /// Most events the flight recorder keeps in memory.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = count_between::<usize>(1, 10_000_000))]
    pub record_max_events: usize,

    /// Largest flight record file; the oldest events of a record are cut first.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20, value_parser = count_between::<u64>(4096, 1 << 32))]
    pub record_max_bytes: u64,

    /// Flight records kept in --record-dir; the oldest are removed.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = count_between::<usize>(1, 100_000))]
    pub record_max_files: usize,

    /// Where tracefs is mounted (tracepoint layouts are read from its events/*/format files).
    #[arg(long, value_name = "DIR", default_value = crate::kernel::tracefs::TRACEFS)]
    pub tracefs: std::path::PathBuf,

    /// Most connections followed at once; beyond it the stalest are evicted (and counted).
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = count_between::<usize>(1, 10_000_000))]
    pub max_connections: usize,

    /// How the TCP hooks attach: `auto` takes BTF tracepoints (tp_btf, direct loads from the
    /// kernel's own socket) where the kernel allows them and classic tracepoints elsewhere;
    /// `tracepoint` forces the classic path everywhere; `tp-btf` refuses to start without it.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = HookMode::Auto)]
    pub hook_mode: HookMode,

    /// Leave an optional hook off (repeatable). `tcp_probe`, `kfree_skb` and `netif_receive_skb`
    /// fire for every packet: on a host with a very high packet rate their cost may outweigh what
    /// they tell (who sent a RST, this host's drops). The header then says `off`.
    #[arg(long = "skip-hook", value_name = "HOOK", value_parser = optional_hook)]
    pub skip_hooks: Vec<&'static str>,

    /// Print the kernel programs' rare paths as they happen (a socket, packet or task they could
    /// not read, a socket of an unexpected family) on stderr. Every summary counts them anyway;
    /// `off` costs nothing.
    #[arg(long, value_name = "LEVEL", value_enum, default_value_t = KernelLogLevel::Off)]
    pub kernel_log: KernelLogLevel,
}

/// Flags that shape summaries (and what feeds them): meaningless with `--events`, so refused
/// with it on the command line (exit 2) rather than silently ignored.
const SUMMARY_ONLY: [&str; 15] = [
    "rst_threshold",
    "timeline",
    "timeline_window",
    "connections",
    "interval",
    "stuck_after",
    "time_wait_threshold",
    "no_snapshot",
    "metrics_addr",
    "record_dir",
    "record_window",
    "record_max_events",
    "record_max_bytes",
    "record_max_files",
    "max_connections",
];

impl Cli {
    /// The filters, checked before anything is attached.
    pub fn filter(&self) -> Result<Filter> {
        Ok(Filter {
            local_ports: self.local_ports.clone(),
            remote_ports: self.remote_ports.clone(),
            networks: self.networks.clone(),
            ipv4_only: self.ipv4_only,
            ipv6_only: self.ipv6_only,
            netns: self.netns.as_deref().map(crate::kernel::netns::parse).transpose()?,
            pid: self.pid,
        })
    }
}

/// A network in CIDR notation, or one address (a /32 or /128), with a reason when it is neither.
fn parse_network(text: &str) -> Result<IpNet, String> {
    if let Ok(network) = text.parse::<IpNet>() {
        return Ok(network);
    }
    if let Ok(address) = text.parse::<std::net::IpAddr>() {
        return Ok(IpNet::from(address));
    }
    let Some((address, prefix)) = text.split_once('/') else {
        return Err(format!("`{text}` is no address: give a network such as 10.0.0.0/8 or fd00::/8, or one address"));
    };
    let address: std::net::IpAddr = address.parse().map_err(|_| format!("`{address}` is no IPv4 or IPv6 address"))?;
    let longest = if address.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(prefix) if prefix > longest => {
            Err(format!("prefix length {prefix} is longer than an IPv{} address ({longest})", if address.is_ipv4() { 4 } else { 6 }))
        }
        _ => Err(format!("`{prefix}` is no prefix length (0 to {longest})")),
    }
}

/// A count from `min` to `max` (`min` is at least 1 where zero would make every path a buildup,
/// every reset a storm, or a cap that holds nothing).
/// An optional hook's name, as the header lists it.
fn optional_hook(name: &str) -> Result<&'static str, String> {
    let hooks = &crate::kernel::hooks::HOOKS;
    match hooks.iter().find(|hook| hook.name == name) {
        Some(hook) if hook.required => Err(format!("{name} is required: the tracer cannot run without it")),
        Some(hook) => Ok(hook.name),
        None => {
            let optional: Vec<&str> = hooks.iter().filter(|hook| !hook.required).map(|hook| hook.name).collect();
            Err(format!("no hook is named `{name}`; the optional ones: {}", optional.join(", ")))
        }
    }
}

fn count_between<T: TryFrom<u64> + Clone + Send + Sync + 'static>(
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let count = text.parse::<u64>().map_err(|_| format!("`{text}` is not a count"))?;
        if count < min {
            return Err(format!("give a count of at least {min}"));
        }
        if count > max {
            return Err(format!("`{text}` is more than {max}, the most it takes"));
        }
        T::try_from(count).map_err(|_| format!("`{text}` is more than this machine takes"))
    }
}

/// A CPU's batch goes to the ring buffer as one record of up to [`BATCH_RECORDS`] events: a ring
/// that cannot hold two full ones (4 KiB and 8 KiB cannot hold one) would lose nearly everything.
const MIN_RING_BUFFER_BYTES: u32 = (2 * BATCH_RECORDS * WireEvent::SIZE + 16).next_power_of_two() as u32;

fn parse_ring_buffer_size(text: &str) -> Result<u32, String> {
    let bytes: u32 = text.parse().map_err(|_| format!("`{text}` is not a number of bytes"))?;
    if !bytes.is_power_of_two() || !(MIN_RING_BUFFER_BYTES..=1 << 30).contains(&bytes) {
        return Err(format!(
            "`{text}` must be a power of two from {MIN_RING_BUFFER_BYTES} to 1073741824 bytes (the least holds two of the kernel's \
             {BATCH_RECORDS}-event batches)"
        ));
    }
    Ok(bytes)
}

const DAY: f64 = 86_400.0;
const YEAR: f64 = 365.0 * DAY;

/// A number of seconds from `min` to `max`: shorter would make a timer fire without pause,
/// longer a deadline past the clock's range.
fn seconds_between(min: f64, max: f64) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let seconds: f64 = text.parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
        // NaN is in no range.
        if !(min..=max).contains(&seconds) {
            return Err(format!("`{text}` is out of range: give {min} to {max} seconds"));
        }
        Ok(Duration::from_secs_f64(seconds))
    }
}

/// Where `--metrics-addr` listens: a bare port (or `:port`) means loopback; a host name is
/// resolved (its first address).
fn parse_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    let port_only = text.strip_prefix(':').unwrap_or(text);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    if !text.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()) {
        return Err(format!("`{text}` is not PORT, :PORT, IP:PORT or HOST:PORT"));
    }
    std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|error| format!("cannot resolve `{text}`: {error}"))?
        .next()
        .ok_or_else(|| format!("`{text}` resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_binds_loopback_and_an_address_is_taken_as_given() {
        assert_eq!(parse_addr("9464").unwrap(), "127.0.0.1:9464".parse().unwrap());
        assert_eq!(parse_addr(":9464").unwrap(), "127.0.0.1:9464".parse().unwrap());
        assert_eq!(parse_addr("0.0.0.0:9464").unwrap(), "0.0.0.0:9464".parse().unwrap());
        assert!(parse_addr("localhost").unwrap_err().contains("PORT"));
        let named = parse_addr("localhost:9464").unwrap();
        assert!(named.ip().is_loopback() && named.port() == 9464, "{named}");
    }
}
