//! Verdicts on traffic shaped like production: a client pool that runs out of local ports, a
//! client that half-closes while the server streams, findings that must reach an operator who
//! asked for connection lines. Each scenario is built the way the incident happens (namespaces,
//! veth, sysctls) and read from a real `tracer`.
mod support;

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

/// Every connection line of a `--connections` run.
fn connection_lines(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|line| line.get("close").is_some()).collect()
}

/// A pool of 100 local ports and 160 connects to one server, each closed by the client first:
/// TIME_WAIT holds every port, and the last 60 connects fail with EADDRNOTAVAIL before any SYN.
/// They are `no_local_port`, with one finding that names the TIME_WAIT holding the range; never
/// "aborted … may have read an ICMP error".
#[test]
fn a_client_out_of_local_ports_is_no_local_port_tied_to_the_time_wait_that_holds_them() {
    require_root();
    let link = Link::new();
    link.client.exec(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40099"]);
    let client_netns = link.client.path();
    let tracer = Tracer::start(&["--interval", "1", "--netns", &client_netns, "--connections=all", "--stuck-after", "60"]);
    // A service on a well-known port, as in production (a port of the ephemeral range would make
    // the role of a TIME_WAIT socket, which the kernel does not say, a guess).
    let server = SocketAddr::new(link.server_ip, 80);
    let listener = link.server.run(move || std::net::TcpListener::bind(server).expect("bind"));
    let failed = link.client.run(move || {
        let mut failed = 0;
        for _ in 0..160 {
            match TcpStream::connect_timeout(&server, Duration::from_secs(5)) {
                Ok(stream) => {
                    let (accepted, _) = listener.accept().unwrap();
                    drop(stream); // the client closes first: its port stays in TIME_WAIT
                    drop(accepted);
                }
                Err(error) => {
                    assert_eq!(error.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{error}");
                    failed += 1;
                }
            }
        }
        failed
    });
    assert!((50..=60).contains(&failed), "{failed} connects failed for want of a port");
    // With --connections, stdout holds connection lines: the finding comes as a line of its own.
    let finding = tracer.wait_long("the local_ports_exhausted finding", 15, |line| line["finding"]["kind"] == "local_ports_exhausted");
    let finding = &finding["finding"];
    let detail = finding["detail"].as_str().unwrap();
    assert_eq!(finding["remote"], server.to_string(), "{finding}");
    assert!(detail.contains("no local port free for this destination (ephemeral range 40000-40099, 100 ports"), "{detail}");
    // Every port of the range is held by a connection the client closed first, in TIME_WAIT or
    // (until a lookup sees it pass there) in FIN_WAIT2.
    assert!(detail.contains("100 socket(s) to it that we closed first still hold ports of that range"), "{detail}");
    let lines = tracer.stop();
    let refused: Vec<_> = connection_lines(&lines).into_iter().filter(|line| line["close"] == "no_local_port").collect();
    assert_eq!(refused.len(), failed, "every failed connect has its line: {refused:?}");
    assert!(refused.iter().all(|line| line["detail"].as_str().unwrap().contains("EADDRNOTAVAIL")), "{refused:?}");
    assert!(
        !connection_lines(&lines).iter().any(|line| line["detail"].as_str().is_some_and(|detail| detail.contains("ICMP"))),
        "no connect reads as an ICMP error"
    );
    let last = lines.iter().rev().find(|line| line.get("final").is_some()).unwrap();
    let run = last["findings_since_start"].as_array().expect("the final summary says what the whole run found");
    let total = run.iter().find(|f| f["kind"] == "local_ports_exhausted").map(|f| f["total"].clone());
    assert_eq!(total, Some(failed.into()), "{last}");
}

/// The client shuts down its sending side and keeps reading while the server streams: a
/// half-close, not a leak. Neither the server's CLOSE_WAIT nor the client's FIN_WAIT2 is flagged
/// while data flows; once the server stops sending and keeps its socket, it is stuck.
#[test]
fn a_half_close_that_still_streams_is_not_stuck_until_the_sending_stops() {
    require_root();
    let link = Link::new();
    let tracer = Tracer::start(&["--interval", "1", "--stuck-after", "2"]);
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let client = link.connect(server).unwrap();
    let (mut accepted, _) = listener.accept().unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut reader = client.try_clone().unwrap();
    let drained = thread::spawn(move || {
        let mut buffer = [0; 4096];
        let mut total = 0;
        while let Ok(n @ 1..) = reader.read(&mut buffer) {
            total += n;
        }
        total
    });
    let ours = |f: &Value| f["local"] == server.to_string() || f["remote"] == server.to_string();
    let flagged = |line: &Value| {
        line["findings"]
            .as_array()
            .is_some_and(|findings| findings.iter().any(|f| (f["kind"] == "close_wait_stuck" || f["kind"] == "fin_unanswered") && ours(f)))
    };
    let streaming = Instant::now();
    while streaming.elapsed() < Duration::from_secs(6) {
        accepted.write_all(&[7; 1024]).unwrap();
        thread::sleep(Duration::from_millis(100));
    }
    let summaries = tracer.lines().into_iter().filter(|line| line.get("findings").is_some()).count();
    assert!(summaries >= 4, "summaries came while it streamed: {summaries}");
    assert!(!tracer.lines().iter().any(flagged), "a half-close that streams is neither stuck nor unanswered: {:#?}", tracer.lines());
    // The server stops sending but keeps the socket: now it is a leak.
    let stuck = tracer.wait_for_finding("close_wait_stuck", |f| f["local"] == server.to_string());
    assert!(stuck["detail"].as_str().unwrap().contains("sending nothing"), "{stuck}");
    assert_eq!(stuck["process"]["pid"], std::process::id(), "{stuck}");
    let lines = tracer.stop();
    assert_nothing_lost(&lines);
    drop(accepted);
    assert!(drained.join().unwrap() >= 50 * 1024, "the client read what the server streamed");
}

/// `--addr` names the service's address; its listener is bound to 0.0.0.0, which serves that
/// address too. Its full accept queue is found, and the connects that queue turned away (made in
/// the same namespace) point at it rather than at a peer that "did not answer our SYN".
#[test]
fn an_address_filter_keeps_the_wildcard_listener_that_serves_it() {
    require_root();
    let link = Link::new();
    let listener = link.server.listen_with_a_backlog_of_one("0.0.0.0:0".parse().unwrap());
    let service = SocketAddr::new(link.server_ip, listener.local_addr().unwrap().port());
    let only = format!("{}/32", link.server_ip);
    let tracer = Tracer::start(&["--interval", "1", "--addr", &only, "--netns", &link.server.path()]);
    assert!(
        tracer.stderr.lock().unwrap().contains(&format!("tracer: filter: only connections with either end in {only}")),
        "the filter is said at start"
    );
    let clients = link.server.connect_at_once(service, 12);
    let wildcard = format!("0.0.0.0:{}", service.port());
    let full = tracer.wait_for_finding("accept_queue_full", |f| f["local"] == wildcard);
    assert!(full["detail"].as_str().unwrap().contains("backlog 1"), "{full}");
    let syns = tracer.wait_long("the SYN retransmits explained", 15, |line| {
        line["findings"].as_array().is_some_and(|findings| {
            findings.iter().any(|f| f["kind"] == "syn_retransmit" && f["detail"].as_str().is_some_and(|d| d.contains("accept_queue_full")))
        })
    });
    let syns = syns["findings"].as_array().unwrap().iter().find(|f| f["kind"] == "syn_retransmit").unwrap().clone();
    assert!(!syns["detail"].as_str().unwrap().contains("the peer did not answer"), "{syns}");
    tracer.stop();
    drop((clients, listener));
}

/// The server closes first; the client's FIN reaches the server's timewait socket within
/// milliseconds, which the kernel reports nothing of on this host's hooks. No server line may
/// claim the second its lookup took as the connection's duration: it is exact, or only bounded.
#[test]
fn a_server_that_closes_first_claims_no_duration_it_did_not_see() {
    require_root();
    let link = Link::new();
    let tracer = Tracer::start(&["--interval", "1", "--netns", &link.server.path(), "--connections=all"]);
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let mut longest = Duration::ZERO;
    for size in [0usize, 10, 1000, 100_000].into_iter().cycle().take(40) {
        let began = Instant::now();
        let mut client = link.connect(server).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        accepted.write_all(&vec![1; size]).unwrap();
        drop(accepted); // the server closes first
        let mut received = Vec::new();
        client.read_to_end(&mut received).unwrap();
        assert_eq!(received.len(), size);
        drop(client); // the client's FIN: the connection's end, on both sides
        longest = longest.max(began.elapsed());
    }
    let server_lines = |lines: &[Value]| {
        lines.iter().filter(|line| line["role"] == "server" && line["local"] == server.to_string()).cloned().collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while server_lines(&tracer.lines()).len() < 40 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let lines = server_lines(&tracer.stop());
    assert_eq!(lines.len(), 40, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["close"], "graceful", "{line}");
        match line["duration_ms"].as_f64() {
            Some(ms) => assert!(ms <= longest.as_secs_f64() * 1e3 + 50.0, "longer than any connection lasted ({longest:?}): {line}"),
            None => assert!(line["duration_at_most_ms"].as_f64().is_some(), "an end not seen is bounded: {line}"),
        }
    }
}

/// A router resets the client's request in the server's name (`reject with tcp reset` on the
/// client's data), before any data of the server came back: the client's only packet of the
/// server is its SYN-ACK, one router away. That handshake is the reference: the reset is the
/// path's, 0 hops away, not the peer's. A reset whose origin nothing could check names nobody.
#[test]
fn a_reset_forged_at_the_client_is_judged_against_the_server_s_handshake() {
    require_root();
    let routed = Routed::router();
    let listener = routed.server.run({
        let server_ip = routed.server_ip;
        move || std::net::TcpListener::bind(SocketAddr::new(server_ip, 80)).unwrap()
    });
    let server = listener.local_addr().unwrap();
    routed.nat.nft(&format!(
        "table inet appliance {{ chain forward {{ type filter hook forward priority 0; \
         tcp dport {} tcp flags & (psh | ack) == psh | ack reject with tcp reset; }}; }}",
        server.port()
    ));
    let client_netns = routed.client.path();
    let tracer = Tracer::start(&["--interval", "1", "--netns", &client_netns, "--connections=all"]);
    let checked = tracer.stderr.lock().unwrap().contains("netif_receive_skb=tp_btf");
    let mut client = routed.client.run(move || TcpStream::connect_timeout(&server, Duration::from_secs(5)).unwrap());
    let (accepted, _) = listener.accept().unwrap();
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(client.read(&mut [0; 1]).is_err(), "the router's reset reached the client");
    let local = client.local_addr().unwrap().to_string();
    let line = tracer.wait_for("the client's line", |line| line["local"] == local && line["close"].is_string());
    if checked {
        let fields = (line["close"].clone(), line["rst_from"].clone(), line["rst_hops"].clone(), line["peer_hops"].clone());
        assert_eq!(fields, ("reset_by_path".into(), "path".into(), 0.into(), 1.into()), "{line}");
        let detail = line["detail"].as_str().unwrap();
        assert!(detail.contains("a device 0 hop(s) from us sent it in the peer's name"), "{detail}");
        assert!(detail.contains("compared with the peer's latest handshake, TTL 63"), "{detail}");
    } else {
        eprintln!("netif_receive_skb is unavailable here: the reset is unchecked");
        assert_eq!((line["close"].as_str(), line["rst_from"].as_str()), (Some("reset_unverified"), None), "{line}");
    }
    let lines = tracer.stop();
    assert!(!connection_lines(&lines).iter().any(|line| line["close"] == "reset_by_peer"), "nothing names the server: {lines:?}");
    drop(accepted);
}

/// A reject rule in a namespace of this host (a router namespace's nftables, `reject with tcp
/// reset`) refuses connects to one port of a server: the namespace drops each SYN and answers
/// with a RST in the server's name. One answer: each connect is refused by this host's firewall
/// in that namespace, named; the drops are that refusal, not a finding of their own; the
/// failed connects are a finding apart from SYN retransmits. A port the server itself refuses
/// (nothing listens) stays the peer's refusal.
#[test]
fn a_firewall_of_this_host_that_refuses_is_named_as_the_refuser() {
    require_root();
    let routed = Routed::router();
    let server_ip = routed.server_ip;
    let listener = routed.server.run(move || std::net::TcpListener::bind(SocketAddr::new(server_ip, 8080)).unwrap());
    let (blocked, closed) = (SocketAddr::new(server_ip, 8443), SocketAddr::new(server_ip, 9));
    routed.nat.nft(&format!(
        "table inet guard {{ chain forward {{ type filter hook forward priority 0; tcp dport {} reject with tcp reset; }}; }}",
        blocked.port()
    ));
    let (inside, outside) = (format!("{}/24", routed.client_ip), format!("{server_ip}/24"));
    let tracer = Tracer::start(&["--interval", "1", "--addr", &inside, "--addr", &outside, "--connections=all"]);
    let refused = |to: SocketAddr| {
        let error = routed.client.run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap_err());
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused, "{to}");
    };
    // A connection that works, for the server's handshake.
    let working = routed.client.run(move || TcpStream::connect_timeout(&SocketAddr::new(server_ip, 8080), Duration::from_secs(5)).unwrap());
    let (accepted, _) = listener.accept().unwrap();
    for _ in 0..3 {
        refused(blocked);
    }
    refused(closed);
    let checked = tracer.stderr.lock().unwrap().contains("kfree_skb=tp_btf");
    let router = format!("namespace {} (netns {})", routed.nat.name, routed.nat.inode());
    let failed = tracer.wait_long("the connect_failed finding", 15, |line| {
        line["finding"]["kind"] == "connect_failed" && line["finding"]["remote"] == blocked.to_string()
    });
    let lines = tracer.stop();
    let of = |to: SocketAddr| -> Vec<&Value> {
        connection_lines(&lines).into_iter().filter(|line| line["remote"] == to.to_string() && line["role"] == "client").collect()
    };
    assert_eq!(of(blocked).len(), 3, "{lines:?}");
    if !checked {
        eprintln!("kfree_skb is unavailable here (Linux < 5.17): this host's drops are not seen");
        return;
    }
    for line in of(blocked) {
        assert_eq!(line["close"], "refused", "{line}");
        let detail = line["detail"].as_str().unwrap();
        assert!(detail.starts_with(&format!("refused by this host's firewall in {router}: our SYN was dropped there")), "{detail}");
    }
    let detail = failed["finding"]["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("refused by this host's firewall in {router}")), "{detail}");
    let by_server = of(closed);
    assert!(!by_server[0]["detail"].as_str().unwrap().contains("firewall"), "the server's own refusal: {by_server:?}");
    let findings = lines.iter().filter_map(|line| line.get("finding"));
    let drops: Vec<&Value> = findings.filter(|f| f["kind"] == "dropped_here").collect();
    assert!(drops.is_empty(), "the refusals' drops are the refusals, not a finding of their own: {drops:?}");
    drop((working, accepted));
}

/// Behind a source NAT in a namespace of this host with two ports for one server, a client
/// holding two connections opens a third: the NAT has no port left and drops each SYN (after
/// rewriting its source). One story: the SYN retransmits say this host dropped them, in that
/// namespace, and the connect that gave up is `dropped_here`, its SYNs joined to the NAT's
/// drops by destination and time.
#[test]
fn syns_a_nat_of_this_host_drops_for_want_of_ports_are_this_host_s_drops() {
    require_root();
    let routed = Routed::new((40000, 40001));
    let server_ip = routed.server_ip;
    let listener = routed.server.run(move || std::net::TcpListener::bind(SocketAddr::new(server_ip, 8080)).unwrap());
    let server = listener.local_addr().unwrap();
    let (inside, outside) = (format!("{}/24", routed.client_ip), format!("{server_ip}/24"));
    let tracer = Tracer::start(&["--interval", "1", "--addr", &inside, "--addr", &outside, "--connections=all"]);
    let held: Vec<TcpStream> =
        (0..2).map(|_| routed.client.run(move || TcpStream::connect_timeout(&server, Duration::from_secs(5)).unwrap())).collect();
    let accepted: Vec<TcpStream> = (0..2).map(|_| listener.accept().unwrap().0).collect();
    let error = routed.client.run(move || TcpStream::connect_timeout(&server, Duration::from_millis(3500)).unwrap_err());
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "the NAT has no port left for a third");
    let checked = tracer.stderr.lock().unwrap().contains("kfree_skb=tp_btf");
    let nat = format!("namespace {} (netns {})", routed.nat.name, routed.nat.inode());
    let line = tracer.wait_for("the third connect's line", |line| {
        line["remote"] == server.to_string() && line["close"].is_string() && line["role"] == "client"
    });
    let lines = tracer.stop();
    if !checked {
        eprintln!("kfree_skb is unavailable here (Linux < 5.17): this host's drops are not seen");
        return;
    }
    assert_eq!(line["close"], "dropped_here", "{line}");
    let detail = line["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "SYN(s) in {nat} (a drop to the same destination within 5 ms of each), their source rewritten to {}:",
            routed.nat_ip
        )),
        "{detail}"
    );
    assert!(detail.contains("NETFILTER_DROP; the peer never saw them"), "{detail}");
    let syns: Vec<&Value> = lines.iter().filter_map(|line| line.get("finding")).filter(|f| f["kind"] == "syn_retransmit").collect();
    assert!(!syns.is_empty(), "{lines:?}");
    for finding in syns {
        let detail = finding["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("this host dropped our SYNs in {nat}")), "{detail}");
    }
    drop((held, accepted));
}

