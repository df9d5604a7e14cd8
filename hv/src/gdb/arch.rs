//! What gdb sees of the guest CPU: the registers, in the order of the 'g' packet and
//! numbered in that order for `p` and `P`, and the target description (`target.xml`) that
//! names them.
//!
//! gdb's own x86-64 description (gdbstub_arch's `X86_64_SSE`) has the general, segment, x87
//! and SSE registers but no control registers. A student debugging a trap wants CR2 (the
//! faulting address) and CR3 (the page-table root) next to RIP, so our description adds a
//! feature of its own after gdb's standard ones (gdb docs, "Target Descriptions";
//! "i386 Features" lists the names gdb requires in `org.gnu.gdb.i386.core` and `.sse`).
//! Registers of a feature gdb does not know are still shown by `info registers`. gdb has no
//! standard feature for them (its i386 features are core, sse, segments — FS and GS base
//! alone —, linux, avx, mpx, avx512 and pkeys): ours names them as QEMU's own x86-64
//! description does (`gdb-xml/i386-64bit.xml`), in the same order, KernelGSbase
//! (`k_gs_base`, the base SWAPGS swaps in) and CR8 among them.

use core::num::NonZeroUsize;
use gdbstub::arch::{Arch, RegId, Registers};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use traplab_hv::gdb::registers::{COUNT, FS_BASE, PACKET_BYTES, Register};

/// The guest as gdb's architecture: x86-64 plus FS/GS base and the system registers.
pub enum GuestX86_64 {}

impl Arch for GuestX86_64 {
    type Usize = u64;
    type Registers = GuestRegisters;
    type RegId = GuestRegId;
    type BreakpointKind = usize;

    fn target_description_xml() -> Option<&'static str> {
        Some(TARGET_XML)
    }
}

/// A register number of `p` and `P` (GDB manual, "Packets"), as gdbstub hands it to the
/// target (`target.rs`, `SingleRegisterAccess`). gdbstub_arch's own x86-64 numbers stop at
/// gdb's standard registers; ours are those of our target description, system registers
/// included (`traplab_hv::gdb::registers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestRegId {
    Known(Register),
    /// A number the description does not have. gdbstub answers a number its `RegId` does
    /// not map with the empty response, which "means the command is not supported by the
    /// stub" (GDB manual, "Standard Replies"): gdb would take `P` for unsupported and write
    /// every register with `G` from then on. So every number maps, and the target answers
    /// this one with the error reply, `E16` (EINVAL).
    Unknown(usize),
}

impl RegId for GuestRegId {
    /// The size tells gdbstub how many bytes `p` answers (it checks what the target gives
    /// it); `P`'s value it passes on whatever its length, and the target checks that.
    fn from_raw_id(id: usize) -> Option<(Self, Option<NonZeroUsize>)> {
        Some(match Register::from_number(id) {
            Some(register) => (
                GuestRegId::Known(register),
                NonZeroUsize::new(register.size()),
            ),
            None => (GuestRegId::Unknown(id), None),
        })
    }

    fn to_raw_id(&self) -> Option<usize> {
        match *self {
            GuestRegId::Known(register) => Some(register.number()),
            GuestRegId::Unknown(id) => Some(id),
        }
    }
}

/// The 'g' packet: gdbstub_arch's core and SSE registers, then ours (fs_base to efer).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GuestRegisters {
    pub core: X86_64CoreRegs,
    pub fs_base: u64,
    pub gs_base: u64,
    pub k_gs_base: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
}

/// How many of our registers come after the core ones, 8 bytes each: fs_base to efer, the
/// numbers from `fs_base`'s on (`registers::NAMES`).
pub const SYSTEM_REGISTERS: usize = COUNT - FS_BASE;
/// The size of gdbstub_arch's part of the packet.
const CORE_BYTES: usize = 0x218;
// The register numbering's packet (`traplab_hv::gdb::registers`) is this one.
const _: () = assert!(PACKET_BYTES == CORE_BYTES + 8 * SYSTEM_REGISTERS);

impl GuestRegisters {
    /// The `g` packet's data: every register's bytes in number order, where
    /// [`Register::offset`] says (a `p` answers a slice of it, a `G`'s is cut into slices).
    pub fn to_packet(&self) -> [u8; PACKET_BYTES] {
        let mut packet = [0; PACKET_BYTES];
        let mut slots = packet.iter_mut();
        self.gdb_serialize(|byte| {
            if let Some(slot) = slots.next() {
                *slot = byte.unwrap_or(0);
            }
        });
        packet
    }

    fn system(&self) -> [u64; SYSTEM_REGISTERS] {
        [
            self.fs_base,
            self.gs_base,
            self.k_gs_base,
            self.cr0,
            self.cr2,
            self.cr3,
            self.cr4,
            self.cr8,
            self.efer,
        ]
    }
}

impl Registers for GuestRegisters {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.core.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        self.core.gdb_serialize(&mut write_byte);
        for value in self.system() {
            value
                .to_le_bytes()
                .iter()
                .for_each(|&byte| write_byte(Some(byte)));
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        if bytes.len() < CORE_BYTES + 8 * SYSTEM_REGISTERS {
            return Err(());
        }
        self.core.gdb_deserialize(&bytes[..CORE_BYTES])?;
        let mut words = bytes[CORE_BYTES..].chunks_exact(8).map(|chunk| {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            u64::from_le_bytes(word)
        });
        for slot in [
            &mut self.fs_base,
            &mut self.gs_base,
            &mut self.k_gs_base,
            &mut self.cr0,
            &mut self.cr2,
            &mut self.cr3,
            &mut self.cr4,
            &mut self.cr8,
            &mut self.efer,
        ] {
            *slot = words.next().ok_or(())?;
        }
        Ok(())
    }
}

/// The target description: register numbers follow the packet order above
/// (`traplab_hv::gdb::registers` numbers them, and its tests check it against this file).
const TARGET_XML: &str = include_str!("target.xml");
