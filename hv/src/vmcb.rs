//! The Virtual Machine Control Block: one 4 KiB page per guest that tells VMRUN what to
//! intercept and holds the guest's state while it does not run.
//!
//! Layout: AMD APM vol. 2, appendix B "Layout of VMCB", tables B-1 (control area, offsets
//! 0x000–0x3FF) and B-2 (state save area, from 0x400). Every field carries its offset;
//! the `offset_of!` assertions below check them at compile time.

use alloc::boxed::Box;
use core::mem::{offset_of, size_of};
use traplab_abi::x86::EferFlags;

/// The control area: intercepts, exit information, event injection.
#[repr(C)]
pub struct ControlArea {
    /// +0x000: bits 15:0 intercept reads of CR0–15, bits 31:16 writes.
    pub intercept_cr: u32,
    /// +0x004: bits 15:0 intercept reads of DR0–15, bits 31:16 writes.
    pub intercept_dr: u32,
    /// +0x008: bit n intercepts exception vector n.
    pub intercept_exceptions: u32,
    /// +0x00C: INTR, NMI, …, SHUTDOWN (bit n ↔ exit code 0x60 + n).
    pub intercept_misc1: u32,
    /// +0x010: VMRUN, VMMCALL, …, XSETBV (bit n ↔ exit code 0x80 + n).
    pub intercept_misc2: u32,
    /// +0x014: INVLPGB, INVPCID, MCOMMIT, TLBSYNC.
    pub intercept_misc3: u32,
    _reserved_018: [u8; 0x24],
    /// +0x03C
    pub pause_filter_threshold: u16,
    /// +0x03E
    pub pause_filter_count: u16,
    /// +0x040: physical address of the 12 KiB I/O permission map.
    pub iopm_base_pa: u64,
    /// +0x048: physical address of the 8 KiB MSR permission map.
    pub msrpm_base_pa: u64,
    /// +0x050: added to the TSC while the guest runs.
    pub tsc_offset: u64,
    /// +0x058: the guest's address space ID (must not be 0: that is the host's).
    pub guest_asid: u32,
    /// +0x05C: 0 = do nothing, 1 = flush the whole TLB at VMRUN.
    pub tlb_control: u8,
    _reserved_05d: [u8; 3],
    /// +0x060: V_TPR, V_IRQ (bit 8), V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING (bit 24), V_INTR_VECTOR (39:32).
    pub virtual_interrupt: u64,
    /// +0x068: bit 0 = the guest is in an interrupt shadow (after STI or MOV SS).
    pub interrupt_shadow: u64,
    /// +0x070: why the guest exited (appendix C).
    pub exitcode: u64,
    /// +0x078
    pub exitinfo1: u64,
    /// +0x080
    pub exitinfo2: u64,
    /// +0x088: the event whose delivery the exit interrupted (EVENTINJ format).
    pub exitintinfo: u64,
    /// +0x090: bit 0 = nested paging on.
    pub np_enable: u64,
    /// +0x098
    pub avic_apic_bar: u64,
    /// +0x0A0
    pub ghcb_pa: u64,
    /// +0x0A8: an event for VMRUN to deliver to the guest (15.20 "Event Injection").
    pub eventinj: u64,
    /// +0x0B0: the nested page tables' root (host-physical).
    pub n_cr3: u64,
    /// +0x0B8: bit 0 LBR virtualisation, bit 1 virtual VMSAVE/VMLOAD.
    pub virtualization_extensions: u64,
    /// +0x0C0: which state-save fields are unchanged since the last VMRUN (we never cache: 0).
    pub vmcb_clean: u32,
    _reserved_0c4: u32,
    /// +0x0C8: the next RIP, when the CPU has NRIP save (QEMU's TCG does not).
    pub next_rip: u64,
    /// +0x0D0: bytes fetched, with decode assists.
    pub instruction_bytes_fetched: u8,
    /// +0x0D1
    pub instruction_bytes: [u8; 15],
    _reserved_0e0: [u8; 0x400 - 0xe0],
}

/// A segment register as the VMCB stores it: the hidden part included.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Segment {
    pub selector: u16,
    /// The descriptor's attribute bits, compressed: 7:0 = type, S, DPL, P (descriptor
    /// bits 47:40); 11:8 = AVL, L, D/B, G (descriptor bits 55:52).
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// The segment registers by number, in the order of the state save area, of EXITINFO1's
/// SEG field for string I/O and of the instruction encoding's Sreg field (AMD APM vol. 2,
/// 15.10.2; vol. 3, 1.4.2).
pub mod segment {
    pub const ES: u8 = 0;
    pub const CS: u8 = 1;
    pub const SS: u8 = 2;
    pub const DS: u8 = 3;
    pub const FS: u8 = 4;
    pub const GS: u8 = 5;
}

