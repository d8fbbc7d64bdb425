//! What the tracer may do, checked before it starts and narrowed once its probes are attached.
//!
//! Loading BPF needs CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN). Once the programs are attached,
//! everything is dropped except CAP_BPF (kernels before 5.16 refuse every `bpf()` call without it
//! when unprivileged BPF is disabled, as Debian has it: reading the counters, flushing the per-CPU
//! batches) and what socket snapshots still need: CAP_NET_ADMIN (sock_diag), CAP_SYS_ADMIN and
//! CAP_SYS_PTRACE (entering other network namespaces), CAP_DAC_READ_SEARCH (naming the owners of
//! stuck sockets through /proc). With `--events`, link changes in other namespaces still need
//! CAP_SYS_ADMIN and CAP_SYS_PTRACE. With `--no-snapshot` only CAP_BPF is kept, and links are
//! followed in the tracer's own namespace only.
use anyhow::{bail, Context, Result};
use caps::{CapSet, Capability, CapsHashSet};

/// Refuses early, in one line, when the process cannot load BPF programs.
pub fn check() -> Result<()> {
    let effective = caps::read(None, CapSet::Effective).context("cannot read this process's capabilities")?;
    let has = |cap| effective.contains(&cap);
    if has(Capability::CAP_SYS_ADMIN) || (has(Capability::CAP_BPF) && has(Capability::CAP_PERFMON)) {
        return Ok(());
    }
    bail!("the tracer must run as root (or with CAP_BPF and CAP_PERFMON, plus CAP_NET_ADMIN for socket snapshots): try `sudo tracer ...`")
}

/// Drops every capability the attached tracer no longer needs, for this thread and every
/// thread started after it (call it before starting any). `snapshots`: sock_diag and naming the
/// owners of sockets; `namespaces`: entering other namespaces (snapshots, link changes).
pub fn drop_after_attach(snapshots: bool, namespaces: bool) -> Result<CapsHashSet> {
    let mut keep: CapsHashSet = [Capability::CAP_BPF].into_iter().collect();
    if snapshots {
        keep.extend([Capability::CAP_NET_ADMIN, Capability::CAP_DAC_READ_SEARCH]);
    }
    if snapshots || namespaces {
        keep.extend([Capability::CAP_SYS_ADMIN, Capability::CAP_SYS_PTRACE]);
    }
    let permitted = caps::read(None, CapSet::Permitted).context("cannot read this process's capabilities")?;
    let keep: CapsHashSet = keep.intersection(&permitted).copied().collect();
    // The bounding set first: shrinking it needs CAP_SETPCAP, which goes next.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::all().difference(&keep) {
            let _ = caps::drop(None, CapSet::Bounding, *cap);
        }
    }
    caps::clear(None, CapSet::Ambient).context("cannot clear ambient capabilities")?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).context("cannot clear inheritable capabilities")?;
    caps::set(None, CapSet::Effective, &keep).context("cannot drop effective capabilities")?;
    caps::set(None, CapSet::Permitted, &keep).context("cannot drop permitted capabilities")?;
    Ok(keep)
}
