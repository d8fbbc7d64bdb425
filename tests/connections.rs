//! `--connections`: the connection log, end to end. Real TCP between two namespaces, one tracer
//! per scenario filtered to that link's addresses, and the exact line each end gets: role, close
//! class, who sent the first FIN, resets, retransmits, and the bytes the test itself moved.
mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use serde_json::Value;
use support::*;

/// A tracer printing connection lines for `link`'s connections only.
fn connection_log(link: &Link, selection: &str, extra: &[&str]) -> Tracer {
    let network = format!("{}/24", link.client_ip);
    let selection = format!("--connections={selection}");
    let mut args = vec![&selection[..], "--addr", &network];
    if !extra.contains(&"--interval") {
        args.extend(["--interval", "1"]);
    }
    args.extend_from_slice(extra);
    Tracer::start(&args)
}

/// A link, a tracer logging its connections, and a listener on the server side.
struct Scene {
    link: Link,
    tracer: Tracer,
    listener: std::net::TcpListener,
    server: SocketAddr,
}

impl Scene {
    fn new(selection: &str, extra: &[&str]) -> Scene {
        Scene::traced(selection, extra, false)
    }

    /// With `client_only`, the tracer follows the client's namespace alone: the server's
    /// firewall is then a device elsewhere, as when the tracer runs on the client's host (traced
    /// too, this host's drops there would be the verdict).
    fn traced(selection: &str, extra: &[&str], client_only: bool) -> Scene {
        require_root();
        let link = Link::new();
        let client = link.client.path();
        let mut args = extra.to_vec();
        if client_only {
            args.extend(["--netns", &client]);
        }
        let tracer = connection_log(&link, selection, &args);
        let listener = link.listen(link.server_ip);
        let server = listener.local_addr().unwrap();
        Scene { link, tracer, listener, server }
    }

    /// A connection: the client's stream, the accepted one, and the client's address.
    fn connect(&self) -> (TcpStream, TcpStream, SocketAddr) {
        let client = self.link.connect(self.server).unwrap();
        let (accepted, _) = self.listener.accept().unwrap();
        let client_addr = client.local_addr().unwrap();
        (client, accepted, client_addr)
    }
}

/// The connection line of the socket at `local` → `remote`.
fn line_of(tracer: &Tracer, local: SocketAddr, remote: SocketAddr) -> Value {
    tracer.wait_for(&format!("the line of {local} → {remote}"), |line| {
        line["local"] == local.to_string() && line["remote"] == remote.to_string() && line["close"].is_string()
    })
}

/// The fields read from the socket at its end: only the BTF state hook reads it (the classic
/// tracepoint, all that 5.10 allows for it, cannot), and there they are absent, never zero.
const SOCKET_COUNTERS: [&str; 3] = ["bytes_sent", "bytes_received", "error"];

/// Whether `tracer` attached the state hook as a BTF tracepoint, and so reads sockets.
fn reads_sockets(tracer: &Tracer) -> bool {
    tracer.announced().mode("inet_sock_set_state") == Some("tp_btf")
}

/// Asserts the named fields of a line (`Value::Null`: absent), all at once so a failure shows
/// every difference; [`SOCKET_COUNTERS`] are expected absent where the tracer cannot read them.
fn assert_fields(tracer: &Tracer, line: &Value, expected: &[(&str, Value)]) {
    let reads = reads_sockets(tracer);
    let expected: Vec<(&str, Value)> = expected
        .iter()
        .map(|(name, value)| (*name, if reads || !SOCKET_COUNTERS.contains(name) { value.clone() } else { Value::Null }))
        .collect();
    let actual: Vec<(&str, Value)> = expected.iter().map(|(name, _)| (*name, line[*name].clone())).collect();
    assert_eq!(actual, expected, "{line}");
}

