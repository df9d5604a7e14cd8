//! The guest as gdb's target: registers (all at once, `g`/`G`, or one, `p`/`P`), memory, resume,
//! step, breakpoints.
//!
//! Everything here works on the stopped guest's state as the hypervisor holds it: the VMCB
//! (RIP, RSP, RAX, RFLAGS, segments, control registers), the saved context (the other
//! general registers and the FXSAVE image), and guest memory through the guest's page
//! tables and then the nested page tables (`domain/memory.rs`). An address that does not
//! translate gives gdb an error (EFAULT), never a fault in the hypervisor.

use super::arch::{GuestRegId, GuestRegisters, GuestX86_64};
use super::{Debuggee, HardwareSlot, Resume, SoftwareBreakpoint};
use crate::hardware::Hardware;
use crate::svm::fpu;
use gdbstub::common::Signal;
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::single_register_access::{
    SingleRegisterAccess, SingleRegisterAccessOps,
};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::MonitorCmdOps;
use gdbstub::target::{Target, TargetError, TargetResult};
use traplab_abi::x86::EferFlags;
use traplab_hv::domain::vcpu::{InstructionAt, dr7_slot_enables};
use traplab_hv::gdb::registers::{self, PACKET_BYTES, Refusal, Register, X87};
use traplab_hv::gdb::watch::watch_pieces;
use traplab_hv::vmcb::v_intr;
use traplab_hv::{Domain, apply};

/// EFAULT, the answer for memory gdb cannot have.
const EFAULT: u8 = 14;
/// EINVAL, the answer for a register value the stub does not write.
const EINVAL: u8 = 22;
/// The `int3` opcode.
pub const INT3: u8 = 0xcc;
const EFER_SVME: u64 = EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits();

impl Target for Debuggee {
    type Arch = GuestX86_64;
    type Error = &'static str;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    /// Acknowledgments stay on (GDB manual, "Packet Acknowledgment": `+` for a packet
    /// received correctly, `-` to request retransmission). Over the serial line they let the
    /// stub answer a damaged packet with `-` and the session go on (`wire.rs`); in no-ack mode
    /// neither side may send them.
    fn use_no_ack_mode(&self) -> bool {
        false
    }

    /// gdbstub offers fork, vfork and vforkdone stop events unless told otherwise
    /// (`qSupported`'s `fork-events+`, …); a domain never forks, and the stub never reports
    /// one: it does not offer them (GDB manual, "General Query Packets", qSupported).
    fn use_fork_stop_reason(&self) -> bool {
        false
    }

    fn use_vfork_stop_reason(&self) -> bool {
        false
    }

    fn use_vforkdone_stop_reason(&self) -> bool {
        false
    }
}

impl SingleThreadBase for Debuggee {
    fn read_registers(&mut self, registers: &mut GuestRegisters) -> TargetResult<(), Self> {
        // The x87 state and MXCSR may still be in the CPU (`svm/fpu.rs`).
        fpu::take_out(&mut self.domain_mut().vcpu.context);
        let vcpu = &self.domain().vcpu;
        for (number, slot) in registers.core.regs.iter_mut().enumerate() {
            if let Some(Register::General(encoding)) = Register::from_number(number) {
                *slot = vcpu.gpr(encoding);
            }
        }
        let save = &vcpu.vmcb.save;
        registers.core.rip = save.rip;
        registers.core.eflags = save.rflags as u32;
        let segments = &mut registers.core.segments;
        segments.cs = save.cs.selector as u32;
        segments.ss = save.ss.selector as u32;
        segments.ds = save.ds.selector as u32;
        segments.es = save.es.selector as u32;
        segments.fs = save.fs.selector as u32;
        segments.gs = save.gs.selector as u32;
        read_fpu(&vcpu.context.guest_fpu.0, registers);
        registers.fs_base = save.fs.base;
        registers.gs_base = save.gs.base;
        registers.k_gs_base = save.kernel_gs_base;
        registers.cr0 = save.cr0;
        registers.cr2 = save.cr2;
        registers.cr3 = save.cr3;
        registers.cr4 = save.cr4;
        // With V_INTR_MASKING the CPU keeps the guest's CR8 in V_TPR (AMD APM vol. 2,
        // 15.21.1), where the hypervisor's MOV CR8 puts it too (`exit/cr.rs`). Only its low
        // four bits are CR8: read more, and a `G` of what gdb read would send back bits that
        // `registers::refusal` refuses.
        registers.cr8 = vcpu.vmcb.control.virtual_interrupt & v_intr::CR8;
        registers.efer = save.efer & !EFER_SVME;
        Ok(())
    }

