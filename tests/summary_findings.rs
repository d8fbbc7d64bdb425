//! The aggregator, end to end: a real `tracer` in summary mode watching misbehaving peers built
//! from namespaces, veth pairs and nftables, and the findings an on-call engineer would get.
mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::Duration,
};

use serde_json::Value;
use support::*;

fn endpoint_any(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(ip) => format!("{ip}:*"),
        std::net::IpAddr::V6(ip) => format!("[{ip}]:*"),
    }
}

fn summary_tracer(extra: &[&str]) -> Tracer {
    let mut args = vec!["--interval", "1", "--stuck-after", "1"];
    args.extend_from_slice(extra);
    Tracer::start(&args)
}

#[test]
fn server_that_never_closes_is_flagged_close_wait_stuck_and_the_client_fin_unanswered() {
    require_root();
    let link = Link::new();
    let tracer = summary_tracer(&[]);
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let client_stream = link.connect(server).unwrap();
    let (accepted, client) = listener.accept().unwrap();
    drop(client_stream); // the client closes; our "server" (this test) never does

    let stuck = tracer.wait_for_finding("close_wait_stuck", |f| f["local"] == server.to_string());
    assert_eq!(stuck["remote"], endpoint_any(client.ip()));
    assert_eq!(stuck["netns"], link.server.inode());
    assert_eq!(stuck["netns_name"], link.server.name, "a named namespace is shown by its name: {stuck}");
    assert_eq!(stuck["process"]["pid"], std::process::id(), "the owner is named: {stuck}");
    assert!(stuck["detail"].as_str().unwrap().contains("never called close()"), "{stuck}");

    let unanswered = tracer.wait_for_finding("fin_unanswered", |f| f["remote"] == server.to_string());
    assert_eq!(unanswered["local"], endpoint_any(client.ip()));
    assert_eq!(unanswered["netns"], link.client.inode());
    let lines = tracer.stop();
    let last = lines.last().unwrap();
    assert_eq!(last["final"], true);
    assert_eq!(last["events"]["lost"], 0);
    let still_stuck =
        last["findings"].as_array().unwrap().iter().find(|f| f["kind"] == "close_wait_stuck" && f["local"] == server.to_string());
    assert_eq!(still_stuck.map(|f| (f["count"].clone(), f["total"].clone())), Some((1.into(), 1.into())), "{last}");
    drop(accepted);
}

#[test]
fn blackholed_peer_with_user_timeout_is_peer_silent() {
    require_root();
    let link = Link::new();
    let tracer = summary_tracer(&["--netns", &link.client.path()]);
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let client_stream = link.client.run(move || {
        let stream = TcpStream::connect(server).unwrap();
        set_option(&stream, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 1000 as libc::c_uint);
        stream
    });
    let (accepted, client) = listener.accept().unwrap();
    link.server
        .nft(&format!("table inet blackhole {{ chain input {{ type filter hook input priority 0; ip saddr {} drop; }}; }}", client.ip()));
    (&client_stream).write_all(b"anyone there?").unwrap();

    let silent = tracer.wait_for_finding("peer_silent", |f| f["remote"] == server.to_string());
    assert_eq!(silent["local"], endpoint_any(client.ip()));
    assert_eq!(silent["count"], 1);
    assert_eq!(silent["process"]["pid"], std::process::id(), "the owner is who connected, not who ran the timer: {silent}");
    assert!(silent["detail"].as_str().unwrap().contains("no FIN or RST from the peer"), "{silent}");
    let summary = tracer.wait_for("the close class", |line| line["closes"]["peer_silent"] == 1);
    assert!(summary["closes"].get("reset_by_peer").is_none(), "{summary}");
    let mut buffer = [0u8; 4];
    let error = (&client_stream).read(&mut buffer).expect_err("the kernel gave up");
    assert_eq!(error.raw_os_error(), Some(libc::ETIMEDOUT));
    tracer.stop();
    drop(accepted);
}

#[test]
fn short_connections_closed_by_the_server_build_up_time_wait_counted_like_ss() {
    require_root();
    let link = Link::new();
    let server_netns = link.server.path();
    let tracer = summary_tracer(&["--time-wait-threshold", "5", "--netns", &server_netns]);
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    for _ in 0..12 {
        let mut client_stream = link.connect(server).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        drop(accepted); // the server closes first and keeps the TIME_WAIT
        assert_eq!(client_stream.read(&mut [0; 8]).unwrap(), 0);
    }
    let buildup = tracer.wait_for_finding("time_wait_buildup", |f| f["count"] == 12);
    assert_eq!(buildup["local"], server.to_string());
    assert_eq!(buildup["remote"], endpoint_any(link.client_ip));
    assert!(buildup["detail"].as_str().unwrap().contains("ephemeral ports"), "{buildup}");
    // The next summary counts exactly what ss sees in the server's namespace.
    tracer.wait_for("a summary", |line| line["states"]["TIME_WAIT"] == 12);
    assert_eq!(link.server.ss_count("time-wait"), 12);
    let lines = tracer.stop();
    let graceful: u64 = lines.iter().filter_map(|line| line["closes"]["graceful"].as_u64()).sum();
    assert_eq!(graceful, 12, "only the server's namespace is watched: {:?}", lines.iter().map(|l| &l["closes"]).collect::<Vec<_>>());
}

