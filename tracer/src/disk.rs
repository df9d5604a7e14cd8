//! The image file behind the machine's disk (`qemu::Disk`): the one place a run's image is
//! made.
//!
//! A raw image is the disk's bytes, sector after sector, and nothing else: sector N is at
//! byte N × 512 of the file, so a test (or a student with `xxd`) reads what a guest wrote
//! with a plain file read. A new image is all zeros, made sparse with `set_len`: it costs no
//! space until QEMU writes to it.
//!
//! Two kinds: the file the user named (`--disk FILE`), created at the lab's size when it
//! does not exist, used as it is when it does, and kept after the run; or, without one, a
//! temporary image next to the run's RAM file, whose name goes as soon as QEMU has it
//! open, like the RAM file's (`session.rs`).

use crate::qemu::Disk;
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes in a sector (`traplab_abi::ata::SECTOR_SIZE`).
pub const SECTOR_SIZE: u64 = traplab_abi::ata::SECTOR_SIZE as u64;
/// A lab's disk when its catalogue does not say: 2048 sectors, 1 MiB.
pub const DEFAULT_SECTORS: u64 = 2048;

/// The image of one run, ready for QEMU's `-drive`.
#[derive(Debug)]
pub struct Image {
    path: PathBuf,
    /// Made for this run: deleted when the run is over (or sooner, see [`Image::unlink`]).
    temporary: bool,
    unlinked: AtomicBool,
}

impl Image {
    /// The image `disk` asks for: its `image` file, or a new temporary one at `temporary`
    /// (a path nothing else uses). A file that does not exist yet is created, all zeros,
    /// with `disk.sectors` sectors; an existing one is used as it is.
    pub fn prepare(disk: &Disk, temporary: &Path) -> io::Result<Image> {
        match &disk.image {
            Some(path) => {
                match create(path, disk.sectors) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                        if !path.is_file() {
                            return Err(io::Error::other(format!(
                                "{} is not a file",
                                path.display()
                            )));
                        }
                    }
                    Err(error) => return Err(error),
                }
                Ok(Image {
                    path: path.clone(),
                    temporary: false,
                    unlinked: AtomicBool::new(false),
                })
            }
            None => {
                create(temporary, disk.sectors)?;
                Ok(Image {
                    path: temporary.to_path_buf(),
                    temporary: true,
                    unlinked: AtomicBool::new(false),
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Is this image the run's own, deleted after it?
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// Delete a temporary image's name (QEMU, which has the file open, keeps its data until
    /// it exits); a kept image stays. Safe to call more than once.
    pub fn unlink(&self) {
        if self.temporary && !self.unlinked.swap(true, Ordering::Relaxed) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// A new image at `path`: `sectors` sectors of zeros. Fails with `AlreadyExists` when
/// there is a file there already.
fn create(path: &Path, sectors: u64) -> io::Result<()> {
    let size = sectors
        .checked_mul(SECTOR_SIZE)
        .ok_or_else(|| io::Error::other(format!("{sectors} sectors is too large a disk")))?;
    let file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.set_len(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder for one test, in the system's temporary folder.
    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("traplab-disk-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        dir
    }

    fn disk(image: Option<PathBuf>, sectors: u64) -> Disk {
        Disk {
            image,
            sectors,
            owner: 1,
        }
    }

    #[test]
    fn a_temporary_image_is_zeros_of_the_lab_s_size_and_goes_with_the_run() {
        let dir = folder("temporary");
        let path = dir.join("run.disk");
        let image = Image::prepare(&disk(None, 2048), &path).expect("created");
        assert!(image.is_temporary());
        assert_eq!(image.path(), path);
        let bytes = std::fs::read(&path).expect("readable");
        assert_eq!(bytes.len(), 1024 * 1024);
        assert!(bytes.iter().all(|&byte| byte == 0));
        drop(image);
        assert!(!path.exists(), "deleted after the run");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_named_image_is_created_when_missing_used_as_it_is_otherwise_and_kept() {
        let dir = folder("named");
        let path = dir.join("student.img");
        let unused = dir.join("unused.disk");
        let image = Image::prepare(&disk(Some(path.clone()), 16), &unused).expect("created");
        assert!(!image.is_temporary());
        image.unlink();
        drop(image);
        assert_eq!(
            std::fs::metadata(&path).map(|meta| meta.len()).ok(),
            Some(16 * 512)
        );
        assert!(!unused.exists(), "no temporary image besides");

        // An existing image keeps its size and its bytes, whatever the lab's size.
        std::fs::write(&path, b"sector zero, kept").expect("writable");
        let image = Image::prepare(&disk(Some(path.clone()), 2048), &unused).expect("used");
        drop(image);
        assert_eq!(
            std::fs::read(&path).ok().as_deref(),
            Some(&b"sector zero, kept"[..])
        );

        // A folder is not an image.
        let error = Image::prepare(&disk(Some(dir.clone()), 16), &unused).unwrap_err();
        assert!(error.to_string().contains("is not a file"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
