//! `cargo xtask dist`: what an operator installs on a server that has no toolchain, built into
//! target/dist/: a Debian package, a tarball of the same files for other distributions, and a
//! container image built `FROM scratch` (the binary and the shared libraries it links, nothing
//! else), saved as an archive that `podman load`, `docker load` or `ctr images import` read.
//!
//! The package's dependencies are computed by dpkg-shlibdeps from the stripped binary, never
//! written by hand. Archive timestamps come from the last commit (SOURCE_DATE_EPOCH), so two
//! builds of one commit give the same files.
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{run_checked, toolchain::ensure_tools, workspace_root};

/// Where the unit goes in the package (Debian 12 keeps units under /lib, merged into /usr).
pub const UNIT_PATH: &str = "lib/systemd/system/tracer.service";
/// The image's name, as deploy/daemonset.yaml names it (with the version as its tag).
pub const IMAGE_NAME: &str = "localhost/tcp-tracer";
const PACKAGING: &str = "deploy/debian";

/// What the packaging needs besides the toolchain: (program, Debian package).
const DIST_TOOLS: [(&str, &str); 4] = [("dpkg-shlibdeps", "dpkg-dev"), ("strip", "binutils"), ("lintian", "lintian"), ("podman", "podman")];

/// The installed files at their paths, and the Debian package made of them.
pub struct Package {
    pub version: String,
    /// target/dist/tree: usr/sbin/tracer, the unit, /etc/default/tracer, man page, completions, doc.
    pub tree: PathBuf,
    pub deb: PathBuf,
}

/// Everything `cargo xtask dist` makes.
pub struct Artifacts {
    pub package: Package,
    pub tarball: PathBuf,
    /// The build context of deploy/Containerfile (its rootfs/ is what the image holds).
    pub image_context: PathBuf,
    pub image_archive: PathBuf,
    pub image_tag: String,
}

pub fn version() -> String {
    use clap::CommandFactory;
    tracer::app::cli::Cli::command().get_version().expect("the command line has a version").to_string()
}

fn dist_dir() -> PathBuf {
    workspace_root().join("target/dist")
}

/// `cargo xtask dist`: the package, the tarball and the image, then lintian's verdict on the package.
pub fn build() -> Result<Artifacts> {
    ensure_tools(&DIST_TOOLS)?;
    let package = package()?;
    let tarball = tarball(&package)?;
    let (image_context, image_archive, image_tag) = image(&package)?;
    lintian(&package.deb)?;
    for artifact in [&package.deb, &tarball, &image_archive] {
        eprintln!("xtask: {} ({})", artifact.display(), mib(artifact)?);
    }
    eprintln!("xtask: image {image_tag} (podman load -i {})", image_archive.display());
    Ok(Artifacts { package, tarball, image_context, image_archive, image_tag })
}

/// The release binary, stripped, with the files that go beside it, and the .deb made of them.
pub fn package() -> Result<Package> {
    ensure_tools(&DIST_TOOLS[..2])?;
    let binary = crate::build_all()?;
    let version = version();
    let dist = dist_dir();
    let tree = dist.join("tree");
    if tree.exists() {
        fs::remove_dir_all(&tree)?;
    }
    stage(&binary, &tree)?;
    let deb = debian_package(&tree, &version, &dist)?;
    Ok(Package { version, tree, deb })
}

/// Shell completions (bash, zsh, fish) and the man page (section 8: it is an administrator's
/// command), into `out`. Returns the files written.
pub fn assets(out: &Path) -> Result<Vec<PathBuf>> {
    use clap::CommandFactory;
    fs::create_dir_all(out)?;
    let mut command = tracer::app::cli::Cli::command();
    let mut written = Vec::new();
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        written.push(clap_complete::generate_to(shell, &mut command, "tracer", out)?);
    }
    let page = out.join("tracer.8");
    clap_mangen::Man::new(command).section("8").render(&mut fs::File::create(&page)?)?;
    written.push(page);
    Ok(written)
}