#[test]
fn a_graceful_close_by_the_client_gives_both_ends_their_line_with_the_bytes_moved() {
    let scene = Scene::new("all", &[]);
    let (tracer, server) = (&scene.tracer, scene.server);
    let (mut client, mut accepted, client_addr) = scene.connect();
    client.write_all(&[1; 5000]).unwrap();
    accepted.read_exact(&mut [0; 5000]).unwrap();
    accepted.write_all(&[2; 300]).unwrap();
    client.read_exact(&mut [0; 300]).unwrap();
    drop(client); // the client closes first
    assert_eq!(accepted.read(&mut [0; 1]).unwrap(), 0);
    drop(accepted);

    let client_line = line_of(tracer, client_addr, server);
    let graceful = |first_fin: &str, sent: u64, received: u64| {
        vec![
            ("close", "graceful".into()),
            ("first_fin", first_fin.into()),
            ("rst", Value::Null),
            ("bytes_sent", sent.into()),
            ("bytes_received", received.into()),
            ("silent_cause", Value::Null),
        ]
    };
    assert_fields(tracer, &client_line, &[&[("role", "client".into())][..], &graceful("us", 5000, 300)].concat());
    assert_eq!(client_line["pid"], std::process::id(), "the owner is named: {client_line}");
    assert_eq!(client_line["netns"], scene.link.client.inode());
    for phase in ["handshake_ms", "established_ms", "closing_ms", "duration_ms"] {
        assert!(client_line[phase].as_f64().is_some_and(|ms| ms >= 0.0), "{phase}: {client_line}");
    }
    let server_line = line_of(tracer, server, client_addr);
    assert_fields(tracer, &server_line, &[&[("role", "server".into())][..], &graceful("peer", 300, 5000)].concat());
    let lines = scene.tracer.stop();
    assert_eq!(lines.last().unwrap()["final"], true, "the final summary closes the log");
    assert_nothing_lost(&lines);
}

#[test]
fn a_graceful_close_by_the_server_is_told_from_both_sides() {
    let scene = Scene::new("all", &[]);
    let (tracer, server) = (&scene.tracer, scene.server);
    let (mut client, mut accepted, client_addr) = scene.connect();
    accepted.write_all(&[3; 777]).unwrap();
    drop(accepted); // the server closes first
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 777);
    drop(client);

    assert_fields(
        tracer,
        &line_of(tracer, client_addr, server),
        &[("role", "client".into()), ("close", "graceful".into()), ("first_fin", "peer".into()), ("bytes_received", 777.into())],
    );
    assert_fields(
        tracer,
        &line_of(tracer, server, client_addr),
        &[("role", "server".into()), ("close", "graceful".into()), ("first_fin", "us".into()), ("bytes_sent", 777.into())],
    );
    scene.tracer.stop();
}

#[test]
fn a_refused_connect_and_a_connect_timeout() {
    require_root();
    let link = Link::new();
    link.server.nft("table inet firewall { chain input { type filter hook input priority 0; tcp dport 7780 drop; }; }");
    link.client.exec(&["sysctl", "-qw", "net.ipv4.tcp_syn_retries=1"]);
    // The client's namespace alone: the server's firewall is then a device elsewhere.
    let tracer = connection_log(&link, "troubled", &["--netns", &link.client.path()]);
    // Bound first, so the test knows the local end of a connect that fails.
    let (refused_from, timeout_from) = (SocketAddr::new(link.client_ip, 45001), SocketAddr::new(link.client_ip, 45002));
    let closed = SocketAddr::new(link.server_ip, 7781);
    let refused = link.client.run(move || connect_from(refused_from, closed).expect_err("nothing listens there").kind());
    assert_eq!(refused, std::io::ErrorKind::ConnectionRefused);
    let refused_line = line_of(&tracer, refused_from, closed);
    assert_fields(
        &tracer,
        &refused_line,
        &[
            ("role", "client".into()),
            ("close", "refused".into()),
            ("rst", "received".into()),
            ("syn_retransmits", 0.into()),
            ("established_ms", Value::Null),
            ("error", "ECONNREFUSED".into()),
        ],
    );

    let dropped = SocketAddr::new(link.server_ip, 7780);
    let timed_out = link.client.run(move || connect_from(timeout_from, dropped).expect_err("the firewall drops every SYN").kind());
    assert_eq!(timed_out, std::io::ErrorKind::TimedOut);
    let timeout_line = line_of(&tracer, timeout_from, dropped);
    assert_fields(
        &tracer,
        &timeout_line,
        &[
            ("role", "client".into()),
            ("close", "connect_timeout".into()),
            ("rst", Value::Null),
            ("error", "ETIMEDOUT".into()),
            ("bytes_sent", 0.into()),
        ],
    );
    // tcp_syn_retries=1 bounds the time (1 s + 2 s), and the kernel sends a SYN at each expiry.
    assert!(timeout_line["syn_retransmits"].as_u64().is_some_and(|n| (1..=2).contains(&n)), "{timeout_line}");
    let lines = tracer.stop();
    assert!(lines.iter().all(|line| line["close"] != "graceful"), "troubled only: {lines:?}");
}

