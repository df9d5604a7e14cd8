//! The code around a trap: the guest's instructions (disassembled with iced-x86), its
//! symbols and source lines (from the ELF and its DWARF, with `object` and `addr2line`),
//! and the hypervisor source line that made a decision.
//!
//! The lab guests are static ELF files linked at the addresses they run at (no
//! relocation), so a guest-virtual RIP is an address in the ELF: the bytes around it come
//! from the ELF's loadable sections. The exit event's own `insn` bytes (read by the
//! hypervisor from guest memory) are the truth for the trapping instruction itself; when
//! they differ from the ELF (code the guest wrote at run time) we say so.

use crate::flows::Kind;
use crate::store::Trace;
use crate::symbols::{SymbolError, Symbols};
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
use object::{Object, ObjectSection, SectionKind};
use std::path::{Path, PathBuf};
use traplab_abi::event::{Body, Event};

/// How many different RIPs [`GuestImage::ran_in`] compares at most.
pub const BUILD_EVIDENCE: usize = 64;

/// What the screen needs from one guest's ELF.
pub struct GuestImage {
    pub path: PathBuf,
    symbols: Symbols,
    /// The executable sections: (address, bytes).
    code: Vec<(u64, Vec<u8>)>,
    /// DWARF line tables, when the ELF has them.
    lines: Option<addr2line::Loader>,
}

impl std::fmt::Debug for GuestImage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter
            .debug_struct("GuestImage")
            .field("path", &self.path)
            .field("has_lines", &self.lines.is_some())
            .finish()
    }
}

impl GuestImage {
    pub fn load(path: &Path) -> Result<GuestImage, SymbolError> {
        let describe = || path.display().to_string();
        let data = std::fs::read(path).map_err(|error| SymbolError::Io {
            path: describe(),
            error,
        })?;
        let file = object::File::parse(&*data).map_err(|error| SymbolError::Elf {
            path: describe(),
            error,
        })?;
        let symbols = Symbols::parse(&data).map_err(|error| SymbolError::Elf {
            path: describe(),
            error,
        })?;
        let code = file
            .sections()
            .filter(|section| section.kind() == SectionKind::Text)
            .filter_map(|section| Some((section.address(), section.data().ok()?.to_vec())))
            .collect();
        // No DWARF is no error: the screen then shows symbols only.
        let lines = addr2line::Loader::new(path).ok();
        Ok(GuestImage {
            path: path.to_path_buf(),
            symbols,
            code,
            lines,
        })
    }

    pub fn symbols(&self) -> &Symbols {
        &self.symbols
    }

    /// `name+0x10`.
    pub fn describe(&self, address: u64) -> Option<String> {
        self.symbols.describe(address)
    }

    /// The source file and line of `address` (DWARF line table): the innermost line, which
    /// may be inside a library function inlined there. [`GuestImage::source`] names the
    /// guest's own line.
    pub fn source_line(&self, address: u64) -> Option<(String, u32)> {
        let location = self.lines.as_ref()?.find_location(address).ok()??;
        Some((location.file?.to_string(), location.line?))
    }

    /// The inline chain at `address`, innermost first: the function whose code is there
    /// and, when the compiler inlined it, each function it was inlined into (DWARF's
    /// inlined subroutines, as addr2line reads them).
    pub fn frames(&self, address: u64) -> Vec<SourceFrame> {
        let Some(mut frames) = self
            .lines
            .as_ref()
            .and_then(|lines| lines.find_frames(address).ok())
        else {
            return Vec::new();
        };
        let mut chain = Vec::new();
        while let Ok(Some(frame)) = frames.next() {
            let function = frame.function.as_ref().and_then(|name| {
                let raw = name.raw_name().ok()?;
                Some(format!("{:#}", rustc_demangle::demangle(&raw)))
            });
            let (file, line) = match &frame.location {
                Some(location) => (location.file.map(str::to_string), location.line),
                None => (None, None),
            };
            chain.push(SourceFrame {
                function,
                file,
                line,
            });
        }
        chain
    }