fn stage(binary: &Path, tree: &Path) -> Result<()> {
    let place = |relative: &str| -> Result<PathBuf> {
        let path = tree.join(relative);
        fs::create_dir_all(path.parent().expect("a file has a parent"))?;
        Ok(path)
    };
    let sbin = place("usr/sbin/tracer")?;
    run_checked(
        Command::new("strip")
            .args(["--strip-unneeded", "--remove-section=.comment", "--remove-section=.note", "-o"])
            .arg(&sbin)
            .arg(binary),
    )?;
    let packaging = workspace_root().join(PACKAGING);
    fs::copy(workspace_root().join("deploy/tracer.service"), place(UNIT_PATH)?)?;
    fs::copy(packaging.join("default"), place("etc/default/tracer")?)?;
    fs::copy(packaging.join("copyright"), place("usr/share/doc/tracer/copyright")?)?;
    gzip(&packaging.join("changelog"), &place("usr/share/doc/tracer/changelog.gz")?)?;

    let generated = tree.join("../assets");
    for asset in assets(&generated)? {
        let name = asset.file_name().and_then(|name| name.to_str()).unwrap_or_default();
        match name {
            "tracer.8" => gzip(&asset, &place("usr/share/man/man8/tracer.8.gz")?)?,
            "tracer.bash" => drop(fs::copy(&asset, place("usr/share/bash-completion/completions/tracer")?)?),
            "_tracer" => drop(fs::copy(&asset, place("usr/share/zsh/vendor-completions/_tracer")?)?),
            "tracer.fish" => drop(fs::copy(&asset, place("usr/share/fish/vendor_completions.d/tracer.fish")?)?),
            other => bail!("unexpected generated asset {other}"),
        }
    }
    fs::remove_dir_all(&generated)?;
    normalize_permissions(tree, &[sbin])
}

/// 0755 for directories and the listed executables, 0644 for every other file: what the
/// package installs does not depend on the builder's umask.
fn normalize_permissions(root: &Path, executables: &[PathBuf]) -> Result<()> {
    for entry in fs::read_dir(root)? {
        let path = entry?.path();
        let mode = if path.is_dir() || executables.contains(&path) { 0o755 } else { 0o644 };
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        if path.is_dir() {
            normalize_permissions(&path, executables)?;
        }
    }
    Ok(())
}

/// A file's size as the report and the build's summary give it.
fn mib(path: &Path) -> Result<String> {
    Ok(format!("{:.1} MiB", fs::metadata(path)?.len() as f64 / (1 << 20) as f64))
}

fn gzip(from: &Path, to: &Path) -> Result<()> {
    let output = Command::new("gzip").args(["-9", "-n", "-c"]).arg(from).output().context("gzip")?;
    if !output.status.success() {
        bail!("gzip {} failed: {}", from.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(fs::write(to, output.stdout)?)
}

/// Every regular file under `root`, relative to it, sorted.
fn files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(root)?.to_path_buf());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The last commit's time, so that archives of one commit are the same bytes.
fn source_date_epoch() -> String {
    Command::new("git")
        .current_dir(workspace_root())
        .args(["log", "-1", "--format=%ct"])
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|epoch| !epoch.is_empty())
        .unwrap_or_else(|| "0".into())
}