#[test]
fn nat_recycling_ports_into_the_servers_time_wait_is_port_reuse() {
    require_root();
    let routed = Routed::new((40000, 40001));
    let tracer = summary_tracer(&[]);
    let listener = routed.server.run({
        let ip = routed.server_ip;
        move || std::net::TcpListener::bind(SocketAddr::new(ip, 0)).unwrap()
    });
    let server = listener.local_addr().unwrap();
    // Close first, so every NATed port lands in the server's TIME_WAIT.
    thread::spawn(move || listener.incoming().for_each(drop));
    let mut reused = None;
    for _ in 0..8 {
        let attempt = routed.client.run(move || TcpStream::connect_timeout(&server, Duration::from_secs(2)));
        if let Ok(mut stream) = attempt {
            let _ = stream.read(&mut [0; 8]);
        }
        thread::sleep(Duration::from_millis(1200));
        let server_side = |f: &Value| f["kind"] == "port_reuse_in_time_wait" && f["local"] == server.to_string();
        let found = tracer.lines().into_iter().find_map(|line| line["findings"].as_array()?.iter().find(|f| server_side(f)).cloned());
        if found.is_some() {
            reused = found;
            break;
        }
    }
    let reuse = reused.expect("the server saw a SYN for a 4-tuple still in TIME_WAIT");
    assert_eq!(reuse["local"], server.to_string());
    assert_eq!(reuse["remote"], endpoint_any(routed.nat_ip));
    assert_eq!(reuse["netns"], routed.server.inode());
    let detail = reuse["detail"].as_str().unwrap();
    // The timewait socket accepts the SYN when its sequence or timestamp moved on, and answers it
    // with a bare ACK otherwise (the incident's symptom); the exact fexit path tells which.
    let answered = detail.contains("the SYN was accepted") || detail.contains("was answered with a bare ACK: the client must reset");
    assert!(answered && detail.contains(&routed.nat_ip.to_string()), "{detail}");
    tracer.stop();
}

#[test]
fn firewall_reset_is_rst_from_peer_and_a_refused_connect() {
    require_root();
    let link = Link::new();
    link.server.nft("table inet firewall { chain input { type filter hook input priority 0; tcp dport 7777 reject with tcp reset; }; }");
    // One reset is a finding only with a threshold of one (the default asks for a storm).
    let tracer = summary_tracer(&["--netns", &link.client.path(), "--rst-threshold", "1"]);
    let target = SocketAddr::new(link.server_ip, 7777);
    let error = link.connect(target).expect_err("the firewall resets");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    let reset = tracer.wait_for_finding("rst_from_peer", |f| f["remote"] == target.to_string());
    assert_eq!((reset["local"].clone(), reset["count"].clone()), (Value::from(endpoint_any(link.client_ip)), Value::from(1)));
    let summary = tracer.wait_for("a refused close", |line| line["closes"]["refused"] == 1);
    let peer = summary["peers"].as_array().unwrap().iter().find(|p| p["remote"] == target.to_string()).expect("in the peer table");
    assert_eq!((peer["rst_from_peer"].clone(), peer["failed_connects"].clone()), (Value::from(1), Value::from(1)));
    tracer.stop();

    // With the default threshold the one reset stays in the peer table; the refused connect is
    // still a finding.
    let tracer = summary_tracer(&["--netns", &link.client.path()]);
    assert!(link.connect(target).is_err());
    let failed = tracer.wait_for_finding("connect_failed", |f| f["remote"] == target.to_string());
    assert!(failed["detail"].as_str().unwrap().starts_with("1 connect(s) failed: 1 refused"), "{failed}");
    let lines = tracer.stop();
    let findings = lines.iter().flat_map(|line| line["findings"].as_array().cloned().unwrap_or_default());
    assert!(findings.filter(|f| f["kind"] == "rst_from_peer").count() == 0, "one reset is no storm: {lines:?}");
}

#[test]
fn syns_into_a_drop_rule_are_syn_retransmits_and_a_failed_connect_of_its_own() {
    require_root();
    let link = Link::new();
    link.server.nft("table inet firewall { chain input { type filter hook input priority 0; tcp dport 7778 drop; }; }");
    let tracer = summary_tracer(&["--netns", &link.client.path()]);
    let target = SocketAddr::new(link.server_ip, 7778);
    let error = link.client.run(move || TcpStream::connect_timeout(&target, Duration::from_millis(2500))).expect_err("nobody answers");
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    let finding = tracer.wait_for_finding("connect_failed", |f| f["remote"] == target.to_string());
    assert_eq!(finding["local"], endpoint_any(link.client_ip));
    assert_eq!(finding["detail"], "1 connect(s) failed: 1 timed out: no answer to its SYNs", "{finding}");
    let retransmits: u64 = tracer
        .lines()
        .iter()
        .flat_map(|line| line["findings"].as_array().cloned().unwrap_or_default())
        .filter(|f| f["kind"] == "syn_retransmit")
        .map(|f| f["count"].as_u64().unwrap())
        .sum();
    assert!(retransmits >= 1, "at least the 1 s retransmit happened within 2.5 s");
    let syns = tracer.wait_for_finding("syn_retransmit", |f| f["remote"] == target.to_string());
    assert!(syns["detail"].as_str().unwrap().contains("the peer did not answer our SYN"), "{syns}");
    assert!(!syns["detail"].as_str().unwrap().contains("connect(s) failed"), "the failed connect is a finding of its own: {syns}");
    tracer.wait_for("the close class", |line| line["closes"]["connect_timeout"] == 1);
    tracer.stop();
}

