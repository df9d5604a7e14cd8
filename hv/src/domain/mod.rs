//! A domain: one guest, its VMCB, its registers, its memory and its devices.
//!
//! The exit handlers work on a `Domain`. Everything they change in the guest goes through
//! the methods here, which record each change for the trace (`emulate` events list them).

mod interrupts;
pub mod loader;
pub mod memory;
mod page_tables;

use crate::device::lab_device::LabDevice;
use crate::device::uart::Uart;
use crate::svm::vmcb::Vmcb;
use crate::svm::world_switch::GuestContext;
use crate::trace;
use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
pub use interrupts::{TimerPoll, VirtualTimer};
use memory::{GuestMemory, MemoryError};
use traplab_abi::event::{Body, Change, Console, Emulate, Inject, InstructionBytes, Registers};
use traplab_abi::hypercall::TrapInfo;
use traplab_abi::svm::{self, EventType};

/// What the current exit has done so far (reset at every exit).
#[derive(Default)]
pub struct ExitState {
    /// TSC at the #VMEXIT.
    pub tsc: u64,
    /// Up to 15 bytes at RIP (fewer when RIP is near an unmapped page).
    pub instruction: InstructionBytes,
    /// Registers and locations changed by the handler, for the `emulate` event.
    pub changes: Vec<Change>,
    /// Set when the handler injected an event: the guest handler it enters, if known.
    pub injected: Option<Option<u64>>,
    /// Where the guest continues when it is not VMCB.RIP nor an injected event's handler:
    /// the target of an IRET the hypervisor watched.
    pub resume_at: Option<u64>,
}

/// An event the hypervisor delivered whose handler has not returned yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    pub vector: u8,
    pub kind: EventType,
}

pub struct Domain {
    pub id: u16,
    pub name: String,
    /// The VMCB, in a frame of its own; `vmcb_pa` is its physical address.
    pub vmcb: &'static mut Vmcb,
    pub vmcb_pa: u64,
    /// The general registers VMRUN does not switch, and the x87/SSE state.
    pub context: Box<GuestContext>,
    pub memory: GuestMemory,
    /// The emulated console UART (COM1).
    pub console: Uart,
    pub exit: ExitState,
    /// Handlers registered with `set_trap_table`: exceptions with an entry are bounced.
    /// Empty: every exception is reflected through the guest's IDT.
    pub trap_table: Vec<TrapInfo>,
    /// Delivered events whose handlers have not returned, innermost last.
    pub in_flight: Vec<InFlight>,
    /// The IRET intercept is off for one IRET (see `exit/iret.rs`); back on at the next exit.
    pub iret_intercept_suspended: bool,
    /// The lab MMIO device (`device/lab_device.rs`).
    pub lab_device: LabDevice,
    /// Pinned guest page tables: guest-physical page → level (`page_tables.rs`).
    pub page_tables: BTreeMap<u64, u8>,
    /// The guest's DR0–DR3 (VMRUN switches only DR6 and DR7; see `exit/dr.rs`).
    pub debug_registers: [u64; 4],
    /// The RIP of the last INT n we injected (RIP was moved past it), to put it back if its
    /// delivery faults (`exit/exception.rs`).
    pub software_interrupt_rip: Option<u64>,
    /// The periodic timer the guest asked for (`set_timer`), if any (`interrupts.rs`).
    pub timer: Option<VirtualTimer>,
    /// An interrupt vector waiting for the guest to take it.
    pub pending_interrupt: Option<u8>,
    /// PV mode (`set_pv_mode`): the kernel runs at CPL 3 and the hypervisor emulates its
    /// privileged instructions (`exit/privileged.rs`).
    pub pv_mode: bool,
    /// A PV kernel's interrupt flag, which its emulated CLI and STI change.
    pub virtual_interrupt_flag: bool,
    /// The gdb session attached to this domain, if any (`gdb/mod.rs`).
    pub debugger: Option<Box<crate::gdb::Debugger>>,
}

/// General registers by their x86 encoding number (0 = RAX … 15 = R15).
const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

const CR0_PG: u64 = 1 << 31;
const EFER_LMA: u64 = 1 << 10;

impl Domain {
    /// The guest's page-table root, or `None` when paging is off.
    pub fn cr3(&self) -> Option<u64> {
        (self.vmcb.save.cr0 & CR0_PG != 0).then_some(self.vmcb.save.cr3)
    }

    /// Read a general register by encoding number. RAX and RSP live in the VMCB. A 32-bit
    /// guest sees only the low halves (its registers are EAX…EDI).
    pub fn gpr(&self, number: u8) -> u64 {
        let value = self.gpr_64(number);
        if self.vmcb.code_bits() == 64 {
            value
        } else {
            value & 0xffff_ffff
        }
    }

