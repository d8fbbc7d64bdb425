//! Who holds the sockets a finding may name: a walk of `/proc/*/fd`, done on the snapshot's
//! blocking thread with the dump, never on the event loop.
use std::fs;

use super::Snapshot;
use tracer_model::{event::TcpState, FastMap, FastSet};

pub use tracer_model::sockets::Owners;

/// Most socket owners looked up in one round: each lookup is a walk of `/proc/*/fd`.
const MAX_OWNER_LOOKUPS: usize = 256;

/// Finds the processes holding the sockets a finding may name (CLOSE_WAIT and FIN_WAIT2
/// sockets, listeners with connections waiting), but for the inodes in `known`. It walks
/// `/proc`, so it runs with the dump on its blocking thread, never on the event loop.
pub fn resolve_owners(snapshot: &mut Snapshot, known: &FastSet<u32>) {
    let wanted: FastSet<u32> = snapshot
        .sockets
        .values()
        .flat_map(|sockets| sockets.iter())
        .filter(|socket| match socket.state {
            TcpState::CloseWait | TcpState::FinWait2 => true,
            TcpState::Listen => socket.accept_queue.is_some_and(|(waiting, _)| waiting > 0),
            _ => false,
        })
        .map(|socket| socket.inode)
        .filter(|inode| *inode != 0 && !known.contains(inode))
        .take(MAX_OWNER_LOOKUPS)
        .collect();
    snapshot.owners = owners(&wanted);
    snapshot.unowned = wanted.into_iter().filter(|inode| !snapshot.owners.contains_key(inode)).collect();
}

/// The processes holding these socket inodes (a /proc scan).
fn owners(inodes: &FastSet<u32>) -> Owners {
    let mut found = FastMap::default();
    if inodes.is_empty() {
        return found;
    }
    for process in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = process.file_name().to_string_lossy().parse::<u32>() else { continue };
        for fd in fs::read_dir(process.path().join("fd")).into_iter().flatten().flatten() {
            let Ok(target) = fs::read_link(fd.path()) else { continue };
            let target = target.to_string_lossy();
            let Some(inode) = target.strip_prefix("socket:[").and_then(|rest| rest.strip_suffix(']')) else { continue };
            let Ok(inode) = inode.parse::<u32>() else { continue };
            if inodes.contains(&inode) && !found.contains_key(&inode) {
                let comm = fs::read_to_string(process.path().join("comm")).unwrap_or_default();
                found.insert(inode, (pid, comm.trim().to_string()));
            }
        }
        if found.len() == inodes.len() {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sock_diag::SocketRecord;

    #[test]
    fn the_owner_of_a_socket_is_found_once_and_what_is_known_is_not_looked_up_again() {
        use std::{net::TcpListener, os::fd::AsRawFd};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        drop(client); // the accepted socket is now in CLOSE_WAIT, held by this process
                      // SAFETY: fstat on a descriptor we own, into a zeroed stat.
        let inode = unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            assert_eq!(libc::fstat(accepted.as_raw_fd(), &mut stat), 0);
            stat.st_ino as u32
        };
        let record = |state, inode| SocketRecord {
            state,
            local: "127.0.0.1:1".parse().unwrap(),
            remote: "127.0.0.1:2".parse().unwrap(),
            inode,
            accept_queue: None,
            last_data: None,
        };
        let mut snapshot = Snapshot::default();
        snapshot
            .sockets
            .insert(1, Arc::new(vec![record(TcpState::CloseWait, inode), record(TcpState::TimeWait, 0), record(TcpState::FinWait2, 1)]));
        resolve_owners(&mut snapshot, &FastSet::default());
        let comm = fs::read_to_string("/proc/self/comm").unwrap_or_default();
        assert_eq!(snapshot.owners.get(&inode), Some(&(std::process::id(), comm.trim().to_string())));
        assert_eq!(snapshot.unowned, [1], "a FIN_WAIT2 orphan is held by nobody: remembered as such");
        resolve_owners(&mut snapshot, &[inode, 1].into_iter().collect());
        assert!(snapshot.owners.is_empty() && snapshot.unowned.is_empty(), "known inodes are not looked up again");
    }
}
