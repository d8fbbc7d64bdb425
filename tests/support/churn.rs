//! A TCP churn generator: opens and closes short loopback-style connections as fast as it can,
//! for a number of connections or a length of time. Shared by the flood test and `cargo xtask
//! bench` (which includes this file), so both measure the same load.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::FromRawFd,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

/// How long, or how many connections.
#[derive(Clone, Copy, Debug)]
pub enum Amount {
    Connections(u64),
    Time(Duration),
    /// At most this many connections per second, for a length of time.
    Paced(u64, Duration),
}

/// Where the connections come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clients {
    /// The listener's own address: a few clients, as in most tests.
    One,
    /// Each connection from an address of its own in 127.0.0.0/8, the next one all threads
    /// share: a server facing more clients than the tracer's tables hold (its TIME_WAIT sockets
    /// never share a tuple). The listener must be on IPv4 loopback.
    Many,
}

/// The next client address [`Clients::Many`] connects from: 127.1.0.0 to 127.254.255.255,
/// then around again.
static NEXT_CLIENT: AtomicU32 = AtomicU32::new(0);

/// Runs `amount` of connect → accept → the server writes one byte and closes → the client
/// reads it and closes, against a listener on `ip` (port chosen by the kernel): the server
/// closes first as busy HTTP servers do, and the client receives data as real clients do.
/// Returns how many connections completed.
pub fn churn(ip: std::net::IpAddr, amount: Amount) -> u64 {
    churn_from(ip, Clients::One, amount)
}

/// [`churn`], with the connections coming from `clients`.
pub fn churn_from(ip: std::net::IpAddr, clients: Clients, amount: Amount) -> u64 {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind the churn listener");
    let server = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let stop = stop.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(mut stream) = stream {
                    let _ = stream.write_all(&[1]);
                }
            }
        })
    };
    let started = Instant::now();
    let mut done = 0u64;
    loop {
        match amount {
            Amount::Connections(n) if done >= n => break,
            Amount::Time(limit) | Amount::Paced(_, limit) if started.elapsed() >= limit => break,
            Amount::Paced(per_second, _) if done as f64 > per_second as f64 * started.elapsed().as_secs_f64() => {
                thread::sleep(Duration::from_millis(1));
                continue;
            }
            _ => {}
        }
        let connected = match clients {
            Clients::One => TcpStream::connect(server),
            Clients::Many => {
                let next = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed) % (254 << 16);
                connect_from(Ipv4Addr::from(0x7f01_0000 + next), server)
            }
        };
        let Ok(mut stream) = connected else { continue };
        let _ = stream.read(&mut [0; 1]); // the server's byte
        done += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = TcpStream::connect(server); // wake the acceptor
    acceptor.join().unwrap();
    done
}

/// Connects to `server` from `source` (port chosen by the kernel): std connects only from the
/// address the route gives.
fn connect_from(source: Ipv4Addr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(server) = server else { return Err(std::io::ErrorKind::Unsupported.into()) };
    let address = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket, owned by the stream from here on (closed on drop); both addresses
    // are valid `sockaddr_in`s of the length given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let (local, remote) = (address(source, 0), address(*server.ip(), server.port()));
        if libc::bind(fd, (&raw const local).cast(), length) != 0 || libc::connect(fd, (&raw const remote).cast(), length) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}