    /// Where `address` is in the guest's own source: the innermost frame of the inline
    /// chain whose file is not Rust's library (a `write_volatile` inlined into the line
    /// that wrote), with the library frames inlined into it.
    pub fn source(&self, address: u64) -> Option<Source> {
        let mut chain = self.frames(address);
        let own = chain.iter().position(|frame| {
            frame
                .file
                .as_deref()
                .is_some_and(|file| !is_rust_library(file))
                && frame.line.is_some()
        })?;
        let inlined = chain.drain(..own).collect();
        let frame = chain.swap_remove(0);
        Some(Source {
            file: frame.file?,
            line: frame.line?,
            function: frame.function,
            inlined,
        })
    }

    /// Did domain `dom` of `trace` run this build of the program? Its exits' instruction
    /// bytes, as the hypervisor fetched them, against this image's code at their RIPs (the
    /// first [`BUILD_EVIDENCE`] different RIPs with bytes in code the image has, among the
    /// domain's first exits: a guest's console loop exits at one `out` again and again): a
    /// recording made with another build has other code at those addresses, and its
    /// symbols would name the wrong functions. Code the guest wrote itself differs too, so
    /// most must agree, not all. `None` when no exit says.
    pub fn ran_in(&self, trace: &Trace, dom: u16) -> Option<bool> {
        let (mut agree, mut differ) = (0usize, 0usize);
        let mut looked_at = std::collections::BTreeSet::new();
        let mut exits = 0;
        for index in 0..trace.len() {
            if agree + differ == BUILD_EVIDENCE || exits == 64 * BUILD_EVIDENCE {
                break;
            }
            let is_exit = trace
                .index_of(index)
                .is_some_and(|entry| entry.kind == Kind::Exit && entry.dom == dom);
            if !is_exit {
                continue;
            }
            let Ok(Event {
                body: Body::Exit(exit),
                ..
            }) = trace.event(index)
            else {
                continue;
            };
            exits += 1;
            if !looked_at.insert(exit.rip) {
                continue;
            }
            let ran = exit.insn.as_slice();
            match self.code_at(exit.rip, ran.len()) {
                Some(built) if !ran.is_empty() && built.len() == ran.len() => {
                    if built == ran {
                        agree += 1
                    } else {
                        differ += 1
                    }
                }
                _ => {}
            }
        }
        (agree + differ > 0).then_some(agree > differ)
    }

    /// Up to `len` bytes of code from `address` (fewer at the end of a section).
    pub fn code_at(&self, address: u64, len: usize) -> Option<&[u8]> {
        self.code.iter().find_map(|(start, bytes)| {
            let offset = address.checked_sub(*start)? as usize;
            (offset < bytes.len()).then(|| &bytes[offset..(offset + len).min(bytes.len())])
        })
    }
}

/// One frame of an inline chain: a function and where in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFrame {
    /// Demangled, without the hash: `core::ptr::write_volatile`.
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// Where an address is in the guest's own source, and what the compiler inlined there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: String,
    pub line: u32,
    /// The guest's function, when the DWARF names it: `page_fault::main`.
    pub function: Option<String>,
    /// The library functions inlined at that line, innermost first.
    pub inlined: Vec<SourceFrame>,
}

/// Is `file` a source of Rust's standard library (`/rustc/<hash>/library/core/…`), or of a
/// crate from the registry, rather than the guest's?
fn is_rust_library(file: &str) -> bool {
    file.starts_with("/rustc/")
        || file.contains("/library/core/")
        || file.contains("/library/alloc/")
        || file.contains("/library/std/")
        || file.contains("/.cargo/registry/")
}

/// One decoded instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub address: u64,
    pub bytes: Vec<u8>,
    /// Intel syntax: `mov dword ptr [rax], 2Ah`.
    pub text: String,
}

