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
fn connection_log(link: &Link, selection: &str) -> Tracer {
    let network = format!("{}/24", link.client_ip);
    Tracer::start(&["--interval", "1", &format!("--connections={selection}"), "--addr", &network])
}

/// The connection line of the socket at `local` → `remote`.
fn line_of(tracer: &Tracer, local: SocketAddr, remote: SocketAddr) -> Value {
    tracer.wait_for(&format!("the line of {local} → {remote}"), |line| {
        line["local"] == local.to_string() && line["remote"] == remote.to_string() && line["close"].is_string()
    })
}

/// Fields of a line, for comparing with what a scenario expects.
fn fields(line: &Value, names: &[&str]) -> Vec<(String, Value)> {
    names.iter().map(|name| (name.to_string(), line[*name].clone())).collect()
}

fn expect(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
    pairs.iter().map(|(name, value)| (name.to_string(), value.clone())).collect()
}

const SHAPE: [&str; 7] = ["role", "close", "first_fin", "rst", "bytes_sent", "bytes_received", "silent_cause"];

#[test]
fn a_graceful_close_by_the_client_gives_both_ends_their_line_with_the_bytes_moved() {
    require_root();
    let link = Link::new();
    let tracer = connection_log(&link, "all");
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let mut client = link.connect(server).unwrap();
    let (mut accepted, _) = listener.accept().unwrap();
    let client_addr = client.local_addr().unwrap();
    client.write_all(&[1; 5000]).unwrap();
    accepted.read_exact(&mut [0; 5000]).unwrap();
    accepted.write_all(&[2; 300]).unwrap();
    client.read_exact(&mut [0; 300]).unwrap();
    drop(client); // the client closes first
    assert_eq!(accepted.read(&mut [0; 1]).unwrap(), 0);
    drop(accepted);

    let client_line = line_of(&tracer, client_addr, server);
    assert_eq!(
        fields(&client_line, &SHAPE),
        expect(&[
            ("role", "client".into()),
            ("close", "graceful".into()),
            ("first_fin", "us".into()),
            ("rst", Value::Null),
            ("bytes_sent", 5000.into()),
            ("bytes_received", 300.into()),
            ("silent_cause", Value::Null)
        ]),
        "{client_line}"
    );
    assert_eq!(client_line["pid"], std::process::id(), "the owner is named: {client_line}");
    assert_eq!(client_line["netns"], link.client.inode());
    for phase in ["handshake_ms", "established_ms", "closing_ms", "duration_ms"] {
        assert!(client_line[phase].as_f64().is_some_and(|ms| ms >= 0.0), "{phase}: {client_line}");
    }
    let server_line = line_of(&tracer, server, client_addr);
    assert_eq!(
        fields(&server_line, &SHAPE),
        expect(&[
            ("role", "server".into()),
            ("close", "graceful".into()),
            ("first_fin", "peer".into()),
            ("rst", Value::Null),
            ("bytes_sent", 300.into()),
            ("bytes_received", 5000.into()),
            ("silent_cause", Value::Null)
        ]),
        "{server_line}"
    );
    let lines = tracer.stop();
    assert_eq!(lines.last().unwrap()["final"], true, "the final summary closes the log");
    assert_nothing_lost(&lines);
}

#[test]
fn a_graceful_close_by_the_server_is_told_from_both_sides() {
    require_root();
    let link = Link::new();
    let tracer = connection_log(&link, "all");
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let mut client = link.connect(server).unwrap();
    let (mut accepted, _) = listener.accept().unwrap();
    let client_addr = client.local_addr().unwrap();
    accepted.write_all(&[3; 777]).unwrap();
    drop(accepted); // the server closes first
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 777);
    drop(client);

    let client_line = line_of(&tracer, client_addr, server);
    assert_eq!(
        fields(&client_line, &SHAPE),
        expect(&[
            ("role", "client".into()),
            ("close", "graceful".into()),
            ("first_fin", "peer".into()),
            ("rst", Value::Null),
            ("bytes_sent", 0.into()),
            ("bytes_received", 777.into()),
            ("silent_cause", Value::Null)
        ]),
        "{client_line}"
    );
    let server_line = line_of(&tracer, server, client_addr);
    assert_eq!((server_line["close"].clone(), server_line["first_fin"].clone(), server_line["bytes_sent"].clone()), ("graceful".into(), "us".into(), 777.into()), "{server_line}");
    tracer.stop();
}

