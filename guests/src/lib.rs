//! The lab guests' runtime: what runs before a guest's `main` and what it may call.
//!
//! A guest is a tiny 64-bit kernel. The hypervisor starts it at [`_start`] with paging on
//! and RDI pointing to a [`BootInfo`] (see `traplab_abi::boot`). The runtime then:
//!
//! 1. switches to its own stack;
//! 2. loads its own GDT (kernel and user segments) and TSS, whose interrupt stack (IST)
//!    every exception uses — the precompiled `core` uses the red zone below RSP, which an
//!    exception frame pushed on the same stack would destroy;
//! 3. loads an IDT whose 32 exception entries all lead to [`traps`], which calls the
//!    handler the guest registered for the vector, or reports an unhandled exception;
//! 4. calls the guest's `main` (declared with [`guest_main!`]) and passes its status to
//!    the `exit` hypercall.
//!
//! The console ([`println!`]) writes bytes to the UART at port 0x3f8: one `out`, so one
//! IOIO exit, per byte. [`paging`] changes the guest's own page tables, [`user`] runs code
//! at CPL 3, [`bounce`] gets exceptions the PV way (`set_trap_table`).
//!
//! Between domains, as a Xen guest does it: [`evtchn`] (event channels, the shared-info
//! page and the upcall), [`grant`] (sharing a page), [`store`] (publishing a port or a
//! grant reference), [`sched`] (yield, block, poll).
//!
//! A driver domain's device: [`ata`], a polled ATA PIO driver for the disk controller the
//! hypervisor gives to one domain (`BootInfo::disk_owner`). The split block driver on top
//! of it, as Xen's: [`xenbus`] (how the two ends meet in the store), [`blkfront`] (in the
//! domain that uses the disk) and [`blkback`] (in the domain that owns it).
#![no_std]

pub mod ata;
pub mod blkback;
pub mod blkfront;
pub mod bounce;
pub mod console;
pub mod evtchn;
pub mod faults;
pub mod grant;
pub mod hypercall;
pub mod paging;
pub mod random;
pub mod sched;
pub mod segments;
pub mod store;
pub mod text;
pub mod traps;
pub mod user;
pub mod xenbus;

pub use traplab_abi::boot::BootInfo;
use traplab_baremetal as _;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

const STACK_SIZE: usize = 64 * 1024;
const TRAP_STACK_SIZE: usize = 32 * 1024;

#[repr(align(16))]
struct Stack<const N: usize>([u8; N]);

static mut STACK: Stack<STACK_SIZE> = Stack([0; STACK_SIZE]);
static mut TRAP_STACK: Stack<TRAP_STACK_SIZE> = Stack([0; TRAP_STACK_SIZE]);
static mut TSS: TaskStateSegment = TaskStateSegment::new();
static mut GDT: GlobalDescriptorTable = GlobalDescriptorTable::new();

/// The selectors of the runtime's GDT.
#[derive(Debug, Clone, Copy)]
pub struct Selectors {
    pub kernel_code: SegmentSelector,
    pub kernel_data: SegmentSelector,
    pub user_data: SegmentSelector,
    pub user_code: SegmentSelector,
}

static mut SELECTORS: Option<Selectors> = None;

/// The selectors, once [`_start`] has loaded the GDT.
pub fn selectors() -> Selectors {
    // SAFETY: written once in `start` before any guest code runs; read-only afterwards.
    unsafe { (*(&raw const SELECTORS)).expect("the runtime loads the GDT before main") }
}

/// The guest's entry point: a fresh stack, then [`start`] with the boot info.
#[unsafe(naked)]
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.start")]
pub extern "C" fn _start() -> ! {
    core::arch::naked_asm!(
        "lea rsp, [rip + {stack} + {size}]",
        "call {start}",
        "ud2",
        stack = sym STACK,
        size = const STACK_SIZE,
        start = sym start,
    )
}

unsafe extern "Rust" {
    /// The guest's main, defined by [`guest_main!`].
    fn traplab_guest_main(info: &BootInfo) -> i32;
}

extern "C" fn start(info: *const BootInfo) -> ! {
    load_tables();
    // SAFETY: the hypervisor passes a pointer to a BootInfo in identity-mapped guest RAM.
    let info = unsafe { &*info };
    if info.magic != traplab_abi::boot::BOOT_INFO_MAGIC {
        println!(
            "runtime: no boot info from the hypervisor (magic {:#x})",
            info.magic
        );
        hypercall::exit(120);
    }
    paging::init(info.free_start, info.free_end);
    // SAFETY: the symbol is defined by `guest_main!` in every guest binary.
    let status = unsafe { traplab_guest_main(info) };
    hypercall::exit(status)
}

fn load_tables() {
    // SAFETY: runs once, on one CPU, before anything else uses these statics.
    unsafe {
        let tss = &mut *(&raw mut TSS);
        tss.interrupt_stack_table[0] =
            VirtAddr::new((&raw const TRAP_STACK) as u64 + TRAP_STACK_SIZE as u64);
        // RSP0: where the CPU switches to when an exception interrupts CPL 3 code and the
        // gate has no IST. All our gates have one, but a guest's own gates may not.
        tss.privilege_stack_table[0] =
            VirtAddr::new((&raw const TRAP_STACK) as u64 + TRAP_STACK_SIZE as u64);
        let gdt = &mut *(&raw mut GDT);
        let selectors = Selectors {
            kernel_code: gdt.append(Descriptor::kernel_code_segment()),
            kernel_data: gdt.append(Descriptor::kernel_data_segment()),
            user_data: gdt.append(Descriptor::user_data_segment()),
            user_code: gdt.append(Descriptor::user_code_segment()),
        };
        let tss_selector = gdt.append(Descriptor::tss_segment(&*(&raw const TSS)));
        gdt.load_unsafe();
        CS::set_reg(selectors.kernel_code);
        SS::set_reg(selectors.kernel_data);
        DS::set_reg(selectors.kernel_data);
        ES::set_reg(selectors.kernel_data);
        load_tss(tss_selector);
        *(&raw mut SELECTORS) = Some(selectors);
    }
    traps::load_idt();
}

/// Point the TSS's second interrupt stack (IST2) at `stack_top` (see `traps::set_stack`).
pub(crate) fn set_second_interrupt_stack(stack_top: u64) {
    // SAFETY: one CPU; the CPU reads the TSS only while delivering an exception.
    unsafe { (*(&raw mut TSS)).interrupt_stack_table[1] = VirtAddr::new(stack_top) };
}

/// Stop the virtual CPU for good: interrupts off, HLT. The hypervisor ends the domain.
pub fn halt() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// `guest_main!(main)`: make `fn main(info: &BootInfo) -> i32` the guest's main.
/// Its return value becomes the domain's exit status.
#[macro_export]
macro_rules! guest_main {
    ($main:path) => {
        #[unsafe(no_mangle)]
        fn traplab_guest_main(info: &$crate::BootInfo) -> i32 {
            $main(info)
        }
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("guest panic: {info}");
    hypercall::exit(101)
}