/// A router whose route to the client is `mtu lock 1300` and whose ICMP "fragmentation needed"
/// is dropped: the server's full-size segments never arrive, its short tail does (the client
/// SACKs it), and the server times out. Traced where the router is a namespace of this host, its
/// PKT_TOO_BIG drops are the verdict; traced in the server's namespace alone (the router
/// elsewhere), the sizes are: a path MTU black hole, never the peer's silence.
#[test]
fn a_path_mtu_black_hole_is_named_from_the_sizes_or_from_this_host_s_drops() {
    require_root();
    let routed = Routed::router();
    let client_net = format!("{}/24", routed.client_ip);
    let client_host = format!("{}/32", routed.client_ip);
    routed.nat.exec(&["ip", "route", "replace", &client_host, "dev", &routed.inward, "mtu", "lock", "1300"]);
    routed.nat.nft("table inet black_hole { chain out { type filter hook output priority 0; icmp type destination-unreachable drop; }; }");
    // The server gives up after 4 retransmissions (about 6 s) instead of 15 minutes.
    routed.server.exec(&["sysctl", "-qw", "net.ipv4.tcp_retries2=4"]);
    let server_ip = routed.server_ip;
    let listener = routed.server.run(move || std::net::TcpListener::bind(SocketAddr::new(server_ip, 8080)).unwrap());
    let server = listener.local_addr().unwrap();
    let (inside, outside) = (client_net.clone(), format!("{server_ip}/24"));
    let everywhere = Tracer::start(&["--interval", "1", "--addr", &inside, "--addr", &outside, "--connections=all"]);
    let server_only = Tracer::start(&["--interval", "1", "--netns", &routed.server.path(), "--connections=all"]);
    let mut client = routed.client.run(move || TcpStream::connect_timeout(&server, Duration::from_secs(5)).unwrap());
    let (mut accepted, _) = listener.accept().unwrap();
    client.write_all(b"GET /large").unwrap();
    accepted.read_exact(&mut [0; 10]).unwrap();
    accepted.write_all(&[7; 4000]).unwrap(); // two full-size segments and a short tail
    let remote = client.local_addr().unwrap().to_string();
    let server_line =
        |tracer: &Tracer| tracer.wait_long("the server's line", 20, |line| line["remote"] == remote && line["close"].is_string());
    let (here, elsewhere) = (server_line(&everywhere), server_line(&server_only));
    let checked = everywhere.stderr.lock().unwrap().contains("tcp_retransmit_skb=tp_btf");
    let drops_seen = everywhere.stderr.lock().unwrap().contains("kfree_skb=tp_btf");
    drop((everywhere, server_only, client, accepted));
    if !checked {
        eprintln!("tcp_retransmit_skb is a classic tracepoint here: no segment sizes");
        return;
    }
    assert_eq!(elsewhere["close"], "mtu_black_hole", "{elsewhere}");
    let detail = elsewhere["detail"].as_str().unwrap();
    assert!(detail.starts_with("path MTU black hole: ") && detail.contains("full-size segment(s) (1448 bytes, the MSS)"), "{detail}");
    assert!(detail.contains("the peer acknowledged smaller ones sent after them (SACK)"), "{detail}");
    if drops_seen {
        assert_eq!(here["close"], "dropped_here", "{here}");
        let detail = here["detail"].as_str().unwrap();
        let router = format!("namespace {} (netns {})", routed.nat.name, routed.nat.inode());
        assert!(detail.contains(&format!("in {router}, which held no socket for them: PKT_TOO_BIG")), "{detail}");
        assert!(detail.contains("path MTU black hole"), "{detail}");
    }
}