#[test]
fn a_refused_connect_and_a_connect_timeout() {
    require_root();
    let link = Link::new();
    link.server.nft("table inet firewall { chain input { type filter hook input priority 0; tcp dport 7780 drop; }; }");
    link.client.exec(&["sysctl", "-qw", "net.ipv4.tcp_syn_retries=1"]);
    let tracer = connection_log(&link, "troubled");
    // Bound first, so the test knows the local end of a connect that fails.
    let (refused_from, timeout_from) = (SocketAddr::new(link.client_ip, 45001), SocketAddr::new(link.client_ip, 45002));
    let closed = SocketAddr::new(link.server_ip, 7781);
    let refused = link.client.run(move || connect_from(refused_from, closed).expect_err("nothing listens there").kind());
    assert_eq!(refused, std::io::ErrorKind::ConnectionRefused);
    let refused_line = line_of(&tracer, refused_from, closed);
    assert_eq!(
        fields(&refused_line, &["role", "close", "rst", "syn_retransmits", "established_ms", "error"]),
        expect(&[
            ("role", "client".into()),
            ("close", "refused".into()),
            ("rst", "received".into()),
            ("syn_retransmits", 0.into()),
            ("established_ms", Value::Null),
            ("error", "ECONNREFUSED".into())
        ]),
        "{refused_line}"
    );

    let dropped = SocketAddr::new(link.server_ip, 7780);
    let timed_out = link.client.run(move || connect_from(timeout_from, dropped).expect_err("the firewall drops every SYN").kind());
    assert_eq!(timed_out, std::io::ErrorKind::TimedOut);
    let timeout_line = line_of(&tracer, timeout_from, dropped);
    assert_eq!(
        fields(&timeout_line, &["role", "close", "rst", "error", "bytes_sent"]),
        expect(&[("role", "client".into()), ("close", "connect_timeout".into()), ("rst", Value::Null), ("error", "ETIMEDOUT".into()), ("bytes_sent", 0.into())]),
        "{timeout_line}"
    );
    // tcp_syn_retries=1 bounds the time (1 s + 2 s), and the kernel sends a SYN at each expiry.
    assert!(timeout_line["syn_retransmits"].as_u64().is_some_and(|n| (1..=2).contains(&n)), "{timeout_line}");
    let lines = tracer.stop();
    assert!(lines.iter().all(|line| line["close"] != "graceful"), "troubled only: {lines:?}");
}

#[test]
fn a_peer_that_goes_silent_ends_by_retransmissions_or_by_keepalive() {
    require_root();
    let link = Link::new();
    let tracer = connection_log(&link, "troubled");
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
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
    link.server.nft(&format!("table inet blackhole {{ chain input {{ type filter hook input priority 0; ip saddr {client_ip} drop; }}; }}"));
    let (sending_addr, idle_addr) = (sending.local_addr().unwrap(), idle.local_addr().unwrap());
    let mut sending = sending;
    sending.write_all(b"hello?").unwrap();

    let silent = line_of(&tracer, sending_addr, server);
    assert_eq!(
        fields(&silent, &["close", "silent_cause", "error", "bytes_sent"]),
        expect(&[("close", "peer_silent".into()), ("silent_cause", "retransmissions".into()), ("error", "ETIMEDOUT".into()), ("bytes_sent", 0.into())]),
        "{silent}"
    );
    assert!(silent["retransmits"].as_u64() >= Some(1), "{silent}");
    let kept_alive = line_of(&tracer, idle_addr, server);
    assert_eq!(kept_alive["close"], "peer_silent", "{kept_alive}");
    // The kernel names the keepalive reset from 6.10; before, it is our reset without a reason.
    if kept_alive["rst_reason"].is_string() {
        assert_eq!(kept_alive["silent_cause"], "keepalive", "{kept_alive}");
    }
    drop(accepted);
    tracer.stop();
}

