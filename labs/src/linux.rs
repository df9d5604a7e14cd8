//! A real Linux kernel for the labs that boot one (`[boot] kernel = "debian-linux"`): Debian's
//! `linux-image-cloud-amd64` and `busybox-static`, fetched from the distribution's archive
//! on demand, and an initramfs written here from busybox and the lab's `/init` script.
//!
//! Nothing is installed: `apt-get download` fetches the packages (no root needed) into
//! `target/debian/` of the traplab tree, and `dpkg-deb -x` unpacks them there. The
//! initramfs is a cpio archive in the "newc" format (`Documentation/driver-api/early-userspace/
//! buffer-format.rst`), which the kernel unpacks into its rootfs: written by [`newc`], so the
//! host needs no `cpio`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The value of a lab's `[boot] kernel` that asks for Debian's Linux kernel.
pub const DEBIAN_LINUX: &str = "debian-linux";
/// The packages: a meta-package naming the current kernel, and a static busybox.
pub const KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

/// Where the packages are fetched and unpacked: `target/debian/` of the traplab tree.
pub fn dir() -> PathBuf {
    crate::tree::tree().root.join("target").join("debian")
}

/// The file [`fetch`] writes once both packages are unpacked: until it is there, a tree that
/// holds a kernel and a busybox may be one another fetch is still writing.
const FETCHED_MARK: &str = ".fetched";

/// The fetched kernel (`boot/vmlinuz-*`) and busybox, when both are there, whole.
pub fn fetched() -> Option<(PathBuf, PathBuf)> {
    let root = dir().join("root");
    if !root.join(FETCHED_MARK).is_file() {
        return None;
    }
    let kernel = std::fs::read_dir(root.join("boot"))
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-"))
        })
        .max()?;
    let busybox = root.join("bin/busybox");
    busybox.is_file().then_some((kernel, busybox))
}

/// The commands that fetch and unpack the packages, in words (for the question before).
pub fn fetch_description() -> String {
    format!(
        "apt-get download {KERNEL_PACKAGE}'s kernel package and {BUSYBOX_PACKAGE}, and dpkg-deb -x them into {} (nothing is installed, no root needed)",
        dir().display()
    )
}

/// Fetch and unpack the kernel and busybox. One fetch at a time: the tests that boot Linux
/// run side by side (threads of one test binary, and other binaries), and a second
/// `apt-get download` into the same folder, or a `dpkg-deb -x` of a package still being
/// written, failed the test that came second. The lock is an exclusive `flock` on a file
/// next to the packages; who gets it second finds them fetched.
pub fn fetch() -> Result<(PathBuf, PathBuf), String> {
    let dir = dir();
    std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let lock_path = dir.join(".fetch.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|error| format!("{}: {error}", lock_path.display()))?;
    lock.lock()
        .map_err(|error| format!("{}: {error}", lock_path.display()))?;
    if let Some(fetched) = fetched() {
        return Ok(fetched);
    }
    // The meta-package depends on the versioned kernel package: fetch that one.
    let depends = run(Command::new("apt-cache").args(["depends", KERNEL_PACKAGE]))
        .map_err(with_update_hint)?;
    let kernel_package = depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .find(|name| name.starts_with("linux-image-"))
        .ok_or_else(|| {
            with_update_hint(format!(
                "`apt-cache depends {KERNEL_PACKAGE}` names no kernel package"
            ))
        })?
        .to_string();
    // Packages an earlier fetch left (an older busybox-static_*.deb) would be taken for the
    // ones downloaded now: they go first.
    for entry in std::fs::read_dir(&dir)
        .map_err(|error| format!("{}: {error}", dir.display()))?
        .filter_map(Result::ok)
    {
        if entry
            .path()
            .extension()
            .is_some_and(|extension| extension == "deb")
        {
            std::fs::remove_file(entry.path())
                .map_err(|error| format!("{}: {error}", entry.path().display()))?;
        }
    }
    run(Command::new("apt-get")
        .args(["download", &kernel_package, BUSYBOX_PACKAGE])
        .current_dir(&dir))
    .map_err(with_update_hint)?;
    for package in [kernel_package.as_str(), BUSYBOX_PACKAGE] {
        let deb = std::fs::read_dir(&dir)
            .map_err(|error| format!("{}: {error}", dir.display()))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| {
                path.extension().is_some_and(|extension| extension == "deb")
                    && path.file_name().is_some_and(|name| {
                        name.to_string_lossy().starts_with(&format!("{package}_"))
                    })
            })
            .ok_or_else(|| {
                format!(
                    "apt-get download left no {package}_*.deb in {}",
                    dir.display()
                )
            })?;
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("root")))?;
    }
    let mark = dir.join("root").join(FETCHED_MARK);
    std::fs::write(&mark, kernel_package)
        .map_err(|error| format!("{}: {error}", mark.display()))?;
    fetched().ok_or_else(|| {
        format!(
            "the packages in {} hold no vmlinuz and no busybox",
            dir.display()
        )
    })
}

