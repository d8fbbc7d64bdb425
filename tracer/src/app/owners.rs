//! Who holds the sockets the findings name. Looking it up walks `/proc/*/fd`, which on a host
//! with many processes takes long enough to stall the event loop (and fill the ring buffer):
//! it runs on the snapshot's blocking thread ([`crate::kernel::sock_diag::resolve_owners`]), and this cache
//! keeps each answer while the socket lasts, so each inode is looked up once.
use crate::{
    kernel::sock_diag::{Owners, Snapshot},
    FastSet,
};

/// The owners found so far, by socket inode.
#[derive(Default)]
pub struct OwnerCache {
    pub named: Owners,
    /// Looked up and held by no process (orphans): not looked up again.
    unowned: FastSet<u32>,
}

impl OwnerCache {
    pub fn known(&self) -> FastSet<u32> {
        self.named.keys().chain(&self.unowned).copied().collect()
    }

    /// Takes in what the snapshot's round found, and forgets sockets no longer in it.
    pub fn update(&mut self, snapshot: &mut Snapshot) {
        self.named.extend(std::mem::take(&mut snapshot.owners));
        self.unowned.extend(snapshot.unowned.drain(..));
        if self.named.is_empty() && self.unowned.is_empty() {
            return; // nothing to forget: no set of every socket's inode (TIME_WAIT included)
        }
        let present = snapshot.inodes();
        self.named.retain(|inode, _| present.contains(inode));
        self.unowned.retain(|inode| present.contains(inode));
    }
}
