//! The hypervisor's own CPU tables: GDT, TSS (with two interrupt stacks) and IDT.
//!
//! These catch the hypervisor's *own* faults: a fault here is a bug in traplab, so the
//! handler prints the state and powers off with [`HvStatus::HvFault`]. Guest faults never
//! arrive here: they cause a #VMEXIT instead (AMD APM vol. 2, 15.12 "Exception Intercepts").
//! The machine's NMI comes here too, on a stack of its own, and is let go (`hv_fault`).

use crate::power::{self, HvStatus};
use spin::Once;
use traplab_baremetal::trap::TrapFrame;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::control::Cr2;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::structures::tss::TaskStateSegment;

const FAULT_STACK_SIZE: usize = 16 * 1024;

#[repr(align(16))]
#[allow(dead_code, reason = "only its address is used")]
struct Stack([u8; FAULT_STACK_SIZE]);

static mut FAULT_STACK: Stack = Stack([0; FAULT_STACK_SIZE]);

/// The NMI's own stack. A gate with an IST slot loads RSP from the TSS every time, even on
/// that same stack (AMD APM vol. 2, 8.9.4): an NMI that came in the middle of a handler on
/// the fault stack would write its frame over that handler's. The NMI can interrupt any of
/// them; nothing but the CPU's own NMI blocking interrupts it.
static mut NMI_STACK: Stack = Stack([0; FAULT_STACK_SIZE]);

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(GlobalDescriptorTable, [SegmentSelector; 3])> = Once::new();
static IDT: Once<InterruptDescriptorTable> = Once::new();

traplab_baremetal::trap_entry!(fault_entry, hv_fault);
traplab_baremetal::exception_entries!(exception_entries, fault_entry);
traplab_baremetal::trap_entry!(interrupt_entry, host_interrupt);
traplab_baremetal::interrupt_entries!(interrupt_entries, interrupt_entry);

pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        // IST slot 1 (index 0): every hypervisor fault runs on this stack, so even a
        // stack overflow gets reported.
        let stack_end = (&raw const FAULT_STACK) as u64 + FAULT_STACK_SIZE as u64;
        tss.interrupt_stack_table[0] = VirtAddr::new(stack_end);
        // IST slot 2 (index 1): the NMI's.
        let nmi_stack_end = (&raw const NMI_STACK) as u64 + FAULT_STACK_SIZE as u64;
        tss.interrupt_stack_table[1] = VirtAddr::new(nmi_stack_end);
        tss
    });
    let (gdt, [code, data, tss_selector]) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        (gdt, [code, data, tss])
    });
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, with the right descriptor types.
    unsafe {
        CS::set_reg(*code);
        SS::set_reg(*data);
        DS::set_reg(*data);
        ES::set_reg(*data);
        load_tss(*tss_selector);
    }
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        let stubs = traplab_baremetal::trap::entry_addresses(exception_entries);
        // SAFETY: the stubs are entry stubs for their vectors, and IST slots 0 and 1 were set
        // above.
        unsafe {
            traplab_baremetal::idt::set_exception_stubs(&mut idt, &stubs, 0);
            traplab_baremetal::idt::set_stack_index(&mut idt, 2, 1);
        }
        // The PIC's 16 vectors: the hypervisor's own timer (timer.rs).
        for irq in 0..16u8 {
            let entry = traplab_baremetal::trap::entry_address(interrupt_entries, irq as usize);
            // SAFETY: `entry` is the stub of vector 0x20 + irq; IST slot 0 is set up above.
            unsafe {
                idt[crate::timer::PIC_VECTOR_BASE + irq]
                    .set_handler_addr(VirtAddr::new(entry))
                    .set_stack_index(0);
            }
        }
        idt
    });
    idt.load();
}

/// A physical interrupt, let in by `timer::take_pending`.
extern "C" fn host_interrupt(frame: &mut TrapFrame) {
    crate::timer::tick(frame.vector as u8);
}

/// RFLAGS.RF: the next instruction ignores instruction breakpoints.
const RFLAGS_RF: u64 = 1 << 16;

/// A fault in the hypervisor itself, or the machine's NMI.
extern "C" fn hv_fault(frame: &mut TrapFrame) {
    if frame.vector == 2 {
        // A non-maskable interrupt from the machine (QEMU's monitor `nmi`, a watchdog).
        // After a guest's NMI exit it comes here once the world switch sets GIF
        // (`exit/nmi.rs`); it may also come while the hypervisor runs, in any of its
        // handlers (hence its own stack). Nothing here needs it: the interrupted code goes
        // on, and IRETQ ends the CPU's NMI blocking. (A #DB inside this handler, whose IRETQ
        // would end that blocking early, would need a guest breakpoint on this code's
        // addresses: see the #DB case below.)
        return;
    }
    if frame.vector == 1 {
        // A #DB in the hypervisor can only come from a guest's breakpoint (or gdb's) that
        // matches an address the hypervisor itself uses: the debug registers hold guest
        // addresses while the hypervisor runs (exit/dr.rs). Not ours: clear DR6 and go on,
        // with RF set so that an instruction breakpoint does not fire again at once.
        // SAFETY: DR6 is only status bits.
        unsafe { core::arch::asm!("mov dr6, {}", in(reg) 0xffff_0ff0u64, options(nostack)) };
        frame.rflags |= RFLAGS_RF;
        return;
    }
    let cr2 = Cr2::read_raw();
    let exception = traplab_abi::x86::exception(frame.vector as u8);
    crate::console::write_fmt_emergency(format_args!(
        "hv: FAULT {} ({}) error code {:#x} at rip {:#x} rsp {:#x} rflags {:#x} cr2 {:#x}\n\
         hv:   rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} rbp {:#x}\n",
        exception.mnemonic,
        exception.name,
        frame.error_code,
        frame.rip,
        frame.rsp,
        frame.rflags,
        cr2,
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx,
        frame.rsi,
        frame.rdi,
        frame.rbp,
    ));
    power::exit(HvStatus::HvFault);
}