#[test]
fn a_finding_writes_a_flight_record_of_that_peer_and_summaries_reach_the_json_file() {
    require_root();
    use std::os::unix::fs::PermissionsExt;
    let link = Link::new();
    link.server.nft("table inet firewall { chain input { type filter hook input priority 0; tcp dport 7779 reject with tcp reset; }; }");
    let dir = std::env::temp_dir().join(format!("tracer-records-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let json_out = dir.join("out").join("summaries.jsonl");
    std::fs::create_dir_all(json_out.parent().unwrap()).unwrap();
    let tracer = summary_tracer(&[
        "--rst-threshold",
        "1",
        "--netns",
        &link.client.path(),
        "--record-dir",
        dir.join("records").to_str().unwrap(),
        "--json-out",
        json_out.to_str().unwrap(),
    ]);
    // Unrelated traffic to another peer must stay out of the record.
    let listener = link.listen(link.server_ip);
    let _other = link.connect(listener.local_addr().unwrap()).unwrap();
    let target = SocketAddr::new(link.server_ip, 7779);
    assert!(link.connect(target).is_err());

    let finding = tracer.wait_for_finding("rst_from_peer", |f| f["remote"] == target.to_string() && f["record"].is_string());
    let record = std::path::PathBuf::from(finding["record"].as_str().unwrap());
    assert!(record.starts_with(dir.join("records")), "{record:?}");
    assert_eq!(std::fs::metadata(&record).unwrap().permissions().mode() & 0o777, 0o600);
    let events: Vec<Value> = std::fs::read_to_string(&record).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.iter().any(|e| e["kind"] == "rst_received"), "{events:?}");
    assert!(events.iter().all(|e| e["remote"] == target.to_string()), "only that peer, not the other connection: {events:?}");
    tracer.stop();

    let summaries = std::fs::read_to_string(&json_out).unwrap();
    assert_eq!(std::fs::metadata(&json_out).unwrap().permissions().mode() & 0o777, 0o600);
    let last: Value = serde_json::from_str(summaries.lines().last().unwrap()).unwrap();
    assert_eq!(last["final"], true);
    assert!(summaries.lines().count() >= 2);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A reset storm from client ports (resets sent without a socket, as when a client aborts and the
/// server keeps sending into its closed port) stays one finding that names the service, and the
/// summary stays small.
#[test]
fn a_reset_storm_from_client_ports_is_one_finding_for_the_service() {
    require_root();
    let namespace = Netns::new("storm");
    namespace.exec(&["ip", "link", "set", "lo", "up"]);
    // The client's resets never reach the server, which keeps sending into the closed ports.
    namespace.nft("table inet lossy { chain output { type filter hook output priority 0; tcp flags rst drop; }; }");
    let tracer = summary_tracer(&["--netns", &namespace.path()]);
    let (service, servers) = namespace.run(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let service = listener.local_addr().unwrap();
        let mut servers = Vec::new();
        for _ in 0..200 {
            let client = TcpStream::connect(service).unwrap();
            let (mut server, _) = listener.accept().unwrap();
            set_option(&client, libc::SOL_SOCKET, libc::SO_LINGER, libc::linger { l_onoff: 1, l_linger: 0 });
            drop(client);
            let _ = server.write_all(b"response");
            servers.push(server);
        }
        (service, servers)
    });
    let summary = tracer.wait_for("the storm summarized", |line| {
        line["findings"]
            .as_array()
            .is_some_and(|findings| findings.iter().any(|f| f["kind"] == "rst_to_peer" && f["count"].as_u64() >= Some(200)))
    });
    let storm: Vec<&Value> = summary["findings"].as_array().unwrap().iter().filter(|f| f["kind"] == "rst_to_peer").collect();
    assert_eq!(storm.len(), 1, "one finding, not one per client port: {storm:?}");
    assert_eq!(
        (storm[0]["local"].clone(), storm[0]["remote"].clone()),
        ("127.0.0.1:*".into(), service.to_string().into()),
        "the service is named"
    );
    assert!(summary.to_string().len() < 16 * 1024, "the summary stays small: {} bytes", summary.to_string().len());
    drop(servers);
    tracer.stop();
}

#[test]
fn a_local_port_filter_takes_outgoing_connections_whole_and_leaves_no_ghost() {
    require_root();
    let link = Link::new();
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let tracer = summary_tracer(&["-L", "443", "--netns", &link.client.path()]);
    // Three outgoing connections: their first event comes before connect() picks the local port.
    let streams: Vec<TcpStream> = (0..3).map(|_| link.connect(server).unwrap()).collect();
    let accepted: Vec<TcpStream> = (0..3).map(|_| listener.accept().unwrap().0).collect();
    drop(streams);
    drop(accepted);
    thread::sleep(Duration::from_secs(5));
    let lines = tracer.stop();
    let summaries: Vec<&Value> = lines.iter().filter(|line| line["states"].is_object()).collect();
    assert!(summaries.len() >= 4, "{lines:?}");
    for summary in summaries {
        assert!(summary["states"].as_object().unwrap().is_empty(), "nothing on port 443 here: {summary}");
        assert_eq!(summary["closes"].as_object().map(|closes| closes.len()), Some(0), "{summary}");
    }
}

/// A listener on the server's side whose backlog is one, as in the report, and its address.
fn listen_with_a_backlog_of_one(link: &Link) -> (std::net::TcpListener, SocketAddr) {
    let listener = link.server.listen_with_a_backlog_of_one(SocketAddr::new(link.server_ip, 0));
    let server = listener.local_addr().unwrap();
    (listener, server)
}

#[test]
fn a_listener_that_never_accepts_is_named_with_its_full_accept_queue() {
    require_root();
    let link = Link::new();
    let (listener, server) = listen_with_a_backlog_of_one(&link);
    let port = server.port().to_string();
    let tracer = summary_tracer(&["-L", &port]);
    // Twenty concurrent connects; nobody calls accept(). Those the queue cannot take retransmit
    // their SYN after a second, into the kernel's drop counter.
    let clients = link.client.connect_at_once(server, 20);
    let full = tracer.wait_for_finding("accept_queue_full", |f| f["local"] == server.to_string());
    let detail = full["detail"].as_str().unwrap();
    assert!(detail.contains("backlog 1") && detail.contains("not accepting"), "{full}");
    assert_eq!(full["process"]["pid"], std::process::id(), "the process that should accept: {full}");
    assert!(full["count"].as_u64() >= Some(2), "more waiting than the backlog: {full}");
    let dropped = tracer.wait_for_finding("accept_queue_full", |f| {
        f["local"] == server.to_string() && f["detail"].as_str().is_some_and(|d| d.contains("ListenOverflows"))
    });
    assert_eq!(dropped["total"], 1, "one listener, one episode: {dropped}");
    tracer.stop();
    drop((clients, listener));
}

/// The usual way an operator meets it: the listener was wedged before the tracer started, and
/// nothing new happens in its namespace (no connect, no state change: not one event), yet its
/// namespace is looked at and its full queue named.
#[test]
fn a_listener_wedged_before_the_tracer_started_is_found_in_a_namespace_without_events() {
    require_root();
    let link = Link::new();
    let (listener, server) = listen_with_a_backlog_of_one(&link);
    // Two handshakes fill a backlog of one; nobody accepts them.
    let waiting: Vec<TcpStream> = (0..2).map(|_| link.connect(server).expect("the queue takes two")).collect();
    let port = server.port().to_string();
    // Its namespace only: other tests' connects elsewhere are then no event of this tracer's.
    let namespace = link.server.path();
    let tracer = summary_tracer(&["-L", &port, "--netns", &namespace]);
    let full = tracer.wait_for_finding("accept_queue_full", |f| f["local"] == server.to_string());
    let detail = full["detail"].as_str().unwrap();
    assert!(detail.contains("2 connection(s) waiting, backlog 1") && detail.contains("not accepting"), "{full}");
    assert_eq!(full["netns"], link.server.inode(), "{full}");
    let lines = tracer.stop();
    assert!(lines.iter().all(|line| line["interval_events"] == 0), "no event came from its namespace: {lines:?}");
    drop((waiting, listener));
}

/// A tracer printing connection lines for one namespace, its summaries going to a JSON file:
/// what the tests of the path verdicts read.
struct Logged {
    tracer: Tracer,
    summaries: std::path::PathBuf,
}

impl Logged {
    fn start(netns: &Netns, name: &str) -> Logged {
        Logged::start_filtered(&["--netns", &netns.path()], name)
    }

    /// With `filter` (the options that keep this test's traffic and no other test's).
    fn start_filtered(filter: &[&str], name: &str) -> Logged {
        let summaries = std::env::temp_dir().join(format!("tracer-{name}-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&summaries);
        let tracer = summary_tracer(&[filter, &["--connections", "--json-out", summaries.to_str().unwrap()]].concat());
        Logged { tracer, summaries }
    }

    /// Whether the mode line says `what` (`tcp_probe=tp_btf`, `idle gaps: yes`, …).
    fn has(&self, what: &str) -> bool {
        self.tracer.stderr.lock().unwrap().contains(what)
    }

    /// Stops the tracer: its stdout lines, and every finding of `kind` in the summaries it wrote.
    fn stop(self, kind: &str) -> (Vec<Value>, Vec<Value>) {
        let lines = self.tracer.stop();
        let written = std::fs::read_to_string(&self.summaries).unwrap();
        std::fs::remove_file(&self.summaries).unwrap();
        let findings = written
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .flat_map(|summary| summary["findings"].as_array().cloned().unwrap_or_default())
            .filter(|finding| finding["kind"] == kind)
            .collect();
        (lines, findings)
    }
}

/// The server's connection lines and summaries while a router between it and the client resets
/// one connection in the client's name, and the client aborts another itself.
fn resets_through_a_router(ipv6: bool) {
    let routed = Routed::router();
    let (client_ip, server_ip) = if ipv6 { (routed.client_ip6, routed.server_ip6) } else { (routed.client_ip, routed.server_ip) };
    let listener = routed.server.run(move || std::net::TcpListener::bind(SocketAddr::new(server_ip, 0)).unwrap());
    let server = listener.local_addr().unwrap();
    let logged = Logged::start(&routed.server, &format!("path-{ipv6}"));
    let (tracer, by_path) = (&logged.tracer, logged.has("tcp_probe=tp_btf"));
    let connect = || {
        let mut client = routed.client.run(move || TcpStream::connect_timeout(&server, Duration::from_secs(5)).unwrap());
        let (mut accepted, _) = listener.accept().unwrap();
        client.write_all(b"hello").unwrap(); // the client's own packets: the reference
        accepted.read_exact(&mut [0; 5]).unwrap();
        (client, accepted)
    };

    // The control: the client aborts on its own (SO_LINGER 0). Never blamed on the path.
    let (aborting, mut accepted) = connect();
    let aborted_port = aborting.local_addr().unwrap().port();
    set_option(&aborting, libc::SOL_SOCKET, libc::SO_LINGER, libc::linger { l_onoff: 1, l_linger: 0 });
    drop(aborting);
    assert!(accepted.read(&mut [0; 1]).is_err(), "the client's reset");

    // The router answers the server's data with a RST in the client's name (its own TTL).
    let (client, mut accepted) = connect();
    let forged_port = client.local_addr().unwrap().port();
    routed.nat.nft(&format!(
        "table inet appliance {{ chain forward {{ type filter hook forward priority 0; tcp sport {} tcp dport {forged_port} reject with tcp reset; }}; }}",
        server.port()
    ));
    let _ = accepted.write_all(b"response");
    thread::sleep(Duration::from_millis(300));
    assert!(accepted.write_all(b"more").is_err() || accepted.read(&mut [0; 1]).is_err(), "the router's reset reached the server");

    let line_of = |port: u16| {
        let remote = SocketAddr::new(client_ip, port).to_string();
        tracer.wait_for(&format!("the server's line for {remote}"), |line| line["remote"] == remote && line["close"].is_string())
    };
    let (control, forged) = (line_of(aborted_port), line_of(forged_port));
    if by_path {
        let fields = |line: &Value| (line["close"].clone(), line["rst_from"].clone(), line["rst_hops"].clone(), line["peer_hops"].clone());
        assert_eq!(fields(&control), ("reset_by_peer".into(), "peer".into(), 1.into(), 1.into()), "{control}");
        assert_eq!(fields(&forged), ("reset_by_path".into(), "path".into(), 0.into(), 1.into()), "{forged}");
        assert!(forged["detail"].as_str().unwrap().contains("by the path, not the peer"), "{forged}");
        // The evidence beside the verdict: the two TTLs, and the forged RST carries no data.
        let evidence =
            |line: &Value| (line["rst_segment"]["ttl"].clone(), line["peer_segment"]["ttl"].clone(), line["rst_segment"]["length"].clone());
        assert_eq!(evidence(&forged), (64.into(), 63.into(), 0.into()), "{forged}");
    } else {
        eprintln!("tcp_probe is unavailable here (no tp_btf): resets are unchecked");
        for line in [&control, &forged] {
            assert_eq!((line["close"].as_str(), line["rst_from"].as_str()), (Some("reset_unverified"), None), "{line}");
        }
    }
    let (_, from_path) = logged.stop("rst_from_path");
    if by_path {
        assert_eq!(from_path.len(), 1, "one forged reset, one finding: {from_path:?}");
        assert_eq!((from_path[0]["remote"].clone(), from_path[0]["count"].clone()), (endpoint_any(client_ip).into(), 1.into()));
    } else {
        assert!(from_path.is_empty());
    }
    drop(client);
}

/// A router that refuses connects to one port in the server's name (`reject with tcp reset` on
/// the SYN), beside closed ports the server itself refuses: the RST reaches a socket in
/// SYN_SENT, which `tcp_probe` never sees, and is judged as it arrived (`netif_receive_skb`)
/// against the server's handshake on an earlier connection to another port. Every refusal is
/// judged, the first and a late one included. `skip_arrivals`: with the hook left off
/// (`--skip-hook netif_receive_skb`), said in the header, and no refusal judged.
fn refusals_through_a_router(ipv6: bool, skip_arrivals: bool) {
    let routed = Routed::router();
    let server_ip = if ipv6 { routed.server_ip6 } else { routed.server_ip };
    let listener = routed.server.run(move || std::net::TcpListener::bind(SocketAddr::new(server_ip, 0)).unwrap());
    let server = listener.local_addr().unwrap();
    let (closed, blocked) = (SocketAddr::new(server_ip, 9), SocketAddr::new(server_ip, 8086));
    routed.nat.nft(&format!(
        "table inet appliance {{ chain forward {{ type filter hook forward priority 0; tcp dport {} tcp flags syn reject with tcp reset; }}; }}",
        blocked.port()
    ));
    let client_netns = routed.client.path();
    let mut filter = vec!["--netns", &client_netns];
    if skip_arrivals {
        filter.extend(["--skip-hook", "netif_receive_skb"]);
    }
    let logged = Logged::start_filtered(&filter, &format!("refusals-{ipv6}-{skip_arrivals}"));
    let (tracer, arrivals) = (&logged.tracer, logged.has("netif_receive_skb=tp_btf"));
    assert_eq!(logged.has("netif_receive_skb=off"), skip_arrivals, "the header says the hook is off");
    // The server's own packets, for reference: one connection, its handshake alone.
    let client = routed.client.run(move || TcpStream::connect_timeout(&server, Duration::from_secs(5)).unwrap());
    let (accepted, _) = listener.accept().unwrap();
    let refused = |to: SocketAddr| {
        let error = routed.client.run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap_err());
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused, "{to}");
        tracer.wait_for(&format!("the line for {to}"), |line| line["remote"] == to.to_string() && line["close"].is_string())
    };
    let (by_router, by_server) = (refused(blocked), refused(closed));
    let fields = |line: &Value| (line["close"].clone(), line["rst_from"].clone(), line["rst_hops"].clone());
    if arrivals {
        assert_eq!(fields(&by_router), ("refused".into(), "path".into(), 0.into()), "the first refusal too: {by_router}");
        let detail = by_router["detail"].as_str().unwrap();
        assert!(detail.contains("by the path, not the peer") && detail.contains("the peer's latest handshake, TTL 63"), "{by_router}");
        assert_eq!(fields(&by_server), ("refused".into(), "peer".into(), 1.into()), "{by_server}");
        if !ipv6 {
            // A RST whose IPv4 header carries options (its TCP header further in), forged by a
            // raw socket in the router where nftables drops the SYN.
            let forged = SocketAddr::new(server_ip, 8087);
            routed.nat.nft("table inet forger { chain forward { type filter hook forward priority 0; tcp dport 8087 drop; }; }");
            let forger = forge::refuse_with_ip_options(routed.nat.path(), forged.port(), Duration::from_secs(5));
            let with_options = refused(forged);
            assert!(forger.join().unwrap(), "the forger answered the SYN");
            assert_eq!(fields(&with_options), ("refused".into(), "path".into(), 0.into()), "{with_options}");
        }
        // A sporadic refusal, long after the others: judged as well (no hook to wait for).
        thread::sleep(Duration::from_secs(3));
        let later = refused(blocked);
        assert_eq!(fields(&later), ("refused".into(), "path".into(), 0.into()), "{later}");
    } else {
        eprintln!("netif_receive_skb is unavailable or off here: refusals are unchecked");
        for line in [&by_server, &by_router] {
            assert_eq!((line["close"].clone(), line["rst_from"].clone()), ("refused".into(), Value::Null), "{line}");
            assert!(line["detail"].as_str().unwrap().contains("who sent it is unchecked"), "{line}");
        }
    }
    let (_, from_path) = logged.stop("rst_from_path");
    let path_refusals: u64 = from_path.iter().map(|finding| finding["count"].as_u64().unwrap()).sum();
    let expected = if arrivals { 3 - u64::from(ipv6) } else { 0 };
    assert_eq!(path_refusals, expected, "the router's refusals are resets from the path: {from_path:?}");
    drop((client, accepted));
}

/// A router that answers with ICMP instead of forwarding: host unreachable for one port's SYN,
/// port unreachable for another's (what `iptables -j REJECT` sends by default), and host
/// unreachable for an established connection's data once a rule appears. None of them is the
/// peer's silence or its RST; where the hooks read the socket's error, the lines say so, and
/// each names the router that sent it, the first included.
#[test]
fn icmp_errors_from_a_router_are_unreachable_or_refused_never_silence() {
    require_root();
    let routed = Routed::router();
    let server_ip = routed.server_ip;
    let listener = routed.server.run(move || std::net::TcpListener::bind(SocketAddr::new(server_ip, 0)).unwrap());
    let server = listener.local_addr().unwrap();
    let (host_unreachable, port_unreachable) = (SocketAddr::new(server_ip, 7000), SocketAddr::new(server_ip, 7002));
    routed.nat.nft(
        "table inet icmp_rejects { chain forward { type filter hook forward priority 0; \
         tcp dport 7000 reject with icmpx type host-unreachable; tcp dport 7002 reject with icmpx type port-unreachable; }; }",
    );
    let logged = Logged::start(&routed.client, "icmp");
    let failed = |to: SocketAddr| routed.client.run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap_err().kind());
    assert_eq!(failed(host_unreachable), std::io::ErrorKind::HostUnreachable);
    let senders_named = logged.has("netif_receive_skb=tp_btf");
    assert_eq!(failed(port_unreachable), std::io::ErrorKind::ConnectionRefused);
    let mut client = routed.client.run(move || TcpStream::connect_timeout(&server, Duration::from_secs(5)).unwrap());
    set_option(&client, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 2000 as libc::c_uint);
    let (mut accepted, _) = listener.accept().unwrap();
    client.write_all(b"hello").unwrap();
    accepted.read_exact(&mut [0; 5]).unwrap();
    routed.nat.nft(&format!(
        "table inet icmp_later {{ chain forward {{ type filter hook forward priority 0; tcp dport {} reject with icmpx type host-unreachable; }}; }}",
        server.port()
    ));
    client.write_all(b"again").unwrap();
    let error = client.read(&mut [0; 5]).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::HostUnreachable, "the timeout keeps the ICMP error");
    let (lines, _) = logged.stop("peer_silent");
    let line = |to: SocketAddr| lines.iter().find(|line| line["remote"] == to.to_string()).cloned().expect("its line");
    let (to_host, to_port, established) = (line(host_unreachable), line(port_unreachable), line(server));
    if to_host["error"].is_null() {
        eprintln!("the socket's error is not readable here (classic tracepoints): no ICMP verdicts");
        return;
    }
    assert_eq!((to_host["close"].as_str(), to_host["error"].as_str()), (Some("unreachable"), Some("EHOSTUNREACH")), "{to_host}");
    assert!(to_host["detail"].as_str().unwrap().contains("our SYN was answered with ICMP host unreachable"), "{to_host}");
    assert_eq!(to_port["close"], "refused", "{to_port}");
    assert!(to_port["detail"].as_str().unwrap().contains("ICMP port unreachable, not by a RST"), "{to_port}");
    assert_eq!(established["close"], "unreachable", "{established}");
    assert!(
        established["detail"].as_str().unwrap().contains("our retransmissions were answered with ICMP host unreachable"),
        "{established}"
    );
    let router = routed.router_ip.to_string();
    let expected = if senders_named { (Some(router.as_str()), Some(0)) } else { (None, None) };
    for line in [&to_host, &to_port, &established] {
        assert_eq!((line["icmp_from"].as_str(), line["icmp_hops"].as_u64()), expected, "{line}");
        if senders_named {
            assert!(line["detail"].as_str().unwrap().contains(&format!("sent by {router}, 0 hop(s) away: a device on the path")), "{line}");
        }
    }
    drop(accepted);
}