/// `error` from apt, and what mends it most often: package lists missing (a fresh
/// container) or stale (Debian drops an old kernel's package from its mirrors), which
/// `apt-get update` fetches again. The packages are Debian's: another distribution's archive
/// may not have them.
fn with_update_hint(error: String) -> String {
    let update = traplab_tracer::qemu::as_root(&["apt-get", "update"]).join(" ");
    format!(
        "{error}\nDebian's package lists may be missing or out of date: run `{update}`, then fetch again (`traplab trace linux-boot --yes`). The packages ({KERNEL_PACKAGE}, {BUSYBOX_PACKAGE}) come from Debian's archive."
    )
}

fn run(command: &mut Command) -> Result<String, String> {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .map_err(|error| format!("cannot run {shown}: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The initramfs of a lab: busybox as `/bin/busybox`, the lab's `/init` script, and the
/// directories it mounts on; written next to the packages, named after the lab.
pub fn initramfs(lab: &str, busybox: &Path, init: &str) -> Result<PathBuf, String> {
    let busybox_bytes =
        std::fs::read(busybox).map_err(|error| format!("{}: {error}", busybox.display()))?;
    let files = [
        Entry::Directory("bin"),
        Entry::Directory("dev"),
        Entry::Directory("proc"),
        Entry::Directory("sys"),
        Entry::File("bin/busybox", 0o755, &busybox_bytes),
        Entry::File("init", 0o755, init.as_bytes()),
        Entry::File("shell", 0o755, SHELL.as_bytes()),
    ];
    let path = dir().join(format!("initramfs-{lab}.cpio"));
    std::fs::write(&path, newc(&files)).map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(path)
}

/// The kernel command line's word that starts [`SHELL`] instead of `/init`: `rdinit` names
/// the initramfs's first program (Linux `Documentation/admin-guide/kernel-parameters.txt`).
pub const SHELL_ARGUMENT: &str = "rdinit=/shell";

/// The hypervisor's timer rate for a shell: Linux ticks at 250 Hz, and a slower host timer
/// merges its ticks (`traplab run` runs it at 10 Hz otherwise, to pause spinning guests).
pub const SHELL_TIMER_HZ: u32 = 250;

/// `/shell`, in every initramfs: an interactive busybox shell on the console (ttyS0), for
/// `traplab run LAB --shell`, where `i` types its command lines on COM1. The applets are
/// installed as links first, so commands need no `/bin/busybox` in front.
pub const SHELL: &str = "#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
echo TRAPLAB-LINUX-MARKER
echo 'a busybox shell on ttyS0: poweroff -f ends it'
exec /bin/sh
";

/// One member of a cpio archive.
pub enum Entry<'a> {
    Directory(&'a str),
    File(&'a str, u32, &'a [u8]),
}

/// A cpio archive in the newc format: each member is a 110-byte ASCII header ("070701", then
/// 13 fields of 8 hex digits: inode, mode, uid, gid, nlink, mtime, filesize, devmajor,
/// devminor, rdevmajor, rdevminor, namesize, check), its name with a NUL, padding to 4
/// bytes, its data, padding to 4 bytes; "TRAILER!!!" ends the archive.
pub fn newc(entries: &[Entry]) -> Vec<u8> {
    let mut archive = Vec::new();
    let mut member = |inode: u32, name: &str, mode: u32, data: &[u8]| {
        let fields = [
            inode,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        archive.extend_from_slice(b"070701");
        for field in fields {
            archive.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        archive.extend_from_slice(name.as_bytes());
        archive.push(0);
        pad(&mut archive);
        archive.extend_from_slice(data);
        pad(&mut archive);
    };
    for (index, entry) in entries.iter().enumerate() {
        let inode = index as u32 + 1;
        match *entry {
            Entry::Directory(name) => member(inode, name, 0o040_755, &[]),
            Entry::File(name, permissions, data) => {
                member(inode, name, 0o100_000 | permissions, data)
            }
        }
    }
    member(0, "TRAILER!!!", 0, &[]);
    archive
}

fn pad(archive: &mut Vec<u8>) {
    while !archive.len().is_multiple_of(4) {
        archive.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apt_failure_says_which_command_mends_it() {
        let said =
            with_update_hint("\"apt-cache\" \"depends\" failed: E: No packages found".into());
        assert!(
            said.starts_with("\"apt-cache\" \"depends\" failed"),
            "{said}"
        );
        assert!(said.contains("apt-get update`, then fetch again"), "{said}");
    }

    #[test]
    fn a_newc_archive_has_aligned_members_and_a_trailer() {
        let archive = newc(&[
            Entry::Directory("bin"),
            Entry::File("init", 0o755, b"#!/bin/busybox sh\n"),
        ]);
        assert!(archive.starts_with(b"070701"));
        assert_eq!(archive.len() % 4, 0);
        // The second header, after the first member (110 + "bin\0" padded to 116).
        let second = &archive[116..];
        assert!(second.starts_with(b"070701"));
        assert_eq!(&second[14..22], b"000081ED", "mode: a regular file, 0755");
        assert_eq!(&second[54..62], b"00000012", "filesize: 18 bytes");
        assert_eq!(&second[110..115], b"init\0");
        let data_at = 116 + 116; // header + "init\0", 115 bytes, padded to 116
        assert_eq!(&archive[data_at..data_at + 18], b"#!/bin/busybox sh\n");
        let tail = String::from_utf8_lossy(&archive[archive.len() - 24..]);
        assert!(tail.contains("TRAILER!!!"), "{tail}");
    }
}
