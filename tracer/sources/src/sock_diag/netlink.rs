//! The sock_diag protocol itself: the requests the kernel is sent (a dump of the wanted states,
//! a lookup by 4-tuple) and the answers decoded, never trusted.
use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use netlink_packet_core::{NetlinkBuffer, NetlinkHeader, NetlinkMessage, Parseable, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{nlas::Nla, ExtensionFlags, InetRequest, InetResponse, InetResponseHeader, SocketId, StateFlags},
    SockDiagMessage, SOCK_DIAG_BY_FAMILY,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NetlinkAddr};

use super::{Snapshots, SocketRecord, WANTED_STATES};
use tracer_model::{event::TcpState, sockets::LastData};

pub(super) fn open_socket() -> Result<Socket> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    Ok(socket)
}

/// [`WANTED_STATES`] as sock_diag's `idiag_states` bits.
fn wanted_mask() -> StateFlags {
    WANTED_STATES.iter().fold(StateFlags::empty(), |mask, state| mask | StateFlags::from_bits_retain(1 << *state as u32))
}

/// Dumps the namespace's TCP sockets in [`WANTED_STATES`].
///
/// The kernel walks the host's whole established hash for every dump, whatever namespace asks
/// (about 20 ms with 200 000 sockets here), so the legacy TCPDIAG_GETSOCK request, which covers
/// IPv4 and IPv6 in one walk, goes first; a kernel that refuses it gets one request per family.
pub(super) fn dump(socket: &Socket) -> Result<Vec<SocketRecord>> {
    dump_both_families(socket).or_else(|_| dump_by_family(socket))
}

fn dump_both_families(socket: &Socket) -> Result<Vec<SocketRecord>> {
    let mut sockets = Vec::new();
    socket.send(&legacy_request(), 0)?;
    receive_dump(socket, &mut sockets, TCPDIAG_GETSOCK)?;
    Ok(sockets)
}

fn dump_by_family(socket: &Socket) -> Result<Vec<SocketRecord>> {
    let mut sockets = Vec::new();
    for (family, socket_id) in [(AF_INET, SocketId::new_v4()), (AF_INET6, SocketId::new_v6())] {
        socket.send(&inet_request(family, socket_id, wanted_mask(), ExtensionFlags::INFO, NLM_F_REQUEST | NLM_F_DUMP), 0)?;
        receive_dump(socket, &mut sockets, SOCK_DIAG_BY_FAMILY)?;
    }
    Ok(sockets)
}

fn inet_request(family: u8, socket_id: SocketId, states: StateFlags, extensions: ExtensionFlags, flags: u16) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest { family, protocol: IPPROTO_TCP, extensions, states, socket_id }).into(),
    );
    request.finalize();
    let mut buffer = vec![0; request.buffer_len()];
    request.serialize(&mut buffer);
    buffer
}

impl Snapshots {
    /// Looks up one socket of a covered namespace by its 4-tuple (the kernel's hash lookup, not a
    /// walk): its state, `None` when it is gone, an error when the namespace is not covered.
    pub fn look_up(&self, netns: u32, local: SocketAddr, remote: SocketAddr) -> Result<Option<TcpState>> {
        let namespace = self.namespaces.get(&netns).context("namespace not covered")?;
        let socket_id = SocketId {
            source_port: local.port(),
            destination_port: remote.port(),
            source_address: local.ip(),
            destination_address: remote.ip(),
            interface_id: 0,
            cookie: [0xff; 8], // INET_DIAG_NOCOOKIE: any socket on that tuple
        };
        let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
        namespace.socket.send(&inet_request(family, socket_id, StateFlags::all(), ExtensionFlags::empty(), NLM_F_REQUEST), 0)?;
        let mut buffer = vec![0u8; 4096];
        let size = namespace.socket.recv(&mut &mut buffer[..], 0)?;
        decode_lookup(&buffer[..size])
    }
}