    /// General registers, RIP, RFLAGS, the x87/SSE state, FS/GS base, KernelGSbase and the
    /// control registers are written, each as a `P` writes it ([`store_register`]). A `G`
    /// with a value the stub does not write — a selector it changes, a CR8 or a segment base
    /// the CPU itself refuses (`registers::refusal`) — is refused whole, EINVAL, nothing
    /// written, and gdb says "Could not write registers". Other bad control-register values
    /// are the user's to make: VMRUN refuses them and the domain ends, as on hardware. gdb is
    /// not held to the guest's rules either: it may clear CR0.WP over pinned page tables, or
    /// load CR3 with a root the domain did not pin (`exit/cr.rs` refuses both to the guest),
    /// as it writes guest memory unchecked.
    fn write_registers(&mut self, registers: &GuestRegisters) -> TargetResult<(), Self> {
        let held = self.register_packet();
        let written = registers.to_packet();
        // Every register checked before any is written: the refusal is of the whole packet.
        let refused = Register::all().find_map(|register| {
            let bytes = register.slice(&written).unwrap_or_default();
            refused(register, &held, bytes)
        });
        if let Some(refusal) = refused {
            crate::log!(
                "gdb: a G packet writes {refusal}: refused whole (EINVAL), nothing written"
            );
            return Err(TargetError::Errno(EINVAL));
        }
        for register in Register::all() {
            let bytes = register.slice(&written).unwrap_or_default();
            store_register(self.domain_mut(), register, bytes);
        }
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        // What could be read before the first hole; nothing at all is an error.
        // Only a look: a lazy page gdb reads stays for the guest's first touch to map.
        let done = self.domain().look_virtual_prefix(start, data);
        if done == 0 && !data.is_empty() {
            return Err(TargetError::Errno(EFAULT));
        }
        // gdb's own int3s stay out of sight: it sees the bytes they replaced.
        self.hide_int3s(start, &mut data[..done]);
        Ok(done)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        self.domain_mut()
            .write_virtual(start, data)
            .map_err(|_| TargetError::Errno(EFAULT))
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, (), Self>> {
        Some(self)
    }
}

/// `p` and `P`: one register by gdb's number (GDB manual, "Packets"). gdb writes a register
/// the user sets (`set $rax = 5`) with `P` where the stub has it, and with `G` — every
/// register, read first — where it answers `P` with the empty packet. A `p` answers the
/// bytes a `g` has for the register; a `P` writes it as a `G` does, through the same check
/// and the same write.
impl SingleRegisterAccess<()> for Debuggee {
    fn read_register(
        &mut self,
        _tid: (),
        register: GuestRegId,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let GuestRegId::Known(register) = register else {
            crate::log!(
                "gdb: a p packet reads {register:?}, which the target description does not have: EINVAL"
            );
            return Err(TargetError::Errno(EINVAL));
        };
        let packet = self.register_packet();
        let bytes = register.slice(&packet).unwrap_or_default();
        let Some(answer) = buf.get_mut(..bytes.len()) else {
            return Err(TargetError::Errno(EINVAL));
        };
        answer.copy_from_slice(bytes);
        Ok(bytes.len())
    }