    fn gpr_64(&self, number: u8) -> u64 {
        let context = &self.context;
        match number & 15 {
            0 => self.vmcb.save.rax,
            1 => context.rcx,
            2 => context.rdx,
            3 => context.rbx,
            4 => self.vmcb.save.rsp,
            5 => context.rbp,
            6 => context.rsi,
            7 => context.rdi,
            8 => context.r8,
            9 => context.r9,
            10 => context.r10,
            11 => context.r11,
            12 => context.r12,
            13 => context.r13,
            14 => context.r14,
            _ => context.r15,
        }
    }

    /// Write a general register, and record the change.
    pub fn set_gpr(&mut self, number: u8, value: u64) {
        let old = self.gpr_64(number);
        self.record(GPR_NAMES[(number & 15) as usize], old, value);
        let context = &mut self.context;
        let slot = match number & 15 {
            0 => &mut self.vmcb.save.rax,
            1 => &mut context.rcx,
            2 => &mut context.rdx,
            3 => &mut context.rbx,
            4 => &mut self.vmcb.save.rsp,
            5 => &mut context.rbp,
            6 => &mut context.rsi,
            7 => &mut context.rdi,
            8 => &mut context.r8,
            9 => &mut context.r9,
            10 => &mut context.r10,
            11 => &mut context.r11,
            12 => &mut context.r12,
            13 => &mut context.r13,
            14 => &mut context.r14,
            _ => &mut context.r15,
        };
        *slot = value;
    }

    /// Record a change for the next `emulate` event.
    pub fn record(&mut self, name: &'static str, old: u64, new: u64) {
        if old != new {
            self.exit.changes.push(Change {
                name: Cow::Borrowed(name),
                old,
                new,
            });
        }
    }

    /// Move RIP past the instruction the guest exited on (`length` bytes), as the CPU would
    /// have after executing it. The interrupt shadow of a preceding STI/MOV SS ends with it.
    pub fn skip_instruction(&mut self, length: u64) {
        let old = self.vmcb.save.rip;
        let new = if self.vmcb.code_bits() == 64 {
            old.wrapping_add(length)
        } else {
            (old + length) & 0xffff_ffff
        };
        self.set_rip(new);
    }

    /// Continue the guest at `rip` (recorded), ending any interrupt shadow.
    pub fn set_rip(&mut self, rip: u64) {
        self.record("rip", self.vmcb.save.rip, rip);
        self.vmcb.save.rip = rip;
        self.vmcb.control.interrupt_shadow &= !1;
    }

    /// The general registers, for events.
    pub fn registers(&self) -> Registers {
        let context = &self.context;
        Registers {
            rax: self.vmcb.save.rax,
            rbx: context.rbx,
            rcx: context.rcx,
            rdx: context.rdx,
            rsi: context.rsi,
            rdi: context.rdi,
            rbp: context.rbp,
            rsp: self.vmcb.save.rsp,
            r8: context.r8,
            r9: context.r9,
            r10: context.r10,
            r11: context.r11,
            r12: context.r12,
            r13: context.r13,
            r14: context.r14,
            r15: context.r15,
        }
    }

    pub fn read_virtual(&self, address: u64, buffer: &mut [u8]) -> Result<(), MemoryError> {
        self.memory.read_virtual(self.cr3(), address, buffer)
    }

    pub fn write_virtual(&self, address: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        self.memory.write_virtual(self.cr3(), address, bytes)
    }

    /// Read the instruction bytes at RIP into `self.exit.instruction` (up to 15, stopping
    /// at the first byte that is not mapped).
    pub fn fetch_instruction(&mut self) {
        let rip = self.vmcb.linear_rip();
        let mut bytes = [0u8; 15];
        let length = self.read_virtual_prefix(rip, &mut bytes);
        self.exit.instruction = InstructionBytes::new(&bytes[..length]);
    }

    /// Read guest-virtual memory page by page, up to the first page that does not
    /// translate; returns how many bytes were read (gdb's memory reads, instruction fetch).
    pub fn read_virtual_prefix(&self, address: u64, buffer: &mut [u8]) -> usize {
        let mut length = 0;
        while length < buffer.len() {
            // Read up to the end of the current page at once.
            let at = address.wrapping_add(length as u64);
            let in_page = (4096 - (at & 4095)) as usize;
            let piece = in_page.min(buffer.len() - length);
            if self
                .read_virtual(at, &mut buffer[length..length + piece])
                .is_err()
            {
                break;
            }
            length += piece;
        }
        length
    }

    /// Decode the instruction at RIP.
    pub fn decode(&self) -> Option<iced_x86::Instruction> {
        crate::decode::decode(
            self.exit.instruction.as_slice(),
            self.vmcb.code_bits(),
            self.vmcb.save.rip,
        )
    }