/// The state save area: the guest's registers while it is not running.
#[repr(C)]
pub struct StateSaveArea {
    /// +0x400
    pub es: Segment,
    /// +0x410
    pub cs: Segment,
    /// +0x420
    pub ss: Segment,
    /// +0x430
    pub ds: Segment,
    /// +0x440
    pub fs: Segment,
    /// +0x450
    pub gs: Segment,
    /// +0x460
    pub gdtr: Segment,
    /// +0x470
    pub ldtr: Segment,
    /// +0x480
    pub idtr: Segment,
    /// +0x490
    pub tr: Segment,
    _reserved_4a0: [u8; 0x2b],
    /// +0x4CB: the current privilege level.
    pub cpl: u8,
    _reserved_4cc: u32,
    /// +0x4D0
    pub efer: u64,
    _reserved_4d8: [u8; 0x70],
    /// +0x548
    pub cr4: u64,
    /// +0x550
    pub cr3: u64,
    /// +0x558
    pub cr0: u64,
    /// +0x560
    pub dr7: u64,
    /// +0x568
    pub dr6: u64,
    /// +0x570
    pub rflags: u64,
    /// +0x578
    pub rip: u64,
    _reserved_580: [u8; 0x58],
    /// +0x5D8
    pub rsp: u64,
    /// +0x5E0
    pub s_cet: u64,
    /// +0x5E8
    pub ssp: u64,
    /// +0x5F0
    pub isst_addr: u64,
    /// +0x5F8
    pub rax: u64,
    /// +0x600
    pub star: u64,
    /// +0x608
    pub lstar: u64,
    /// +0x610
    pub cstar: u64,
    /// +0x618
    pub sfmask: u64,
    /// +0x620
    pub kernel_gs_base: u64,
    /// +0x628
    pub sysenter_cs: u64,
    /// +0x630
    pub sysenter_esp: u64,
    /// +0x638
    pub sysenter_eip: u64,
    /// +0x640
    pub cr2: u64,
    _reserved_648: [u8; 0x20],
    /// +0x668: the guest's PAT MSR (used with nested paging).
    pub g_pat: u64,
    /// +0x670
    pub dbgctl: u64,
    /// +0x678
    pub br_from: u64,
    /// +0x680
    pub br_to: u64,
    /// +0x688
    pub last_exception_from: u64,
    /// +0x690
    pub last_exception_to: u64,
    _reserved_698: [u8; 0x1000 - 0x698],
}

/// The whole VMCB, page-aligned as VMRUN requires (15.5.1: "the VMCB … must be 4-Kbyte aligned").
#[repr(C, align(4096))]
pub struct Vmcb {
    pub control: ControlArea,
    pub save: StateSaveArea,
}

const _: () = {
    assert!(size_of::<Vmcb>() == 0x1000);
    assert!(size_of::<ControlArea>() == 0x400);
    assert!(offset_of!(ControlArea, intercept_exceptions) == 0x008);
    assert!(offset_of!(ControlArea, intercept_misc1) == 0x00c);
    assert!(offset_of!(ControlArea, intercept_misc2) == 0x010);
    assert!(offset_of!(ControlArea, pause_filter_threshold) == 0x03c);
    assert!(offset_of!(ControlArea, iopm_base_pa) == 0x040);
    assert!(offset_of!(ControlArea, msrpm_base_pa) == 0x048);
    assert!(offset_of!(ControlArea, tsc_offset) == 0x050);
    assert!(offset_of!(ControlArea, guest_asid) == 0x058);
    assert!(offset_of!(ControlArea, tlb_control) == 0x05c);
    assert!(offset_of!(ControlArea, virtual_interrupt) == 0x060);
    assert!(offset_of!(ControlArea, interrupt_shadow) == 0x068);
    assert!(offset_of!(ControlArea, exitcode) == 0x070);
    assert!(offset_of!(ControlArea, exitinfo1) == 0x078);
    assert!(offset_of!(ControlArea, exitinfo2) == 0x080);
    assert!(offset_of!(ControlArea, exitintinfo) == 0x088);
    assert!(offset_of!(ControlArea, np_enable) == 0x090);
    assert!(offset_of!(ControlArea, eventinj) == 0x0a8);
    assert!(offset_of!(ControlArea, n_cr3) == 0x0b0);
    assert!(offset_of!(ControlArea, vmcb_clean) == 0x0c0);
    assert!(offset_of!(ControlArea, next_rip) == 0x0c8);
    assert!(offset_of!(ControlArea, instruction_bytes) == 0x0d1);
    assert!(offset_of!(Vmcb, save) == 0x400);
    assert!(0x400 + offset_of!(StateSaveArea, tr) == 0x490);
    assert!(0x400 + offset_of!(StateSaveArea, cpl) == 0x4cb);
    assert!(0x400 + offset_of!(StateSaveArea, efer) == 0x4d0);
    assert!(0x400 + offset_of!(StateSaveArea, cr4) == 0x548);
    assert!(0x400 + offset_of!(StateSaveArea, rip) == 0x578);
    assert!(0x400 + offset_of!(StateSaveArea, rsp) == 0x5d8);
    assert!(0x400 + offset_of!(StateSaveArea, rax) == 0x5f8);
    assert!(0x400 + offset_of!(StateSaveArea, star) == 0x600);
    assert!(0x400 + offset_of!(StateSaveArea, cr2) == 0x640);
    assert!(0x400 + offset_of!(StateSaveArea, g_pat) == 0x668);
    assert!(0x400 + offset_of!(StateSaveArea, last_exception_to) == 0x690);
};