#[test]
fn an_application_abort_and_a_reset_from_a_middlebox() {
    require_root();
    let link = Link::new();
    let tracer = connection_log(&link, "troubled");
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();

    // SO_LINGER 0: close() sends a RST.
    let mut aborting = link.connect(server).unwrap();
    let (mut accepted, _) = listener.accept().unwrap();
    let aborting_addr = aborting.local_addr().unwrap();
    aborting.write_all(&[4; 100]).unwrap();
    accepted.read_exact(&mut [0; 100]).unwrap();
    set_option(&aborting, libc::SOL_SOCKET, libc::SO_LINGER, libc::linger { l_onoff: 1, l_linger: 0 });
    drop(aborting);
    let _ = accepted.read(&mut [0; 1]);
    let aborted = line_of(&tracer, aborting_addr, server);
    assert_eq!(
        fields(&aborted, &["role", "close", "rst", "bytes_sent"]),
        expect(&[("role", "client".into()), ("close", "aborted".into()), ("rst", "sent".into()), ("bytes_sent", 100.into())]),
        "{aborted}"
    );
    let reset = line_of(&tracer, server, aborting_addr);
    assert_eq!(
        fields(&reset, &["role", "close", "rst", "bytes_received", "error"]),
        expect(&[("role", "server".into()), ("close", "reset_by_peer".into()), ("rst", "received".into()), ("bytes_received", 100.into()), ("error", "ECONNRESET".into())]),
        "{reset}"
    );

    // A firewall in the server's namespace answers the client's data with a RST of its own: the
    // client sees a reset, the server never hears of it.
    let mut client = link.connect(server).unwrap();
    let (server_side, _) = listener.accept().unwrap();
    let client_addr = client.local_addr().unwrap();
    link.server.nft(&format!(
        "table inet appliance {{ chain input {{ type filter hook input priority -10; tcp sport {} tcp dport {} reject with tcp reset; }}; }}",
        client_addr.port(),
        server.port()
    ));
    client.write_all(b"request").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(client.read(&mut [0; 1]).is_err(), "the appliance reset the connection");
    let by_appliance = line_of(&tracer, client_addr, server);
    assert_eq!(
        fields(&by_appliance, &["role", "close", "rst", "first_fin"]),
        expect(&[("role", "client".into()), ("close", "reset_by_peer".into()), ("rst", "received".into()), ("first_fin", Value::Null)]),
        "{by_appliance}"
    );
    let lines = tracer.stop();
    assert!(
        !lines.iter().any(|line| line["local"] == server.to_string() && line["remote"] == client_addr.to_string()),
        "the server's socket never ended: {lines:?}"
    );
    drop(server_side);
}

#[test]
fn where_the_socket_cannot_be_read_at_its_end_the_bytes_are_absent_not_zero() {
    require_root();
    let link = Link::new();
    let network = format!("{}/24", link.client_ip);
    let tracer = Tracer::start(&["--interval", "1", "--connections", "--addr", &network, "--hook-mode", "tracepoint"]);
    let listener = link.listen(link.server_ip);
    let server = listener.local_addr().unwrap();
    let mut client = link.connect(server).unwrap();
    let (mut accepted, _) = listener.accept().unwrap();
    let client_addr = client.local_addr().unwrap();
    client.write_all(&[5; 10]).unwrap();
    drop(client);
    let mut got = Vec::new();
    accepted.read_to_end(&mut got).unwrap();
    drop(accepted);
    let line = line_of(&tracer, client_addr, server);
    assert_eq!(line["close"], "graceful", "{line}");
    let object = line.as_object().unwrap();
    assert!(!object.contains_key("bytes_sent") && !object.contains_key("bytes_received") && !object.contains_key("error"), "{line}");
    tracer.stop();
}