    /// The handler the guest's IDT names for `vector`: `None` when the gate is outside the
    /// IDT limit, not present, or not readable.
    pub fn idt_handler(&self, vector: u8) -> Option<u64> {
        let idtr = &self.vmcb.save.idtr;
        let long_mode = self.vmcb.save.efer & EFER_LMA != 0;
        // Long-mode gates are 16 bytes, protected-mode gates 8 (AMD APM vol. 2, 8.9.1, 4.8.4).
        let size: u64 = if long_mode { 16 } else { 8 };
        let offset = vector as u64 * size;
        if offset + size - 1 > idtr.limit as u64 {
            return None;
        }
        let mut gate = [0u8; 16];
        self.read_virtual(idtr.base.wrapping_add(offset), &mut gate[..size as usize])
            .ok()?;
        let present = gate[5] & 0x80 != 0;
        if !present {
            return None;
        }
        let low = u16::from_le_bytes([gate[0], gate[1]]) as u64;
        let middle = u16::from_le_bytes([gate[6], gate[7]]) as u64;
        let high = if long_mode {
            u32::from_le_bytes([gate[8], gate[9], gate[10], gate[11]]) as u64
        } else {
            0
        };
        Some(low | (middle << 16) | (high << 32))
    }

    /// Put `event` in EVENTINJ: VMRUN delivers it through the guest's IDT (AMD APM vol. 2,
    /// 15.20). For a #PF, set CR2 first (`set_cr2`): the intercepted #PF did not.
    pub fn inject(&mut self, event: svm::Event, synthetic: bool) {
        self.vmcb.control.eventinj = event.encode();
        let handler = self.idt_handler(event.vector);
        self.exit.injected = Some(handler);
        self.in_flight.push(InFlight {
            vector: event.vector,
            kind: event.kind,
        });
        if !trace::enabled() {
            return;
        }
        let name = event_name(event.vector, event.kind);
        let cr2 = (event.kind == EventType::Exception && event.vector == 14)
            .then_some(self.vmcb.save.cr2);
        trace::emit(
            Some(self.id),
            Body::Inject(Inject {
                vector: event.vector,
                name,
                kind: event.kind,
                error_code: event.error_code,
                cr2,
                handler,
                synthetic,
            }),
        );
    }

    /// The trap-table entry for `vector`, if the guest registered one.
    pub fn trap_table_entry(&self, vector: u8) -> Option<TrapInfo> {
        self.trap_table
            .iter()
            .copied()
            .find(|entry| entry.vector == vector)
    }

    pub fn set_cr2(&mut self, value: u64) {
        self.record("cr2", self.vmcb.save.cr2, value);
        self.vmcb.save.cr2 = value;
    }

    /// Emit the `emulate` event: `what` was done, with the changes recorded so far.
    pub fn emulated(&mut self, what: impl Into<Cow<'static, str>>) {
        let changes = core::mem::take(&mut self.exit.changes);
        if trace::enabled() {
            trace::emit(
                Some(self.id),
                Body::Emulate(Emulate {
                    what: what.into(),
                    changes,
                }),
            );
        }
    }

    /// Bytes the guest wrote to its console (UART or hypercall): complete lines become
    /// `console` events.
    pub fn console_write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if let Some(line) = self.console.transmit(byte) {
                self.console_line(line);
            }
        }
    }

    pub fn console_line(&self, text: String) {
        if trace::has_reader() {
            trace::emit(
                Some(self.id),
                Body::Console(Console {
                    text: Cow::Owned(text),
                }),
            );
        } else {
            // Nobody reads the trace: the console goes to the hypervisor log.
            crate::console::write_fmt(format_args!("dom{}| {}\n", self.id, text));
            if trace::enabled() {
                trace::emit(
                    Some(self.id),
                    Body::Console(Console {
                        text: Cow::Owned(text),
                    }),
                );
            }
        }
    }
}

/// How the trace names an event: `#PF`, `NMI`, `#BP (INT3)`, `INT 0x80`, `interrupt 0x20`.
pub fn event_name(vector: u8, kind: EventType) -> Cow<'static, str> {
    match (kind, vector) {
        (EventType::Exception | EventType::Nmi, vector) => {
            Cow::Borrowed(traplab_abi::x86::exception(vector).mnemonic)
        }
        (EventType::Software, 3) => Cow::Borrowed("#BP (INT3)"),
        (EventType::Software, 4) => Cow::Borrowed("#OF (INTO)"),
        (EventType::Software, vector) => Cow::Owned(format!("INT {vector:#x}")),
        (EventType::Interrupt, vector) => Cow::Owned(format!("interrupt {vector:#x}")),
    }
}