/// Decode `bytes` as code at `address`; at most `limit` instructions. `bitness` is 64 for
/// long mode, 32 for the protected-mode guests. As an AMD CPU decodes them, as the
/// hypervisor does (`hv/src/instruction.rs`): the guests run under AMD SVM.
pub fn disassemble(bytes: &[u8], address: u64, bitness: u32, limit: usize) -> Vec<Instruction> {
    let mut decoder = Decoder::with_ip(bitness, bytes, address, DecoderOptions::AMD);
    let mut formatter = IntelFormatter::new();
    let mut instructions = Vec::new();
    let mut instruction = iced_x86::Instruction::default();
    while decoder.can_decode() && instructions.len() < limit {
        decoder.decode_out(&mut instruction);
        // (Wrapping: decoding may run past the top of the address space.)
        let start = instruction.ip().wrapping_sub(address) as usize;
        let bytes = bytes[start..start + instruction.len()].to_vec();
        let mut text = String::new();
        if instruction.is_invalid() {
            text.push_str("(bad)");
        } else {
            formatter.format(&instruction, &mut text);
        }
        instructions.push(Instruction {
            address: instruction.ip(),
            bytes,
            text,
        });
    }
    instructions
}

/// The code around `rip`: up to `before` instructions before it and `after` from it on.
///
/// x86 cannot be decoded backwards, so we decode forwards from the start of the function
/// that holds `rip` (or from 64 bytes earlier) and keep the instructions that end at
/// `rip`; when that decoding does not land on `rip` (data in the code), we start at `rip`.
/// Without the ELF, `insn` (the bytes the hypervisor read at `rip`) is all we have.
pub fn around(
    image: Option<&GuestImage>,
    rip: u64,
    insn: &[u8],
    bitness: u32,
    before: usize,
    after: usize,
) -> Vec<Instruction> {
    let Some(image) = image else {
        return disassemble(insn, rip, bitness, 1);
    };
    let start = match image.symbols().lookup(rip) {
        Some((symbol, offset)) if offset <= 4096 => symbol.address,
        _ => rip.saturating_sub(64),
    };
    let Some(bytes) = image.code_at(start, (rip - start) as usize + 16 * (after + 1)) else {
        return disassemble(insn, rip, bitness, 1);
    };
    let decoded = disassemble(bytes, start, bitness, 4096);
    match decoded
        .iter()
        .position(|instruction| instruction.address == rip)
    {
        Some(at) => decoded[at.saturating_sub(before)..(at + after).min(decoded.len())].to_vec(),
        None => match image.code_at(rip, 16 * after) {
            Some(from_rip) => disassemble(from_rip, rip, bitness, after),
            None => disassemble(insn, rip, bitness, 1),
        },
    }
}

