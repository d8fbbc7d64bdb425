//! Files the tracer writes as root: JSON lines for a log shipper (`--json-out`, rotated by size)
//! and flight records. Every file is created 0600 and never through a symbolic link, so a link
//! planted in a shared directory cannot redirect root's writes.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

/// Opens `path` for appending (creating it 0600); refuses a symbolic link.
pub fn open_private_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)
}

/// Creates `path`, which must not exist yet, 0600; refuses a symbolic link.
pub fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().create_new(true).write(true).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)
}

/// An append-only file that rotates to `PATH.1` … `PATH.KEEP` when it would exceed its size.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    keep: u32,
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<RotatingFile> {
        let file = open_private_append(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile { path: path.to_path_buf(), file, written, max_bytes, keep })
    }

    fn rotated(&self, generation: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{generation}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        // rename() replaces a planted link instead of following it.
        for generation in (1..self.keep).rev() {
            let from = self.rotated(generation);
            if from.exists() {
                fs::rename(&from, self.rotated(generation + 1))?;
            }
        }
        if self.keep > 0 {
            fs::rename(&self.path, self.rotated(1))?;
        } else {
            fs::remove_file(&self.path)?;
        }
        self.file = open_private_append(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + bytes.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let written = self.file.write(bytes)?;
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tracer-files-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn json_out_rotates_by_size_and_keeps_a_bounded_number_of_files() {
        let dir = scratch("rotate");
        let path = dir.join("tracer.jsonl");
        let mut file = RotatingFile::open(&path, 100, 2).unwrap();
        for i in 0..40 {
            writeln!(file, "{{\"line\":{i:04}}}").unwrap(); // 14 bytes
        }
        file.flush().unwrap();
        let mut names: Vec<String> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        names.sort();
        assert_eq!(names, ["tracer.jsonl", "tracer.jsonl.1", "tracer.jsonl.2"]);
        for name in &names {
            let meta = fs::metadata(dir.join(name)).unwrap();
            assert!(meta.len() <= 100, "{name}: {}", meta.len());
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        }
        let newest = fs::read_to_string(&path).unwrap();
        assert!(newest.ends_with("{\"line\":0039}\n"), "{newest}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_symlink_planted_where_a_file_goes_is_refused() {
        let dir = scratch("symlink");
        let victim = dir.join("victim");
        fs::write(&victim, "untouched").unwrap();
        let planted = dir.join("tracer.jsonl");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let error = RotatingFile::open(&planted, 1000, 1).err().expect("refused");
        assert_eq!(error.raw_os_error(), Some(libc::ELOOP));
        assert!(create_private(&planted).is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        fs::remove_dir_all(dir).unwrap();
    }
}