#[test]
fn a_router_that_refuses_connects_in_the_servers_name_is_told_from_the_server() {
    require_root();
    refusals_through_a_router(false, false);
    refusals_through_a_router(true, false);
    refusals_through_a_router(false, true);
}

#[test]
fn a_router_that_resets_in_the_clients_name_is_told_from_the_client_itself() {
    require_root();
    resets_through_a_router(false);
    resets_through_a_router(true);
}

#[test]
fn a_connection_this_hosts_firewall_starved_was_dropped_here_not_by_a_silent_peer() {
    require_root();
    starved_by_this_hosts_firewall(true);
    starved_by_this_hosts_firewall(false);
}

/// The server's own firewall drops everything the client sends (`incoming`), or everything the
/// server sends it, once the connection is established; the server's socket times out.
fn starved_by_this_hosts_firewall(incoming: bool) {
    let link = Link::new();
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let logged = Logged::start(&link.server, "drops");
    let (tracer, drops_seen) = (&logged.tracer, logged.has("kfree_skb=tp_btf"));
    let client = link.connect(server).unwrap();
    let (mut accepted, client_addr) = listener.accept().unwrap();
    set_option(&accepted, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 1000 as libc::c_uint);
    let client_ip = link.client_ip;
    let (hook, match_client, way, words) = if incoming {
        ("input", "saddr", "dropped_in", "the peer was not silent")
    } else {
        ("output", "daddr", "dropped_out", "our packets never left this host")
    };
    link.server.nft(&format!(
        "table inet guard {{ chain {hook} {{ type filter hook {hook} priority 0; ip {match_client} {client_ip} drop; }}; }}"
    ));
    accepted.write_all(b"are you there?").unwrap();
    let line = tracer.wait_for("the server's line", |line| line["remote"] == client_addr.to_string() && line["close"].is_string());
    if drops_seen {
        assert_eq!(line["close"], "dropped_here", "{line}");
        let detail = line["detail"].as_str().unwrap();
        assert!(detail.contains("this host dropped") && detail.contains("NETFILTER_DROP") && detail.contains(words), "{line}");
        assert!(line[way].as_u64() >= Some(1), "{line}");
    } else {
        eprintln!("kfree_skb with drop reasons is unavailable here: the end reads as the peer's silence");
        assert_eq!(line["close"], "peer_silent", "{line}");
    }
    let (_, dropped) = logged.stop("dropped_here");
    if drops_seen {
        let finding = dropped.first().expect("a dropped_here finding");
        let direction = if incoming { "NETFILTER_DROP from the peer" } else { "NETFILTER_DROP to the peer" };
        assert!(finding["detail"].as_str().unwrap().contains(direction), "{finding}");
    }
    drop(client);
}