/// The bit of `intercept_cr` (+0x000) that makes a write of CR`number` exit (exit code
/// 0x10 + `number`, AMD APM vol. 2, 15.9).
pub const fn cr_write(number: u32) -> u32 {
    1 << (16 + number)
}

/// Intercept bits of `intercept_misc1` (+0x00C): bit n ↔ exit code 0x60 + n.
#[allow(dead_code, reason = "the APM's table, including bits not used yet")]
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const SMI: u32 = 1 << 2;
    pub const INIT: u32 = 1 << 3;
    pub const VINTR: u32 = 1 << 4;
    pub const CR0_SEL_WRITE: u32 = 1 << 5;
    pub const RDTSC: u32 = 1 << 14;
    pub const CPUID: u32 = 1 << 18;
    pub const IRET: u32 = 1 << 20;
    pub const INTN: u32 = 1 << 21;
    pub const INVD: u32 = 1 << 22;
    pub const PAUSE: u32 = 1 << 23;
    pub const HLT: u32 = 1 << 24;
    pub const INVLPG: u32 = 1 << 25;
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const TASK_SWITCH: u32 = 1 << 29;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept bits of `intercept_misc2` (+0x010): bit n ↔ exit code 0x80 + n.
#[allow(dead_code, reason = "the APM's table, including bits not used yet")]
pub mod misc2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const RDTSCP: u32 = 1 << 7;
    pub const ICEBP: u32 = 1 << 8;
    pub const WBINVD: u32 = 1 << 9;
    pub const MONITOR: u32 = 1 << 10;
    pub const MWAIT: u32 = 1 << 11;
    pub const XSETBV: u32 = 1 << 13;
}

/// Segment attributes (the compressed form above).
pub mod attrib {
    /// 64-bit code, DPL 0: type 0xB (execute/read, accessed), S, P, L, G.
    pub const CODE64_DPL0: u16 = 0xa9b;
    /// 32-bit code, DPL 0: type 0xB, S, P, D/B, G.
    pub const CODE32_DPL0: u16 = 0xc9b;
    /// Data, DPL 0: type 0x3 (read/write, accessed), S, P, D/B, G.
    pub const DATA_DPL0: u16 = 0xc93;
    /// A busy 32-bit TSS, present.
    pub const TSS32_BUSY: u16 = 0x08b;
    /// A busy 64-bit TSS, present.
    pub const TSS64_BUSY: u16 = 0x08b;
    /// An LDT, present.
    pub const LDT: u16 = 0x082;
    /// The L bit (64-bit code segment).
    pub const LONG_MODE: u16 = 1 << 9;
    /// The D/B bit (32-bit default operand size).
    pub const DEFAULT_32: u16 = 1 << 10;
}