/// Bytes as `48 c7 00 2a`.
pub fn hex_bytes(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A source excerpt: the file, the line asked for, and the numbered lines around it.
pub type Excerpt = (PathBuf, u32, Vec<(u32, String)>);

/// Lines `line - context ..= line + context` of `file:line` (`hv/src/exit/ioio.rs:27`) under
/// `root`, numbered; `None` when the source tree is not there.
pub fn source_excerpt(root: &Path, at: &str, context: u32) -> Option<Excerpt> {
    let (file, line) = at.rsplit_once(':')?;
    let line: u32 = line.trim().parse().ok()?;
    let path = root.join(file);
    let text = std::fs::read_to_string(&path).ok()?;
    let first = line.saturating_sub(context).max(1);
    let lines = text
        .lines()
        .enumerate()
        .map(|(index, text)| (index as u32 + 1, text.to_string()))
        .filter(|(number, _)| *number >= first && *number <= line + context)
        .collect();
    Some((path, line, lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_at_the_top_of_the_address_space_decodes_past_it_without_a_panic() {
        // Three NOPs from 2^64 - 2: the third is at address 0 (the decoder wraps).
        let code = disassemble(&[0x90; 3], u64::MAX - 1, 64, 4096);
        assert_eq!(code.len(), 3);
    }

    #[test]
    fn decodes_intel_syntax() {
        let code = disassemble(
            &[0xc7, 0x00, 0x2a, 0x00, 0x00, 0x00, 0x0f, 0x0b],
            0x1000,
            64,
            10,
        );
        assert_eq!(code[0].text, "mov dword ptr [rax],2Ah");
        assert_eq!(
            code[1],
            Instruction {
                address: 0x1006,
                bytes: vec![0x0f, 0x0b],
                text: "ud2".into()
            }
        );
        assert_eq!(hex_bytes(&code[1].bytes), "0f 0b");
    }

    #[test]
    fn without_an_elf_only_the_trapping_instruction() {
        let code = around(None, 0x2000, &[0xf4], 64, 3, 3);
        assert_eq!(code.len(), 1);
        assert_eq!(code[0].text, "hlt");
    }

    #[test]
    fn source_excerpts_are_numbered() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (_, line, lines) = source_excerpt(root, "src/code.rs:3", 1).expect("this file");
        assert_eq!(line, 3);
        assert_eq!(
            lines.iter().map(|(number, _)| *number).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert!(source_excerpt(root, "no/such/file.rs:1", 1).is_none());
    }

    #[test]
    fn a_build_is_judged_by_the_different_places_its_exits_are_at_not_by_how_many() {
        use crate::sample;
        use traplab_abi::event::{Body, Event};
        let elf = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/bare/x86_64-unknown-linux-gnu/release/page-fault");
        let image = GuestImage::load(&elf).expect("the page-fault guest, built with the workspace");
        let main = image
            .symbols()
            .address_of("traplab_guest_main")
            .expect("the guest's main entry");
        let here = |address: u64| image.code_at(address, 2).expect("code").to_vec();
        let elsewhere = |address: u64| here(address).iter().map(|byte| !byte).collect::<Vec<_>>();
        // One loop exiting at the same instruction a hundred times agrees; two other places
        // hold other code: another build, whose loop happens to be where this one's is.
        let mut exits: Vec<(u64, Vec<u8>)> = vec![(main, here(main)); 100];
        exits.push((main + 0x10, elsewhere(main + 0x10)));
        exits.push((main + 0x20, elsewhere(main + 0x20)));
        let mut trace = Trace::live("test");
        for (seq, (rip, insn)) in exits.iter().enumerate() {
            trace.push_event(&Event {
                seq: seq as u64,
                tsc: seq as u64,
                dom: Some(1),
                body: Body::Exit(sample::exit(0x7b, *rip, insn)),
            });
        }
        assert_eq!(image.ran_in(&trace, 1), Some(false));
        assert_eq!(image.ran_in(&trace, 2), None, "no exit of d2 says");
    }

    #[test]
    fn the_guest_s_own_line_is_found_under_what_was_inlined_there() {
        let elf = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/bare/x86_64-unknown-linux-gnu/release/page-fault");
        let Ok(image) = GuestImage::load(&elf) else {
            eprintln!("the page-fault guest is not built here; nothing to check");
            return;
        };
        // The write that faults, `mov qword ptr [40000000h],2Ah`: `write_volatile`,
        // inlined into page-fault.rs (main itself is inlined into the runtime's entry).
        let main = image
            .symbols()
            .address_of("traplab_guest_main")
            .expect("the guest's main entry");
        let code = image.code_at(main, 0x100).expect("its code");
        let rip = disassemble(code, main, 64, 100)
            .into_iter()
            .find(|instruction| instruction.text.starts_with("mov qword ptr [40000000h]"))
            .expect("the faulting write")
            .address;
        let (innermost, _) = image.source_line(rip).expect("a line");
        assert!(innermost.contains("/library/core/"), "{innermost}");
        let source = image.source(rip).expect("the guest's own line");
        assert!(
            source.file.ends_with("guests/src/bin/page-fault.rs"),
            "{source:?}"
        );
        assert_eq!(source.function.as_deref(), Some("page_fault::main"));
        let inlined: Vec<&str> = source
            .inlined
            .iter()
            .filter_map(|frame| frame.function.as_deref())
            .collect();
        assert!(
            inlined.contains(&"core::ptr::write_volatile"),
            "{inlined:?}"
        );
    }
}
