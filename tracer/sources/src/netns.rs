//! Network namespaces by inode: which exist (a process or a /run/netns entry refers to them),
//! what to call them, and how to open a socket inside one without moving the tracer.
use std::{
    fs::{self, File},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use tracer_model::FastSet;

/// The tracer's own namespace.
pub fn own() -> Option<u32> {
    inode(Path::new("/proc/self/ns/net"))
}

/// Every network namespace a process or a /run/netns entry refers to.
pub fn live() -> FastSet<u32> {
    files().filter_map(|path| inode(&path)).collect()
}

/// /run/netns entries first (named namespaces), then every process's.
fn files() -> impl Iterator<Item = PathBuf> {
    let named = fs::read_dir("/run/netns").into_iter().flatten().flatten().map(|entry| entry.path());
    let processes = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().bytes().all(|byte| byte.is_ascii_digit()))
        .map(|entry| entry.path().join("ns/net"));
    named.chain(processes)
}

fn inode(path: &Path) -> Option<u32> {
    fs::metadata(path).ok().map(|meta| meta.ino() as u32)
}

/// Finds a file that refers to namespace `netns`: a named one, or any process's.
fn find(netns: u32) -> Option<PathBuf> {
    files().find(|path| inode(path) == Some(netns))
}

/// Runs `open` (given the namespace's name) on a short-lived thread that joined `netns`, so that
/// the sockets it opens live there while the tracer stays where it is. `None` when the namespace
/// is gone (no process or /run/netns entry refers to it any more).
pub fn inside<T: Send + 'static>(netns: u32, open: impl FnOnce(Option<String>) -> Result<T> + Send + 'static) -> Result<Option<T>> {
    let Some(path) = find(netns) else { return Ok(None) };
    let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let name = name(&path);
    std::thread::spawn(move || -> Result<Option<T>> {
        // SAFETY: setns on a namespace descriptor we own, affecting only this short-lived thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        open(name).map(Some)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
}

/// A name for the namespace `path` refers to: the /run/netns entry's, or "pid P (comm), cgroup C"
/// for a process's (its cgroup path; on Kubernetes it holds the pod UID and container ID).
pub fn name(path: &Path) -> Option<String> {
    if let Ok(named) = path.strip_prefix("/run/netns") {
        return Some(named.to_string_lossy().into_owned());
    }
    let process = path.parent()?.parent()?;
    let pid = process.file_name()?.to_string_lossy().into_owned();
    let comm = fs::read_to_string(process.join("comm")).unwrap_or_default();
    let cgroups = fs::read_to_string(process.join("cgroup")).unwrap_or_default();
    // cgroup v2's single line, or (v1) the first hierarchy's path.
    let cgroup = cgroups
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .or_else(|| cgroups.lines().next().and_then(|line| line.splitn(3, ':').nth(2)))
        .unwrap_or("?");
    Some(format!("pid {pid} ({}), cgroup {cgroup}", comm.trim()))
}

/// `--netns` takes an inode number or a path such as /run/netns/blue or /proc/PID/ns/net; an
/// inode must be a network namespace that exists (else nothing would be traced, and nothing said).
pub fn parse(text: &str) -> Result<u32> {
    if let Ok(inode) = text.parse::<u32>() {
        if !live().contains(&inode) {
            bail!(
                "--netns {inode}: no network namespace has that inode (`readlink /proc/PID/ns/net` shows a process's; or give /run/netns/NAME)"
            );
        }
        return Ok(inode);
    }
    if !text.starts_with('/') {
        bail!("--netns `{text}`: give a namespace inode number or a path such as /run/netns/NAME");
    }
    let metadata = std::fs::metadata(Path::new(text)).with_context(|| format!("--netns {text}: no such namespace file"))?;
    Ok(metadata.ino() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_named_by_its_run_netns_entry_or_by_a_process_and_its_cgroup() {
        assert_eq!(name(Path::new("/run/netns/cni-1234")).as_deref(), Some("cni-1234"));
        let pid = std::process::id();
        let name = name(&PathBuf::from(format!("/proc/{pid}/ns/net"))).expect("a process's namespace has a name");
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert!(name.starts_with(&format!("pid {pid} ({}), cgroup /", comm.trim())), "{name}");
    }

    #[test]
    fn our_own_namespace_is_live_and_found() {
        let own = own().expect("/proc/self/ns/net");
        assert!(live().contains(&own));
        assert!(find(own).is_some());
        assert_eq!(inside(own, move |_| Ok(own)).unwrap(), Some(own));
    }

    #[test]
    fn netns_is_an_inode_or_a_path() {
        let own = own().unwrap();
        assert_eq!(parse(&own.to_string()).unwrap(), own);
        assert!(parse("12345").unwrap_err().to_string().contains("no network namespace has that inode"));
        assert!(parse("/proc/self/ns/net").unwrap() > 0);
        assert!(parse("blue").unwrap_err().to_string().contains("/run/netns/NAME"));
        assert!(parse("/nonexistent/ns").is_err());
    }
}