/// The answer to one socket's lookup: the socket, or an error message (ENOENT: there is none).
fn decode_lookup(datagram: &[u8]) -> Result<Option<TcpState>> {
    let message = NetlinkBuffer::new_checked(datagram).map_err(|error| anyhow::anyhow!("undecodable sock_diag reply: {error}"))?;
    match message.message_type() {
        NLMSG_ERROR => {
            let code = message.payload().get(..4).map_or(0, |code| i32::from_ne_bytes(code.try_into().expect("four bytes")));
            if code == -libc::ENOENT {
                return Ok(None);
            }
            bail!("sock_diag refused the lookup: {}", std::io::Error::from_raw_os_error(-code))
        }
        SOCK_DIAG_BY_FAMILY => {
            let header =
                InetResponseHeader::parse(message.payload()).map_err(|error| anyhow::anyhow!("undecodable sock_diag socket: {error}"))?;
            Ok(TcpState::from_kernel(header.state))
        }
        other => bail!("unexpected sock_diag reply type {other}"),
    }
}

/// `nlmsg_type` of the legacy inet_diag request and its answers (`linux/inet_diag.h`).
const TCPDIAG_GETSOCK: u16 = 18;

/// A TCPDIAG_GETSOCK dump request: a netlink header and a `struct inet_diag_req` (family, two
/// lengths, the extensions wanted (`tcp_info`), a zero socket id of 48 bytes, the state mask, and
/// `idiag_dbs`). The crate speaks only SOCK_DIAG_BY_FAMILY, whose answers are parsed the same way.
fn legacy_request() -> Vec<u8> {
    const REQUEST_LEN: u32 = 16 + 60;
    let mut request = Vec::with_capacity(REQUEST_LEN as usize);
    request.extend_from_slice(&REQUEST_LEN.to_ne_bytes());
    request.extend_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend_from_slice(&[0; 8]); // sequence number and port id
    request.extend_from_slice(&[AF_INET, 0, 0, ExtensionFlags::INFO.bits()]);
    request.extend_from_slice(&[0; 48]);
    request.extend_from_slice(&wanted_mask().bits().to_ne_bytes());
    request.extend_from_slice(&[0; 4]);
    request
}

/// Reads one dump's answers (of netlink type `answer`) up to its end.
fn receive_dump(socket: &Socket, sockets: &mut Vec<SocketRecord>, answer: u16) -> Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut buffer[..], 0)?;
        if decode_answers(&buffer[..size], answer, sockets)? {
            return Ok(());
        }
    }
}

/// Decodes one datagram of a dump's answers into `sockets`; true once the dump is done. Sockets
/// in states the tracer does not know are skipped; an error message from the kernel is an error.
fn decode_answers(datagram: &[u8], answer: u16, sockets: &mut Vec<SocketRecord>) -> Result<bool> {
    let mut offset = 0;
    while offset < datagram.len() {
        let message =
            NetlinkBuffer::new_checked(&datagram[offset..]).map_err(|error| anyhow::anyhow!("undecodable sock_diag reply: {error}"))?;
        let length = message.length() as usize;
        match message.message_type() {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = message.payload().get(..4).map_or(0, |code| i32::from_ne_bytes(code.try_into().expect("four bytes")));
                bail!("sock_diag refused the dump: {}", std::io::Error::from_raw_os_error(-code));
            }
            kind if kind == answer => {
                let header = InetResponseHeader::parse(message.payload())
                    .map_err(|error| anyhow::anyhow!("undecodable sock_diag socket: {error}"))?;
                if let Some(state) = TcpState::from_kernel(header.state) {
                    let id = &header.socket_id;
                    sockets.push(SocketRecord {
                        state,
                        local: SocketAddr::new(id.source_address, id.source_port),
                        remote: SocketAddr::new(id.destination_address, id.destination_port),
                        inode: header.inode,
                        accept_queue: (state == TcpState::Listen).then_some((header.recv_queue, header.send_queue)),
                        last_data: matches!(state, TcpState::CloseWait | TcpState::FinWait2)
                            .then(|| last_data(message.payload()))
                            .flatten(),
                    });
                }
            }
            _ => {}
        }
        if length == 0 {
            break;
        }
        offset += (length + 3) & !3;
    }
    Ok(false)
}

