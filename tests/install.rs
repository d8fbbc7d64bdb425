//! The package as an operator meets it: installed with apt on a fresh Debian 12 that has no Rust
//! and no LLVM, run there, its unit verified by that system's own systemd, upgraded without losing
//! the operator's options, and removed without leaving its files behind. The tarball carries the
//! same files. Needs root and the artifacts of `cargo xtask dist` (run through `cargo xtask test`).
mod support;

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use support::artifacts::{artifact, said, stdout_of, Root};

/// Paths of the regular files and symlinks an archive listing (`tar -tv` style) names.
fn listed_files(listing: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter(|line| !line.starts_with('d'))
        .filter_map(|line| line.split_whitespace().last())
        .map(|path| path.trim_start_matches("./").to_string())
        .collect()
}

/// The same package under a higher version, as the next release would be.
fn next_release(deb: &Path, into: &Path) -> PathBuf {
    let tree = into.join("next");
    stdout_of(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let text = fs::read_to_string(&control).unwrap();
    let version = text.lines().find_map(|line| line.strip_prefix("Version: ")).unwrap().to_string();
    fs::write(&control, text.replace(&format!("Version: {version}"), &format!("Version: {version}+next1"))).unwrap();
    let next = into.join("tracer_next_amd64.deb");
    stdout_of(Command::new("dpkg-deb").args(["--root-owner-group", "-b"]).arg(&tree).arg(&next));
    next
}

#[test]
fn the_package_installs_on_a_fresh_debian_12_runs_upgrades_and_removes_its_files() {
    support::require_root();
    let deb = PathBuf::from(artifact("TRACER_DEB"));
    let root = Root::new("debian12");
    // A server's base: the minimal system, its systemd and man. Nothing to build with.
    let bootstrap = Command::new("debootstrap")
        .args(["--variant=minbase", "--include=systemd,man-db", "bookworm"])
        .arg(&root.path)
        .arg(artifact("TRACER_DEBIAN_MIRROR"))
        .output()
        .expect("debootstrap runs (apt install debootstrap)");
    assert!(bootstrap.status.success(), "debootstrap: {}", said(&bootstrap));
    for toolchain in ["usr/bin/rustc", "usr/bin/cargo", "usr/bin/clang", "usr/bin/llvm-config", "usr/bin/bpf-linker"] {
        assert!(!root.join(toolchain).exists(), "the fresh root has {toolchain}");
    }

    fs::copy(&deb, root.join("tmp/tracer.deb")).unwrap();
    let install = root.run_ok(&["apt-get", "install", "-y", "-q", "/tmp/tracer.deb"]);
    let log = String::from_utf8_lossy(&install.stdout);
    assert!(log.contains("0 upgraded, 1 newly installed"), "the computed dependencies are all in a base system: {log}");

    let run = root.run_ok(&["tracer", "--duration", "3", "--interval", "1"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(stderr.contains("tracer: attached; hooks:"), "{stderr}");
    assert!(stdout.contains("final, interval") && stdout.contains("sockets "), "a summary: {stdout}");

    let verify = root.run_ok(&["systemd-analyze", "verify", "tracer.service"]);
    assert!(verify.stderr.is_empty(), "systemd-analyze verify warns: {}", said(&verify));
    let page = root.run_ok(&["man", "-w", "tracer"]);
    assert_eq!(String::from_utf8_lossy(&page.stdout).trim(), "/usr/share/man/man8/tracer.8.gz");

    // The operator's options survive an upgrade.
    let options = root.join("etc/default/tracer");
    let edited = "TRACER_OPTIONS=\"--interval 60 -L 443\"\n";
    fs::write(&options, edited).unwrap();
    fs::copy(next_release(&deb, &root.join("tmp")), root.join("tmp/tracer_next.deb")).unwrap();
    let upgrade = root.run_ok(&["apt-get", "install", "-y", "-q", "/tmp/tracer_next.deb"]);
    assert!(String::from_utf8_lossy(&upgrade.stdout).contains("1 upgraded"), "{}", said(&upgrade));
    assert_eq!(fs::read_to_string(&options).unwrap(), edited, "the upgrade kept /etc/default/tracer");

    // Removal takes every file but the conffile, which dpkg keeps until a purge.
    let listed = root.run_ok(&["dpkg", "-L", "tracer"]);
    let installed: Vec<String> =
        String::from_utf8_lossy(&listed.stdout).lines().filter(|path| root.join(path).is_file()).map(str::to_string).collect();
    assert!(installed.len() >= 9, "binary, unit, options, man page, three completions, copyright, changelog: {installed:?}");
    root.run_ok(&["dpkg", "-r", "tracer"]);
    let left: Vec<&String> = installed.iter().filter(|path| root.join(path).exists()).collect();
    assert_eq!(left, ["/etc/default/tracer"], "dpkg -r leaves only the conffile");
    root.run_ok(&["dpkg", "-P", "tracer"]);
    let left: Vec<&String> = installed.iter().filter(|path| root.join(path).exists()).collect();
    assert!(left.is_empty(), "dpkg -P left {left:?}");
}

#[test]
fn the_tarball_holds_the_packages_files_and_an_install_note() {
    let deb = artifact("TRACER_DEB");
    let tarball = artifact("TRACER_TARBALL");
    let in_deb = listed_files(&stdout_of(Command::new("dpkg-deb").args(["-c", &deb])));
    let top = Path::new(&tarball).file_name().unwrap().to_string_lossy().trim_end_matches(".tar.gz").to_string();
    let in_tarball: BTreeSet<String> = listed_files(&stdout_of(Command::new("tar").args(["-tvzf", &tarball])))
        .into_iter()
        .map(|path| path.strip_prefix(&format!("{top}/")).unwrap_or_else(|| panic!("{path} outside {top}/")).to_string())
        .collect();
    let mut expected = in_deb.clone();
    expected.insert("INSTALL".to_string());
    assert_eq!(in_tarball, expected);
    assert!(in_deb.contains("usr/sbin/tracer") && in_deb.contains("lib/systemd/system/tracer.service"), "{in_deb:?}");
}
