//! A path device that forges a packet nftables cannot: a RST whose IPv4 header carries options,
//! sent in the server's name from inside the router's namespace. The SYN it answers is read with
//! a packet socket (which sees it before the router's firewall drops it); the RST goes out
//! through a raw socket that writes its own IP header.
use std::{
    fs::File,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    thread,
    time::{Duration, Instant},
};

/// NOP, NOP, NOP, end of options: four bytes that move the TCP header to byte 24.
const OPTIONS: [u8; 4] = [1, 1, 1, 0];

/// Starts waiting, inside the namespace at `netns_path`, for the next SYN to `port`; answers it
/// with a RST|ACK in the SYN's destination's name (TTL 64, the IPv4 options above). Joins with
/// whether it answered one within `wait`.
pub fn refuse_with_ip_options(netns_path: String, port: u16, wait: Duration) -> thread::JoinHandle<bool> {
    let (ready, is_ready) = std::sync::mpsc::channel();
    let answering = thread::spawn(move || {
        let file = File::open(&netns_path).expect("netns file");
        // SAFETY: setns on a namespace fd we own, for this thread only.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        let capture = socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from((libc::ETH_P_IP as u16).to_be()));
        ready.send(()).unwrap();
        let Some(syn) = next_syn(&capture, port, wait) else { return false };
        let raw = socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        let packet = reset_for(&syn);
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(syn.from.octets()) },
            sin_zero: [0; 8],
        };
        // SAFETY: a buffer and an address that outlive the call.
        let sent = unsafe {
            libc::sendto(
                raw.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                std::ptr::addr_of!(to).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(sent, packet.len() as isize, "sendto: {}", std::io::Error::last_os_error());
        true
    });
    is_ready.recv().expect("the forger started");
    answering
}

fn socket(domain: i32, kind: i32, protocol: i32) -> OwnedFd {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(domain, kind, protocol) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// What a SYN says that its RST must answer.
struct Syn {
    from: Ipv4Addr,
    to: Ipv4Addr,
    source_port: u16,
    destination_port: u16,
    sequence: u32,
}

fn next_syn(capture: &OwnedFd, port: u16, wait: Duration) -> Option<Syn> {
    let deadline = Instant::now() + wait;
    let mut packet = [0u8; 1500];
    while Instant::now() < deadline {
        // SAFETY: a buffer of the length given; MSG_DONTWAIT keeps the deadline ours.
        let size = unsafe { libc::recv(capture.as_raw_fd(), packet.as_mut_ptr().cast(), packet.len(), libc::MSG_DONTWAIT) };
        if size < 40 {
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        let tcp = &packet[usize::from(packet[0] & 0x0f) * 4..];
        let syn_only = tcp[13] & 0x12 == 0x02;
        if packet[9] == libc::IPPROTO_TCP as u8 && syn_only && u16::from_be_bytes([tcp[2], tcp[3]]) == port {
            return Some(Syn {
                from: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
                to: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
                source_port: u16::from_be_bytes([tcp[0], tcp[1]]),
                destination_port: port,
                sequence: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            });
        }
    }
    None
}

/// The RST|ACK that refuses `syn`: acknowledges its sequence number, as the SYN's destination
/// would. The kernel fills in the IP checksum and length; the TCP checksum is ours.
fn reset_for(syn: &Syn) -> [u8; 44] {
    let mut packet = [0u8; 44];
    packet[0] = 0x46;
    packet[2..4].copy_from_slice(&44u16.to_be_bytes());
    packet[4..6].copy_from_slice(&0x5eedu16.to_be_bytes());
    packet[8] = 64;
    packet[9] = libc::IPPROTO_TCP as u8;
    packet[12..16].copy_from_slice(&syn.to.octets());
    packet[16..20].copy_from_slice(&syn.from.octets());
    packet[20..24].copy_from_slice(&OPTIONS);
    let tcp = &mut packet[24..];
    tcp[0..2].copy_from_slice(&syn.destination_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&syn.source_port.to_be_bytes());
    tcp[8..12].copy_from_slice(&syn.sequence.wrapping_add(1).to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x14; // RST, ACK
    let checksum = tcp_checksum(syn.to, syn.from, tcp);
    tcp[16..18].copy_from_slice(&checksum.to_be_bytes());
    packet
}

/// RFC 793's checksum over the pseudo-header and the segment.
fn tcp_checksum(source: Ipv4Addr, destination: Ipv4Addr, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12 + segment.len());
    pseudo.extend_from_slice(&source.octets());
    pseudo.extend_from_slice(&destination.octets());
    pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8]);
    pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(segment);
    let mut sum: u32 = pseudo.chunks(2).map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