fn debian_package(tree: &Path, version: &str, dist: &Path) -> Result<PathBuf> {
    let root = dist.join("deb-root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    run_checked(Command::new("cp").arg("-a").arg(tree).arg(&root))?;
    let control = root.join("DEBIAN");
    fs::create_dir_all(&control)?;
    let packaging = workspace_root().join(PACKAGING);
    let mut scripts = Vec::new();
    for script in ["postinst", "prerm", "postrm"] {
        fs::copy(packaging.join(script), control.join(script))?;
        scripts.push(control.join(script));
    }
    fs::write(control.join("conffiles"), "/etc/default/tracer\n")?;

    let installed = files(tree)?;
    let mut md5sums = Command::new("md5sum");
    md5sums.current_dir(tree).args(&installed);
    let sums = md5sums.output().context("md5sum")?;
    fs::write(control.join("md5sums"), sums.stdout)?;
    let kib: u64 = installed.iter().map(|file| fs::metadata(tree.join(file)).map_or(0, |meta| meta.len().div_ceil(1024))).sum();
    let depends = shared_library_depends(&tree.join("usr/sbin/tracer"), dist)?;
    let about = {
        use clap::CommandFactory;
        tracer::app::cli::Cli::command().get_about().map(|about| about.to_string()).unwrap_or_default()
    };
    let description = wrap(&format!(
        "{about} It says who closed, reset or dropped each connection: the peer, a device on the path (an RST forged in \
         the peer's name, an idle timeout), or this host (its firewall, a full accept queue), in summaries, JSON lines \
         and Prometheus metrics."
    ));
    fs::write(
        control.join("control"),
        format!(
            "Package: tracer\nVersion: {version}\nArchitecture: amd64\n\
             Maintainer: The tracer developers <tracer@users.noreply.github.com>\n\
             Installed-Size: {kib}\nDepends: {depends}\nSection: net\nPriority: optional\n\
             Description: TCP socket tracer: which side dropped the connection\n{description}"
        ),
    )?;
    normalize_permissions(&control, &scripts)?;
    let deb = dist.join(format!("tracer_{version}_amd64.deb"));
    run_checked(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&root)
            .arg(&deb)
            .env("SOURCE_DATE_EPOCH", source_date_epoch()),
    )?;
    fs::remove_dir_all(&root)?;
    Ok(deb)
}

/// A control file's extended description: lines of at most 79 columns, each starting with a space.
fn wrap(text: &str) -> String {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && line.len() + 1 + word.len() > 78 {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines.iter().map(|line| format!(" {line}\n")).collect()
}

/// `Depends:` as dpkg-shlibdeps computes it from the libraries the binary links.
fn shared_library_depends(binary: &Path, dist: &Path) -> Result<String> {
    let scratch = dist.join("shlibdeps");
    fs::create_dir_all(scratch.join("debian"))?;
    fs::write(scratch.join("debian/control"), "Source: tracer\n\nPackage: tracer\nArchitecture: amd64\n")?;
    let output = Command::new("dpkg-shlibdeps").current_dir(&scratch).args(["-O", "-e"]).arg(binary).output()?;
    fs::remove_dir_all(&scratch)?;
    let text = String::from_utf8_lossy(&output.stdout);
    let depends = text.lines().find_map(|line| line.strip_prefix("shlibs:Depends=")).map(str::to_string);
    match depends {
        Some(depends) if output.status.success() => Ok(depends),
        _ => bail!("dpkg-shlibdeps found no dependencies: {}", String::from_utf8_lossy(&output.stderr)),
    }
}

/// The same files for other distributions, under one top directory with a short INSTALL.
fn tarball(package: &Package) -> Result<PathBuf> {
    let name = format!("tracer-{}-x86_64-linux", package.version);
    let top = dist_dir().join(&name);
    if top.exists() {
        fs::remove_dir_all(&top)?;
    }
    run_checked(Command::new("cp").arg("-a").arg(&package.tree).arg(&top))?;
    fs::copy(workspace_root().join(PACKAGING).join("INSTALL"), top.join("INSTALL"))?;
    let tarball = dist_dir().join(format!("{name}.tar.gz"));
    run_checked(
        Command::new("tar")
            .current_dir(dist_dir())
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--use-compress-program=gzip -9n"])
            .arg(format!("--mtime=@{}", source_date_epoch()))
            .arg("-cf")
            .arg(&tarball)
            .arg(&name),
    )?;
    fs::remove_dir_all(&top)?;
    Ok(tarball)
}

/// The libraries the dynamic loader maps for `binary` (the loader itself included), by path.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd").arg(binary).output().context("ldd")?;
    if !output.status.success() {
        bail!("ldd {} failed: {}", binary.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().find(|word| word.starts_with('/')))
        .map(PathBuf::from)
        .collect())
}

