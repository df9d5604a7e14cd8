//! What a kernel image is, told from its bytes, as a boot loader tells it: a multiboot v1
//! kernel (`multiboot.rs`), one of traplab's own lab guests (a 64-bit ELF,
//! `traplab_abi::boot`), or neither — and then the error says what the file is and why it
//! cannot run, so that a student who passed the wrong file learns which one it was.
//!
//! The order matters: a multiboot header wins over the file's own format (a multiboot kernel
//! may be any file, an ELF64 among them, when its header gives the load addresses).

pub mod acpi;
pub mod firmware;
pub mod linux;
pub mod multiboot;
pub mod smbios;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The kinds of image the hypervisor boots.
#[derive(Debug)]
pub enum Format<'a> {
    /// A multiboot v1 kernel, parsed: entered in 32-bit protected mode.
    Multiboot(multiboot::Kernel<'a>),
    /// A traplab lab guest: an x86-64 ELF, entered in 64-bit mode (`traplab_abi::boot`).
    TraplabElf64,
    /// A Linux bzImage, booted by the 32-bit boot protocol (`linux.rs`).
    Linux(linux::Kernel<'a>),
}

/// Why an image cannot be booted, in a user's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError(pub String);

impl core::fmt::Display for ImageError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// `e_ident` of an ELF file: the magic, then the class (1 = 32-bit, 2 = 64-bit).
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// `e_machine` values (System V ABI, "ELF Header").
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;

/// What `image` is.
pub fn identify(image: &[u8]) -> Result<Format<'_>, ImageError> {
    if image.is_empty() {
        return Err(ImageError("the file is empty".into()));
    }
    if let Some(header) = multiboot::find_header(image) {
        return Ok(Format::Multiboot(multiboot::Kernel::parse(image, header?)?));
    }
    if linux_setup_header(image) {
        return Ok(Format::Linux(linux::Kernel::parse(image)?));
    }
    match elf_class_and_machine(image) {
        Some((2, EM_X86_64)) => match not_a_guest(image) {
            Some(what) => Err(ImageError(format!(
                "{what}, not a traplab guest: a guest is a static ELF linked at the address it runs at (guests/linker.ld), and a kernel boots as a bzImage or through multiboot"
            ))),
            None => Ok(Format::TraplabElf64),
        },
        Some((1, EM_386)) => Err(ImageError(
            "a 32-bit ELF without a multiboot header: traplab boots a 32-bit kernel through multiboot v1 (a header with the magic 0x1badb002 in the file's first 8 KiB)".into(),
        )),
        Some((class, machine)) => Err(ImageError(format!(
            "an ELF file for another machine ({}-bit, e_machine {machine}): traplab boots x86 kernels",
            if class == 1 { 32 } else { 64 }
        ))),
        None => Err(ImageError(format!(
            "not a kernel image traplab knows: no multiboot header in its first 8 KiB, not an ELF file, not a Linux bzImage (it starts with {})",
            first_bytes(image)
        ))),
    }
}

/// Does the file have a Linux setup header (its "HdrS" at 0x202, Linux
/// `Documentation/arch/x86/boot.rst`)? `linux.rs` then says whether it can be booted.
fn linux_setup_header(image: &[u8]) -> bool {
    image.get(0x202..0x206) == Some(b"HdrS")
}

/// What a 64-bit x86 ELF file that is no traplab guest is, by what a guest never has
/// (System V ABI, "ELF Header" and "Program Header"; the Linux Standard Base's ABI note;
/// Xen's `elfnote.h`): position-independent code (`ET_DYN`: a Linux program or a shared
/// library), a program interpreter (`PT_INTERP`: a dynamically linked program), GNU's ABI
/// note (a program linked against glibc, static ones too), or Xen's entry notes (a Linux
/// `vmlinux`, or Xen itself). `None` for a file that may be a guest.
fn not_a_guest(image: &[u8]) -> Option<&'static str> {
    use object::elf::{ET_DYN, NT_GNU_ABI_TAG, PT_INTERP};
    use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
    // A file `object` cannot read is left to the loader, which says why.
    let file = ElfFile64::<object::Endianness>::parse(image).ok()?;
    let endian = file.endian();
    if file.elf_header().e_type(endian) == ET_DYN {
        return Some("a position-independent ELF (ET_DYN: a Linux program or a shared library)");
    }
    for program in file.elf_program_headers() {
        if program.p_type(endian) == PT_INTERP {
            return Some("a dynamically linked program (it names an interpreter)");
        }
        let Ok(Some(mut notes)) = program.notes(endian, image) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            match (note.name(), note.n_type(endian)) {
                (b"GNU", NT_GNU_ABI_TAG) => {
                    return Some("a program built for Linux (it carries GNU's ABI note)");
                }
                (b"Xen", _) => {
                    return Some("a kernel with Xen's entry notes (a Linux vmlinux, or Xen)");
                }
                _ => {}
            }
        }
    }
    None
}