/// A backend killed with `kill -9` while a client holds a connection: the kernel closes the
/// dead process's socket with a FIN, which reads graceful on the wire. Its line names the
/// process and says it exited without closing, not that the application chose to.
#[test]
fn a_backend_killed_with_its_connection_open_says_its_owner_exited() {
    require_root();
    // The classic tracepoint reads the task's flags too: every kernel, either mode.
    for mode in ["auto", "tracepoint"] {
        killed_backend(mode);
    }
}

fn killed_backend(mode: &str) {
    let link = Link::new();
    let tracer = Tracer::start(&["--interval", "1", "--netns", &link.server.path(), "--connections=all", "--hook-mode", mode]);
    let server = SocketAddr::new(link.server_ip, 8080);
    // The backend is this test binary again (a process of its own to kill), in the server's namespace.
    let mut backend = std::process::Command::new("ip")
        .args(["netns", "exec", &link.server.name])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "backend_that_holds_one_connection", "--ignored", "--nocapture", "--test-threads=1"])
        .env("BACKEND_LISTEN", server.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the test binary runs as the backend");
    let mut stdout = std::io::BufReader::new(backend.stdout.take().unwrap());
    let mut said = String::new();
    while !said.contains("backend ready") {
        assert!(std::io::BufRead::read_line(&mut stdout, &mut said).unwrap() > 0, "the backend ended: {said}");
    }
    let mut client = link.connect(server).unwrap();
    while !said.contains("backend accepted") {
        assert!(std::io::BufRead::read_line(&mut stdout, &mut said).unwrap() > 0, "the backend ended: {said}");
    }
    backend.kill().unwrap(); // SIGKILL
    backend.wait().unwrap();
    assert_eq!(client.read(&mut [0; 1]).unwrap(), 0, "the kernel closed the dead backend's socket with a FIN");
    drop(client);
    let remote = SocketAddr::new(link.client_ip, 0);
    let line = tracer.wait_for("the backend's line", |line| {
        line["local"] == server.to_string() && line["remote"].as_str().is_some_and(|r| r.starts_with(&remote.ip().to_string()))
    });
    tracer.stop();
    assert_eq!(line["close"], "graceful", "{mode}: {line}");
    assert_eq!(line["pid"], backend.id(), "the line names the process behind its end: {line}");
    assert!(line["detail"].as_str().unwrap().contains("exited without closing it (killed, or it ended)"), "{mode}: {line}");
}

/// Not a test: the backend process of the test above (run by it, in the server's namespace).
/// Listens where `BACKEND_LISTEN` says, accepts one connection and holds it until killed.
#[test]
#[ignore]
fn backend_that_holds_one_connection() {
    let Ok(address) = std::env::var("BACKEND_LISTEN") else { return };
    let listener = std::net::TcpListener::bind(address.as_str()).unwrap();
    println!("backend ready");
    let (_held, _) = listener.accept().unwrap();
    println!("backend accepted");
    thread::sleep(Duration::from_secs(60));
}