/// Builds deploy/Containerfile from a context holding only the binary and its libraries, and
/// saves the image as an archive. Returns (context, archive, tag).
fn image(package: &Package) -> Result<(PathBuf, PathBuf, String)> {
    let context = dist_dir().join("image");
    if context.exists() {
        fs::remove_dir_all(&context)?;
    }
    let rootfs = context.join("rootfs");
    let binary = package.tree.join("usr/sbin/tracer");
    let mut contents = vec![(binary.clone(), PathBuf::from("usr/sbin/tracer"))];
    for library in shared_libraries(&binary)? {
        let inside = library.strip_prefix("/")?.to_path_buf();
        contents.push((library, inside));
    }
    for (from, inside) in contents {
        let to = rootfs.join(inside);
        fs::create_dir_all(to.parent().expect("a file has a parent"))?;
        fs::copy(&from, &to).with_context(|| format!("copying {} into the image", from.display()))?;
    }
    let tag = format!("{IMAGE_NAME}:{}", package.version);
    // The previous build of this tag goes, rather than stay behind as an unnamed image.
    run_checked(Command::new("podman").args(["rmi", "--ignore", &tag]))?;
    run_checked(
        Command::new("podman")
            .args(["build", "--network=none", "--layers=false", "--build-arg"])
            .arg(format!("VERSION={}", package.version))
            .arg("-f")
            .arg(workspace_root().join("deploy/Containerfile"))
            .args(["-t", &tag])
            .arg(&context),
    )?;
    let archive = dist_dir().join(format!("tracer-{}-image.tar", package.version));
    if archive.exists() {
        fs::remove_file(&archive)?;
    }
    run_checked(Command::new("podman").args(["save", "--quiet", "--format", "docker-archive", "-o"]).arg(&archive).arg(&tag))?;
    Ok((context, archive, tag))
}

/// lintian on the package: errors fail the build, warnings are printed (README lists the ones
/// left, and why).
fn lintian(deb: &Path) -> Result<()> {
    let output = Command::new("lintian").args(["--no-tag-display-limit"]).arg(deb).output().context("lintian")?;
    let report = String::from_utf8_lossy(&output.stdout);
    for line in report.lines() {
        eprintln!("xtask: lintian: {line}");
    }
    let errors: Vec<&str> = report.lines().filter(|line| line.starts_with("E:")).collect();
    if !errors.is_empty() {
        bail!("lintian reports {} error(s) in {}", errors.len(), deb.display());
    }
    eprintln!("xtask: lintian: no errors, {} warning(s)", report.lines().filter(|line| line.starts_with("W:")).count());
    Ok(())
}

/// BENCHMARKS.md's "Artifacts" section: what each artifact weighs, and how long the packaged
/// binary takes from exec to "attached" (BTF parsed, programs loaded and attached), `runs` times.
pub fn report(artifacts: &Artifacts, runs: usize) -> Result<String> {
    let binary = artifacts.package.tree.join("usr/sbin/tracer");
    let mut report = String::from("\n## Artifacts (`cargo xtask bench --dist-only`)\n\n| artifact | size |\n|---|---|\n");
    for (name, path) in [
        ("the binary, stripped, as packaged (usr/sbin/tracer)", binary.clone()),
        ("the binary as built (target/release/tracer, with line tables)", workspace_root().join("target/release/tracer")),
        ("the .deb", artifacts.package.deb.clone()),
        ("the tarball", artifacts.tarball.clone()),
        ("the image archive (docker-archive: binary + libc, libgcc_s, ld.so)", artifacts.image_archive.clone()),
    ] {
        report += &format!("| {name} | {} |\n", mib(&path)?);
    }
    let mut startups = Vec::new();
    for _ in 0..runs {
        let traced = crate::measure::Traced::start(&binary, &[])?;
        startups.push(traced.startup.as_secs_f64() * 1e3);
        traced.stop()?;
    }
    let (low, high) = startups.iter().fold((f64::MAX, 0f64), |(low, high), ms| (low.min(*ms), high.max(*ms)));
    report += &format!(
        "\nStart-up of the packaged binary, exec to \"attached\" (default options), {runs} runs: median {:.0} ms (min {low:.0}, max {high:.0}).\n",
        crate::measure::median(&startups)
    );
    Ok(report)
}