/// Both ends on this host, in their own namespaces: the server's firewall drops what the client
/// sends once the connection is up, and the client's end, timing out, reads those drops at the
/// server's socket as this host's.
#[test]
fn the_client_whose_packets_the_server_namespace_dropped_reads_it_as_this_hosts_drop() {
    require_root();
    let link = Link::new();
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let client_network = format!("{}/32", link.client_ip);
    let logged = Logged::start_filtered(&["--addr", &client_network], "peer-socket-drops");
    let (tracer, drops_seen) = (&logged.tracer, logged.has("kfree_skb=tp_btf"));
    let mut client = link.connect(server).unwrap();
    let (_accepted, _) = listener.accept().unwrap();
    set_option(&client, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 1000 as libc::c_uint);
    let client_ip = link.client_ip;
    link.server.nft(&format!("table inet guard {{ chain input {{ type filter hook input priority 0; ip saddr {client_ip} drop; }}; }}"));
    client.write_all(b"are you there?").unwrap();
    let local = client.local_addr().unwrap();
    let line = tracer.wait_for("the client's line", |line| line["local"] == local.to_string() && line["close"].is_string());
    if drops_seen {
        assert_eq!(line["close"], "dropped_here", "{line}");
        let detail = line["detail"].as_str().unwrap();
        let at_peer = format!(
            "to the peer {server} in namespace {} (netns {}), at the peer's socket: NETFILTER_DROP",
            link.server.name,
            link.server.inode()
        );
        assert!(detail.contains(&at_peer), "{line}");
        assert!(line["dropped_out"].as_u64() >= Some(1), "{line}");
    } else {
        eprintln!("kfree_skb with drop reasons is unavailable here: the end reads as the peer's silence");
        assert_eq!(line["close"], "peer_silent", "{line}");
    }
    logged.stop("dropped_here");
}

