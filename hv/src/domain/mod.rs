//! A domain: one guest, split by what each part is.
//!
//! | part                | file            | what it holds                                        |
//! |---------------------|-----------------|------------------------------------------------------|
//! | [`Vcpu`]            | `vcpu.rs`       | the VMCB, the registers, the events in flight         |
//! | [`GuestMemory`]     | `memory.rs`     | guest-physical RAM behind the nested page tables      |
//! |                     | `walk_cache.rs` | the guest's page walks remembered, checked at each use |
//! | [`Devices`]         | `../device/`    | the console UART and the lab's MMIO device           |
//! | [`Pv`]              | `pv.rs`         | the paravirtual state: trap table, pinned page tables |
//! | [`VirtualInterrupts`] | `interrupts.rs` | the guest's timers and its pending interrupt (in the vCPU) |
//! | [`EventChannels`]   | `evtchn.rs`     | its ports, its shared-info page, its upcall          |
//! | [`Grants`]          | `grants.rs`     | what it grants others, what it maps of theirs        |
//!
//! The handlers see a domain read-only, through a [`Guest`] (with the other domains beside
//! it, read-only too); only `apply.rs` changes it.
//! What happens at one exit is a value of its own ([`crate::exit::Exit`]), and gdb's
//! session lives outside the domain, in the bare-metal program (`gdb/`).

pub mod evtchn;
pub mod grants;
pub mod interrupts;
pub mod memory;
pub mod others;
pub mod page_tables;
pub mod pv;
pub mod vcpu;
pub mod walk_cache;

use crate::device::Devices;
use crate::machine::Machine;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
pub use evtchn::EventChannels;
pub use grants::Grants;
pub use interrupts::VirtualInterrupts;
pub use memory::{AccessFault, CpuAccess, GuestMemory, MemoryError};
pub use others::{Others, OthersMut};
pub use pv::Pv;
use traplab_abi::hypercall::TrapInfo;
use traplab_abi::x86::PageTables;
use traplab_abi::x86::{Cr0Flags, RFlags};
pub use vcpu::Vcpu;

/// One guest.
pub struct Domain {
    pub id: u16,
    pub name: String,
    pub vcpu: Vcpu,
    pub memory: Box<dyn GuestMemory>,
    pub devices: Devices,
    pub pv: Pv,
    pub events: EventChannels,
    pub grants: Grants,
}

impl Domain {
    /// A domain with a fresh vCPU (its boot state is the loader's to set).
    pub fn new(id: u16, name: String, memory: Box<dyn GuestMemory>) -> Domain {
        let devices = Devices {
            fw_cfg: crate::device::fw_cfg::FwCfg::new(memory.size()),
            rtc: crate::device::rtc::Rtc::new(memory.size()),
            ..Devices::default()
        };
        Domain {
            id,
            name,
            vcpu: Vcpu::new(),
            memory,
            devices,
            pv: Pv::default(),
            events: EventChannels::default(),
            grants: Grants::default(),
        }
    }

    /// A general register, as the guest sees it (see [`Vcpu::gpr`]).
    pub fn gpr(&self, number: u8) -> u64 {
        self.vcpu.gpr(number)
    }

    /// The guest's page tables, or `None` when paging is off.
    pub fn page_tables(&self) -> Option<PageTables> {
        self.vcpu.page_tables()
    }

    pub fn read_virtual(&self, address: u64, buffer: &mut [u8]) -> Result<(), MemoryError> {
        self.memory
            .read_virtual(self.page_tables(), address, buffer)
    }

    pub fn write_virtual(&mut self, address: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        let tables = self.page_tables();
        self.memory.write_virtual(tables, address, bytes)
    }

    /// A read the hypervisor makes in the guest's CPU's place: the walk sets the accessed
    /// bits, as the CPU's would ([`GuestMemory::mark_walked`]).
    pub fn cpu_read_virtual(&mut self, address: u64, buffer: &mut [u8]) -> Result<(), MemoryError> {
        let tables = self.page_tables();
        self.memory.cpu_read_virtual(tables, address, buffer)
    }

    /// The walk the guest's CPU makes to `address` for an access the hypervisor makes in
    /// its place where no RAM is (a device): it sets the accessed bits, and for a `write`
    /// the page's dirty bit, as for RAM ([`GuestMemory::mark_walked`]).
    pub fn mark_walked(&mut self, address: u64, write: bool) -> Result<(), MemoryError> {
        let tables = self.page_tables();
        self.memory.mark_walked(tables, address, write)
    }

    /// A write the hypervisor makes in the guest's CPU's place: the walk sets the accessed
    /// bits and the page's dirty bit, as the CPU's would.
    pub fn cpu_write_virtual(&mut self, address: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        let tables = self.page_tables();
        self.memory.cpu_write_virtual(tables, address, bytes)
    }