    fn write_register(
        &mut self,
        _tid: (),
        register: GuestRegId,
        value: &[u8],
    ) -> TargetResult<(), Self> {
        let GuestRegId::Known(register) = register else {
            crate::log!(
                "gdb: a P packet writes {register:?}, which the target description does not have: EINVAL"
            );
            return Err(TargetError::Errno(EINVAL));
        };
        // gdbstub passes on the value whatever its length: it must be the register's.
        if value.len() != register.size() {
            crate::log!(
                "gdb: a P packet writes {} bytes to {}, a register of {}: EINVAL",
                value.len(),
                register.name(),
                register.size()
            );
            return Err(TargetError::Errno(EINVAL));
        }
        let held = self.register_packet();
        if let Some(refusal) = refused(register, &held, value) {
            crate::log!("gdb: a P packet writes {refusal}: refused (EINVAL), nothing written");
            return Err(TargetError::Errno(EINVAL));
        }
        store_register(self.domain_mut(), register, value);
        Ok(())
    }
}

impl Debuggee {
    /// The `g` packet's data: what a `p` answers slices of, and the values a `G` or `P`
    /// write is checked against.
    fn register_packet(&mut self) -> [u8; PACKET_BYTES] {
        let mut registers = GuestRegisters::default();
        // Reading the guest's registers cannot fail (it is a look at the VMCB, the saved
        // context and the FXSAVE image).
        let _ = self.read_registers(&mut registers);
        registers.to_packet()
    }
}

/// Why `written` does not go into `register` (`registers::refusal`), given the registers the
/// guest holds now (`held`, a `g` packet's data).
fn refused(register: Register, held: &[u8; PACKET_BYTES], written: &[u8]) -> Option<Refusal> {
    registers::refusal(register, register.slice(held).unwrap_or_default(), written)
}

/// Store one register's value, checked first ([`refused`]): `bytes` are the value as `P`
/// or a slice of `G` carries them, little-endian, [`Register::size`] of them. A `G` stores
/// every register, most as they were: no store does more than write a value unless the
/// value changes (a TLB flush, the APIC's TPR).
fn store_register(domain: &mut Domain, register: Register, bytes: &[u8]) {
    let value = registers::value(bytes);
    let vcpu = &mut domain.vcpu;
    // gdb moves the guest off the RTC access that waited for its interrupt, stopped at that
    // access's exit (`jump`, `set $pc`): it is not coming back to run, and the next may
    // wait (`Vcpu::rtc_access_waited_at`). (Moved inside the handler, the guest's IRET still
    // returns to it.)
    let (rip, rsp) = (vcpu.vmcb.save.rip, vcpu.vmcb.save.rsp);
    let moves = match register {
        Register::Rip => value != rip,
        Register::General(4) => value != rsp,
        _ => false,
    };
    if moves && vcpu.rtc_access_waited_at == Some(InstructionAt::of(vcpu)) {
        vcpu.rtc_access_waited_at = None;
    }
    let save = &mut vcpu.vmcb.save;
    match register {
        Register::General(number) => vcpu.set_gpr(number, value),
        Register::Rip => save.rip = value,
        // gdb's eflags is RFLAGS' low half; the high one is reserved (APM vol. 2, 3.1.6).
        Register::Eflags => save.rflags = (save.rflags & !0xffff_ffff) | (value & 0xffff_ffff),
        // Refused unless it is the one the guest holds ([`refused`]): nothing to store.
        Register::Selector(_) => {}
        Register::St(_) | Register::X87(_) | Register::Xmm(_) | Register::Mxcsr => {
            // Out of the CPU, so that the written image is what the next VMRUN loads.
            fpu::take_out(&mut vcpu.context);
            write_fpu(&mut vcpu.context.guest_fpu.0, register, bytes);
        }
        Register::FsBase => save.fs.base = value,
        Register::GsBase => save.gs.base = value,
        Register::KernelGsBase => save.kernel_gs_base = value,
        Register::Cr0 | Register::Cr3 | Register::Cr4 => {
            let slot = match register {
                Register::Cr0 => &mut save.cr0,
                Register::Cr3 => &mut save.cr3,
                _ => &mut save.cr4,
            };
            if *slot != value {
                *slot = value;
                // The translations the guest's TLB entries hold may be stale now: the next
                // VMRUN flushes them all (TLB_CONTROL 1, AMD APM vol. 2, 15.16).
                vcpu.vmcb.control.tlb_control = 1;
            }
        }
        Register::Cr2 => save.cr2 = value,
        // With V_INTR_MASKING the CPU keeps the guest's CR8 in V_TPR (AMD APM vol. 2,
        // 15.21.1). CR8 is the local APIC's TPR bits 7:4 (Intel SDM vol. 3A, 11.8.6.1): the
        // APIC holds back what CR8 says, as after the guest's own MOV CR8, and what it no
        // longer holds back comes as soon as the guest runs (`apply.rs`). (`refusal` let
        // only 4 bits through.)
        Register::Cr8 => apply::task_priority_from_debugger(domain, value as u8),
        // VMRUN needs EFER.SVME set in the guest's EFER; the guest never sees it.
        Register::Efer => save.efer = value | EFER_SVME,
    }
}

impl SingleThreadResume for Debuggee {
    /// A signal gdb passes on is not delivered: a guest has no signals, only exceptions.
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.resume = Resume::Continue;
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for Debuggee {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.resume = Resume::Step;
        Ok(())
    }
}

impl Breakpoints for Debuggee {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for Debuggee {
    fn add_sw_breakpoint(&mut self, address: u64, _kind: usize) -> TargetResult<bool, Self> {
        // Inserted already (a client that sends Z0 twice): the byte under it now is our
        // INT3, not the guest's, and must not be saved as its original.
        if self
            .software_breakpoints
            .iter()
            .any(|breakpoint| breakpoint.address == address)
        {
            return Ok(true);
        }
        let mut original = [0u8; 1];
        if self.domain().read_virtual(address, &mut original).is_err()
            || self.domain_mut().write_virtual(address, &[INT3]).is_err()
        {
            return Ok(false);
        }
        // Written, so it translates: where it went, to take it out there.
        let domain = self.domain();
        let Ok(gpa) = domain
            .memory
            .virtual_to_physical(domain.page_tables(), address)
        else {
            return Ok(false);
        };
        self.software_breakpoints.push(SoftwareBreakpoint {
            address,
            gpa,
            original: original[0],
        });
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, address: u64, _kind: usize) -> TargetResult<bool, Self> {
        let Some(index) = self
            .software_breakpoints
            .iter()
            .position(|breakpoint| breakpoint.address == address)
        else {
            return Ok(false);
        };
        let breakpoint = self.software_breakpoints.remove(index);
        breakpoint.take_out(self.domain_mut());
        Ok(true)
    }
}

impl HwBreakpoint for Debuggee {
    fn add_hw_breakpoint(&mut self, address: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(take_slot(
            self,
            HardwareSlot {
                address,
                length: 1,
                watch: None,
                range: (address, 1),
            },
        ))
    }