#[test]
fn resets_the_kernel_refuses_are_counted_as_nstat_counts_its_challenges() {
    require_root();
    let link = Link::new();
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let logged = Logged::start(&link.server, "refused");
    let (tracer, probed) = (&logged.tracer, logged.has("tcp_probe=tp_btf"));
    let mut client = link.connect(server).unwrap();
    let (mut accepted, client_addr) = listener.accept().unwrap();
    client.write_all(b"hello").unwrap();
    accepted.read_exact(&mut [0; 5]).unwrap();
    // In the window but not where the server expects: RFC 5961 says answer with a challenge ACK.
    let expected = expected_sequence(&accepted);
    // Challenge ACKs sent, and those skipped by the per-socket rate limit (one per 500 ms).
    let challenges = || tcp_ext(&link.server, "TCPChallengeACK") + tcp_ext(&link.server, "TCPACKSkippedChallenge");
    let before = challenges();
    let (std::net::SocketAddr::V4(from), std::net::SocketAddr::V4(to)) = (client_addr, server) else { panic!("IPv4") };
    for offset in [1000, 2000] {
        link.client.run(move || forge_reset(from, to, expected.wrapping_add(offset)));
        thread::sleep(Duration::from_millis(100));
    }
    let challenged = challenges() - before;
    assert!(challenged >= 1, "the kernel answered the forged resets with challenge ACKs");
    // The connection lives on; it ends gracefully, with the refused resets in its line.
    drop(client);
    assert_eq!(accepted.read(&mut [0; 1]).unwrap(), 0);
    drop(accepted);
    let line = tracer.wait_for("the server's line", |line| line["remote"] == client_addr.to_string() && line["close"].is_string());
    let (_, findings) = logged.stop("rst_refused");
    let refused = |line: &Value| line["refused_rsts"].as_u64().unwrap_or(0);
    if probed {
        assert_eq!((line["close"].as_str(), refused(&line)), (Some("graceful"), challenged), "as nstat counted: {line}");
        let counted: u64 = findings.iter().map(|finding| finding["count"].as_u64().unwrap()).sum();
        assert_eq!(counted, challenged, "the rst_refused findings count them too");
    } else {
        eprintln!("tcp_probe is unavailable here: refused resets are not seen");
        assert_eq!(refused(&line), 0);
    }
}

