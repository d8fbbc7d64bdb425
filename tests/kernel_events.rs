//! The kernel half, end to end: real programs attached by a real `tracer --events`, real TCP
//! between two network namespaces, and the exact transitions the tracer must report.
//!
//! Every scenario runs twice: with the hooks the tracer picks by default (BTF tracepoints where
//! the kernel allows them) and with the classic tracepoint fallback forced, so both kernel paths
//! stay covered on every kernel the tests run on.
mod support;

use std::{
    io::Read,
    net::{IpAddr, SocketAddr, TcpStream},
};

use serde_json::Value;
use support::*;

fn connect_and_accept(link: &Link, server_ip: IpAddr) -> (TcpStream, TcpStream, SocketAddr, SocketAddr) {
    let listener = link.listen(server_ip);
    let server_addr = listener.local_addr().unwrap();
    let client = link.connect(server_addr).expect("connect");
    let (accepted, client_addr) = listener.accept().expect("accept");
    (client, accepted, client_addr, server_addr)
}

const ACTIVE_CLOSE: &[(&str, &str)] =
    &[("CLOSE", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED"), ("ESTABLISHED", "FIN_WAIT1"), ("FIN_WAIT1", "FIN_WAIT2"), ("FIN_WAIT2", "CLOSE")];
const PASSIVE_CLOSE: &[(&str, &str)] = &[
    ("LISTEN", "SYN_RECV"),
    ("SYN_RECV", "ESTABLISHED"),
    ("ESTABLISHED", "CLOSE_WAIT"),
    ("CLOSE_WAIT", "LAST_ACK"),
    ("LAST_ACK", "CLOSE"),
];

struct Closed {
    lines: Vec<Value>,
    client: SocketAddr,
    server: SocketAddr,
    link: Link,
}

/// One side closes, the other reads EOF and closes too; returns the tracer's output.
fn graceful_close(mode: HookMode, server_ip: impl Fn(&Link) -> IpAddr, client_closes: bool) -> Closed {
    require_root();
    let link = Link::new();
    let tracer = start_events(mode);
    let (client_stream, accepted, client, server) = connect_and_accept(&link, server_ip(&link));
    let (first, mut second) = if client_closes { (client_stream, accepted) } else { (accepted, client_stream) };
    drop(first);
    assert_eq!(second.read(&mut [0; 16]).unwrap(), 0, "EOF after the peer's FIN");
    drop(second);
    // Other tests run their own tracers at the same time: only this test's namespaces count.
    let ours = |line: &Value| line["netns"] == link.client.inode() || line["netns"] == link.server.inode();
    tracer.wait_for("LAST_ACK → CLOSE", |line| ours(line) && line["old_state"] == "LAST_ACK" && line["state"] == "CLOSE");
    tracer.wait_for("FIN_WAIT2 → CLOSE", |line| ours(line) && line["old_state"] == "FIN_WAIT2" && line["state"] == "CLOSE");
    Closed { lines: tracer.stop(), client, server, link }
}

fn client_that_closes_first_goes_through_fin_wait_and_server_through_last_ack(mode: HookMode) {
    let Closed { lines, client, server, link } = graceful_close(mode, |link| link.server_ip, true);
    assert_nothing_lost(&lines);
    assert_eq!(transitions(&lines, client, server), pairs(ACTIVE_CLOSE));
    assert_eq!(transitions(&lines, server, client), pairs(PASSIVE_CLOSE));

    // connect() runs in our process; the server's SYN_RECV is made in softirq, where no pid is true.
    let connect = lines.iter().find(|line| line["state"] == "SYN_SENT" && line["netns"] == link.client.inode()).unwrap();
    assert_eq!(connect["tgid"], std::process::id(), "{connect}");
    let syn_recv = lines.iter().find(|line| line["state"] == "SYN_RECV" && line["local"] == server.to_string()).unwrap();
    assert!(syn_recv["pid"].is_null(), "softirq event must not carry a pid: {syn_recv}");
    assert_eq!(syn_recv["netns"], link.server.inode());
}

fn server_that_closes_first_leaves_the_client_with_close_wait_and_last_ack(mode: HookMode) {
    let Closed { lines, client, server, .. } = graceful_close(mode, |link| link.server_ip, false);
    assert_nothing_lost(&lines);
    let client_side = pairs(&[
        ("CLOSE", "SYN_SENT"),
        ("SYN_SENT", "ESTABLISHED"),
        ("ESTABLISHED", "CLOSE_WAIT"),
        ("CLOSE_WAIT", "LAST_ACK"),
        ("LAST_ACK", "CLOSE"),
    ]);
    let server_side = pairs(&[
        ("LISTEN", "SYN_RECV"),
        ("SYN_RECV", "ESTABLISHED"),
        ("ESTABLISHED", "FIN_WAIT1"),
        ("FIN_WAIT1", "FIN_WAIT2"),
        ("FIN_WAIT2", "CLOSE"),
    ]);
    assert_eq!(transitions(&lines, client, server), client_side);
    assert_eq!(transitions(&lines, server, client), server_side);
}

fn ipv6_connection_is_traced_like_ipv4(mode: HookMode) {
    let Closed { lines, client, server, link } = graceful_close(mode, |link| link.server_ip6, true);
    assert!(client.is_ipv6() && server.is_ipv6());
    assert_nothing_lost(&lines);
    assert_eq!(transitions(&lines, client, server), pairs(ACTIVE_CLOSE));
    assert_eq!(transitions(&lines, server, client), pairs(PASSIVE_CLOSE));
    assert!(lines.iter().any(|line| line["local"] == client.to_string() && line["netns"] == link.client.inode()));
}

fn reset_reasons_available(tracer: &Tracer) -> bool {
    tracer.stderr.lock().unwrap().contains("reset reasons: yes")
}

fn connect_to_a_closed_port_is_reset_by_the_peer(mode: HookMode) {
    require_root();
    let link = Link::new();
    let tracer = start_events(mode);
    let with_reasons = reset_reasons_available(&tracer);
    let closed_port = SocketAddr::new(link.server_ip, 9);
    let error = link.connect(closed_port).expect_err("nothing listens on port 9");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    tracer.wait_for("SYN_SENT → CLOSE", |line| {
        line["netns"] == link.client.inode() && line["old_state"] == "SYN_SENT" && line["state"] == "CLOSE"
    });
    let lines = tracer.stop();
    assert_nothing_lost(&lines);

    let client_netns = link.client.inode();
    let states: Vec<_> = lines
        .iter()
        .filter(|line| line["kind"] == "state" && line["netns"] == client_netns)
        .map(|line| (line["old_state"].as_str().unwrap(), line["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("CLOSE", "SYN_SENT"), ("SYN_SENT", "CLOSE")]);
    let received =
        lines.iter().find(|line| line["kind"] == "rst_received" && line["netns"] == client_netns).expect("the client saw the RST");
    assert_eq!(received["remote"], closed_port.to_string());
    if with_reasons {
        // Linux ≥ 6.10 also reports resets sent without a socket, in the namespace that sent them.
        let sent = lines.iter().find(|line| line["kind"] == "rst_sent" && line["netns"] == link.server.inode()).expect("the server's RST");
        assert_eq!(sent["reason"], "NO_SOCKET", "{sent}");
        assert_eq!(sent["local"], closed_port.to_string());
        assert_eq!(sent["remote"], received["local"]);
    }
}

fn close_with_linger_zero_sends_a_reset_with_its_reason(mode: HookMode) {
    require_root();
    let link = Link::new();
    let tracer = start_events(mode);
    let with_reasons = reset_reasons_available(&tracer);
    let (client_stream, mut accepted, client, server) = connect_and_accept(&link, link.server_ip);
    set_option(&client_stream, libc::SOL_SOCKET, libc::SO_LINGER, libc::linger { l_onoff: 1, l_linger: 0 });
    drop(client_stream);
    let error = accepted.read(&mut [0; 16]).expect_err("the server sees the reset");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    tracer.wait_for("the server's reset", |line| line["kind"] == "rst_received" && line["netns"] == link.server.inode());
    let lines = tracer.stop();
    assert_nothing_lost(&lines);

    assert_eq!(transitions(&lines, client, server), pairs(&[("CLOSE", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED"), ("ESTABLISHED", "CLOSE")]));
    assert_eq!(
        transitions(&lines, server, client),
        pairs(&[("LISTEN", "SYN_RECV"), ("SYN_RECV", "ESTABLISHED"), ("ESTABLISHED", "CLOSE")])
    );
    let sent = lines.iter().find(|line| line["kind"] == "rst_sent" && line["netns"] == link.client.inode()).expect("a sent RST");
    assert_eq!((sent["local"].as_str(), sent["remote"].as_str()), (Some(&*client.to_string()), Some(&*server.to_string())));
    // tcp_disconnect() moves the socket to CLOSE before it sends the reset.
    assert_eq!(sent["state"], "CLOSE");
    assert_eq!(sent["tgid"], std::process::id(), "close() ran in our process: {sent}");
    if with_reasons {
        // The kernel names its own reason (TCP_STATE from tcp_disconnect() on 6.18); it must
        // arrive resolved to a name from this kernel's table.
        let name = sent["reason"].as_str().unwrap_or_default();
        assert!(sent["reason_code"].is_u64() && name.starts_with("TCP_"), "a name from the kernel's sk_rst_reason table: {sent}");
    }
    let received = lines.iter().find(|line| line["kind"] == "rst_received" && line["netns"] == link.server.inode()).unwrap();
    assert_eq!((received["local"].as_str(), received["remote"].as_str()), (Some(&*server.to_string()), Some(&*client.to_string())));
}

fn a_syn_into_time_wait_is_seen_exactly_where_fexit_works_and_by_its_new_socket_elsewhere(mode: HookMode) {
    require_root();
    let link = Link::new();
    let tracer = start_events(mode);
    let exact = tracer.stderr.lock().unwrap().contains("tcp_timewait_state_process=fexit");
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let client = SocketAddr::new(link.client_ip, 40_123);
    // The server closes first and keeps the 4-tuple in TIME_WAIT; the client comes back from
    // the same port, as a NAT recycling ports would make it.
    let mut first = link.client.run(move || connect_from(client, server)).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    drop(accepted);
    assert_eq!(first.read(&mut [0; 8]).unwrap(), 0);
    drop(first);
    tracer.wait_for("the server's socket handing over to TIME_WAIT", |line| {
        line["old_state"] == "FIN_WAIT2" && line["state"] == "CLOSE" && line["local"] == server.to_string()
    });
    let _second = link.client.run(move || connect_from(client, server)).expect("the SYN on the TIME_WAIT tuple is accepted");
    let _accepted = listener.accept().unwrap();
    let same_tuple = |line: &Value| line["local"] == server.to_string() && line["remote"] == client.to_string();
    if exact {
        let entered = tracer.wait_for("timewait_enter", |line| line["kind"] == "timewait_enter" && same_tuple(line));
        // An orphan hands over in FIN_WAIT2 unless the client's FIN already came.
        assert!(entered["state"] == "FIN_WAIT2" || entered["state"] == "TIME_WAIT", "{entered}");
        tracer.wait_for("the client's FIN reaching the timewait socket", |line| {
            line["kind"] == "timewait_enter" && line["state"] == "TIME_WAIT" && same_tuple(line)
        });
        let syn = tracer.wait_for("timewait_syn", |line| line["kind"] == "timewait_syn" && same_tuple(line));
        assert!(syn["tw_status"].is_u64(), "{syn}");
    } else {
        assert!(tracer.stderr.lock().unwrap().contains("tcp_timewait_state_process=unavailable"));
        tracer.wait_for("the first connection's timewait socket replaced", |line| line["old_state"] == "FIN_WAIT2" && same_tuple(line));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Counted at SYN_RECV → ESTABLISHED: before 6.x the child's LISTEN → SYN_RECV still
        // carries the listener's addresses.
        let births =
            || tracer.lines().iter().filter(|l| l["old_state"] == "SYN_RECV" && l["state"] == "ESTABLISHED" && same_tuple(l)).count();
        while births() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the new socket on the same tuple never appeared: {:#?}",
                tracer.lines().iter().filter(|l| same_tuple(l)).collect::<Vec<_>>()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    assert_nothing_lost(&tracer.stop());
}

#[derive(Clone, Copy)]
enum HookMode {
    /// `--hook-mode auto`: BTF tracepoints on every kernel ≥ 5.11 (they need
    /// `bpf_get_current_task_btf`), classic tracepoints before.
    Default,
    /// `--hook-mode tracepoint`.
    Classic,
}

/// `tracer --events` in `mode`, after checking it attached the hooks that mode promises.
fn start_events(mode: HookMode) -> Tracer {
    let (flag, expected) = match mode {
        HookMode::Default => ("auto", if kernel_at_least(5, 11) { "tp_btf" } else { "tracepoint" }),
        HookMode::Classic => ("tracepoint", "tracepoint"),
    };
    // The kernel log on: the programs must pass the verifier with their logging code in, and a
    // clean run must log (and count) nothing.
    let tracer = Tracer::start(&["--events", "--hook-mode", flag, "--kernel-log", "debug"]);
    let announced = tracer.stderr.lock().unwrap().clone();
    assert!(announced.contains("kernel log: debug"), "{announced}");
    for (hook, _, _) in tracer::kernel::hooks::tracepoints().filter(|(hook, _, _)| hook.name != "tcp_retransmit_synack") {
        let name = hook.name;
        assert!(announced.contains(&format!("{name}={expected}")), "--hook-mode {flag} should attach {name} as {expected}: {announced}");
    }
    tracer
}

macro_rules! in_both_modes {
    ($($scenario:ident),* $(,)?) => {
        mod default_hooks {
            $( #[test] fn $scenario() { super::$scenario(super::HookMode::Default) } )*
        }
        mod classic_tracepoints {
            $( #[test] fn $scenario() { super::$scenario(super::HookMode::Classic) } )*
        }
    };
}

in_both_modes!(
    client_that_closes_first_goes_through_fin_wait_and_server_through_last_ack,
    server_that_closes_first_leaves_the_client_with_close_wait_and_last_ack,
    ipv6_connection_is_traced_like_ipv4,
    connect_to_a_closed_port_is_reset_by_the_peer,
    close_with_linger_zero_sends_a_reset_with_its_reason,
    a_syn_into_time_wait_is_seen_exactly_where_fexit_works_and_by_its_new_socket_elsewhere,
);