/// `tcpi_last_data_sent` and `tcpi_last_data_recv` from a socket's `tcp_info` attribute, which
/// full sockets carry (a timewait socket in FIN_WAIT2 has none). Offsets as in
/// `include/uapi/linux/tcp.h` since the struct began.
fn last_data(payload: &[u8]) -> Option<LastData> {
    let response = InetResponse::parse(payload).ok()?;
    let info = response.nlas.iter().find_map(|nla| match nla {
        Nla::TcpInfo(bytes) => Some(bytes),
        _ => None,
    })?;
    let word = |offset: usize| info.get(offset..offset + 4).map(|bytes| u32::from_ne_bytes(bytes.try_into().expect("four bytes")));
    Some(LastData { sent_ms: word(44)?, received_ms: word(52)? })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_walk_for_both_families_finds_what_a_request_per_family_finds() {
        // sock_diag answers anyone for their own namespace: no root needed.
        let listener = std::net::TcpListener::bind("[::]:0").unwrap();
        let mut held = Vec::new();
        for ip in ["127.0.0.1", "::1"] {
            let client = std::net::TcpStream::connect((ip, listener.local_addr().unwrap().port())).unwrap();
            drop(client); // the server's end: CLOSE_WAIT
            held.push(listener.accept().unwrap().0);
        }
        std::thread::sleep(Duration::from_millis(50));
        let socket = open_socket().unwrap();
        let ours = |sockets: Vec<SocketRecord>| {
            let mut ours: Vec<_> = sockets
                .into_iter()
                .filter(|s| s.local.port() == listener.local_addr().unwrap().port() && s.state != TcpState::Listen)
                .collect();
            ours.sort_by_key(|s| (s.local, s.remote));
            ours
        };
        let both = ours(dump_both_families(&socket).unwrap());
        assert_eq!(both.len(), 2, "the IPv4-mapped and the IPv6 CLOSE_WAIT socket: {both:?}");
        assert!(both.iter().all(|s| s.state == TcpState::CloseWait && s.inode != 0), "{both:?}");
        // Each full CLOSE_WAIT socket says how long since it last sent (it never did) or received.
        assert!(both.iter().all(|s| s.last_data.is_some_and(|last| last.received_ms < 60_000)), "{both:?}");
        let without_times = |sockets: Vec<SocketRecord>| -> Vec<SocketRecord> {
            sockets.into_iter().map(|socket| SocketRecord { last_data: None, ..socket }).collect()
        };
        assert_eq!(without_times(both), without_times(ours(dump_by_family(&socket).unwrap())));
    }

    /// One netlink message of type `kind` with `payload`, padded to four bytes.
    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&[0; 10]);
        bytes.extend_from_slice(payload);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes
    }

    /// A `struct inet_diag_msg` as the kernel sends it (ports and addresses in network order).
    fn inet_diag_msg(family: u8, state: u8, local: SocketAddr, remote: SocketAddr, inode: u32) -> Vec<u8> {
        let address = |address: SocketAddr| match address.ip() {
            std::net::IpAddr::V4(ip) => {
                let mut bytes = [0; 16];
                bytes[..4].copy_from_slice(&ip.octets());
                bytes
            }
            std::net::IpAddr::V6(ip) => ip.octets(),
        };
        let mut bytes = vec![family, state, 0, 0];
        bytes.extend_from_slice(&local.port().to_be_bytes());
        bytes.extend_from_slice(&remote.port().to_be_bytes());
        bytes.extend_from_slice(&address(local));
        bytes.extend_from_slice(&address(remote));
        bytes.extend_from_slice(&[0; 4]); // interface
        bytes.extend_from_slice(&[0xff; 8]); // cookie
        bytes.extend_from_slice(&[0; 16]); // expires, rqueue, wqueue, uid
        bytes.extend_from_slice(&inode.to_ne_bytes());
        bytes
    }

    #[test]
    fn a_dump_datagram_decodes_to_sockets_until_done_and_a_kernel_error_is_an_error() {
        let server: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let client: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let (server6, client6): (SocketAddr, SocketAddr) = ("[fd00::2]:443".parse().unwrap(), "[fd00::1]:50000".parse().unwrap());
        let mut datagram = message(TCPDIAG_GETSOCK, &inet_diag_msg(AF_INET, 6, server, client, 1234));
        datagram.extend(message(TCPDIAG_GETSOCK, &inet_diag_msg(AF_INET6, 8, server6, client6, 99)));
        datagram.extend(message(TCPDIAG_GETSOCK, &inet_diag_msg(AF_INET, 42, server, client, 7))); // no such state
        datagram.extend(message(SOCK_DIAG_BY_FAMILY, &inet_diag_msg(AF_INET, 6, client, server, 8))); // not this dump's type
        let mut sockets = Vec::new();
        assert!(!decode_answers(&datagram, TCPDIAG_GETSOCK, &mut sockets).unwrap(), "no NLMSG_DONE yet");
        let expected = [
            SocketRecord { state: TcpState::TimeWait, local: server, remote: client, inode: 1234, accept_queue: None, last_data: None },
            SocketRecord { state: TcpState::CloseWait, local: server6, remote: client6, inode: 99, accept_queue: None, last_data: None },
        ];
        assert_eq!(sockets, expected);

        let done = message(NLMSG_DONE, &[0; 4]);
        assert!(decode_answers(&done, TCPDIAG_GETSOCK, &mut sockets).unwrap());
        let refused = message(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        let error = decode_answers(&refused, TCPDIAG_GETSOCK, &mut sockets).unwrap_err().to_string();
        assert!(error.contains("refused the dump") && error.contains("not permitted"), "{error}");
        assert!(decode_answers(&[1, 2, 3], TCPDIAG_GETSOCK, &mut sockets).is_err(), "a truncated header is an error");
    }

    #[test]
    fn a_lookup_by_tuple_finds_a_live_socket_and_says_none_once_it_is_gone() {
        // sock_diag answers anyone for their own namespace: no root needed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let snapshots = Snapshots::new(Duration::from_secs(10), None).unwrap();
        let netns = snapshots.own_netns;
        let (local, remote) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        assert_eq!(snapshots.look_up(netns, local, remote).unwrap(), Some(TcpState::Established));
        assert_eq!(snapshots.look_up(netns, remote, local).unwrap(), Some(TcpState::Established), "the server's end");
        let stranger: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(snapshots.look_up(netns, local, stranger).unwrap(), None);
        assert!(snapshots.look_up(netns + 1, local, remote).is_err(), "a namespace not covered");
        drop((client, server));
    }

    #[test]
    fn the_kernel_is_asked_only_for_the_wanted_states() {
        let mask = wanted_mask();
        assert_eq!(mask, StateFlags::TIME_WAIT | StateFlags::FIN_WAIT2 | StateFlags::CLOSE_WAIT | StateFlags::LISTEN);
    }

    #[test]
    fn a_listener_is_dumped_with_its_accept_queue_and_backlog() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Two connections the application has not accepted yet.
        let _clients: Vec<_> = (0..2).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(50));
        let sockets = dump(&open_socket().unwrap()).unwrap();
        let ours = sockets.iter().find(|s| s.state == TcpState::Listen && s.local.port() == port).expect("the listener");
        assert_eq!(ours.accept_queue, Some((2, 128)), "std's backlog is 128: {ours:?}");
    }
}
