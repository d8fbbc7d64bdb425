//! The loads the benchmarks put on the machine: connection churn in a private network
//! namespace, either on every CPU at once (how a busy server runs: nothing left idle for the
//! tracer to hide on) or pinned to one CPU (the older, gentler figure), and refused connects.
use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

// xtask churns for a length of time; the tests also churn for a count.
#[allow(dead_code)]
#[path = "../../tests/support/churn.rs"]
mod churn;

pub use churn::{Amount, Clients};

const NETNS: &str = "tracer-bench";

/// Where the load runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Spread {
    /// A client and a server thread per CPU, left to the scheduler.
    EveryCpu,
    /// One client and its server thread, pinned to this CPU.
    Pinned(usize),
}

impl Spread {
    pub fn describe(self) -> String {
        match self {
            Spread::EveryCpu => format!("a client and a server thread per CPU ({} CPUs), unpinned", cpus()),
            Spread::Pinned(cpu) => format!("one client and its server thread pinned to CPU {cpu}"),
        }
    }
}

pub fn cpus() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// The benchmark's private network namespace, deleted on drop.
pub struct Namespace;

impl Namespace {
    pub fn create() -> Result<Namespace> {
        // A namespace left by an interrupted run; usually there is none.
        let _ = Command::new("ip").args(["netns", "del", NETNS]).stderr(Stdio::null()).status();
        crate::run_checked(Command::new("ip").args(["netns", "add", NETNS]))?;
        crate::run_checked(Command::new("ip").args(["-n", NETNS, "link", "set", "lo", "up"]))?;
        Ok(Namespace)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    }
}

/// Churns on loopback inside the namespace for `seconds`; connections/s, all threads together.
pub fn churn_rate(spread: Spread, seconds: f64) -> Result<f64> {
    churn_amount(spread, Clients::One, Amount::Time(Duration::from_secs_f64(seconds)))
}

pub fn churn_amount(spread: Spread, clients: Clients, amount: Amount) -> Result<f64> {
    on_spread(spread, move || {
        let started = Instant::now();
        let done = churn::churn_from(IpAddr::V4(Ipv4Addr::LOCALHOST), clients, amount);
        done as f64 / started.elapsed().as_secs_f64()
    })
}

/// Connects to a closed port as fast as it can for `length`: each attempt is four firings
/// (SYN_SENT, the reset sent and received, CLOSE) for little work. Attempts/s.
pub fn refused_rate(spread: Spread, length: Duration) -> Result<f64> {
    on_spread(spread, move || {
        let closed = std::net::SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
        let started = Instant::now();
        let mut attempts = 0u64;
        while started.elapsed() < length {
            let _ = std::net::TcpStream::connect(closed);
            attempts += 1;
        }
        attempts as f64 / started.elapsed().as_secs_f64()
    })
}

/// Runs `load` once per CPU (every CPU) or once (pinned), inside the namespace; the sum of
/// the rates it returns.
fn on_spread(spread: Spread, load: impl Fn() -> f64 + Send + Sync + Clone + 'static) -> Result<f64> {
    let (copies, pin) = match spread {
        Spread::EveryCpu => (cpus(), None),
        Spread::Pinned(cpu) => (1, Some(cpu)),
    };
    let threads: Vec<_> = (0..copies).map(|_| inside(NETNS, pin, load.clone())).collect::<Result<_>>()?;
    let mut total = 0.0;
    for thread in threads {
        total += thread.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
    }
    Ok(total)
}

/// Starts `work` on a thread inside network namespace `netns` (/run/netns), pinned to `pin` if
/// given; the threads it starts inherit both. Every benchmark enters its namespaces this way.
pub fn inside<T: Send + 'static>(
    netns: &str,
    pin: Option<usize>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<thread::JoinHandle<Result<T>>> {
    let file = File::open(format!("/run/netns/{netns}"))?;
    Ok(thread::spawn(move || -> Result<T> {
        // SAFETY: setns/sched_setaffinity affect only this thread; the arguments are valid.
        unsafe {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            if let Some(cpu) = pin {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
        }
        Ok(work())
    }))
}