    /// The guest-physical pieces of `[address, address + length)` as the guest's CPU would
    /// reach them now, at its CPL and with its CR0.WP (see [`GuestMemory::cpu_pieces`]).
    pub fn cpu_pieces(
        &self,
        address: u64,
        length: usize,
        write: bool,
    ) -> Result<Vec<(u64, usize, usize)>, AccessFault> {
        let save = &self.vcpu.vmcb.save;
        let access = CpuAccess {
            write,
            user: save.cpl == 3,
            write_protect: Cr0Flags::from_bits_truncate(save.cr0).contains(Cr0Flags::WRITE_PROTECT),
        };
        self.memory
            .cpu_pieces(self.page_tables(), address, length, access)
    }

    /// Does every byte of the `length`-byte access at guest-virtual `address`, as the
    /// guest's CPU would make it now (`cpu_pieces`: mapped, allowed), land where nothing
    /// answers: above the domain's RAM, on no device, outside the grant-mapping area? Then
    /// the guest-physical address of its first byte. An access across a page boundary there
    /// reads all ones and writes nowhere, whichever page each byte is on, so it can be done
    /// as one, as a CPU does it. A page the CPU cannot reach at all (not mapped, not writable
    /// for a write, not canonical) is the fault it raises, whatever the other page is: the CPU
    /// translates every page of an access before it makes it.
    pub fn on_the_empty_bus(
        &self,
        address: u64,
        length: usize,
        write: bool,
    ) -> Result<Option<u64>, AccessFault> {
        // The whole access's canonical form first, as the CPU checks it (AMD APM vol. 2,
        // 5.3.1), before any page.
        if let Err(AccessFault::NonCanonical) = self.cpu_pieces(address, length, write) {
            return Err(AccessFault::NonCanonical);
        }
        let mut first = None;
        let mut empty = true;
        for (piece, _, piece_length) in memory::page_pieces(address, length) {
            match self.cpu_pieces(piece, piece_length, write) {
                Err(AccessFault::Memory(MemoryError::NotGuestMemory { gpa }))
                    if !self.devices.claims(gpa)
                        && !traplab_abi::grant_table::map_area().contains(&gpa) =>
                {
                    first = first.or(Some(gpa));
                }
                Err(fault @ AccessFault::PageFault { .. }) => return Err(fault),
                _ => empty = false,
            }
        }
        Ok(first.filter(|_| empty))
    }

    /// Read guest-virtual memory as the guest's CPU would read it now (`cpu_pieces`: mapped,
    /// a user page at CPL 3, in its RAM): what a hypercall reads of the guest's, as Xen's
    /// `copy_from_guest` does.
    pub fn cpu_read(&self, address: u64, buffer: &mut [u8]) -> Result<(), AccessFault> {
        self.cpu_pieces(address, buffer.len(), false)?;
        self.read_virtual(address, buffer)
            .map_err(AccessFault::Memory)
    }

    /// The bytes of the instruction at guest-virtual `address` (up to 15, fewer when a page
    /// that does not translate cuts them short): how many were read.
    pub fn fetch_instruction(&self, address: u64, buffer: &mut [u8; 15]) -> usize {
        self.memory
            .fetch_instruction(self.page_tables(), address, buffer)
    }

    /// Read guest-virtual memory up to the first page that does not translate; how many
    /// bytes were read (instruction fetch, gdb).
    pub fn read_virtual_prefix(&self, address: u64, buffer: &mut [u8]) -> usize {
        self.memory
            .read_virtual_prefix(self.page_tables(), address, buffer)
    }

    /// [`Domain::read_virtual_prefix`] as a debugger reads: it only looks, and a page of lazy
    /// RAM the guest has not touched yet reads as zeros and stays untouched
    /// ([`GuestMemory::look_only`]).
    pub fn look_virtual_prefix(&self, address: u64, buffer: &mut [u8]) -> usize {
        self.memory.look_only(true);
        let done = self.read_virtual_prefix(address, buffer);
        self.memory.look_only(false);
        done
    }

    /// The handler the guest's IDT names for `vector`: `None` when it has no interrupt or
    /// trap gate there the CPU can use ([`Domain::idt_gate`]).
    pub fn idt_handler(&self, vector: u8) -> Option<u64> {
        match self.idt_gate(vector) {
            IdtGate::Handler(handler) => Some(handler),
            IdtGate::Task { .. } | IdtGate::Unusable => None,
        }
    }

