//! What `cargo xtask dist` built (the .deb, the tarball, the image), as `cargo xtask test` hands
//! it to the install and image tests, and a root filesystem to run them in the way an operator's
//! chroot would: /proc, /sys (tracefs and the BPF filesystem under it) and /dev bound, inside a
//! private mount namespace, so nothing stays mounted on the host whatever the test does.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// An artifact's path (or the image tag, or the mirror) from `cargo xtask test`.
pub fn artifact(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: run the tests through `cargo xtask test`, which builds the package, tarball and image first")
    })
}

/// A directory holding a root filesystem, deleted on drop (never while anything is mounted in it).
pub struct Root {
    pub path: PathBuf,
}

impl Root {
    pub fn new(name: &str) -> Root {
        let path = std::env::temp_dir().join(format!("tracer-{name}-{}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path).unwrap();
        }
        fs::create_dir_all(&path).unwrap();
        Root { path }
    }

    pub fn join(&self, inside: &str) -> PathBuf {
        self.path.join(inside.trim_start_matches('/'))
    }

    /// Runs `argv` chrooted into the root, with /proc, /sys and /dev bound.
    pub fn run(&self, argv: &[&str]) -> Output {
        for mount_point in ["proc", "sys", "dev"] {
            fs::create_dir_all(self.join(mount_point)).unwrap();
        }
        let script = r#"root=$1; shift
mount -t proc proc "$root/proc" && mount --rbind /sys "$root/sys" && mount --rbind /dev "$root/dev" && exec chroot "$root" "$@""#;
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(&self.path)
            .args(argv)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .expect("unshare runs")
    }

    /// [`Root::run`], failing the test with the command's output when it fails.
    pub fn run_ok(&self, argv: &[&str]) -> Output {
        let output = self.run(argv);
        assert!(output.status.success(), "{argv:?} in {}: {}", self.path.display(), said(&output));
        output
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.path.to_string_lossy().to_string();
        if mounts.lines().any(|line| line.split_whitespace().nth(4).is_some_and(|point| point.starts_with(&prefix))) {
            eprintln!("{} still has mounts: left in place", self.path.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// What `command` printed on stdout; a command that fails (or cannot start) fails the test.
pub fn stdout_of(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(output.status.success(), "{command:?}: {}", said(&output));
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// A command's exit status, stdout and stderr, for an assertion message.
pub fn said(output: &Output) -> String {
    format!("{}\nstdout: {}\nstderr: {}", output.status, String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Extracts a tar archive (as `podman export` writes it) into `into`.
pub fn untar(archive: &Path, into: &Path) {
    let output = Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(into).output().expect("tar runs");
    assert!(output.status.success(), "tar -xf {}: {}", archive.display(), said(&output));
}