    fn remove_hw_breakpoint(&mut self, address: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(release_slot(self, |slot| {
            slot.watch.is_none() && slot.address == address
        }))
    }
}

impl HwWatchpoint for Debuggee {
    fn add_hw_watchpoint(
        &mut self,
        address: u64,
        length: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        // A debug register watches 1, 2, 4 or 8 bytes, aligned to their size (APM vol. 2,
        // 13.1.1.5). A remote target splits any other range itself, as gdbserver does (gdb
        // sends `Z2,addr,16` whole): aligned pieces, one slot each, all of them or none.
        let pieces = watch_pieces(address, length);
        let free = (0..4).filter(|&slot| is_free(self, slot)).count();
        if pieces.is_empty() || pieces.len() > free {
            return Ok(false);
        }
        for (piece, piece_length) in pieces {
            take_slot(
                self,
                HardwareSlot {
                    address: piece,
                    length: piece_length,
                    watch: Some(kind),
                    range: (address, length),
                },
            );
        }
        Ok(true)
    }

    fn remove_hw_watchpoint(
        &mut self,
        address: u64,
        length: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        let watched =
            |slot: &HardwareSlot| slot.watch == Some(kind) && slot.range == (address, length);
        let mut released = false;
        while release_slot(self, watched) {
            released = true;
        }
        Ok(released)
    }
}

// ---- Debug-register slots ----------------------------------------------------------------

/// DR7 bits for slot `n`: L`n` (bit 2n) enables it; R/W`n` (bits 16+4n) say what it
/// watches: 00 execute, 01 write, 11 read or write (x86 has no read-only watch); LEN`n`
/// (bits 18+4n): 00 one byte, 01 two, 11 four, 10 eight (APM vol. 2, 13.1.1.5).
fn dr7_bits(slot: usize, hardware: &HardwareSlot) -> u64 {
    let access = match hardware.watch {
        None => 0b00,
        Some(WatchKind::Write) => 0b01,
        Some(WatchKind::Read | WatchKind::ReadWrite) => 0b11,
    };
    let length = match hardware.length {
        2 => 0b01,
        4 => 0b11,
        8 => 0b10,
        _ => 0b00,
    };
    (1 << (2 * slot)) | (access << (16 + 4 * slot)) | (length << (18 + 4 * slot))
}

/// Slot `n` is free for gdb: gdb does not hold it, and the guest has not enabled it.
fn is_free(debuggee: &Debuggee, slot: usize) -> bool {
    debuggee.hardware_slots[slot].is_none()
        && debuggee.domain().vcpu.guest_dr7() & dr7_slot_enables(slot) == 0
}

/// Give gdb a slot the guest has not enabled, from DR3 down (guests count up from DR0).
fn take_slot(debuggee: &mut Debuggee, hardware: HardwareSlot) -> bool {
    let Some(slot) = (0..4).rev().find(|&slot| is_free(debuggee, slot)) else {
        return false;
    };
    debuggee.hardware_slots[slot] = Some(hardware);
    let on_cpu = debuggee.on_cpu;
    let vcpu = &mut debuggee.domain_mut().vcpu;
    if on_cpu {
        // The guest's own MOVs may have put its DR0–DR3 in the CPU since it was switched in
        // (only DR7 writes exit until every access does: a slot lent, GD set, the setting
        // `intercept-dr`): from now on they exit, and its reads are answered from the copies.
        vcpu.keep_breakpoint_addresses(&Hardware);
    }
    vcpu.lend_slot(slot, hardware.address, dr7_bits(slot, &hardware));
    if on_cpu {
        vcpu.load_debug_registers(&mut Hardware);
    }
    true
}

fn release_slot(debuggee: &mut Debuggee, matches: impl Fn(&HardwareSlot) -> bool) -> bool {
    let Some(slot) =
        (0..4).find(|&slot| debuggee.hardware_slots[slot].as_ref().is_some_and(&matches))
    else {
        return false;
    };
    debuggee.hardware_slots[slot] = None;
    let on_cpu = debuggee.on_cpu;
    clear_slot(debuggee.domain_mut(), slot, on_cpu);
    true
}

/// Give slot `n` back to the guest: its DRn and its DR7 bits as it left them, its writes
/// while gdb held the slot included (`Vcpu::take_back_slot`). `on_cpu`: the domain's vCPU
/// has the CPU, whose debug registers are then its own (otherwise `run::switch_in` loads
/// them when it is switched in; under TCG a breakpoint is armed only once a MOV to DR7 has
/// run, `exit/dr.rs`).
pub fn clear_slot(domain: &mut Domain, slot: usize, on_cpu: bool) {
    domain.vcpu.take_back_slot(slot);
    if on_cpu {
        domain.vcpu.load_debug_registers(&mut Hardware);
    }
}

// ---- The x87/SSE state in the FXSAVE image (AMD APM vol. 5, FXSAVE) ---------------------

fn word(area: &[u8], offset: usize) -> u32 {
    u16::from_le_bytes([area[offset], area[offset + 1]]) as u32
}

fn dword(area: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        area[offset],
        area[offset + 1],
        area[offset + 2],
        area[offset + 3],
    ])
}