#[test]
fn a_router_that_forgets_idle_flows_is_found_with_its_idle_timeout() {
    require_root();
    forgetful_router(false, false);
}

#[test]
fn a_router_that_resets_forgotten_flows_is_found_too_and_its_resets_are_the_paths() {
    require_root();
    forgetful_router(true, false);
}

/// Traced whole (not only the client's namespace), the router is a namespace of this host: the
/// packets it dropped where it held no socket are this host's drops, and its idle timeout is
/// still found.
#[test]
fn a_router_namespace_of_this_host_that_forgets_idle_flows_is_this_hosts_drop() {
    require_root();
    forgetful_router(false, true);
}

/// A middlebox that knows only flows its conntrack tracks (new ones only with a SYN) and forgets
/// an established one after 3 s of silence; what it does with the rest: drop it, or (`resets`)
/// answer it with a RST in the other end's name. `whole_host`: the tracer follows every
/// namespace (the router's too), filtered to the client's address only.
fn forgetful_router(resets: bool, whole_host: bool) {
    let routed = Routed::router();
    let rest = if resets { "meta l4proto tcp reject with tcp reset;" } else { "" };
    routed.nat.nft(&format!(
        "table inet middlebox {{ chain forward_flows {{ type filter hook forward priority 0; policy drop; \
         ct state established,related accept; tcp flags syn ct state new accept; {rest} }}; }}"
    ));
    routed.nat.exec(&["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"]);
    routed.nat.exec(&["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_established=3"]);
    let server_ip = routed.server_ip;
    let listener = routed.server.run(move || std::net::TcpListener::bind(SocketAddr::new(server_ip, 0)).unwrap());
    let server = listener.local_addr().unwrap();
    let echo = thread::spawn(move || {
        for stream in listener.incoming().take(6) {
            let mut stream = stream.unwrap();
            thread::spawn(move || {
                let mut buffer = [0; 64];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let client_network = format!("{}/32", routed.client_ip);
    let logged = if whole_host {
        Logged::start_filtered(&["--addr", &client_network], "idle-host")
    } else {
        Logged::start(&routed.client, &format!("idle-{resets}"))
    };
    let (clocks, drops_seen) = (logged.has("idle gaps: yes"), logged.has("kfree_skb=tp_btf"));
    // Three connections pause 1.5 s (under the timeout), three pause 6 s (past it), then talk.
    let clients: Vec<_> = [1.5, 1.5, 1.5, 6.0, 6.0, 6.0]
        .into_iter()
        .map(|pause| {
            let client = routed.client.run(move || TcpStream::connect(server).unwrap());
            set_option(&client, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 2000 as libc::c_uint);
            let local = client.local_addr().unwrap();
            let talker = thread::spawn(move || {
                let mut client = client;
                client.write_all(b"hello").unwrap();
                client.read_exact(&mut [0; 5]).unwrap();
                thread::sleep(Duration::from_secs_f64(pause));
                let answered = client.write_all(b"again").is_ok() && client.read_exact(&mut [0; 5]).is_ok();
                (pause, answered)
            });
            (local, talker)
        })
        .collect();
    let mut outcomes = Vec::new();
    for (local, talker) in clients {
        let (pause, answered) = talker.join().unwrap();
        outcomes.push((local, pause, answered));
    }
    assert!(
        outcomes.iter().all(|(_, pause, answered)| *answered == (*pause < 3.0)),
        "the middlebox forgot the long pauses only: {outcomes:?}"
    );
    let (lines, findings) = logged.stop("idle_timeout");
    if !clocks {
        eprintln!("the socket clocks are not readable here (no tp_btf or no /proc/timer_list): no idle estimate");
        return;
    }
    let found = findings.into_iter().find(|finding| finding["remote"] == server.to_string()).expect("an idle_timeout finding");
    let detail = found["detail"].as_str().unwrap();
    // "… idle ≥ 6.0 s died silently (3 of 3); idle ≤ 1.5 s lived (3 of 3): … after 1.5–6.0 s …"
    let bounds: Vec<f64> = detail
        .split("after ")
        .nth(1)
        .and_then(|rest| rest.split(" s;").next())
        .map(|range| range.split('–').map(|n| n.parse().unwrap()).collect())
        .unwrap_or_default();
    assert!(bounds.len() == 2 && bounds[0] <= 3.0 && bounds[1] >= 3.0, "the interval holds the 3 s timeout: {found}");
    assert!(detail.contains("(3 of 3)"), "{found}");
    assert_eq!(detail.contains("died or were reset"), resets, "{found}");
    // The dropped_here line names the namespace as an operator does (its /run/netns name).
    let router = format!("namespace {} (netns {})", routed.nat.name, routed.nat.inode());
    for (local, pause, _) in outcomes.iter().filter(|(_, pause, _)| *pause > 3.0) {
        let line = lines.iter().find(|line| line["local"] == local.to_string()).expect("the dead connection's line");
        // Its RST came from the router, one hop closer than the server.
        let close = match (resets, whole_host && drops_seen) {
            (true, _) => "reset_by_path",
            (false, true) => "dropped_here",
            (false, false) => "peer_silent",
        };
        assert_eq!(line["close"], close, "{line}");
        if close == "dropped_here" {
            let detail = line["detail"].as_str().unwrap();
            assert!(detail.contains(&format!("in {router}, which held no socket for them: NETFILTER_DROP")), "{line}");
            assert!(line["dropped_out"].as_u64() >= Some(1), "the client's retransmissions: {line}");
        }
        assert!(line["idle_before_ms"].as_f64().is_some_and(|ms| ms >= pause * 1000.0 - 100.0), "idle for {pause} s: {line}");
    }
    drop(echo);
}

/// Sets `kernel.bpf_stats_enabled`; puts back what it was when dropped.
struct BpfStats(String);

impl BpfStats {
    const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";

    fn set(on: bool) -> BpfStats {
        let was = std::fs::read_to_string(Self::PATH).unwrap();
        std::fs::write(Self::PATH, if on { "1" } else { "0" }).unwrap();
        BpfStats(was)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, self.0.trim());
    }
}

#[test]
fn a_summary_says_what_the_tracer_cost_and_its_kernel_programs_where_the_kernel_counts_them() {
    require_root();
    let link = Link::new();
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let connect_a_few = || {
        for _ in 0..20 {
            let client_stream = link.connect(server).unwrap();
            drop(listener.accept().unwrap());
            drop(client_stream);
        }
    };
    let uncounted_stats = BpfStats::set(false);
    let tracer = summary_tracer(&["--netns", &link.server.path()]);
    connect_a_few();
    let uncounted = tracer.wait_for("a summary with events", |line| line["interval_events"].as_u64() > Some(0));
    let process_ns = uncounted["cost"]["process_cpu_ns"].as_u64().unwrap();
    assert!(process_ns > 0 && process_ns < 2_000_000_000, "one interval of 1 s, and the tracer polls all along: {uncounted}");
    assert!(uncounted["cost"]["kernel"].is_null(), "the kernel does not count runs: none are claimed: {uncounted}");

    drop(uncounted_stats);
    let _counted_stats = BpfStats::set(true);
    // The interval under way began uncounted: only the next one is whole.
    thread::sleep(Duration::from_millis(1500));
    connect_a_few();
    let counted = tracer.wait_for("a summary with the kernel's counts", |line| line["cost"]["kernel"]["runs"].as_u64() > Some(0));
    let kernel = &counted["cost"]["kernel"];
    let per_run = kernel["run_ns"].as_u64().unwrap() / kernel["runs"].as_u64().unwrap();
    assert!((10..100_000).contains(&per_run), "a hook's run takes tens to hundreds of ns: {counted}");
    tracer.stop();
}
