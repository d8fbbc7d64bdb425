//! The cost of the per-packet hooks (`tcp_probe`, `netif_receive_skb`) where it hurts most: one long connection
//! moving bulk data through a veth pair, throughput untraced against traced, interleaved rounds.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;

const NETNS_A: &str = "tracer-bulk-a";
const NETNS_B: &str = "tracer-bulk-b";

/// Two namespaces joined by a veth pair (MTU 1500: a packet per 1 448 bytes before GRO),
/// deleted on drop.
struct Pair;

impl Pair {
    fn create() -> Result<Pair> {
        for name in [NETNS_A, NETNS_B] {
            let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
            crate::run_checked(Command::new("ip").args(["netns", "add", name]))?;
        }
        crate::run_checked(
            Command::new("ip")
                .args(["link", "add", "tbulk0", "netns", NETNS_A, "type", "veth", "peer", "name", "tbulk1", "netns", NETNS_B]),
        )?;
        for (name, device, address) in [(NETNS_A, "tbulk0", "10.254.0.1/24"), (NETNS_B, "tbulk1", "10.254.0.2/24")] {
            crate::run_checked(Command::new("ip").args(["-n", name, "addr", "add", address, "dev", device]))?;
            crate::run_checked(Command::new("ip").args(["-n", name, "link", "set", device, "up"]))?;
        }
        Ok(Pair)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for name in [NETNS_A, NETNS_B] {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Bytes per second one connection moves from A to B in `seconds`.
fn transfer(seconds: f64) -> Result<f64> {
    let listener = crate::load::inside(NETNS_B, None, || TcpListener::bind("10.254.0.2:0"))?
        .join()
        .map_err(|_| anyhow::anyhow!("bind panicked"))???;
    let server: SocketAddr = listener.local_addr()?;
    let receiver = thread::spawn(move || -> std::io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        let mut buffer = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match stream.read(&mut buffer)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let sender = crate::load::inside(NETNS_A, None, move || -> std::io::Result<f64> {
        let mut stream = TcpStream::connect(server)?;
        let chunk = vec![7u8; 1 << 20];
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < Duration::from_secs_f64(seconds) {
            stream.write_all(&chunk)?;
            sent += chunk.len() as u64;
        }
        Ok(sent as f64 / started.elapsed().as_secs_f64())
    })?;
    let rate = sender.join().map_err(|_| anyhow::anyhow!("the sender panicked"))???;
    receiver.join().map_err(|_| anyhow::anyhow!("the receiver panicked"))??;
    Ok(rate)
}

/// Interleaved rounds: untraced, traced (summary mode, `tcp_probe` and `netif_receive_skb` on
/// every received segment), traced without `netif_receive_skb` (what that hook takes), and
/// traced with `--hook-mode tracepoint` (neither: what the rest of the tracer costs on this
/// load); a Markdown section.
pub fn run(tracer: &std::path::Path, rounds: usize, seconds: f64) -> Result<String> {
    let _pair = Pair::create()?;
    // Throughput with bpf_stats off (its clock reads on every run are a cost of their own);
    // then one traced round with it on, for the hook's run time.
    let stats = crate::measure::BpfStats::set(false);
    let mut untraced = Vec::new();
    let (mut traced, mut classic) = (crate::measure::TracedRuns::default(), crate::measure::TracedRuns::default());
    let mut without_arrivals = crate::measure::TracedRuns::default();
    for _ in 0..rounds {
        untraced.push(transfer(seconds)?);
        traced.round(tracer, &[], || transfer(seconds))?;
        without_arrivals.round(tracer, &["--skip-hook", "netif_receive_skb"], || transfer(seconds))?;
        classic.round(tracer, &["--hook-mode", "tracepoint"], || transfer(seconds))?;
    }
    drop(stats);
    let mut costed = crate::measure::TracedRuns::default();
    {
        let _stats = crate::measure::BpfStats::set(true);
        costed.round(tracer, &[], || transfer(seconds))?;
    }
    let base = crate::measure::median(&untraced);
    let (with_probe, without_probe) = (crate::measure::median(&traced.rates), crate::measure::median(&classic.rates));
    let no_arrivals = crate::measure::median(&without_arrivals.rates);
    let per_packet = |program: &str| {
        let (time, runs) = costed.program(program);
        format!("{runs} runs, {:.0} ns per run", time as f64 / runs.max(1) as f64)
    };
    Ok(format!(
        "## Bulk transfer through veth ({rounds} interleaved rounds of {seconds} s, one connection, bpf_stats off)\n\n\
         | run | MB/s (median) | of untraced |\n|---|---|---|\n\
         | untraced | {:.0} | 1 |\n\
         | tracer (tp_btf: `tcp_probe` on every received segment, `netif_receive_skb` on every received packet) | {:.0} | **{:.3}** |\n\
         | tracer `--skip-hook netif_receive_skb` | {:.0} | {:.3} |\n\
         | tracer `--hook-mode tracepoint` (neither) | {:.0} | {:.3} |\n\n\
         One more traced round, bpf_stats on (one run per received segment, after GRO): tcp_probe {}; netif_receive_skb {}\n\n",
        base / 1e6,
        with_probe / 1e6,
        with_probe / base,
        no_arrivals / 1e6,
        no_arrivals / base,
        without_probe / 1e6,
        without_probe / base,
        per_packet("btf_tcp_probe"),
        per_packet("btf_rx_reset"),
    ))
}
