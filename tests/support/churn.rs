//! A TCP churn generator: opens and closes short loopback-style connections as fast as it can,
//! for a number of connections or a length of time. Shared by the flood test and `cargo xtask
//! bench` (which includes this file), so both measure the same load.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
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

/// Runs `amount` of connect → accept → the server writes one byte and closes → the client
/// reads it and closes, against a listener on `ip` (port chosen by the kernel): the server
/// closes first as busy HTTP servers do, and the client receives data as real clients do.
/// Returns how many connections completed.
pub fn churn(ip: std::net::IpAddr, amount: Amount) -> u64 {
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
        let Ok(mut stream) = TcpStream::connect(server) else { continue };
        let _ = stream.read(&mut [0; 1]); // the server's byte
        done += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = TcpStream::connect(server); // wake the acceptor
    acceptor.join().unwrap();
    done
}