#[test]
fn a_peer_that_goes_silent_ends_by_retransmissions_or_by_keepalive() {
    let Scene { link, tracer, listener, server } = Scene::traced("troubled", &[], true);
    let (sending, idle) = link.client.run(move || {
        let sending = TcpStream::connect(server).unwrap();
        set_option(&sending, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 1000 as libc::c_uint);
        let idle = TcpStream::connect(server).unwrap();
        set_option(&idle, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1 as libc::c_int);
        set_option(&idle, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 1 as libc::c_int);
        set_option(&idle, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 1 as libc::c_int);
        set_option(&idle, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 1 as libc::c_int);
        (sending, idle)
    });
    let accepted: Vec<_> = (0..2).map(|_| listener.accept().unwrap().0).collect();
    let client_ip = link.client_ip;
    link.server
        .nft(&format!("table inet blackhole {{ chain input {{ type filter hook input priority 0; ip saddr {client_ip} drop; }}; }}"));
    let (sending_addr, idle_addr) = (sending.local_addr().unwrap(), idle.local_addr().unwrap());
    let mut sending = sending;
    sending.write_all(b"hello?").unwrap();

    let silent = line_of(&tracer, sending_addr, server);
    assert_fields(
        &tracer,
        &silent,
        &[
            ("close", "peer_silent".into()),
            ("silent_cause", "retransmissions".into()),
            ("error", "ETIMEDOUT".into()),
            ("bytes_sent", 0.into()),
        ],
    );
    assert!(silent["retransmits"].as_u64() >= Some(1), "{silent}");
    let kept_alive = line_of(&tracer, idle_addr, server);
    // The kernel names the keepalive reset from 6.10; before, the socket's ETIMEDOUT tells it
    // from a reset of ours, and where the socket cannot be read (5.10) nothing does: unresolved.
    let expected =
        if reads_sockets(&tracer) { (Some("peer_silent"), Some("keepalive"), Some("ETIMEDOUT")) } else { (Some("unresolved"), None, None) };
    assert_eq!((kept_alive["close"].as_str(), kept_alive["silent_cause"].as_str(), kept_alive["error"].as_str()), expected, "{kept_alive}");
    // Its first probe went out TCP_KEEPIDLE (1 s) after the peer was last heard, unanswered: the
    // idle gap before it died, read from the socket with the RST (BTF hooks, the tick rate known).
    let gaps_known = tracer.stderr.lock().unwrap().contains("idle gaps: yes");
    let expected_gap = (reads_sockets(&tracer) && gaps_known).then_some(1000.0);
    assert_eq!(kept_alive["idle_before_ms"].as_f64(), expected_gap, "{kept_alive}");
    if kernel_at_least(6, 10) {
        assert_eq!(kept_alive["rst_reason"].as_str(), Some("TCP_KEEPALIVE_TIMEOUT"), "{kept_alive}");
    } else {
        assert!(kept_alive["rst_reason"].is_null(), "no reason before 6.10: {kept_alive}");
    }
    drop(accepted);
    tracer.stop();
}

#[test]
fn an_application_abort_and_a_reset_from_a_middlebox() {
    let scene = Scene::new("troubled", &[]);
    let (link, tracer, server) = (&scene.link, &scene.tracer, scene.server);

    // SO_LINGER 0: close() sends a RST.
    let (mut aborting, mut accepted, aborting_addr) = scene.connect();
    aborting.write_all(&[4; 100]).unwrap();
    accepted.read_exact(&mut [0; 100]).unwrap();
    set_option(&aborting, libc::SOL_SOCKET, libc::SO_LINGER, libc::linger { l_onoff: 1, l_linger: 0 });
    drop(aborting);
    let _ = accepted.read(&mut [0; 1]);
    let aborted = line_of(tracer, aborting_addr, server);
    assert_fields(
        tracer,
        &aborted,
        &[("role", "client".into()), ("close", "aborted".into()), ("rst", "sent".into()), ("bytes_sent", 100.into())],
    );
    let reset = line_of(tracer, server, aborting_addr);
    assert_fields(
        tracer,
        &reset,
        &[
            ("role", "server".into()),
            ("close", "reset_by_peer".into()),
            ("rst", "received".into()),
            ("bytes_received", 100.into()),
            ("error", "ECONNRESET".into()),
        ],
    );

    // A firewall in the server's namespace answers the client's data with a RST of its own: the
    // client sees a reset, the server never hears of it.
    let (mut client, server_side, client_addr) = scene.connect();
    link.server.nft(&format!(
        "table inet appliance {{ chain input {{ type filter hook input priority -10; tcp sport {} tcp dport {} reject with tcp reset; }}; }}",
        client_addr.port(),
        server.port()
    ));
    client.write_all(b"request").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(client.read(&mut [0; 1]).is_err(), "the appliance reset the connection");
    let by_appliance = line_of(tracer, client_addr, server);
    assert_fields(
        tracer,
        &by_appliance,
        &[("role", "client".into()), ("close", "reset_by_peer".into()), ("rst", "received".into()), ("first_fin", Value::Null)],
    );
    let lines = scene.tracer.stop();
    assert!(
        !lines.iter().any(|line| line["local"] == server.to_string() && line["remote"] == client_addr.to_string()),
        "the server's socket never ended: {lines:?}"
    );
    drop(server_side);
}