/// An ELF file's class and machine, if it is one.
fn elf_class_and_machine(image: &[u8]) -> Option<(u8, u16)> {
    if image.get(0..4)? != ELF_MAGIC {
        return None;
    }
    let class = *image.get(4)?;
    let machine = image.get(18..20)?;
    Some((class, u16::from_le_bytes([machine[0], machine[1]])))
}

/// The first bytes of a file, in hex, for an error message.
fn first_bytes(image: &[u8]) -> String {
    let shown: Vec<String> = image
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let more = if image.len() > 8 { " …" } else { "" };
    format!("{}{more}", shown.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(image: &[u8]) -> String {
        match identify(image) {
            Err(ImageError(why)) => why,
            Ok(format) => panic!("{format:?} accepted"),
        }
    }

    #[test]
    fn an_elf64_for_x86_64_is_a_traplab_guest() {
        let mut elf = vec![0u8; 64];
        elf[0..4].copy_from_slice(ELF_MAGIC);
        elf[4] = 2;
        elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        assert!(matches!(identify(&elf), Ok(Format::TraplabElf64)));
    }

    /// A 64-bit x86 ELF with one program header of `kind` over `segment`.
    fn elf64_with_segment(kind: u32, segment: &[u8]) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[0..4].copy_from_slice(ELF_MAGIC);
        elf[4] = 2;
        elf[5] = 1; // little-endian
        elf[6] = 1; // EV_CURRENT
        elf[16..18].copy_from_slice(&2u16.to_le_bytes());
        elf[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        elf[64..68].copy_from_slice(&kind.to_le_bytes());
        elf[64 + 8..64 + 16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        elf[64 + 32..64 + 40].copy_from_slice(&(segment.len() as u64).to_le_bytes());
        elf.extend_from_slice(segment);
        elf
    }

    fn note(name: &[u8], kind: u32, description: &[u8]) -> Vec<u8> {
        let mut note = Vec::new();
        note.extend_from_slice(&(name.len() as u32).to_le_bytes());
        note.extend_from_slice(&(description.len() as u32).to_le_bytes());
        note.extend_from_slice(&kind.to_le_bytes());
        note.extend_from_slice(name);
        note.resize(note.len().next_multiple_of(4), 0);
        note.extend_from_slice(description);
        note.resize(note.len().next_multiple_of(4), 0);
        note
    }

    #[test]
    fn a_linux_program_or_kernel_is_no_traplab_guest_and_says_what_it_is() {
        let mut pie = elf64_with_segment(1, &[]);
        pie[16..18].copy_from_slice(&3u16.to_le_bytes());
        assert!(error(&pie).starts_with("a position-independent ELF"));
        let dynamic = elf64_with_segment(3, b"/lib64/ld-linux-x86-64.so.2\0");
        assert!(error(&dynamic).starts_with("a dynamically linked program"));
        // A static program linked against glibc: its build ID is no sign, its ABI tag is.
        let build_id = elf64_with_segment(4, &note(b"GNU\0", 3, &[0xab; 20]));
        assert!(matches!(identify(&build_id), Ok(Format::TraplabElf64)));
        let mut notes = note(b"GNU\0", 3, &[0xab; 20]);
        notes.extend(note(
            b"GNU\0",
            1,
            &[0, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0],
        ));
        let glibc = elf64_with_segment(4, &notes);
        assert!(error(&glibc).starts_with("a program built for Linux"));
        let vmlinux = elf64_with_segment(4, &note(b"Xen\0", 18, &[0; 4]));
        assert!(error(&vmlinux).starts_with("a kernel with Xen's entry notes"));
        assert!(error(&vmlinux).ends_with("a kernel boots as a bzImage or through multiboot"));
    }

    #[test]
    fn every_refusal_says_what_the_file_is() {
        assert_eq!(error(b""), "the file is empty");
        let mut elf32 = vec![0u8; 64];
        elf32[0..4].copy_from_slice(ELF_MAGIC);
        elf32[4] = 1;
        elf32[18..20].copy_from_slice(&EM_386.to_le_bytes());
        assert!(error(&elf32).starts_with("a 32-bit ELF without a multiboot header"));
        let mut arm = elf32.clone();
        arm[4] = 2;
        arm[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert_eq!(
            error(&arm),
            "an ELF file for another machine (64-bit, e_machine 183): traplab boots x86 kernels"
        );
        let mut bzimage = vec![0u8; 0x400];
        bzimage[0x202..0x206].copy_from_slice(b"HdrS");
        bzimage[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        assert_eq!(
            error(&bzimage),
            "a Linux bzImage, but its setup header is broken",
            "no boot flag 0xaa55 at 0x1fe"
        );
        assert_eq!(
            error(b"MZ\x90\x00\x03\x00\x00\x00\x04"),
            "not a kernel image traplab knows: no multiboot header in its first 8 KiB, not an ELF file, not a Linux bzImage (it starts with 4d 5a 90 00 03 00 00 00 …)"
        );
    }
}
