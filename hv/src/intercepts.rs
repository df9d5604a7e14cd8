//! What the hypervisor intercepts, and why.
//!
//! "The hypervisor always takes all traps": every exception vector, every instruction
//! that could let a guest see or change something outside itself, every I/O port and
//! every MSR. Each intercept below causes a #VMEXIT with its own exit code (AMD APM vol. 2,
//! 15.9–15.14; exit codes in appendix C) that one handler in `exit/` deals with.
//!
//! One exception, by design: the driver domain's own disk controller. Its ports are cleared
//! in that domain's I/O permission map, and only in its map (`device/ata.rs`).

use crate::frames;
use traplab_abi::msr::FS_BASE;
use traplab_hv::device::ata;
use traplab_hv::domain::vcpu::Vcpu;
use traplab_hv::iopm::{self, IoPermissionMap};
use traplab_hv::vmcb::{cr_write, misc1, misc2, v_intr};

/// The I/O permission map: 12 KiB, one bit per port, set = intercept (15.10.1).
const IOPM_PAGES: u64 = 3;
const _: () = assert!(IOPM_PAGES * frames::PAGE_SIZE == iopm::SIZE as u64);
/// The MSR permission map: 8 KiB, two bits (read, write) per MSR in three ranges (15.11).
const MSRPM_PAGES: u64 = 2;

/// Fill the control area of domain `dom`'s new VMCB (`vcpu`'s); `disk` says who owns the disk
/// controller. `None` when memory runs out.
pub fn configure(vcpu: &mut Vcpu, dom: u16, disk: ata::Assignment) -> Option<()> {
    let control = &mut vcpu.vmcb.control;

    // Every exception vector 0–31: the hypervisor sees each fault first and decides
    // whether the guest gets it (15.12).
    control.intercept_exceptions = u32::MAX;

    control.intercept_misc1 = misc1::INTR          // physical interrupts: the hv owns the machine
        | misc1::NMI
        | misc1::SMI
        | misc1::INIT
        | misc1::CPUID                             // the guest sees the CPU we describe
        | misc1::IRET                              // a handler returns: the end of every flow
        | misc1::INTN                              // INT n, INT3, INTO (TCG delivers INT3 this way)
        | misc1::INVD                              // would drop caches the hv relies on
        | misc1::HLT                               // the CPU is the hv's to park
        | misc1::INVLPGA
        | misc1::IOIO_PROT                         // all ports, through the I/O permission map
        | misc1::MSR_PROT                          // all MSRs, through the MSR permission map
        | misc1::SHUTDOWN; // a triple fault ends the domain, not the machine
    // Not intercepted: task switches (a 32-bit guest's, done by the CPU; a bad TSS raises
    // #TS, which is intercepted like every exception).

    // VMRUN must be intercepted, or VMRUN itself fails (15.5.1: "VMRUN intercept bit clear"
    // is illegal guest state). The other SVM instructions would let a guest touch
    // host-physical memory or the global interrupt flag.
    control.intercept_misc2 = misc2::VMRUN
        | misc2::VMMCALL                           // the hypercall
        | misc2::VMLOAD
        | misc2::VMSAVE
        | misc2::STGI
        | misc2::CLGI
        | misc2::SKINIT
        | misc2::ICEBP
        | misc2::WBINVD
        | misc2::MONITOR
        | misc2::MWAIT
        | misc2::XSETBV;

    // Writes to CR0, CR4 and CR8, which QEMU's TCG takes where a CPU raises #GP(0)
    // (`quirks.rs`): a CR0 with PG but not PE, with NW but not CD, or without PG in 64-bit
    // mode (the guest derails, or the next VMRUN fails and the domain dies), or with a bit of
    // 63:32 (TCG drops it, and its selective intercept does not see a change there alone); a
    // CR4 that clears PAE in long mode (the guest's next access walks its tables in another
    // format); a CR8 with bits 63:4 (TCG keeps 3:0). `exit/cr.rs` checks them as the CPU
    // does. CR0's intercept is the selective one (15.9.2): only a MOV that changes more than
    // TS and MP exits, and LMSW, so a lazy-FPU kernel's CLTS costs nothing. Kernels write
    // these a few times at boot (a Linux boot: 53 CR4 writes of its 56,673 exits) and CR8
    // seldom, so this costs nothing; reads stay the CPU's.
    control.intercept_misc1 |= misc1::CR0_SEL_WRITE;
    control.intercept_cr |= cr_write(4) | cr_write(8);

    // Writes to DR7, always; every debug-register access while the guest's DR7.GD is set
    // (general detect, whose #DB QEMU's TCG does not raise and `exit/dr.rs` does), while
    // gdb holds a slot, and with the setting `intercept-dr` (`Vcpu::debug_register_intercepts`).
    // A kernel writes DR7 seldom (Linux once at boot), so this costs nothing either.
    let settings = crate::settings::get();
    vcpu.intercept_every_debug_register = settings.intercept_dr;
    vcpu.intercept_debug_registers(None);
    let control = &mut vcpu.vmcb.control;

    // The lab's settings (`settings.rs`): intercepts that would flood other labs' traces.
    if settings.intercept_cr {
        // Writes to CR3 (a kernel switches address spaces at every context switch).
        control.intercept_cr |= cr_write(3);
    }
    if settings.intercept_rdtsc {
        control.intercept_misc1 |= misc1::RDTSC;
        control.intercept_misc2 |= misc2::RDTSCP;
    }
    if settings.intercept_invlpg {
        control.intercept_misc1 |= misc1::INVLPG;
    }
    if settings.intercept_pause {
        // With a filter count of 0, every PAUSE exits (15.14.4).
        control.intercept_misc1 |= misc1::PAUSE;
        control.pause_filter_count = 0;
    }

    let iopm = frames::alloc_frames(IOPM_PAGES)?;
    let msrpm = frames::alloc_frames(MSRPM_PAGES)?;
    // SAFETY: the range was just allocated for this VMCB, is identity-mapped, 12 KiB long
    // (asserted above) and nothing else refers to it.
    let mut ports = IoPermissionMap::new(unsafe { &mut *(iopm as *mut [u8; iopm::SIZE]) });
    // Every port exits, but the disk controller's in its owner's map: passthrough.
    ports.intercept_all();
    disk.open_ports(dom, &mut ports);
    // SAFETY: the range was just allocated for this VMCB and is identity-mapped.
    unsafe {
        core::ptr::write_bytes(
            msrpm as *mut u8,
            0xff,
            (MSRPM_PAGES * frames::PAGE_SIZE) as usize,
        );
    }
    if settings.passthrough_fs_base {
        // MSRs 0xC000_0000–0xC000_1FFF have their bits from byte 0x800 on, two per MSR
        // (read, then write): clear FS_BASE's, and the CPU reads and writes it itself.
        let bit = (FS_BASE as u64 - 0xc000_0000) * 2;
        // SAFETY: inside the MSR permission map allocated above.
        unsafe { *((msrpm + 0x800 + bit / 8) as *mut u8) &= !(0b11 << (bit % 8)) };
    }
    control.iopm_base_pa = iopm;
    control.msrpm_base_pa = msrpm;

    // ASID 0 is the host's; each guest gets its own so TLB entries never mix (15.16).
    control.guest_asid = dom as u32 + 1;
    // Flush the TLB at the first VMRUN.
    control.tlb_control = 1;
    // V_INTR_MASKING (bit 24): the guest's RFLAGS.IF masks only virtual interrupts; physical
    // ones are masked by the host's IF and cause an INTR exit (15.21.1).
    control.virtual_interrupt = v_intr::MASKING;
    Some(())
}
