//! Test hosts and the tracer under test: network namespaces joined by a veth pair, sockets opened
//! inside them, and a running `tracer` whose JSON output the tests read.
//!
//! Every namespace is created by the test and deleted on drop; only addresses inside those
//! namespaces are used. Needs root (run through `cargo xtask test`).
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod artifacts;
pub mod churn;
pub mod forge;

use std::{
    fs::File,
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Reads a starting tracer's stderr up to its "attached" line (notes may come first: a kernel
/// that refused tp_btf for one hook says so); returns what it said. An error, or an end before
/// attaching, fails the test.
pub fn until_attached(stderr: &mut impl BufRead) -> String {
    let mut said = String::new();
    while !said.lines().last().is_some_and(|line| line.starts_with("tracer: attached")) {
        assert!(stderr.read_line(&mut said).unwrap() > 0 && said.lines().all(|line| !line.contains("error")), "{said}");
    }
    said
}

/// Loads `page` in headless Chromium (Debian's `chromium`) with `args` (`--dump-dom`,
/// `--screenshot=…`), its console on stderr; a browser that fails fails the test.
pub fn chromium(page: &std::path::Path, args: &[&str]) -> std::process::Output {
    let output = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000", "--enable-logging=stderr"])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium (apt: chromium) runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// `GET path` from a server on loopback (HTTP/1.0, with an optional `Accept`): the whole
/// response, head and body.
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    let accept = accept.map(|accept| format!("Accept: {accept}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n{accept}\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// The tracer under test: this build's, or the one `TRACER_BINARY` names (the VM runs the
/// binary from the .deb, unchanged, on every kernel).
pub fn tracer_binary() -> std::path::PathBuf {
    std::env::var_os("TRACER_BINARY").map_or_else(|| env!("CARGO_BIN_EXE_tracer").into(), Into::into)
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "kernel tests load eBPF programs: run them with `cargo xtask test` as root");
}

/// `setsockopt` with a plain value (an int, a `libc::linger`) on a socket the test owns.
pub fn set_option<T: Copy>(socket: &impl AsRawFd, level: i32, name: i32, value: T) {
    // SAFETY: `value` lives across the call and its exact size is passed.
    let rc = unsafe { libc::setsockopt(socket.as_raw_fd(), level, name, (&value as *const T).cast(), std::mem::size_of::<T>() as u32) };
    assert_eq!(rc, 0, "setsockopt({level}, {name}): {}", std::io::Error::last_os_error());
}

/// connect() from a chosen local address (SO_REUSEADDR), as a client reusing its port would.
pub fn connect_from(local: SocketAddr, remote: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let (IpAddr::V4(local_ip), IpAddr::V4(remote_ip)) = (local.ip(), remote.ip()) else { panic!("IPv4 only") };
    let address = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let size = std::mem::size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: a fresh socket we own, valid sockaddr_in values and sizes; TcpStream takes the fd.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let stream = TcpStream::from_raw_fd(fd);
        set_option(&stream, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1 as libc::c_int);
        let bound = address(local_ip, local.port());
        if libc::bind(fd, (&bound as *const libc::sockaddr_in).cast(), size) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let target = address(remote_ip, remote.port());
        if libc::connect(fd, (&target as *const libc::sockaddr_in).cast(), size) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

pub fn sh(args: &[&str]) {
    let output = Command::new(args[0]).args(&args[1..]).output().expect("command runs");
    assert!(output.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// A network namespace that exists for the life of the value.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Netns {
        let name = format!("tt{}-{}-{role}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed));
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// Inode of the namespace, as the tracer reports it.
    pub fn inode(&self) -> u64 {
        std::fs::metadata(format!("/run/netns/{}", self.name)).expect("netns file").ino()
    }

    /// Runs `f` on a thread that has entered this namespace; sockets made there stay in it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = File::open(format!("/run/netns/{}", self.name)).expect("netns file");
        thread::spawn(move || {
            // SAFETY: setns on a namespace fd we own, for this thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in netns panicked")
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Loads an nftables ruleset inside the namespace.
    pub fn nft(&self, ruleset: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nft runs");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), ruleset.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "nft failed: {}\n{ruleset}", String::from_utf8_lossy(&output.stderr));
    }

    /// `ss -tan state STATE` inside the namespace: how many sockets.
    pub fn ss_count(&self, state: &str) -> u64 {
        let output = Command::new("ip").args(["netns", "exec", &self.name, "ss", "-tanH", "state", state]).output().expect("ss runs");
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).lines().filter(|line| !line.trim().is_empty()).count() as u64
    }

    /// A listener on `address` in this namespace with a backlog of one: two connections fill
    /// it when nobody calls accept().
    pub fn listen_with_a_backlog_of_one(&self, address: SocketAddr) -> TcpListener {
        let listener = self.run(move || TcpListener::bind(address).expect("bind"));
        // A second listen() on a listening socket sets its backlog.
        // SAFETY: listen on a descriptor the listener owns.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 1) }, 0);
        listener
    }

    /// `count` connects to `to` at once from this namespace, each given 4 s: the streams that
    /// were established.
    pub fn connect_at_once(&self, to: SocketAddr, count: usize) -> Vec<Option<TcpStream>> {
        self.run(move || {
            // Threads started here stay in this namespace.
            let connects: Vec<_> =
                (0..count).map(|_| thread::spawn(move || TcpStream::connect_timeout(&to, Duration::from_secs(4)).ok())).collect();
            connects.into_iter().map(|connect| connect.join().unwrap()).collect()
        })
    }

    pub fn exec(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Two hosts joined by a veth pair: `client` has `.1`/`::1`, `server` has `.2`/`::2`.
pub struct Link {
    pub client: Netns,
    pub server: Netns,
    pub client_ip: IpAddr,
    pub server_ip: IpAddr,
    pub client_ip6: IpAddr,
    pub server_ip6: IpAddr,
    /// The veth ends: in `client`, and in `server`.
    pub client_dev: String,
    pub server_dev: String,
}

impl Link {
    pub fn new() -> Link {
        let client = Netns::new("c");
        let server = Netns::new("s");
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) % 250 + 1;
        let (veth_c, veth_s) = (format!("vc{id}"), format!("vs{id}"));
        sh(&["ip", "link", "add", &veth_c, "netns", &client.name, "type", "veth", "peer", "name", &veth_s, "netns", &server.name]);
        let v4 = |host: u8| format!("10.231.{id}.{host}");
        let v6 = |host: u8| format!("fd00:231:{id:x}::{host}");
        for (ns, dev, host) in [(&client, &veth_c, 1), (&server, &veth_s, 2)] {
            sh(&["ip", "-n", &ns.name, "addr", "add", &format!("{}/24", v4(host)), "dev", dev]);
            sh(&["ip", "-n", &ns.name, "addr", "add", &format!("{}/64", v6(host)), "dev", dev, "nodad"]);
            sh(&["ip", "-n", &ns.name, "link", "set", dev, "up"]);
        }
        Link {
            client,
            server,
            client_ip: v4(1).parse().unwrap(),
            server_ip: v4(2).parse().unwrap(),
            client_ip6: v6(1).parse().unwrap(),
            server_ip6: v6(2).parse().unwrap(),
            client_dev: veth_c,
            server_dev: veth_s,
        }
    }

    pub fn listen(&self, ip: IpAddr) -> TcpListener {
        self.server.run(move || TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind"))
    }

    pub fn connect(&self, to: SocketAddr) -> std::io::Result<TcpStream> {
        self.client.run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
    }
}

/// Client → router → server, IPv4 and IPv6, routed both ways: the router is the path device
/// (nftables in it plays the middlebox). [`Routed::new`] makes it a NAT gateway.
pub struct Routed {
    pub client: Netns,
    pub nat: Netns,
    pub server: Netns,
    pub client_ip: IpAddr,
    pub client_ip6: IpAddr,
    /// The router's address on the client's side (where its ICMP errors to the client come from).
    pub router_ip: IpAddr,
    pub nat_ip: IpAddr,
    pub server_ip: IpAddr,
    pub server_ip6: IpAddr,
    /// The router's devices towards the server and towards the client.
    pub outward: String,
    pub inward: String,
}

impl Routed {
    /// A router, no NAT: the server sees the client's own addresses, one router away.
    pub fn router() -> Routed {
        let (client, nat, server) = (Netns::new("c"), Netns::new("n"), Netns::new("s"));
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) % 250 + 1;
        let (c0, n0, n1, s0) = (format!("rc{id}"), format!("rn{id}"), format!("ro{id}"), format!("rs{id}"));
        sh(&["ip", "link", "add", &c0, "netns", &client.name, "type", "veth", "peer", "name", &n0, "netns", &nat.name]);
        sh(&["ip", "link", "add", &n1, "netns", &nat.name, "type", "veth", "peer", "name", &s0, "netns", &server.name]);
        let inside = |host: u8| format!("10.232.{id}.{host}");
        let outside = |host: u8| format!("10.233.{id}.{host}");
        let inside6 = |host: u8| format!("fd00:232:{id:x}::{host}");
        let outside6 = |host: u8| format!("fd00:233:{id:x}::{host}");
        for (ns, dev, v4, v6) in [
            (&client, &c0, inside(1), inside6(1)),
            (&nat, &n0, inside(2), inside6(2)),
            (&nat, &n1, outside(2), outside6(2)),
            (&server, &s0, outside(1), outside6(1)),
        ] {
            sh(&["ip", "-n", &ns.name, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            sh(&["ip", "-n", &ns.name, "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            sh(&["ip", "-n", &ns.name, "link", "set", dev, "up"]);
        }
        for (ns, via, via6) in [(&client, inside(2), inside6(2)), (&server, outside(2), outside6(2))] {
            sh(&["ip", "-n", &ns.name, "route", "add", "default", "via", &via]);
            sh(&["ip", "-n", &ns.name, "-6", "route", "add", "default", "via", &via6]);
        }
        nat.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        nat.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        Routed {
            client,
            nat,
            server,
            client_ip: inside(1).parse().unwrap(),
            client_ip6: inside6(1).parse().unwrap(),
            router_ip: inside(2).parse().unwrap(),
            nat_ip: outside(2).parse().unwrap(),
            server_ip: outside(1).parse().unwrap(),
            server_ip6: outside6(1).parse().unwrap(),
            outward: n1,
            inward: n0,
        }
    }

    /// The router masquerades the client behind `nat_ip`, using only the source ports in `ports`.
    pub fn new(ports: (u16, u16)) -> Routed {
        let routed = Routed::router();
        routed.nat.nft(&format!(
            "table ip nat {{ chain post {{ type nat hook postrouting priority 100; oifname \"{}\" ip protocol tcp snat to {}:{}-{}; }}; }}",
            routed.outward, routed.nat_ip, ports.0, ports.1
        ));
        // A NAT gateway that forgets closed flows long before the server's TIME_WAIT ends, as in
        // the incident (newer kernels also evict closing flows on their own when the port range runs out; 5.10 and 6.1 need this).
        routed.nat.exec(&["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1"]);
        routed
    }
}

/// A running `tracer` with its output collected as JSON values.
pub struct Tracer {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    reader: Option<thread::JoinHandle<()>>,
    pub stderr: Arc<Mutex<String>>,
}

impl Tracer {
    /// Starts `tracer ARGS --json` and waits until its probes are attached.
    pub fn start(args: &[&str]) -> Tracer {
        let mut child = Command::new(tracer_binary())
            .args(args)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tracer starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
                sink.lock().unwrap().push(value);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let errors = stderr.clone();
        let child_stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(child_stderr).lines().map_while(Result::ok) {
                // Record the line before announcing it: tests read the mode line right away.
                errors.lock().unwrap().push_str(&format!("{line}\n"));
                if line.starts_with("tracer: attached") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let mut tracer = Tracer { child, lines, reader: Some(reader), stderr };
        if ready_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let status = tracer.child.try_wait();
            panic!("tracer did not attach ({status:?}): {}", tracer.stderr.lock().unwrap());
        }
        tracer
    }

    /// What it said when it attached: each hook's mode, batches.
    pub fn announced(&self) -> tracer::kernel::hooks::Announced {
        let said = self.stderr.lock().unwrap().clone();
        tracer::kernel::hooks::Announced::parse(&said).unwrap_or_else(|| panic!("no attached line: {said}"))
    }

    /// Waits (up to 10 s) until some output line satisfies `predicate`.
    pub fn wait_for(&self, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        self.wait_long(what, 10, predicate)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line printed so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a summary holding a finding of `kind` that satisfies `predicate`; returns it.
    pub fn wait_for_finding(&self, kind: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        let summary = self.wait_for(&format!("a {kind} finding"), |line| {
            line["findings"].as_array().is_some_and(|findings| findings.iter().any(|f| f["kind"] == kind && predicate(f)))
        });
        summary["findings"].as_array().unwrap().iter().find(|f| f["kind"] == kind && predicate(f)).unwrap().clone()
    }

    /// Like [`Tracer::wait_for`] with a longer limit, for scenarios driven by kernel timers.
    pub fn wait_long(&self, what: &str, seconds: u64, predicate: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(found) = self.lines.lock().unwrap().iter().find(|line| predicate(line)) {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; output: {:#?}\nstderr:\n{}",
                self.lines.lock().unwrap(),
                self.stderr.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT, then every line it printed; asserts a clean exit.
    pub fn stop(self) -> Vec<Value> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.stop_after_signal()
    }

    /// Every line it printed once it exits (after a signal sent by the test); asserts exit 0.
    pub fn stop_after_signal(mut self) -> Vec<Value> {
        let status = self.child.wait().expect("tracer exits");
        self.reader.take().unwrap().join().unwrap();
        assert!(status.success(), "tracer exited with {status}: {}", self.stderr.lock().unwrap());
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the running kernel is at least `major.minor`.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).filter_map(|part| part.parse::<u32>().ok());
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= (major, minor)
}

/// The closing line's `events` object, asserting nothing was lost or undecodable.
pub fn assert_nothing_lost(lines: &[Value]) {
    let last = lines.iter().rev().find(|line| line.get("final").is_some()).expect("a final line");
    assert_eq!(last["events"]["lost"], 0, "events lost: {last}");
    assert_eq!(last["events"]["unreadable"], 0, "kernel reads failed: {last}");
    let misses = last["events"]["kernel_misses"].as_object().expect("kernel_misses by name");
    assert_eq!(misses.len(), tracer_common::KernelMiss::ALL.len(), "{last}");
    assert!(misses.values().all(|count| count == 0), "the kernel programs took a rare path: {last}");
    assert_eq!(last["events"]["decode_errors"], 0, "undecodable records: {last}");
    // `seen` counts the host's events (or the --netns namespace's); it must cover at least what
    // this run printed: its kernel event lines (link lines come from rtnetlink), or two state
    // changes per connection its summaries closed.
    let event_lines =
        lines.iter().filter(|line| line.get("ts_ns").is_some() && line.get("kind").is_some_and(|kind| kind != "link")).count() as u64;
    let closed: u64 =
        lines.iter().filter_map(|line| line["closes"].as_object()).flat_map(|closes| closes.values()).filter_map(Value::as_u64).sum();
    let seen = last["events"]["seen"].as_u64().unwrap();
    assert!(
        seen > 0 && seen >= event_lines.max(2 * closed),
        "{seen} seen, but {event_lines} event lines and {closed} connections closed: {last}"
    );
}

/// The `(old_state, state)` transitions of the socket that was, at some point, `local` → `remote`
/// (before `connect` picks a port the kernel reports port 0, so the socket is found by address).
pub fn transitions(lines: &[Value], local: SocketAddr, remote: SocketAddr) -> Vec<(String, String)> {
    let socket = state_changes(lines)
        .find(|line| line["local"] == local.to_string() && line["remote"] == remote.to_string())
        .map(|line| (line["socket"].clone(), line["netns"].clone()));
    let Some((socket, netns)) = socket else { return Vec::new() };
    state_changes(lines)
        .filter(|line| line["socket"] == socket && line["netns"] == netns)
        .map(|line| (line["old_state"].as_str().unwrap().to_string(), line["state"].as_str().unwrap().to_string()))
        .collect()
}

fn state_changes(lines: &[Value]) -> impl Iterator<Item = &Value> {
    lines.iter().filter(|line| line["kind"] == "state")
}

pub fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(old, new)| (old.to_string(), new.to_string())).collect()
}

/// The next sequence number the socket expects from its peer (`rcv_nxt`), through TCP_REPAIR
/// (CAP_NET_ADMIN): what an injector would have to guess.
pub fn expected_sequence(stream: &TcpStream) -> u32 {
    const TCP_REPAIR: i32 = 19;
    const TCP_REPAIR_QUEUE: i32 = 20;
    const TCP_QUEUE_SEQ: i32 = 21;
    const TCP_RECV_QUEUE: i32 = 1;
    set_option(stream, libc::IPPROTO_TCP, TCP_REPAIR, 1 as libc::c_int);
    set_option(stream, libc::IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
    let mut sequence = 0u32;
    let mut length = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: a u32 out-parameter of the size given.
    let rc =
        unsafe { libc::getsockopt(stream.as_raw_fd(), libc::IPPROTO_TCP, TCP_QUEUE_SEQ, (&mut sequence as *mut u32).cast(), &mut length) };
    assert_eq!(rc, 0, "TCP_QUEUE_SEQ: {}", std::io::Error::last_os_error());
    set_option(stream, libc::IPPROTO_TCP, TCP_REPAIR, 0 as libc::c_int);
    sequence
}

/// Sends one IPv4 TCP RST from `from` to `to` with sequence number `sequence`, through a raw
/// socket of the calling thread's namespace: a blind injector's packet.
pub fn forge_reset(from: std::net::SocketAddrV4, to: std::net::SocketAddrV4, sequence: u32) {
    let mut packet = [0u8; 40];
    packet[0] = 0x45; // IPv4, 20-byte header; the kernel fills the length, ID and checksum
    packet[8] = 64;
    packet[9] = libc::IPPROTO_TCP as u8;
    packet[12..16].copy_from_slice(&from.ip().octets());
    packet[16..20].copy_from_slice(&to.ip().octets());
    let tcp = &mut packet[20..];
    tcp[0..2].copy_from_slice(&from.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&to.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&sequence.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x04; // RST
                    // The TCP checksum over the pseudo-header and the header.
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| bytes.chunks(2).for_each(|pair| sum += u32::from(u16::from_be_bytes([pair[0], pair[1]])));
    add(&from.ip().octets());
    add(&to.ip().octets());
    add(&[0, libc::IPPROTO_TCP as u8, 0, 20]);
    add(tcp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    tcp[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    // SAFETY: plain socket calls on a descriptor we own; the buffers are the sizes given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let target = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(to.ip().octets()) },
            sin_zero: [0; 8],
        };
        let sent = libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&target as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        libc::close(fd);
        assert_eq!(sent, packet.len() as isize, "sendto: {}", std::io::Error::last_os_error());
    }
}

/// A `TcpExt` counter of the namespace (its /proc/net/netstat), e.g. `TCPChallengeACK`.
pub fn tcp_ext(netns: &Netns, counter: &'static str) -> u64 {
    netns.run(move || {
        let text = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap();
        let mut lines = text.lines().filter(|line| line.starts_with("TcpExt:"));
        let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
        let index = names.split_whitespace().position(|name| name == counter).expect("a TcpExt counter");
        values.split_whitespace().nth(index).unwrap().parse().unwrap()
    })
}