    /// What the guest's IDT holds for `vector`, as the CPU delivering it would find it.
    pub fn idt_gate(&self, vector: u8) -> IdtGate {
        let idtr = &self.vcpu.vmcb.save.idtr;
        // Long-mode gates are 16 bytes, protected-mode gates 8 (AMD APM vol. 2, 8.9.1, 4.8.4).
        let long_mode = self.vcpu.long_mode();
        let size: u64 = if long_mode { 16 } else { 8 };
        let offset = vector as u64 * size;
        if offset + size - 1 > idtr.limit as u64 {
            return IdtGate::Unusable;
        }
        let mut gate = [0u8; 16];
        if self
            .read_virtual(idtr.base.wrapping_add(offset), &mut gate[..size as usize])
            .is_err()
        {
            return IdtGate::Unusable;
        }
        if gate[5] & 0x80 == 0 {
            return IdtGate::Unusable; // not present
        }
        let low = u16::from_le_bytes([gate[0], gate[1]]) as u64;
        let middle = u16::from_le_bytes([gate[6], gate[7]]) as u64;
        let high = u32::from_le_bytes([gate[8], gate[9], gate[10], gate[11]]) as u64;
        // The gate's type (AMD APM vol. 2, "System-Segment Descriptor Types"): in long mode
        // only the 64-bit interrupt (0xE) and trap (0xF) gates; in legacy mode the task gate
        // (5), whose offset fields are reserved, and the 16-bit (6, 7, their offset the low
        // word alone) and 32-bit (0xE, 0xF) interrupt and trap gates. Any other is a #GP as
        // the CPU delivers through it.
        match (long_mode, gate[5] & 0x0f) {
            (true, 0xe | 0xf) => IdtGate::Handler(low | (middle << 16) | (high << 32)),
            (false, 0xe | 0xf) => IdtGate::Handler(low | (middle << 16)),
            (false, 0x6 | 0x7) => IdtGate::Handler(low),
            (false, 0x5) => IdtGate::Task {
                selector: u16::from_le_bytes([gate[2], gate[3]]),
            },
            _ => IdtGate::Unusable,
        }
    }

    /// Does the guest take its exceptions and software interrupts through its trap table now,
    /// bounced by the hypervisor (`delivery.rs`), rather than through its IDT? Only with a
    /// trap table, and only in its kernel: a PV kernel always (it is all kernel, at CPL 3), a
    /// non-PV kernel at CPL 0. An event of a non-PV kernel's user program (CPL 3) goes through
    /// its IDT, where the CPU switches to the kernel's stack (TSS.RSP0) and code segment. A
    /// bounce is written at the interrupted level, on the interrupted stack: from CPL 3 it would
    /// put a frame wherever the user program pointed RSP (the hypervisor writing it with
    /// supervisor rights) and run the kernel's handler at CPL 3. Xen, whose PV guests have no
    /// IDT, switches to the kernel's stack for a trap from user mode (`create_bounce_frame`,
    /// `toggle_guest_mode`); a non-PV kernel has the CPU for that.
    /// And only in 64-bit mode, whose frame a bounce writes and whose code the handler is
    /// (`set_trap_table` is refused outside it; a bounce keeps the interrupted CS, where an
    /// IDT gate would load a 64-bit one: a kernel in compatibility or legacy mode since takes
    /// its events through its IDT).
    pub fn bounces_events(&self) -> bool {
        !self.pv.trap_table.is_empty()
            && (self.pv.enabled || self.vcpu.vmcb.save.cpl == 0)
            && self.vcpu.vmcb.code_bits() == 64
    }

    /// The trap-table entry for `vector`, if the guest registered one and takes its events
    /// through the table now ([`Domain::bounces_events`]).
    pub fn trap_table_entry(&self, vector: u8) -> Option<TrapInfo> {
        match self.bounces_events() {
            true => self.pv.trap_table_entry(vector),
            false => None,
        }
    }

    /// Is this the control domain (dom0), which may set up channels and grants for others?
    pub fn privileged(&self) -> bool {
        self.id == 0
    }

    /// Can the guest take an external interrupt now? In PV mode its kernel's interrupt
    /// flag is the virtual one CLI/STI change (`exit/privileged.rs`), not RFLAGS.IF.
    pub fn interrupts_enabled(&self) -> bool {
        match self.pv.enabled {
            true => self.pv.virtual_interrupt_flag,
            false => RFlags::from_bits_truncate(self.vcpu.vmcb.save.rflags)
                .contains(RFlags::INTERRUPT_FLAG),
        }
    }
}

/// What the guest's IDT holds for a vector ([`Domain::idt_gate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdtGate {
    /// An interrupt or trap gate: the handler's address.
    Handler(u64),
    /// A task gate (legacy mode only): the CPU switches to the task whose TSS this selector
    /// names.
    Task { selector: u16 },
    /// Nothing the CPU can deliver through: beyond the IDT's limit, unreadable, not present
    /// (#NP), or of a type not valid in this mode (#GP).
    Unusable,
}

/// What a handler may look at: the domain, read-only, the other domains and the store
/// (read-only too), and what the machine under the hypervisor answers (the real CPU's
/// CPUID, the TSC rate). It dereferences to the [`Domain`]: `guest.gpr(0)`,
/// `guest.vcpu.vmcb.save.cr0`, `guest.read_virtual(…)`.
#[derive(Clone, Copy)]
pub struct Guest<'a> {
    pub domain: &'a Domain,
    pub others: Others<'a>,
    pub machine: &'a dyn Machine,
}

impl core::ops::Deref for Guest<'_> {
    type Target = Domain;

    fn deref(&self) -> &Domain {
        self.domain
    }
}