#[test]
fn where_the_socket_cannot_be_read_at_its_end_the_bytes_are_absent_not_zero() {
    let scene = Scene::new("all", &["--hook-mode", "tracepoint"]);
    let (tracer, server) = (&scene.tracer, scene.server);
    let (mut client, mut accepted, client_addr) = scene.connect();
    client.write_all(&[5; 10]).unwrap();
    drop(client);
    let mut got = Vec::new();
    accepted.read_to_end(&mut got).unwrap();
    drop(accepted);
    let line = line_of(tracer, client_addr, server);
    assert_eq!(line["close"], "graceful", "{line}");
    let object = line.as_object().unwrap();
    assert!(!object.contains_key("bytes_sent") && !object.contains_key("bytes_received") && !object.contains_key("error"), "{line}");
    scene.tracer.stop();
}

#[test]
fn a_peer_reset_after_our_fin_reads_the_same_at_any_summary_interval() {
    // Our FIN is acknowledged and the orphan's timewait socket waits in FIN_WAIT2; 3 s later the
    // peer resets it. A 2 s interval's snapshot saw it in FIN_WAIT2 first, a 10 s one only after
    // the reset: the verdict must not care.
    for interval in ["2", "10"] {
        let scene = Scene::new("all", &["--interval", interval]);
        let (tracer, server) = (&scene.tracer, scene.server);
        let (client, accepted, client_addr) = scene.connect();
        drop(client);
        std::thread::sleep(Duration::from_secs(3));
        set_option(&accepted, libc::SOL_SOCKET, libc::SO_LINGER, libc::linger { l_onoff: 1, l_linger: 0 });
        drop(accepted);
        let line = line_of(tracer, client_addr, server);
        // From 6.10 the kernel also reports the resets a timewait socket sends, so a socket gone
        // early without one of ours was reset by the peer; before, the tracer cannot tell.
        let expected = if kernel_at_least(6, 10) { "reset_by_peer" } else { "unresolved" };
        assert_fields(tracer, &line, &[("role", "client".into()), ("close", expected.into()), ("first_fin", "us".into())]);
        let detail = line["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("after our FIN") && !detail.contains("expired"), "interval {interval}: {line}");
        scene.tracer.stop();
    }
}

#[test]
fn lines_come_soon_after_their_connections_end_however_long_the_interval() {
    // On a quiet host the summary was what moved lines along: at a 60 s interval a connection's
    // line came a minute late. Now a line waits only for the verdicts of the connections that
    // ended before it (here the client's timewait socket, looked up within a second).
    let scene = Scene::new("all", &["--interval", "60"]);
    let (client, accepted, client_addr) = scene.connect();
    drop(client);
    drop(accepted);
    line_of(&scene.tracer, client_addr, scene.server);
    line_of(&scene.tracer, scene.server, client_addr);
    let lines = scene.tracer.lines();
    assert!(lines.iter().all(|line| line["close"].is_string()), "the lines came before any summary: {lines:#?}");
    scene.tracer.stop();
}

#[test]
fn a_connection_still_waiting_for_the_peers_fin_when_the_tracer_stops_gets_an_unresolved_line() {
    // Our FIN is acknowledged and the orphan's timewait socket waits in FIN_WAIT2 for the peer's
    // FIN, which never comes before the tracer stops: the connection ended, so it has its line.
    let scene = Scene::new("all", &[]);
    let (client, accepted, client_addr) = scene.connect();
    drop(client);
    std::thread::sleep(Duration::from_millis(1500));
    let lines = scene.tracer.stop();
    let line = lines
        .iter()
        .find(|line| line["local"] == client_addr.to_string() && line["close"].is_string())
        .unwrap_or_else(|| panic!("no line for {client_addr}: {lines:?}"));
    assert_eq!((&line["role"], &line["close"], &line["first_fin"]), (&"client".into(), &"unresolved".into(), &"us".into()), "{line}");
    assert!(line["detail"].as_str().unwrap_or_default().contains("the tracer stopped"), "{line}");
    drop(accepted);
}

#[test]
fn a_burst_of_connections_gets_every_line_even_when_the_tracer_stops_right_after_it() {
    // Lines wait (up to 3 s) for the verdicts before them, so at exit many of a burst's lines
    // come out at once: they must wait for the writer, not overflow its queue (which held 4 096
    // lines before). 5 000
    // connections are 50 000 records: the ring buffer holds them all even where the reader gets
    // no CPU during the burst (a one-CPU emulated guest).
    require_root();
    let link = Link::new();
    let tracer = connection_log(&link, "all", &["--interval", "60"]);
    let ip = link.server_ip;
    let done = link.server.run(move || churn::churn(ip, churn::Amount::Connections(5_000)));
    // Let the last closes complete (an emulated guest takes a moment to exchange the FINs):
    // whatever lines still wait are due at exit.
    std::thread::sleep(Duration::from_secs(1));
    let lines = tracer.stop();
    let ends: Vec<&Value> = lines.iter().filter(|line| line["close"].is_string()).collect();
    let last = lines.last().unwrap();
    assert_eq!((&last["events"]["lost"], &last["events"]["output_dropped"]), (&0.into(), &0.into()), "{last}");
    // A hook firing the kernel skipped (the same program already running on that CPU: in a
    // one-CPU guest a softirq interrupts it now and then) may be a close, and so a missing line;
    // each is counted in the final line, and nothing else may go missing.
    let skipped = last["events"]["skipped"].as_u64().expect("skipped is counted");
    // Every end has its mate: the other end of the same connection, addresses swapped.
    let address = |end: &Value, side: &str| end[side].as_str().unwrap_or_default().to_string();
    let tuples: std::collections::HashSet<(String, String)> =
        ends.iter().map(|end| (address(end, "local"), address(end, "remote"))).collect();
    let alone: Vec<&&Value> = ends.iter().filter(|end| !tuples.contains(&(address(end, "remote"), address(end, "local")))).collect();
    assert!(alone.len() as u64 <= skipped, "{} ends without their mate's line: {alone:?}\nfinal: {last}", alone.len());
    // The churn's last connect only wakes its acceptor: one connection more than it counts.
    assert!(
        ((2 * done).saturating_sub(skipped)..=2 * (done + 1)).contains(&(ends.len() as u64)),
        "{} lines: one for each end of each of the {done} connections, and the wake-up's, less what was skipped\nfinal: {last}",
        ends.len()
    );
}

#[test]
fn a_socket_destroyed_on_this_host_is_told_from_an_application_abort() {
    // `ss -K` (sock_diag SOCK_DESTROY, what a CNI's socket cleanup also uses) kills the client's
    // established socket: our kernel sends the RST, and the application asked for nothing.
    let scene = Scene::new("all", &[]);
    let (tracer, server) = (&scene.tracer, scene.server);
    let (mut client, _accepted, client_addr) = scene.connect();
    let (port, ip) = (server.port().to_string(), server.ip().to_string());
    let killed = std::process::Command::new("ip")
        .args(["netns", "exec", &scene.link.client.name, "ss", "-K", "dst", &ip, "dport", "=", &port])
        .output()
        .expect("ss runs");
    assert!(killed.status.success(), "{killed:?}");
    assert_eq!(client.read(&mut [0; 1]).unwrap_err().kind(), std::io::ErrorKind::ConnectionAborted);
    let line = line_of(tracer, client_addr, server);
    assert_eq!((line["close"].as_str(), line["rst"].as_str()), (Some("aborted"), Some("sent")), "{line}");
    if !line["error"].is_null() {
        assert!(line["detail"].as_str().unwrap().contains("destroyed on this host"), "{line}");
    }
    scene.tracer.stop();
}
