//! Under a connection flood and a SYN flood the tracer stays within its caps, counts what it
//! evicts and loses, keeps its summaries on time and keeps running.
//!
//! CI runs a reduced flood (20 000 connections); `cargo xtask flood` runs the full 1 000 000
//! (FLOOD_CONNECTIONS overrides the count).
mod support;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use support::{churn::*, *};

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Non-blocking connects into a drop rule: SYN_SENT sockets that retransmit until closed.
fn syn_flood(ns: &Netns, target: SocketAddr, count: usize) -> Vec<TcpStream> {
    ns.run(move || {
        (0..count)
            .map(|_| {
                // SAFETY: plain socket(2); the result is checked.
                let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
                assert!(socket >= 0, "socket(): {}", std::io::Error::last_os_error());
                let IpAddr::V4(ip) = target.ip() else { unreachable!() };
                let address = libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: target.port().to_be(),
                    sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
                    sin_zero: [0; 8],
                };
                // SAFETY: a valid sockaddr_in for a socket we own; EINPROGRESS is expected.
                unsafe {
                    libc::connect(socket, (&address as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32)
                };
                // SAFETY: we own the descriptor and hand it to TcpStream, which closes it.
                unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(socket) }
            })
            .collect()
    })
}

#[test]
fn a_connection_and_syn_flood_is_counted_bounded_and_survived() {
    require_root();
    let connections: u64 = std::env::var("FLOOD_CONNECTIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let ns = Netns::new("flood");
    ns.nft("table inet flood { chain input { type filter hook input priority 0; tcp dport 9 drop; }; }");
    let tracer = Tracer::start(&["--interval", "1", "--netns", &ns.path(), "--max-connections", "300", "--ring-buffer-size", "16384"]);

    let syns = syn_flood(&ns, SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9), 500);
    assert_eq!(ns.ss_count("syn-sent"), 500, "every connect is waiting for an answer that the drop rule eats");
    let done = ns.run(move || churn(IpAddr::V4(Ipv4Addr::LOCALHOST), Amount::Connections(connections)));
    assert_eq!(done, connections);
    std::thread::sleep(Duration::from_millis(1500));
    let peak_kib = rss_kib(tracer.pid(), "VmHWM:");
    drop(syns);

    let lines = tracer.stop();
    let last = lines.last().unwrap();
    assert_eq!(last["final"], true, "still running until told to stop, and a final summary");
    let health = &last["events"];
    let seen = health["seen"].as_u64().unwrap();
    let lost = health["lost"].as_u64().unwrap();
    // Nine state changes per connection (the server's birth into SYN_RECV is folded into its next).
    assert!(seen + lost >= connections * 9, "every event was either seen or counted lost: {health}");
    assert!(lost > 0, "a 16 KiB ring buffer cannot hold this flood, and the loss is shown: {health}");
    assert!(health["evicted"].as_u64().unwrap() > 0, "500 SYN_SENT sockets exceed --max-connections 300: {health}");

    // Summaries stayed on time: one a second, give or take the machine's hiccups.
    let intervals: Vec<f64> = lines.iter().filter(|l| l["final"].is_null()).map(|l| l["interval_s"].as_f64().unwrap()).collect();
    assert!(intervals.len() >= 2, "{intervals:?}");
    assert!(intervals.iter().all(|seconds| *seconds <= 2.5), "late summaries: {intervals:?}");
    let syn_retransmits: u64 = lines
        .iter()
        .flat_map(|l| l["findings"].as_array().cloned().unwrap_or_default())
        .filter(|f| f["kind"] == "syn_retransmit")
        .map(|f| f["count"].as_u64().unwrap())
        .sum();
    assert!(syn_retransmits > 0, "the SYN flood shows up");
    assert!(peak_kib < 64 * 1024, "peak RSS {peak_kib} KiB stays under 64 MiB");
    eprintln!("flood: {connections} connections, {seen} events seen, {lost} lost, peak RSS {peak_kib} KiB");
}