/// The fields of `virtual_interrupt` (+0x060) the hypervisor uses (APM vol. 2, appendix B,
/// and 15.21.4 "Injecting Virtual (INTR) Interrupts").
pub mod v_intr {
    /// V_TPR, bits 7:0: the guest's task priority, CR8 (15.21.1).
    pub const TPR: u64 = 0xff;
    /// V_TPR bits 3:0: what the guest's MOV from CR8 reads, the 4-bit task priority (15.21.1;
    /// CR8's bits 63:4 are reserved, 3.1.5).
    pub const CR8: u64 = 0xf;
    /// V_IRQ: a virtual interrupt is pending; the CPU takes it (or exits, with the VINTR
    /// intercept) as soon as the guest can.
    pub const IRQ: u64 = 1 << 8;
    /// V_INTR_PRIO, bits 19:16: the request's priority against the guest's TPR.
    pub const PRIORITY_SHIFT: u64 = 16;
    /// V_IGN_TPR: the guest's TPR cannot hold the request back.
    pub const IGNORE_TPR: u64 = 1 << 20;
    /// V_INTR_MASKING: the guest's RFLAGS.IF masks only virtual interrupts; physical ones
    /// exit (15.21.1).
    pub const MASKING: u64 = 1 << 24;
    /// V_INTR_VECTOR, bits 39:32.
    pub const VECTOR_SHIFT: u64 = 32;
}

/// +0x068 bit 0: the guest is in an interrupt shadow (after STI or MOV SS).
pub const INTERRUPT_SHADOW: u64 = 1;
/// EVENTINJ bit 31: an event is to be delivered at the next VMRUN (15.20).
pub const EVENTINJ_VALID: u64 = 1 << 31;

impl Vmcb {
    /// A VMCB of zeroes, on the heap: nothing intercepted, no state yet (`domain/vcpu.rs`
    /// fills it). The hypervisor's heap is identity-mapped, so the box's address is the
    /// physical address VMRUN takes.
    pub fn new_zeroed() -> Box<Vmcb> {
        // SAFETY: every field of the VMCB is an integer or an array of them, for which all
        // zeroes is a valid value.
        unsafe { Box::<Vmcb>::new_zeroed().assume_init() }
    }

    /// How many bits the code at RIP runs with: 64, 32 or 16 (from CS's L and D bits and
    /// EFER.LMA; AMD APM vol. 2, 4.8.1).
    pub fn code_bits(&self) -> u32 {
        let cs = self.save.cs.attrib;
        let long_mode =
            EferFlags::from_bits_truncate(self.save.efer).contains(EferFlags::LONG_MODE_ACTIVE);
        if long_mode && cs & attrib::LONG_MODE != 0 {
            64
        } else if cs & attrib::DEFAULT_32 != 0 {
            32
        } else {
            16
        }
    }

    /// The selector in segment register `number` (`segment`), as `mov r/m, sreg` reads it.
    pub fn selector(&self, number: u8) -> u16 {
        let save = &self.save;
        match number {
            segment::ES => save.es.selector,
            segment::CS => save.cs.selector,
            segment::SS => save.ss.selector,
            segment::DS => save.ds.selector,
            segment::FS => save.fs.selector,
            _ => save.gs.selector,
        }
    }

    /// Segment register `number` ([`segment`]) as the state save area holds it.
    pub fn segment_register(&self, number: u8) -> &Segment {
        let save = &self.save;
        match number {
            segment::ES => &save.es,
            segment::CS => &save.cs,
            segment::SS => &save.ss,
            segment::DS => &save.ds,
            segment::FS => &save.fs,
            _ => &save.gs,
        }
    }

    /// The base an access through segment `number` adds to its offset (numbered as the
    /// state save area orders them and EXITINFO1 names them: [`segment`]). In 64-bit mode
    /// only FS and GS have one: ES, CS, SS and DS count as 0 whatever they hold (AMD APM
    /// vol. 2, 4.5.3; Intel SDM vol. 3A, 3.4.4).
    pub fn segment_base(&self, number: u8) -> u64 {
        let save = &self.save;
        match number {
            segment::FS => save.fs.base,
            segment::GS => save.gs.base,
            _ if self.code_bits() == 64 => 0,
            segment::ES => save.es.base,
            segment::CS => save.cs.base,
            segment::SS => save.ss.base,
            _ => save.ds.base,
        }
    }

    /// The bits of a linear address: 64 in 64-bit mode; 32 outside it, where a segment's
    /// base plus an offset wraps at 4 GiB.
    pub fn linear_address_mask(&self) -> u64 {
        match self.code_bits() {
            64 => u64::MAX,
            _ => 0xffff_ffff,
        }
    }

    /// RIP as a linear address (CS base + RIP; the base is 0 in 64-bit mode). Outside it a
    /// linear address is 32 bits: base + offset wraps at 4 GiB.
    pub fn linear_rip(&self) -> u64 {
        if self.code_bits() == 64 {
            self.save.rip
        } else {
            self.save.cs.base.wrapping_add(self.save.rip) & self.linear_address_mask()
        }
    }

    /// Is an event waiting in EVENTINJ for the next VMRUN?
    pub fn injecting(&self) -> bool {
        self.control.eventinj & EVENTINJ_VALID != 0
    }
}