fn read_fpu(area: &[u8; 512], registers: &mut GuestRegisters) {
    let fpu = &mut registers.core.fpu;
    fpu.fctrl = word(area, 0);
    fpu.fstat = word(area, 2);
    // FXSAVE keeps an abridged tag (one bit per register, 1 = valid); gdb shows the full
    // two-bit form, where 11 means empty.
    let abridged = area[4];
    fpu.ftag = (0..8).fold(0, |tag, n| {
        if abridged & (1 << n) == 0 {
            tag | (0b11 << (2 * n))
        } else {
            tag
        }
    });
    fpu.fop = word(area, 6);
    fpu.fioff = dword(area, 8);
    fpu.fiseg = word(area, 12);
    fpu.fooff = dword(area, 16);
    fpu.foseg = word(area, 20);
    for (n, st) in registers.core.st.iter_mut().enumerate() {
        st.copy_from_slice(&area[32 + 16 * n..32 + 16 * n + 10]);
    }
    for (n, xmm) in registers.core.xmm.iter_mut().enumerate() {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&area[160 + 16 * n..176 + 16 * n]);
        *xmm = u128::from_le_bytes(bytes);
    }
    registers.core.mxcsr = dword(area, 24);
}

/// Write one x87 or SSE register into the FXSAVE image.
fn write_fpu(area: &mut [u8; 512], register: Register, bytes: &[u8]) {
    // `bytes` into the image at `at`, no more than `length` of them.
    let mut put = |at: usize, length: usize, bytes: &[u8]| {
        for (slot, &byte) in area.iter_mut().skip(at).zip(bytes.iter().take(length)) {
            *slot = byte;
        }
    };
    let value = registers::value(bytes) as u32;
    match register {
        // FCW and FSW are 16 bits in the image, 32 in gdb's packet.
        Register::X87(X87::Fctrl) => put(0, 2, bytes),
        Register::X87(X87::Fstat) => put(2, 2, bytes),
        Register::X87(X87::Ftag) => {
            let abridged = (0..8).fold(0u8, |tag, n| {
                if (value >> (2 * n)) & 0b11 != 0b11 {
                    tag | (1 << n)
                } else {
                    tag
                }
            });
            put(4, 1, &[abridged]);
        }
        // The last x87 instruction's and operand's pointers and its opcode, where `read_fpu`
        // reads them (the hypervisor saves the legacy FXSAVE format, `svm/fpu.rs`; AMD APM
        // vol. 5, FXSAVE: FOP at byte 6, the instruction pointer at 8 and its selector at 12,
        // the operand's at 16 and 20), and the next `g` reads what was written. Whether the
        // CPU then holds them is FXRSTOR's to say: AMD's load them only with an exception
        // pending (FSW.ES) unless CPUID Fn8000_0008 EBX[2] says otherwise, and QEMU's TCG
        // never does, so a guest's FNSTENV after it may show its own. (gdb has them 32 bits
        // wide; the opcode has 11 bits, the selectors 16, as the image keeps them.)
        Register::X87(X87::Fop) => put(6, 2, &(value & 0x7ff).to_le_bytes()),
        Register::X87(X87::Fioff) => put(8, 4, bytes),
        Register::X87(X87::Fiseg) => put(12, 2, bytes),
        Register::X87(X87::Fooff) => put(16, 4, bytes),
        Register::X87(X87::Foseg) => put(20, 2, bytes),
        Register::St(n) => put(32 + 16 * usize::from(n), 10, bytes),
        Register::Xmm(n) => put(160 + 16 * usize::from(n), 16, bytes),
        Register::Mxcsr => {
            // A reserved bit set in MXCSR would make the FXRSTOR that loads the image raise
            // #GP (AMD APM vol. 5, FXRSTOR) in the hypervisor: the bits MXCSR_MASK (bytes
            // 28–31) does not allow are cleared. A mask of 0 means the default, 0xffbf (Intel
            // SDM vol. 1, 11.6.6 "Guidelines for Writing to the MXCSR Register").
            let mask = match dword(area, 28) {
                0 => 0xffbf,
                mask => mask,
            };
            area[24..28].copy_from_slice(&(value & mask).to_le_bytes());
        }
        _ => {}
    }
}
